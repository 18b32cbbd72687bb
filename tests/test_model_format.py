"""The model file (format 2, :mod:`corft_algos.model_format`): loading never runs code, old pickle-based files
are refused everywhere (and converted only by `corft convert-model`), round trips keep every tensor, damaged
files give one-line errors, and a model from a `vision_model` folder loads without that folder."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
import safetensors.torch
import torch
import transformers
from gymnasium import spaces
from stable_baselines3.common.save_util import json_to_data, save_to_zip_file

from corft_algos import CORFT, SFT
from corft_algos.cli import main
from corft_algos.evaluation import load_model
from corft_algos.model_format import (MODEL_JSON, OPTIMIZERS_JSON, OPTIMIZERS_TENSORS, POLICY_TENSORS, ZIP_MEMBERS,
                                      ModelFileError, OldFormatError, read_model, read_model_config)
from corft_algos.networks.vision import folder_model_config, vision_model_config_problems
from corft_envs.episode_store import space_from_json, space_to_json
from tests.helpers import TINY_POLICY, make_algorithm, train_args

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("torch_threads_restored")]
REPOSITORY = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------
# Old, pickle-based files
# ----------------------------------------------------------------------------


class WritesMarker:
    """Unpickling it runs code: it writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"import pathlib; pathlib.Path({str(self.marker)!r}).write_text('the model file ran code')",)


def crafted_old_zip(path: Path, marker: Path, algorithm_name: str = "sft") -> Path:
    """A model zip in stable-baselines3's format whose ``data`` holds a cloudpickled payload, with what the old
    loaders read before unpickling (the algorithm's name, the step count, the chunk size)."""
    payload = base64.b64encode(cloudpickle.dumps(WritesMarker(marker))).decode()
    data = {"algorithm_name": algorithm_name, "num_timesteps": 2, "chunk_size": 10,
            "policy_class": {":type:": "<class 'abc.ABCMeta'>", ":serialized:": payload}}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data", json.dumps(data))
        archive.writestr("policy.pth", b"")
        archive.writestr("_stable_baselines3_version", "2.9.2")
    return path


