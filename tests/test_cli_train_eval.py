"""`corft collect` -> `corft train` -> `corft eval` end to end with the real algorithms; resume, Ctrl-C, errors."""

from __future__ import annotations

import contextlib
import ctypes
import csv
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.wrappers import FilterObservation

from corft_algos.callbacks import is_better, list_checkpoints
from corft_algos.cli import build_parser, main
from corft_algos.cli.collect import actor_arguments, collect_command, collect_config
from corft_algos.cli.common import is_interrupt
from corft_algos.common.base import TrainingDivergedError
from corft_algos.evaluation import EpisodeOutcome, EvalResult, load_model
from corft_algos.model_format import read_model_config
from corft_algos.runs import EvalRequest, UsageError
from corft_algos.sft import SFT
from corft_envs.episode_store import EpisodeDataset
from corft_envs.folder_lock import FolderLock
from corft_envs.sim_env import FR3TabletopEnv
from tests.helpers import CHUNK, TINY_POLICY, train_args, wait_for_files

ENV_ID = "corft/PickPlace-v0"
REPO = Path(__file__).resolve().parents[1]
NO_WRIST_ID = "corft_test/PickPlaceNoWrist-v0"


pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("torch_threads_restored")]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "pickplace_3"
    assert main(["collect", "--env", ENV_ID, "--episodes", "3", "--out", str(out), "--image-size", "32",
                 "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> tuple[Path, str]:
    """A run trained for 4 SFT steps, evaluated in sim at steps 2 and 4, and what `corft train` printed."""
    out = tmp_path_factory.mktemp("runs") / "sft"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(train_args(dataset, out, 4, "--eval-env", ENV_ID, "--eval-every", "2", "--eval-episodes", "1")) == 0
    return out, printed.getvalue()


@pytest.fixture
def no_wrist_env():
    """An env id whose observations lack the wrist camera: a model trained on PickPlace cannot act in it."""
    gym.register(NO_WRIST_ID, entry_point=lambda **kwargs: FilterObservation(
        FR3TabletopEnv(task="PickPlace", **kwargs), ["image_front", "state", "instruction"]), max_episode_steps=150)
    yield NO_WRIST_ID
    del gym.registry[NO_WRIST_ID]


def test_train_writes_model_checkpoints_logs_and_summary(trained, dataset):
    out, printed = trained
    model = load_model(out / "model.zip", device="cpu")
    assert type(model) is SFT and model.num_timesteps == 4 and model.chunk_size == CHUNK
    assert model.dataset_env_id == ENV_ID and model.batch_size == 4
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["rl_model_2_steps.zip", "rl_model_4_steps.zip"]
    with open(out / "progress.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(float(row["time/gradient_steps"])) for row in rows if row["time/gradient_steps"]] == [2, 4]
    assert [float(row["eval/success_rate"]) for row in rows if row["eval/success_rate"]] == [0.0, 0.0]
    assert all(float(row["train/imitation_loss"]) > 0 for row in rows if row["train/imitation_loss"])
    assert "sft: 4 gradient steps" in printed and "imitation_loss" in printed
    assert f"best eval in {ENV_ID}: success rate 0.000 at step 2 ({out / 'best_model.zip'})" in printed
    assert load_model(out / "best_model.zip", device="cpu").num_timesteps == 2
    assert f"model: {out / 'model.zip'}" in printed


def _result(successes: int, steps: list[int]) -> EvalResult:
    episodes = [EpisodeOutcome(seed=k, success=k < successes, steps=n, cycle_time_s=n / 10, instruction="x",
                              episode_return=float(k < successes)) for k, n in enumerate(steps)]
    return EvalResult(ENV_ID, "train", 0, episodes)


def test_best_result_has_the_higher_success_rate_then_the_shorter_cycle_time():
    assert is_better(_result(0, [150]), None)
    assert is_better(_result(2, [50, 60, 150]), _result(1, [40, 150, 150]))
    assert not is_better(_result(1, [40, 150, 150]), _result(2, [50, 60, 150]))
    assert is_better(_result(2, [40, 50, 150]), _result(2, [50, 60, 150]))
    assert not is_better(_result(2, [50, 60, 150]), _result(2, [50, 60, 150]))
    assert not is_better(_result(0, [150, 150]), _result(0, [150, 150]))


def test_eval_prints_and_writes_json(trained, tmp_path, capsys):
    """Without ``--threads`` the policy runs on one torch thread (the count is saved: it changes the rollouts),
    and the process's own count is back afterwards."""
    out, _ = trained
    report = tmp_path / "report" / "eval.json"
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main(["eval", "--model", str(out / "model.zip"), "--env", ENV_ID, "--positions", "unseen",
                     "--episodes", "1", "--seed", "7", "--execute", "4", "--json", str(report), "--device", "cpu",
                     "--quiet"]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
    printed = capsys.readouterr().out
    assert "success rate" in printed and "95% CI" in printed and "episode   0  seed 7" in printed
    data = json.loads(report.read_text())
    assert set(data) == {"success_rate", "success_ci95", "cycle_time_steps", "cycle_time_s", "episodes",
                         "env_id", "positions", "num_episodes", "seed", "named_object_first_rate", "execute",
                         "torch_threads"}
    assert data["torch_threads"] == 1 and data["execute"] == 4
    assert data["env_id"] == ENV_ID and data["positions"] == "unseen" and data["num_episodes"] == 1
    assert data["episodes"][0]["seed"] == 7 and 0 < data["episodes"][0]["steps"] <= 150


def test_eval_request_refuses_a_thread_count_below_one():
    with pytest.raises(UsageError, match="threads must be at least 1 or None"):
        EvalRequest(Path("model.zip"), threads=0)


@pytest.mark.slow
def test_eval_with_workers_gives_the_serial_result(trained, tmp_path, capsys):
    out, _ = trained
    reports = {}
    for workers in (1, 2):
        reports[workers] = tmp_path / f"workers_{workers}.json"
        assert main(["eval", "--model", str(out / "model.zip"), "--env", ENV_ID, "--episodes", "3", "--seed", "3",
                     "--workers", str(workers), "--execute", "5", "--json", str(reports[workers]), "--device", "cpu",
                     "--threads", "1", "--quiet"]) == 0, capsys.readouterr().err
    serial, parallel = (json.loads(reports[w].read_text()) for w in (1, 2))
    assert parallel == serial
    assert [episode["seed"] for episode in parallel["episodes"]] == [3, 4, 5]
    assert main(["eval", "--model", str(out / "model.zip"), "--episodes", "1", "--workers", "2",
                 "--video", str(tmp_path / "v")]) == 1
    assert "--workers runs sim envs only" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.twin
def test_sim_trained_model_runs_unchanged_on_the_twin(trained, tmp_path, capsys):
    """The real env's code path (franky to franky-sim, pyrealsense2 software cameras) with a sim-trained model."""
    out, _ = trained
    report = tmp_path / "twin.json"
    assert main(["eval", "--model", str(out / "model.zip"), "--env", "corft/FR3Real-PickPlace-v0",
                 "--robot-host", "twin", "--episodes", "1", "--json", str(report), "--device", "cpu",
                 "--threads", "1", "--quiet"]) == 0, capsys.readouterr().err
    data = json.loads(report.read_text())
    assert data["env_id"] == "corft/FR3Real-PickPlace-v0" and data["num_episodes"] == 1
    episode = data["episodes"][0]
    # an episode runs to its end, or a chunk the safety layer rejects ends it as a failure
    assert episode["steps"] == 150 or (episode["rejected"].startswith("chunk rejected, nothing was sent")
                                       and not episode["success"])


def test_collect_records_a_trained_policys_rollouts_with_their_failures(trained, dataset, tmp_path, capsys):
    out, _ = trained
    store = tmp_path / "rollouts"
    assert main(["collect", "--env", ENV_ID, "--policy", str(out / "model.zip"), "--episodes", "2", "--keep-failures",
                 "--chunk-size", "5", "--seed", "3", "--out", str(store), "--quiet"]) == 0, capsys.readouterr().err
    model = load_model(out / "model.zip", device="cpu")
    with EpisodeDataset(store) as rollouts, EpisodeDataset(dataset) as demos:
        assert len(rollouts) == 2 and rollouts.seeds == [3, 4] and rollouts.meta.keep_failures
        assert rollouts.observation_space == demos.observation_space  # the model's image size, by default
        episode = rollouts[0]
        low, high = rollouts.action_space.low, rollouts.action_space.high
        for start, first in ((0, True), (5, False)):  # it predicts a chunk, runs 5 actions, predicts again
            observation = {key: value[start] for key, value in episode.observations.items()}
            chunk, _ = model.predict({**observation, "instruction": episode.instruction},
                                     episode_start=np.array([first]))
            np.testing.assert_allclose(episode.actions[start:start + 5], np.clip(chunk[:5], low, high), atol=1e-5)
    # the rollouts train together with the demonstrations
    args = train_args(dataset, tmp_path / "run", 2)
    data = args.index("--data") + 2
    assert main(args[:data] + [str(store)] + args[data:]) == 0, capsys.readouterr().err


def test_collect_policy_noise_moves_each_chunk_by_one_offset_drawn_from_the_episode_seed(trained, tmp_path, capsys):
    out, _ = trained
    model = load_model(out / "model.zip", device="cpu")
    stores = [tmp_path / "noisy", tmp_path / "again"]
    for store in stores:
        assert main(["collect", "--env", ENV_ID, "--policy", str(out / "model.zip"), "--policy-noise", "0.3",
                     "--episodes", "1", "--keep-failures", "--chunk-size", "5", "--seed", "3", "--out", str(store),
                     "--quiet"]) == 0, capsys.readouterr().err
    with EpisodeDataset(stores[0]) as noisy, EpisodeDataset(stores[1]) as again:
        episode = noisy[0].load()
        np.testing.assert_array_equal(episode.actions, again[0].load().actions)  # the seed decides the offsets
        observation = {key: value[0] for key, value in episode.observations.items()}
        own, _ = model.predict({**observation, "instruction": episode.instruction}, episode_start=np.array([True]))
        policy = model.policy
        recorded = policy.normalize_actions(torch.as_tensor(episode.actions[:5]))
        expected = policy.normalize_actions(torch.as_tensor(own[:5]))
        shift = (recorded - expected)[:, policy.continuous_index].numpy()
        inside = np.all((episode.actions[:5] > noisy.action_space.low) & (episode.actions[:5] < noisy.action_space.high),
                        axis=0)[policy.continuous_index.numpy()]  # dims the action bounds did not clip
        assert inside.any()
        np.testing.assert_allclose(shift[:, inside], np.broadcast_to(shift[:1, inside], shift[:, inside].shape),
                                   atol=1e-4)  # one offset for the whole chunk
        assert np.abs(shift[0, inside]).max() > 0.01
        np.testing.assert_array_equal(episode.actions[:5, policy.binary_index.numpy()],
                                      own[:5, policy.binary_index.numpy()])  # the gripper as the model's
    assert main(["collect", "--env", ENV_ID, "--episodes", "1", "--out", str(tmp_path / "x"), "--policy-noise", "0.3",
                 "--quiet"]) == 1
    assert "pass --policy MODEL too" in capsys.readouterr().err


def test_collect_resume_command_keeps_the_acting_policy(tmp_path):
    args = build_parser().parse_args(["collect", "--env", ENV_ID, "--episodes", "4", "--out", str(tmp_path / "r"),
                                      "--policy", "runs/sft/model.zip", "--policy-noise", "0.2", "--keep-failures"])
    words = shlex.split(collect_command(collect_config(args), actor_arguments(args)))
    again = build_parser().parse_args(words[1:])
    assert collect_config(again) == collect_config(args)
    assert (again.policy, again.policy_noise) == (Path("runs/sft/model.zip"), 0.2)


def test_collect_policy_errors_are_clear(trained, tmp_path, capsys):
    model = str(trained[0] / "model.zip")
    store = tmp_path / "store"
    base = ["collect", "--env", ENV_ID, "--episodes", "1", "--out", str(store), "--quiet"]
    assert main(base + ["--policy", model, "--chunk-size", str(CHUNK + 1)]) == 1
    assert f"pass --chunk-size {CHUNK} or less" in capsys.readouterr().err
    assert main(base + ["--policy", model, "--image-size", "48"]) == 1
    assert "does not fit the env" in capsys.readouterr().err
    assert main(base + ["--policy", model, "--teleop", "keyboard"]) == 1
    assert "--policy and --teleop both choose who acts" in capsys.readouterr().err
    assert main(base + ["--policy", str(tmp_path / "missing.zip")]) == 1
    assert "missing.zip" in capsys.readouterr().err
    assert not store.exists()  # refused before anything was written


def test_real_env_without_a_robot_host_is_a_clear_error(trained, capsys):
    out, _ = trained
    assert main(["eval", "--model", str(out / "model.zip"), "--env", "corft/FR3Real-PickPlace-v0",
                 "--episodes", "1", "--device", "cpu", "--quiet"]) == 1
    assert "robot_host is required" in capsys.readouterr().err


def test_rerun_of_a_finished_run_changes_nothing(trained, dataset, capsys):
    out, _ = trained
    before = (out / "model.zip").stat().st_mtime_ns
    assert main(train_args(dataset, out, 4)) == 0
    assert "already trained" in capsys.readouterr().out
    assert (out / "model.zip").stat().st_mtime_ns == before
    assert main(train_args(dataset, out, 3)) == 1
    assert "past the requested 3" in capsys.readouterr().err


def test_rerun_with_more_steps_resumes_from_the_model(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(dataset, out, 2)) == 0
    assert main(train_args(dataset, out, 4)) == 0
    assert f"resumed from {out / 'model.zip'} at gradient step 2" in capsys.readouterr().out
    assert read_model_config(out / "model.zip")["progress"]["num_timesteps"] == 4
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["rl_model_2_steps.zip", "rl_model_4_steps.zip"]
    with open(out / "progress_from_step_2.csv") as handle:
        assert [int(float(row["time/gradient_steps"])) for row in csv.DictReader(handle)] == [4]


def _fail_at_step(monkeypatch, step: int, error: BaseException) -> None:
    original = SFT.train_step

    def train_step(self):
        if self.num_timesteps + 1 == step:
            raise error
        return original(self)

    monkeypatch.setattr(SFT, "train_step", train_step)


def test_ctrl_c_exits_130_and_rerun_resumes_from_the_checkpoint(dataset, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _fail_at_step(monkeypatch, 3, KeyboardInterrupt())
    assert main(train_args(dataset, out, 4)) == 130
    checkpoint = out / "checkpoints" / "rl_model_2_steps.zip"
    assert f"interrupted; the last good checkpoint is kept at {checkpoint} (step 2)" in capsys.readouterr().err
    assert not (out / "model.zip").exists()

    monkeypatch.undo()
    assert main(train_args(dataset, out, 4)) == 0
    assert f"resumed from {checkpoint} at gradient step 2" in capsys.readouterr().out
    assert read_model_config(out / "model.zip")["progress"]["num_timesteps"] == 4


@pytest.mark.slow
def test_sigkill_then_rerun_ends_with_the_parameters_of_an_uninterrupted_run(dataset, tmp_path, capsys):
    """A real SIGKILL (no handler runs, the lock file stays) once a checkpoint is on disk; rerunning the same
    command resumes from it and ends with exactly the parameters of a run never interrupted, as the sampler's
    and the augmentation's random streams are saved with each checkpoint."""
    steps = 300  # far more than are trained between the first checkpoint and the kill (100 take ~1.5 s)
    reference = tmp_path / "uninterrupted"
    assert main(train_args(dataset, reference, steps)) == 0
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "corft_algos.cli", *train_args(dataset, out, steps)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # a checkpoint is written atomically, so it is whole once there
        wait_for_files(out / "checkpoints", "rl_model_*_steps.zip", process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    assert process.returncode == -signal.SIGKILL and not (out / "model.zip").exists()
    killed_at = max(steps for steps, _ in list_checkpoints(out / "checkpoints"))
    assert killed_at < steps, "the run finished before it was killed"

    capsys.readouterr()
    assert main(train_args(dataset, out, steps)) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert f"taking over {out / '.lock'} from process {process.pid}, which ended without releasing it" in printed
    assert f"at gradient step {killed_at}" in printed
    resumed = load_model(out / "model.zip", device="cpu").policy.state_dict()
    uninterrupted = load_model(reference / "model.zip", device="cpu").policy.state_dict()
    assert resumed.keys() == uninterrupted.keys()
    different = [name for name in resumed if not torch.equal(resumed[name], uninterrupted[name])]
    assert not different, f"{len(different)} tensors differ from the uninterrupted run's, e.g. {different[:3]}"


def test_divergence_exits_1_naming_the_last_checkpoint(dataset, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _fail_at_step(monkeypatch, 3, TrainingDivergedError("imitation_loss is nan"))
    assert main(train_args(dataset, out, 4)) == 1
    err = capsys.readouterr().err
    assert "training diverged at gradient step 3: imitation_loss is nan" in err
    assert f"last good checkpoint is kept at {out / 'checkpoints' / 'rl_model_2_steps.zip'}" in err
    assert not (out / "model.zip").exists()


def test_missing_dataset_suggests_collect(tmp_path, capsys):
    assert main(train_args(tmp_path / "nowhere", tmp_path / "run", 2)) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("corft train: error:") and "corft collect" in err and len(err.splitlines()) == 1


def damage_bytes(path: Path) -> None:
    """Zero 64 bytes in the middle of ``path``: a write cut short, or bits gone (the zip's CRCs catch it)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(data))


def replace_zip_member(path: Path, member: str, content: bytes) -> None:
    """Rewrite the zip ``path`` with ``member`` holding ``content``: a damaged file whose CRC is right
    (damaged before it was zipped, or by a tool that rewrote the archive)."""
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    assert member in members
    members[member] = content
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def test_damaged_saved_states_are_skipped_for_the_newest_intact_one(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(dataset, out, 6)) == 0  # checkpoints at steps 2, 4 and 6, model.zip at 6
    checkpoints = out / "checkpoints"
    damage_bytes(out / "model.zip")
    damage_bytes(checkpoints / "rl_model_6_steps.zip")
    replace_zip_member(checkpoints / "rl_model_4_steps.zip", "policy.safetensors", b"\x80\x02 not safetensors")
    capsys.readouterr()
    assert main(train_args(dataset, out, 8)) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    for path in (out / "model.zip", checkpoints / "rl_model_6_steps.zip"):
        assert f"skipping {path}: " in printed
    assert f"skipping {checkpoints / 'rl_model_4_steps.zip'}: policy.safetensors is damaged" in printed
    assert f"resumed from {checkpoints / 'rl_model_2_steps.zip'} at gradient step 2" in printed
    assert load_model(out / "model.zip", device="cpu").num_timesteps == 8


@pytest.mark.parametrize("damage, message", [
    (damage_bytes, r"not a readable model zip \(Bad CRC-32 for file"),
    (lambda path: replace_zip_member(path, "policy.safetensors", b"\x80\x02 not safetensors"),
     r"policy\.safetensors is damaged"),
    (lambda path: replace_zip_member(path, "policy.safetensors",
                                     zipfile.ZipFile(path).read("policy.safetensors")[:500]),
     r"policy\.safetensors is damaged"),
])
def test_a_damaged_model_is_one_line_naming_it_in_eval_collect_and_init_from(trained, dataset, tmp_path, capsys,
                                                                             damage, message):
    source, _ = trained
    model = Path(shutil.copy(source / "model.zip", tmp_path / "model.zip"))
    damage(model)
    commands = {
        "eval": ["eval", "--model", str(model), "--episodes", "1", "--device", "cpu", "--quiet"],
        "collect": ["collect", "--env", ENV_ID, "--policy", str(model), "--episodes", "1", "--out",
                    str(tmp_path / "store"), "--quiet"],
        "train": train_args(dataset, tmp_path / "run", 1, "--init-from", str(model)),
    }
    for name, command in commands.items():
        assert main(command) == 1, name
        err = capsys.readouterr().err
        assert err.startswith(f"corft {name}: error: ") and re.search(f"{model} cannot be loaded: {message}", err), err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "store").exists() and not (tmp_path / "run" / "model.zip").exists()


def test_chunk_size_differing_from_the_resumed_checkpoint(trained, dataset, capsys):
    out, _ = trained
    args = train_args(dataset, out, 6)
    args[args.index("--chunk-size") + 1] = "4"
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"--chunk-size 4 differs from chunk size {CHUNK}" in err and "new --out" in err


def test_resuming_on_other_data_is_refused_but_a_copy_of_the_same_data_resumes(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(dataset, out, 2)) == 0
    other = tmp_path / "other"
    assert main(["collect", "--env", ENV_ID, "--episodes", "2", "--seed", "7", "--out", str(other),
                 "--image-size", "32", "--quiet"]) == 0
    capsys.readouterr()
    assert main(train_args(other, out, 4)) == 1
    err = capsys.readouterr().err
    assert f"--data {other} is not the data {out / 'model.zip'} was trained on ({dataset.resolve()})" in err
    assert f"rerun with --data {dataset.resolve()} or choose a new --out" in err
    assert load_model(out / "model.zip", device="cpu").num_timesteps == 2, "nothing trained on the other data"
    moved = shutil.copytree(dataset, tmp_path / "moved")
    assert main(train_args(moved, out, 4)) == 0, capsys.readouterr().err
    assert load_model(out / "model.zip", device="cpu").num_timesteps == 4


@pytest.mark.parametrize("flags, message", [
    (("--policy-kwargs", '{"nope": 1}'), "--policy-kwargs: VLAPolicy takes no argument nope; it takes"),
    (("--policy-kwargs", '{"d_model": "x"}'), "--policy-kwargs: d_model='x' is not int"),
    (("--policy-kwargs", '{"d_model": 30, "heads": 4}'), "d_model=30 must be a multiple of heads=4"),
    (("--policy-kwargs", '{"vision_tokens": -3}'), "vision_tokens must be at least 1, got -3"),
    (("--policy-kwargs", '{"fusion_layers": 0}'), "fusion_layers must be at least 1, got 0"),
    (("--algo-kwargs", '{"max_grad_norm": "x"}'), "--algo-kwargs: max_grad_norm='x' is not float"),
    (("--algo-kwargs", '{"execute": "5"}'), "--algo-kwargs: execute='5' is not int | None"),
    (("--device", "tpu9"), "--device 'tpu9' is not a device: use cpu, cuda, cuda:N or auto"),
])
def test_bad_arguments_are_one_line_before_anything_runs(dataset, tmp_path, capsys, flags, message):
    args = [arg for arg in train_args(dataset, tmp_path / "run", 1) if arg not in ("--device", "cpu")]
    if "--policy-kwargs" in flags:
        at = args.index("--policy-kwargs")
        del args[at:at + 2]
    assert main([*args, *flags]) == 1
    err = capsys.readouterr().err
    assert err.startswith("corft train: error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "run" / "model.zip").exists()


def test_out_pointing_at_a_file_is_refused_by_train_and_collect(dataset, tmp_path, capsys):
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me")
    assert main(train_args(dataset, existing, 1)) == 1
    assert f"--out {existing} is a file; give a directory" in capsys.readouterr().err
    assert main(["collect", "--env", ENV_ID, "--episodes", "1", "--out", str(existing), "--quiet"]) == 1
    assert f"{existing} is a file; give a directory for the episode store" in capsys.readouterr().err
    assert existing.read_text() == "keep me"


@pytest.mark.parametrize("command, message", [
    (["eval", "--positions", "unseen", "--env-kwargs", '{"positions": "train"}'],
     "--env-kwargs sets positions='train', --positions sets 'unseen': give each setting once"),
    (["eval", "--env-kwargs", '{"image_size": 64}'], "--env-kwargs sets image_size=64, the model's image size sets 32"),
    (["eval", "--env-kwargs", '{"nope": 1}'],
     "cannot be made with ['nope'] from --env-kwargs: FR3TabletopEnv.__init__() got an unexpected keyword"),
    (["collect", "--env", ENV_ID, "--positions", "unseen", "--env-kwargs", '{"positions": "train"}'],
     "--env-kwargs sets positions='train', --positions sets 'unseen'"),
    (["eval", "--env-kwargs", '{"chunk_size": 4}'],
     "--env-kwargs may not set chunk_size: the evaluation runs the model's chunks itself (--execute K"),
    (["collect", "--env", ENV_ID, "--env-kwargs", '{"execute": 4}'],
     "--env-kwargs may not set execute: corft collect records single steps and chunks the actions itself"),
])
def test_env_kwargs_that_contradict_a_flag_or_the_env_are_one_line_errors(trained, tmp_path, capsys, command, message):
    source, _ = trained
    target = ["--model", str(source / "model.zip")] if command[0] == "eval" else ["--out", str(tmp_path / "store")]
    assert main([*command, *target, "--episodes", "1", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "store").exists()


def test_a_second_train_on_a_busy_run_folder_is_refused_and_a_dead_holders_lock_is_not(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with FolderLock(out):  # as a live `corft train` holds it
        assert main(train_args(dataset, out, 1)) == 1
        err = capsys.readouterr().err
        assert f"another corft train (process {os.getpid()} is writing {out}) is training in --out {out}" in err
        assert not (out / "model.zip").exists()
    (out / ".lock").write_text("999999")  # the file a killed run leaves: its lock died with it
    assert main(train_args(dataset, out, 1)) == 0, capsys.readouterr().err
    assert (out / "model.zip").is_file()
    assert f"taking over {out / '.lock'} from process 999999, which ended without releasing it" in \
        capsys.readouterr().out
    assert (out / ".lock").read_text() == ""  # released: the next run takes nothing over
    assert main(train_args(dataset, out, 2)) == 0, capsys.readouterr().err
    assert "taking over" not in capsys.readouterr().out


def test_ctrl_c_inside_a_ctypes_call_counts_as_an_interrupt():
    # MuJoCo's EGL rendering is a ctypes call: Ctrl-C landing there arrives wrapped in an ArgumentError
    assert is_interrupt(KeyboardInterrupt()) and is_interrupt(ctypes.ArgumentError("argument 1: KeyboardInterrupt: "))
    assert not is_interrupt(ctypes.ArgumentError("argument 1: TypeError: wrong type"))
    assert not is_interrupt(ValueError("KeyboardInterrupt"))


def test_step_flags_must_fit_the_algorithm(dataset, tmp_path, capsys):
    def train(algo: str, *flags: str) -> int:
        return main(["train", "--algo", algo, "--data", str(dataset), "--out", str(tmp_path / algo), *flags])

    assert train("corft", "--steps", "4") == 1
    assert "--il-steps + --rl-steps" in capsys.readouterr().err
    assert train("sft", "--rl-steps", "4") == 1
    assert "--il-steps and --rl-steps are for staged algorithms" in capsys.readouterr().err
    assert train("sac") == 1
    assert "unknown algorithm 'sac'; registered: bc, corft, offline_rl_h1, sft" in capsys.readouterr().err


def test_a_models_env_id_is_checked_before_gym_make_imports_anything(trained, tmp_path, capsys):
    out, _ = trained
    model = load_model(out / "model.zip", device="cpu")
    model.dataset_env_id = "this:Zen-v0"  # gym.make would import the module `this`, which prints
    model.save(tmp_path / "crafted.zip")
    capsys.readouterr()
    assert main(["eval", "--model", str(tmp_path / "crafted.zip"), "--episodes", "1", "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "the model names the env 'this:Zen-v0', which is not a registered env id; pass the env" in captured.err
    assert "Beautiful is better than ugly" not in captured.out + captured.err


def test_eval_of_a_missing_model(tmp_path, capsys):
    assert main(["eval", "--model", str(tmp_path / "model.zip"), "--episodes", "1"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_eval_of_a_model_for_other_spaces(trained, no_wrist_env, capsys):
    out, _ = trained
    assert main(["eval", "--model", str(out / "model.zip"), "--env", no_wrist_env, "--episodes", "1",
                 "--device", "cpu", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"the model (trained on {ENV_ID}) does not fit {no_wrist_env}" in err
    assert "key 'image_wrist' missing" in err


def test_corft_trains_both_stages(dataset, tmp_path, capsys):
    out = tmp_path / "corft"
    assert main(["train", "--algo", "corft", "--data", str(dataset), "--out", str(out), "--il-steps", "1",
                 "--rl-steps", "2", "--batch-size", "4", "--chunk-size", str(CHUNK), "--checkpoint-every", "2",
                 "--policy-kwargs", json.dumps(TINY_POLICY), "--device", "cpu", "--threads", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "corft: 3 gradient steps" in printed and "td_loss" in printed
    assert read_model_config(out / "model.zip")["progress"]["num_timesteps"] == 3

    evaluate = ["eval", "--model", str(out / "model.zip"), "--episodes", "1", "--device", "cpu", "--threads", "1",
                "--quiet", "--candidates", "4"]
    assert main([*evaluate, "--selection", "random"]) == 0
    assert "random choice of 4 candidates (σ 0.1)" in capsys.readouterr().out
    sft = tmp_path / "sft"
    assert main(train_args(dataset, sft, 1)) == 0
    capsys.readouterr()
    assert main([*evaluate[:2], str(sft / "model.zip"), *evaluate[3:]]) == 1
    assert "critic-ranked selection needs a model with a critic (CORFT); SFT has none" in capsys.readouterr().err
    ensemble = [*evaluate[:-2], "--candidate-models", str(sft / "model.zip"), str(sft / "model.zip")]
    assert main(ensemble) == 0
    assert "critic choice of 3 candidates (the model's chunk and 2 other models')" in capsys.readouterr().out
    assert main([*ensemble, "--candidates", "4"]) == 1
    assert "--candidate-models sets the candidates" in capsys.readouterr().err


def test_algo_kwargs_reach_the_algorithm_and_unknown_ones_are_refused(dataset, tmp_path, capsys):
    out = tmp_path / "corft_ablation"
    common = ["train", "--algo", "corft", "--data", str(dataset), "--il-steps", "1", "--rl-steps", "1",
              "--batch-size", "4", "--chunk-size", str(CHUNK), "--policy-kwargs", json.dumps(TINY_POLICY),
              "--device", "cpu", "--threads", "1", "--quiet"]
    assert main([*common, "--out", str(out), "--algo-kwargs", '{"calql_alpha": 0.0, "boundary_only": true}']) == 0
    model = load_model(out / "model.zip", device="cpu")
    assert model.calql_alpha == 0.0 and model.boundary_only is True
    assert main([*common, "--out", str(tmp_path / "x"), "--algo-kwargs", '{"calql_alfa": 0.0}']) == 1
    assert "takes no argument calql_alfa" in capsys.readouterr().err
    assert main([*common, "--out", str(tmp_path / "y"), "--algo-kwargs", '{"chunk_size": 5}']) == 1
    assert "have flags of their own" in capsys.readouterr().err


def test_init_from_copies_every_policy_weight_of_a_model_with_the_same_architecture(trained, dataset, tmp_path,
                                                                                     capsys):
    source, _ = trained
    out = tmp_path / "finetuned"
    assert main(train_args(dataset, out, 1, "--init-from", str(source / "model.zip"))) == 0
    printed = capsys.readouterr().out
    source_model = load_model(source / "model.zip", device="cpu")
    trainable = [name for name, _ in source_model.policy.named_parameters()]
    normalization = ["action_mean", "action_std", "state_mean", "state_std"]  # the base's units come along
    assert f"initialised {len(trainable) + len(normalization)} tensors from" in printed
    assert main(train_args(dataset, tmp_path / "z", 1, "--init-from", str(tmp_path / "missing.zip"))) == 1
    assert "does not exist" in capsys.readouterr().err


def test_store_mix_sets_each_stores_share_from_the_command_line(dataset, tmp_path, capsys):
    out = tmp_path / "mixed"
    two_stores = ("--data", str(dataset), str(dataset))
    assert main(train_args(dataset, out, 1, *two_stores, "--store-mix", "1", "3")) == 0, capsys.readouterr().err
    model = load_model(out / "model.zip", device="cpu")
    assert model.store_mix == [1.0, 3.0]
    assert json.loads((out / "config.json").read_text())["algo_kwargs"]["store_mix"] == [1.0, 3.0]
    assert main(train_args(dataset, tmp_path / "bad", 1, *two_stores, "--store-mix", "1")) == 1
    assert "--store-mix gives 1 shares for 2 --data stores" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(train_args(dataset, tmp_path / "bad", 1, *two_stores, "--store-mix", "1", "0"))
    assert "must be a positive number" in capsys.readouterr().err


@pytest.mark.slow
def test_dataloader_workers_train_from_the_command_line(dataset, tmp_path, capsys):
    out = tmp_path / "workers"
    assert main(train_args(dataset, out, 2, "--num-workers", "2")) == 0, capsys.readouterr().err
    model = load_model(out / "model.zip", device="cpu")
    assert model.num_workers == 2 and model.num_timesteps == 2
