"""`corft train --preset/--config`, the resolved config in the run folder and the model, the model's rollout
defaults in `corft eval`, and `corft pretrain` followed by `corft train --init-from` the base."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from corft_algos.cli import build_parser, main
from corft_algos.cli.train import train_request
from corft_algos.evaluation import load_model, rollout_execute, trained_scene
from corft_algos.presets import PRESETS, TrainConfig, load_config_file
from corft_algos.pretrain import MANIFEST_NAME, PRETRAIN_SEED, SEED_BLOCK, PretrainConfig
from corft_algos.runs import resolve
from corft_envs.episode_store import EpisodeDataset

#: The tiny pretrained-tower policy: a fraction of a second per step on a CPU.
TINY = {"d_model": 32, "vision_arch": "mobilenet_v2", "vision_config": {"layers": 4}, "vision_tokens": 2,
        "fusion_layers": 1, "heads": 2}


pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("torch_threads_restored")]


@pytest.fixture(scope="module")
def one_object_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "pickplace_one_object"
    assert main(["collect", "--env", "corft/PickPlace-v0", "--episodes", "2", "--out", str(out), "--image-size", "32",
                 "--env-kwargs", '{"distractors": false}', "--quiet"]) == 0
    return out


def test_config_layers_override_in_order_and_dicts_merge():
    base = TrainConfig(algo="sft", steps=10, algo_kwargs={"batch_size": 8, "execute": 3},
                       policy_kwargs={"d_model": 64, "vision_tokens": 2})
    top = TrainConfig(steps=20, algo_kwargs={"batch_size": 16}, policy_kwargs={"d_model": 32})
    merged = base.merged(top)
    assert merged == TrainConfig(algo="sft", steps=20, algo_kwargs={"batch_size": 16, "execute": 3},
                                 policy_kwargs={"d_model": 32, "vision_tokens": 2})
    assert PRESETS["default"] == TrainConfig()


def test_config_files_json_and_yaml_and_their_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("algo: corft\nil_steps: 5\npolicy_kwargs:\n  d_model: 32\n")
    assert load_config_file(tmp_path / "a.yaml") == TrainConfig(algo="corft", il_steps=5, policy_kwargs={"d_model": 32})
    (tmp_path / "b.json").write_text('{"steps": 3, "learning_rate": 0.1}')
    with pytest.raises(ValueError, match=r"b.json: unknown field 'learning_rate'; a training configuration has"):
        load_config_file(tmp_path / "b.json")
    (tmp_path / "c.json").write_text('{"steps": -1}')
    with pytest.raises(ValueError, match="steps must be a non-negative int, got -1"):
        load_config_file(tmp_path / "c.json")
    (tmp_path / "d.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must hold a mapping of fields, got list"):
        load_config_file(tmp_path / "d.yaml")
    (tmp_path / "e.json").write_text("{nope")
    with pytest.raises(ValueError, match="cannot parse it"):
        load_config_file(tmp_path / "e.json")


def test_train_resolves_preset_config_and_flags_into_the_run_folder_and_model(one_object_data, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("algo: sft\nsteps: 2\nalgo_kwargs:\n  batch_size: 4\n  execute: 2\n  chunk_size: 6\n"
                      f"policy_kwargs: {json.dumps(TINY)}\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--data", str(one_object_data), "--out", str(out),
                 "--chunk-size", "4", "--threads", "1", "--quiet"]) == 0
    written = json.loads((out / "config.json").read_text())
    assert written["algo"] == "sft" and written["steps"] == 2 and written["policy_kwargs"] == TINY
    assert written["algo_kwargs"] == {"batch_size": 4, "execute": 2, "chunk_size": 4}
    model = load_model(out / "model.zip", device="cpu")
    assert model.chunk_size == 4 and model.batch_size == 4 and model.execute == 2 and model.num_timesteps == 2
    assert model.policy.arch["vision_arch"] == "mobilenet_v2"
    assert trained_scene(model) == {"distractors": False}
    assert rollout_execute(model) == 2 and rollout_execute(model, 3) == 3 and rollout_execute(model, 9) is None

    capsys.readouterr()
    assert main(["train", "--preset", "nope", "--algo", "sft", "--data", str(one_object_data),
                 "--out", str(tmp_path / "x")]) == 1
    assert "--preset 'nope' is unknown; use one of default, scratch" in capsys.readouterr().err
    assert main(["train", "--data", str(one_object_data), "--out", str(tmp_path / "x")]) == 1
    assert "no algorithm: pass --algo NAME" in capsys.readouterr().err


def test_init_from_picks_the_from_base_recipe_with_the_budget_of_the_algorithm(tmp_path):
    def resolved(*extra: str) -> tuple[TrainConfig, str]:
        args = build_parser().parse_args(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), *extra])
        request, config = resolve(train_request(args))
        return config, request.preset

    sft, preset = resolved("--algo", "sft", "--init-from", "base.zip")
    assert preset == "from_base" and sft.steps == 3000 and sft.il_steps is None
    assert sft.algo_kwargs == {"learning_rate": 3e-4}
    corft, _ = resolved("--algo", "corft", "--init-from", "base.zip")
    assert corft.steps is None and (corft.il_steps, corft.rl_steps) == (3000, 1000)
    flagged, _ = resolved("--algo", "sft", "--init-from", "base.zip", "--steps", "7", "--learning-rate", "0.01")
    assert flagged.steps == 7 and flagged.algo_kwargs == {"learning_rate": 0.01}
    scratch, preset = resolved("--algo", "sft")
    assert preset == "default" and scratch == TrainConfig(algo="sft")
    chosen, preset = resolved("--algo", "sft", "--init-from", "base.zip", "--preset", "default")
    assert preset == "default" and chosen.steps is None


def test_eval_uses_the_models_scene_and_executed_actions(one_object_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--algo", "sft", "--data", str(one_object_data), "--out", str(out), "--steps", "1",
                 "--batch-size", "2", "--chunk-size", "4", "--policy-kwargs", json.dumps(TINY),
                 "--algo-kwargs", '{"execute": 2}', "--threads", "1", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["eval", "--model", str(out / "model.zip"), "--episodes", "1", "--quiet"]) == 0
    assert "2 actions per chunk, env kwargs {'distractors': False}" in capsys.readouterr().out
    assert main(["eval", "--model", str(out / "model.zip"), "--episodes", "1", "--execute", "4", "--quiet",
                 "--env-kwargs", '{"distractors": true}']) == 0
    assert "whole chunks, env kwargs {'distractors': True}" in capsys.readouterr().out


def test_pretrain_refuses_target_tasks():
    for task in ("PickPlace", "Push", "Stack"):
        with pytest.raises(ValueError, match=f"{task} is a fine-tuning target"):
            PretrainConfig(out=Path("x"), tasks=(task,))
    with pytest.raises(ValueError, match="unknown task 'Fly'"):
        PretrainConfig(out=Path("x"), tasks=("Fly",))


def test_pretrain_collect_only_gathers_the_episodes_a_base_saw_without_training(tmp_path, capsys):
    out = tmp_path / "base_data"
    assert main(["pretrain", "--out", str(out), "--episodes", "2", "--image-size", "32", "--collect-only",
                 "--quiet"]) == 0
    assert f"pretraining data: {out / 'data' / 'Lift'}, {out / 'data' / 'Place'}" in capsys.readouterr().out
    for task, first_seed in (("Lift", PRETRAIN_SEED), ("Place", PRETRAIN_SEED + SEED_BLOCK)):
        store = EpisodeDataset(out / "data" / task)
        assert store.env_id == f"corft/{task}-v0" and store.seeds == [first_seed, first_seed + 1]
        assert store.env_kwargs["positions"] == "all"
        store.close()
    assert not (out / "model.zip").exists() and not (out / MANIFEST_NAME).exists()


def test_pretrain_writes_a_base_that_fine_tuning_starts_from(tmp_path, capsys):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"algo_kwargs": {"batch_size": 4, "chunk_size": 4}, "policy_kwargs": TINY}))
    base = tmp_path / "base"
    assert main(["pretrain", "--out", str(base), "--episodes", "2", "--image-size", "32", "--steps", "2", "--seed", "5",
                 "--config", str(config), "--threads", "1", "--quiet"]) == 0
    manifest = json.loads((base / MANIFEST_NAME).read_text())
    lift = manifest["tasks"]["Lift"]
    assert lift["episodes"] == 2 and lift["attempt_seeds"][0] == PRETRAIN_SEED
    assert lift["env_kwargs"]["positions"] == "all" and all("cube" in text for text in lift["instructions"])
    assert lift["distractors"] is True
    place = manifest["tasks"]["Place"]
    assert place["episodes"] == 2 and place["attempt_seeds"][0] == PRETRAIN_SEED + SEED_BLOCK
    assert all("cube" in text and ("square" in text or "pad" in text) for text in place["instructions"])
    assert manifest["never_seen"] == ["PickPlace", "Push", "Stack"] and manifest["train"]["steps"] == 2
    assert "--config" in manifest["command"] and manifest["wall_time_s"] > 0
    store = EpisodeDataset(base / "data" / "Lift")
    assert store.env_id == "corft/Lift-v0" and store.successes.all()
    store.close()

    # Fine-tune on PickPlace demos from the base: the layers come from it, the data's own buffers stay.
    demos = tmp_path / "demos"
    assert main(["collect", "--env", "corft/PickPlace-v0", "--episodes", "2", "--out", str(demos),
                 "--image-size", "32", "--quiet"]) == 0
    tuned = tmp_path / "tuned"
    assert main(["train", "--algo", "sft", "--data", str(demos), "--out", str(tuned), "--steps", "1",
                 "--config", str(config), "--init-from", str(base / "model.zip"), "--threads", "1",
                 "--quiet"]) == 0
    assert "tip: co-train with the base's own data" in capsys.readouterr().out
    assert main(["train", "--algo", "sft", "--data", str(demos), str(base / "data" / "Lift"),
                 str(base / "data" / "Place"), "--store-mix", "1", "0.5", "0.5",
                 "--out", str(tmp_path / "cotrained"), "--steps", "1", "--config", str(config),
                 "--init-from", str(base / "model.zip"), "--threads", "1", "--quiet"]) == 0
    assert "tip:" not in capsys.readouterr().out
    base_model = load_model(base / "model.zip", device="cpu")
    fresh = tmp_path / "fresh"
    assert main(["train", "--algo", "sft", "--data", str(demos), "--out", str(fresh), "--steps", "1",
                 "--config", str(config), "--threads", "1", "--quiet"]) == 0
    start = load_model(fresh / "model.zip", device="cpu").policy.state_dict()
    tuned_state = load_model(tuned / "model.zip", device="cpu").policy.state_dict()
    base_state = base_model.policy.state_dict()
    # The frozen tower is ImageNet's either way; a trained layer is one step from the base's weights, far from
    # the fresh run's init (the base was trained with another seed).
    torch.testing.assert_close(tuned_state["vision.model.features.1.conv.0.0.weight"],
                               base_state["vision.model.features.1.conv.0.0.weight"])
    delta_from_base = (tuned_state["fusion.layers.0.linear1.weight"] - base_state["fusion.layers.0.linear1.weight"])
    delta_from_fresh = (tuned_state["fusion.layers.0.linear1.weight"] - start["fusion.layers.0.linear1.weight"])
    assert delta_from_base.abs().max() < 0.05 < delta_from_fresh.abs().max()
    assert not torch.equal(tuned_state["instruction_embeddings"], base_state["instruction_embeddings"])
    # The base's normalisation (its units), not the demos' own, which the fresh run has.
    np.testing.assert_array_equal(tuned_state["action_mean"].numpy(), base_state["action_mean"].numpy())
    assert not np.array_equal(tuned_state["action_mean"].numpy(),
                              load_model(fresh / "model.zip", device="cpu").policy.state_dict()["action_mean"])