@pytest.fixture
def crafted(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "marker.txt"
    return crafted_old_zip(tmp_path / "crafted.zip", marker), marker


def assert_refused_as_old(message: str, path: Path) -> None:
    assert "old pickle-based format" in message and "could run any code" in message
    assert f"corft convert-model {path} {path.with_name(path.stem + '_v2.zip')}" in message
    assert "\n" not in message.strip()


def test_the_crafted_payload_runs_code_when_unpickled(crafted):
    """What the refusals below guard against: stable-baselines3's reader runs the payload."""
    path, marker = crafted
    with zipfile.ZipFile(path) as archive:
        json_to_data(archive.read("data").decode())
    assert marker.read_text() == "the model file ran code"


@pytest.mark.parametrize("loader", ["SFT.load", "CORFT.load", "load_model", "CORFT.from_sft", "init_from",
                                    "read_model_config"])
def test_every_loader_refuses_an_old_file_without_running_it(crafted, tiny_dataset, loader):
    path, marker = crafted
    calls = {
        "SFT.load": lambda: SFT.load(path),
        "CORFT.load": lambda: CORFT.load(path),
        "load_model": lambda: load_model(path, device="cpu"),
        "CORFT.from_sft": lambda: CORFT.from_sft(path, dataset=tiny_dataset),
        "init_from": lambda: make_algorithm("sft", tiny_dataset).init_from(path),
        "read_model_config": lambda: read_model_config(path),
    }
    with pytest.raises(OldFormatError) as refused:
        calls[loader]()
    assert isinstance(refused.value, ValueError)
    assert_refused_as_old(str(refused.value), path)
    assert not marker.exists()


@pytest.mark.parametrize("where", ["model.zip", "checkpoints/rl_model_2_steps.zip"])
def test_resuming_from_an_old_file_is_refused_without_running_it(crafted, tiny_dataset, tmp_path, capsys, where):
    path, marker = crafted
    out = tmp_path / "run"
    (out / where).parent.mkdir(parents=True)
    shutil.copy(path, out / where)
    assert main(train_args(tiny_dataset, out, 4)) == 1
    err = capsys.readouterr().err
    assert err.startswith("corft train: error: ")
    assert_refused_as_old(err, out / where)
    assert not marker.exists()


@pytest.mark.parametrize("command", [
    ["eval", "--model", "CRAFTED", "--episodes", "1", "--quiet"],
    ["train", "--algo", "sft", "--data", "DATA", "--out", "OUT", "--steps", "1", "--batch-size", "4",
     "--policy-kwargs", json.dumps(TINY_POLICY), "--init-from", "CRAFTED", "--threads", "1", "--quiet"],
    ["collect", "--env", "corft/PickPlace-v0", "--episodes", "1", "--out", "OUT", "--policy", "CRAFTED", "--quiet"],
], ids=["eval", "train-init-from", "collect-policy"])
def test_commands_refuse_an_old_file_without_running_it(crafted, tiny_dataset, tmp_path, capsys, command):
    path, marker = crafted
    replaced = {"CRAFTED": str(path), "DATA": str(tiny_dataset), "OUT": str(tmp_path / "out")}
    assert main([replaced.get(word, word) for word in command]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"corft {command[0]}: error: ")
    assert_refused_as_old(err, path)
    assert not marker.exists()
    assert not (tmp_path / "out" / "model.zip").exists()


#: What corft's old ``save`` left out of the pickled ``data`` (stable-baselines3's exclusions, corft's
#: transient attributes and the tensors it saved with ``torch.save``).
OLD_EXCLUDED = {"policy", "device", "env", "replay_buffer", "rollout_buffer", "_vec_normalize_env", "_logger",
                "_custom_logger", "dataset", "_spaces_env", "_batches", "_rng", "_torch_generator", "_data_parallel",
                "_grad_scaler", "_metric_sums", "_metric_counts", "_num_policy_parameters", "_feature_cache",
                "_contexts"}


def save_in_old_format(model: SFT, path: Path) -> None:
    """Write ``model`` as corft's old ``save`` did: stable-baselines3's zip, with pickled objects."""
    data = {key: value for key, value in model.__dict__.items()
            if key not in OLD_EXCLUDED and key not in model.optimizer_names()}
    save_to_zip_file(path, data=data, params=model.get_parameters())


def test_convert_model_turns_an_old_file_into_one_with_identical_predictions(tiny_dataset, observation, tmp_path,
                                                                              capsys):
    model = make_algorithm("sft", tiny_dataset)
    model.learn(2)
    old, new = tmp_path / "old.zip", tmp_path / "new.zip"
    save_in_old_format(model, old)
    with pytest.raises(OldFormatError):
        SFT.load(old)
    assert main(["convert-model", str(old), str(new)]) == 0
    captured = capsys.readouterr()
    assert "convert only files you trust" in captured.err and f"wrote {new}" in captured.out
    converted = SFT.load(new)
    np.testing.assert_array_equal(converted.predict(observation)[0], model.predict(observation)[0])
    assert converted.num_timesteps == 2 and converted.chunk_size == model.chunk_size
    for name, value in model.policy.state_dict().items():
        assert torch.equal(converted.policy.state_dict()[name], value), name

    assert main(["convert-model", str(old), str(new)]) == 1
    assert f"{new} exists; choose another path" in capsys.readouterr().err
    assert main(["convert-model", str(new), str(tmp_path / "again.zip")]) == 1
    assert "is already in the model format" in capsys.readouterr().err


def test_committed_model_files_are_in_the_model_format():
    committed = subprocess.run(["git", "ls-files", "*.zip"], cwd=REPOSITORY, capture_output=True, text=True,
                               check=True).stdout.split()
    assert "benchmarks/base/model.zip" in committed
    for name in committed:
        config = read_model_config(REPOSITORY / name)
        assert config["format_version"] == 2 and config["progress"]["num_timesteps"] > 0, name


# ----------------------------------------------------------------------------
# Round trips
# ----------------------------------------------------------------------------


def assert_same_optimizers(one, other) -> None:
    for name in one.optimizer_names():
        saved, loaded = getattr(one, name).state_dict(), getattr(other, name).state_dict()
        assert loaded["param_groups"] == saved["param_groups"], name
        assert saved["state"].keys() == loaded["state"].keys() and saved["state"], name
        for index, entries in saved["state"].items():
            assert entries.keys() == loaded["state"][index].keys()
            for key, value in entries.items():
                assert torch.equal(loaded["state"][index][key], value), (name, index, key)


def test_save_and_load_keep_parameters_predictions_optimizers_and_progress(tiny_dataset, observation, tmp_path):
    model = make_algorithm("corft", tiny_dataset, value_bounds=(0.0, 1.0))
    model.learn(4)  # 2 imitation steps, then stage 2
    path = tmp_path / "model.zip"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == sorted(ZIP_MEMBERS)
        config = json.loads(archive.read(MODEL_JSON))
    assert config["format_version"] == 2 and config["algorithm_name"] == "corft"
    assert config["progress"] == {"num_timesteps": 4, "rl_started": True}
    assert config["arguments"]["value_bounds"] == [0.0, 1.0] and config["arguments"]["il_steps"] == 2
    assert config["arguments"]["policy_kwargs"] == TINY_POLICY
    assert config["instructions"] == model.instructions and config["dataset"]["env_id"] == "corft/PickPlace-v0"

    loaded = CORFT.load(path, dataset=tiny_dataset, value_bounds=(0, 1), chunk_size=4)  # equal to the saved: fine
    assert loaded.num_timesteps == 4 and loaded.rl_started and loaded.value_bounds == (0.0, 1.0)
    assert loaded.observation_space == model.observation_space and loaded.action_space == model.action_space
    assert loaded.policy.state_dict().keys() == model.policy.state_dict().keys()
    for name, value in model.policy.state_dict().items():
        assert torch.equal(loaded.policy.state_dict()[name], value), name
    for field in ("action_mean", "action_std", "binary_dims", "state_mean", "state_std"):
        np.testing.assert_array_equal(getattr(loaded.normalization, field), getattr(model.normalization, field))
    np.testing.assert_array_equal(loaded.predict(observation)[0], model.predict(observation)[0])
    assert_same_optimizers(model, loaded)
    assert [loaded.imitation_learning_rate(step) for step in (0, 50, 100)] == \
        [model.imitation_learning_rate(step) for step in (0, 50, 100)]
    loaded.learn(2, reset_num_timesteps=False)
    assert loaded.num_timesteps == 6


def test_a_path_without_a_suffix_is_saved_and_loaded_as_a_zip(tiny_dataset, observation, tmp_path):
    model = make_algorithm("sft", tiny_dataset)
    model.save(tmp_path / "model")
    assert (tmp_path / "model.zip").is_file()
    np.testing.assert_array_equal(SFT.load(tmp_path / "model").predict(observation)[0], model.predict(observation)[0])


def test_save_pretrained_and_from_pretrained(tiny_dataset, observation, tmp_path):
    model = make_algorithm("corft", tiny_dataset)
    model.learn(3)
    model.save(tmp_path / "model.zip")
    folder = tmp_path / "pretrained"
    model.save_pretrained(folder)
    assert sorted(path.name for path in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((folder / "config.json").read_text()) == read_model_config(tmp_path / "model.zip")
    loaded = CORFT.from_pretrained(folder)
    np.testing.assert_array_equal(loaded.predict(observation)[0], model.predict(observation)[0])
    assert loaded.num_timesteps == 3 and not loaded.critic_optimizer.state_dict()["state"]  # no optimizer files
    assert type(load_model(folder, device="cpu")) is CORFT

    with_optimizers = tmp_path / "resumable"
    model.save_pretrained(with_optimizers, include_optimizers=True)
    assert sorted(path.name for path in with_optimizers.iterdir()) == sorted(
        ["config.json", "model.safetensors", OPTIMIZERS_JSON, OPTIMIZERS_TENSORS])
    assert_same_optimizers(model, CORFT.from_pretrained(with_optimizers, dataset=tiny_dataset))
    with pytest.raises(NotADirectoryError, match="load a model zip with CORFT.load"):
        CORFT.from_pretrained(tmp_path / "model.zip")
    (with_optimizers / OPTIMIZERS_TENSORS).unlink()
    with pytest.raises(ModelFileError, match=f"{OPTIMIZERS_TENSORS} is missing"):
        CORFT.from_pretrained(with_optimizers)


def test_a_learning_rate_given_as_code_is_not_saved(tiny_dataset, tmp_path):
    model = SFT(dataset=tiny_dataset, chunk_size=4, batch_size=4, policy_kwargs=TINY_POLICY,
                learning_rate=lambda progress: 1e-3)
    with pytest.raises(ValueError, match="learning_rate=<function .* is a function; a model file holds JSON values"):
        model.save(tmp_path / "model.zip")
    assert not (tmp_path / "model.zip").exists()


def test_spaces_round_trip_as_json(tiny_dataset):
    env = gym.make("corft/PickPlace-v0", image_size=32, include_instruction=True, chunk_size=4)
    model = make_algorithm("sft", tiny_dataset)
    cases = [env.observation_space, env.action_space, model.observation_space, model.action_space,
             spaces.Box(np.array([-1.0, 0.0], np.float32), np.array([1.0, np.inf], np.float32))]
    env.close()
    assert isinstance(cases[0]["instruction"], spaces.Text)
    for space in cases:
        data = json.loads(json.dumps(space_to_json(space), allow_nan=False))
        assert space_from_json(data) == space
    with pytest.raises(ValueError, match="cannot store a Discrete space"):
        space_to_json(spaces.Discrete(3))


# ----------------------------------------------------------------------------
# Damaged files
# ----------------------------------------------------------------------------


def _rewrite(path: Path, changes: dict[str, bytes | None]) -> None:
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members.update(changes)
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            if content is not None:
                archive.writestr(name, content)


def _config_with(path: Path, **fields) -> bytes:
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read(MODEL_JSON))
    config.update(fields)
    return json.dumps(config).encode()


@pytest.fixture(scope="module")
def saved_sft(tiny_dataset, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("saved") / "model.zip"
    model = make_algorithm("sft", tiny_dataset)
    model.learn(1)
    model.save(path)
    return path


@pytest.mark.parametrize("damage, message", [
    (lambda path: {POLICY_TENSORS: None}, f"{POLICY_TENSORS} is missing: the model was not saved whole"),
    (lambda path: {MODEL_JSON: None}, f"not a corft model file \\(a zip with {MODEL_JSON}\\)"),
    (lambda path: {OPTIMIZERS_JSON: None}, f"{OPTIMIZERS_JSON} is missing"),
    (lambda path: {MODEL_JSON: b"{not json"}, f"{MODEL_JSON} is not valid JSON"),
    (lambda path: {POLICY_TENSORS: b"\x10\x00\x00\x00\x00\x00\x00\x00{}"}, f"{POLICY_TENSORS} is damaged"),
    (lambda path: {MODEL_JSON: _config_with(path, format_version=3)},
     f"{MODEL_JSON} is in model format 3; this corft reads format 2; upgrade corft"),
    (lambda path: {MODEL_JSON: _config_with(path, arguments=7)}, "'arguments' is missing or not a JSON dict"),
    (lambda path: {MODEL_JSON: _config_with(path, action_space={"type": "Box"})},
     "describes spaces or statistics that cannot be built"),
    (lambda path: {POLICY_TENSORS: safetensors.torch.save({"action_mean": torch.zeros(7)})},
     f"{POLICY_TENSORS} does not fit the policy {MODEL_JSON} describes .* Missing key"),
    (lambda path: {OPTIMIZERS_JSON: b'{"optimizer": {"param_groups": [], "state": {}}}'},
     f"the state of optimizer in {OPTIMIZERS_JSON} does not fit the model"),
], ids=["no-policy", "no-json", "no-optimizers", "bad-json", "bad-tensors", "newer-format", "bad-field",
        "bad-space", "other-tensors", "other-optimizer"])
def test_damaged_files_are_one_line_errors_naming_the_file(saved_sft, tmp_path, damage, message):
    path = tmp_path / "model.zip"
    shutil.copy(saved_sft, path)
    _rewrite(path, damage(path))
    with pytest.raises(ModelFileError, match=message) as refused:
        SFT.load(path)
    assert str(refused.value).startswith(f"{path}: ") and "\n" not in str(refused.value)


def test_unreadable_files_are_one_line_errors_naming_the_file(saved_sft, tmp_path):
    text = tmp_path / "text.zip"
    text.write_text("not a zip")
    with pytest.raises(ModelFileError, match=f"^{text}: not a readable model zip"):
        read_model(text)
    flipped = tmp_path / "flipped.zip"
    data = bytearray(saved_sft.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the policy's tensors: the member fails its CRC
    flipped.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=f"^{flipped}: not a readable model zip \\(Bad CRC-32"):
        read_model(flipped)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_model(tmp_path / "missing.zip")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelFileError, match="holds no config.json: it is not a model written by save_pretrained"):
        read_model(empty)


# ----------------------------------------------------------------------------
# A vision tower from a folder
# ----------------------------------------------------------------------------


def save_tiny_vit(folder: Path, hidden_size: int = 24) -> None:
    from transformers import ViTConfig, ViTModel

    ViTModel(ViTConfig(hidden_size=hidden_size, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48,
                       image_size=32, patch_size=8)).save_pretrained(folder)


def test_a_model_with_a_vision_model_folder_loads_without_the_folder(tiny_dataset, observation, tmp_path):
    folder = tmp_path / "tiny-vit"
    save_tiny_vit(folder)
    policy_kwargs = {**{k: v for k, v in TINY_POLICY.items() if k != "vision_config"}, "vision_model": str(folder)}
    model = SFT(dataset=tiny_dataset, chunk_size=4, batch_size=4, seed=0, policy_kwargs=policy_kwargs)
    model.learn(1)
    chunk, _ = model.predict(observation)
    model.save(tmp_path / "model.zip")
    config = read_model_config(tmp_path / "model.zip")
    assert config["vision_model_config"]["model_type"] == "vit"
    assert config["arguments"]["policy_kwargs"] == policy_kwargs

    shutil.move(folder, tmp_path / "moved-away")
    loaded = SFT.load(tmp_path / "model.zip")
    assert type(loaded.policy.vision.model).__name__ == "ViTModel"
    np.testing.assert_array_equal(loaded.predict(observation)[0], chunk)
    for name, value in model.policy.state_dict().items():
        assert torch.equal(loaded.policy.state_dict()[name], value), name
    stage_two = CORFT.from_sft(tmp_path / "model.zip", dataset=tiny_dataset, batch_size=4)
    np.testing.assert_array_equal(stage_two.predict(observation)[0], chunk)
    loaded.save(tmp_path / "again.zip")  # saved again from the rebuilt tower, still without the folder
    assert read_model_config(tmp_path / "again.zip")["vision_model_config"] == config["vision_model_config"]


def test_a_config_that_does_not_rebuild_the_tower_is_found(tmp_path):
    from transformers import AutoModel

    save_tiny_vit(tmp_path / "narrow", hidden_size=24)
    save_tiny_vit(tmp_path / "wide", hidden_size=32)
    tower = AutoModel.from_pretrained(tmp_path / "narrow")
    assert vision_model_config_problems(folder_model_config(tmp_path / "narrow"), tower) == []
    problems = vision_model_config_problems(folder_model_config(tmp_path / "wide"), tower)
    assert "embeddings.cls_token is ((1, 1, 32), torch.float32) instead of ((1, 1, 24), torch.float32)" in problems
    unknown = {**folder_model_config(tmp_path / "narrow"), "model_type": "no_such_model"}
    assert vision_model_config_problems(unknown, tower) == [
        "building it from its config fails (the vision model's config has model_type 'no_such_model', which "
        f"transformers {transformers.__version__} does not know)"]
