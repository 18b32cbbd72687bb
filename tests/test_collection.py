"""`corft collect` on the real sim env: recording, kill/resume, Ctrl-C, mismatched resume."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from corft_algos.cli import build_parser, main
from corft_algos.cli.collect import collect_command, collect_config
from corft_envs.collection import CollectConfig, collect
from corft_envs.episode_store import INDEX_NAME, DatasetError, EpisodeDataset, read_index
from corft_envs.folder_lock import LOCK_NAME
from tests.helpers import IdleOnOddSeeds, wait_for_files

pytestmark = pytest.mark.integration

ENV_ID = "corft/PickPlace-v0"
IMAGE_SIZE = 32
REPO = Path(__file__).resolve().parents[1]


def collect_args(out: Path, episodes: int, *extra: str) -> list[str]:
    return ["collect", "--env", ENV_ID, "--episodes", str(episodes), "--positions", "train", "--out", str(out),
            "--seed", "3", "--image-size", str(IMAGE_SIZE), "--keep-failures", "--quiet", *extra]


def start_collector(args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    return subprocess.Popen([sys.executable, "-m", "corft_algos.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def index_episodes(out: Path) -> list[dict]:
    return json.loads((out / INDEX_NAME).read_text())["episodes"]


def assert_same_datasets(actual: Path, expected: Path) -> None:
    assert index_episodes(actual) == index_episodes(expected)
    left, right = EpisodeDataset(actual), EpisodeDataset(expected)
    for a, b in zip(left, right):
        a_data, b_data = a.load(), b.load()
        for key in b_data.observations:
            np.testing.assert_array_equal(a_data.observations[key], b_data.observations[key])
        np.testing.assert_array_equal(a_data.actions, b_data.actions)
        np.testing.assert_array_equal(a_data.rewards, b_data.rewards)
        np.testing.assert_array_equal(a_data.is_success, b_data.is_success)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted, in-process run of 4 episodes."""
    out = tmp_path_factory.mktemp("reference") / "data"
    assert main(collect_args(out, 4)) == 0
    return out


def test_collected_episodes_load_and_fit_the_env(reference: Path, make_env) -> None:
    dataset = EpisodeDataset(reference)
    assert len(dataset) == 4 and dataset.seeds == [3, 4, 5, 6]
    assert dataset.env_id == ENV_ID
    assert dataset.env_kwargs == {"positions": "train", "image_size": IMAGE_SIZE}
    dataset.check_compatible(make_env(ENV_ID, image_size=IMAGE_SIZE))
    with pytest.raises(DatasetError, match="image_front"):
        dataset.check_compatible(make_env(ENV_ID, image_size=IMAGE_SIZE + 8))
    episode = dataset[0]
    assert episode.observations["image_front"].shape == (len(episode) + 1, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert episode.actions.shape == (len(episode), 7)
    assert episode.instruction.endswith("bowl")
    np.testing.assert_array_equal(dataset.terminated | dataset.truncated, True)
    np.testing.assert_array_equal(dataset.terminated, dataset.successes)


def test_summary_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(collect_args(tmp_path, 1)) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("saved 1 episodes | success rate ")
    assert "1 attempts" in line and "mean length" in line and str(tmp_path) in line


def test_chunked_collection_records_single_steps(tmp_path: Path) -> None:
    summary = collect(CollectConfig(ENV_ID, 1, tmp_path, seed=3, keep_failures=True, chunk_size=8,
                                    image_size=IMAGE_SIZE), progress=False)
    dataset = EpisodeDataset(tmp_path)
    episode = dataset[0].load()
    assert dataset.chunk_size == 8 and summary.episodes == 1
    assert episode.actions.shape == (episode.length, 7)
    assert len(episode.observations["state"]) == episode.length + 1
    assert episode.terminated == episode.success == bool(episode.is_success[-1])
    assert episode.rewards.sum() == float(episode.success)


def test_resume_counts_discarded_attempts(tmp_path: Path) -> None:
    def run(out: Path, episodes: int) -> None:
        config = CollectConfig(ENV_ID, episodes, out, seed=3, image_size=IMAGE_SIZE)
        collect(config, progress=False, make_policy=IdleOnOddSeeds)

    run(tmp_path / "resumed", 1)
    run(tmp_path / "resumed", 2)
    run(tmp_path / "direct", 2)
    index = read_index(tmp_path / "resumed")
    assert {3, 5} <= {r.seed for r in index.discarded}
    assert not any(r.success for r in index.discarded)
    assert len(index.episodes) == 2 and all(r.seed % 2 == 0 and r.success for r in index.episodes)
    assert index == read_index(tmp_path / "direct")
    assert_same_datasets(tmp_path / "resumed", tmp_path / "direct")


def test_a_disk_too_full_for_the_next_episode_stops_collect_with_one_line_and_the_store_intact(
    tmp_path: Path, reference: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from corft_envs.episode_store import writer

    out = tmp_path / "data"
    shutil.copytree(reference, out)
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    # ask for more free space than this disk has: the real free-space check refuses the next write
    monkeypatch.setattr(writer, "DISK_RESERVE_BYTES", shutil.disk_usage(out).free + 2**30)
    assert main(collect_args(out, 6)) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "MiB free on its disk" in error and "4 finished episodes are intact" in error
    after = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    assert after == before  # no partial episode file, the index unchanged
    assert len(EpisodeDataset(out)) == 4


def test_a_write_that_fails_for_want_of_space_stops_collect_with_one_line_and_the_store_intact(
    tmp_path: Path, reference: Path
) -> None:
    """The free-space check passes, then the write itself fails (the disk filled meanwhile): a file-size limit
    makes every write past 32 KiB fail as a full disk would, the index (3 KiB) fitting and the episode not."""
    import resource
    import shutil

    out = tmp_path / "data"
    shutil.copytree(reference, out)
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.name != LOCK_NAME}
    limit = 32 * 2**10
    assert all(len(data) < limit for name, data in before.items() if not name.endswith(".h5"))

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run([sys.executable, "-m", "corft_algos.cli", *collect_args(out, 6)], cwd=REPO,
                            capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size)
    assert result.returncode == 1, f"exit status {result.returncode}: {result.stderr[-2000:]}"
    error = result.stderr.strip()
    assert len(error.splitlines()) == 1 and "File too large" in error, error
    assert "4 finished episodes are intact" in error and "run the same command again" in error
    after = {path.name: path.read_bytes() for path in out.iterdir() if path.name != LOCK_NAME}
    assert after == before  # the partial episode file removed, the index unchanged
    assert len(EpisodeDataset(out)) == 4


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path: Path, reference: Path) -> None:
    out = tmp_path / "data"
    process = start_collector(collect_args(out, 4))
    wait_for_files(out, "episode_*.h5", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(list(out.glob("episode_*.h5"))) < 4, "the collector finished before it was killed"

    resumed = start_collector(collect_args(out, 4))
    stdout, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr
    assert stdout.startswith("saved 4 episodes")
    assert f"taking over {out / LOCK_NAME} from process {process.pid}, which ended without releasing it" in stderr
    assert not list(out.glob("*.tmp"))
    assert_same_datasets(out, reference)


def test_ctrl_c_keeps_finished_episodes(tmp_path: Path, reference: Path) -> None:
    out = tmp_path / "data"
    process = start_collector(collect_args(out, 4))
    wait_for_files(out, "episode_*.h5", process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    saved = len(list(out.glob("episode_*.h5")))
    assert 1 <= saved < 4, "the collector finished before Ctrl-C"
    assert f"interrupted: {saved} episodes saved in {out}" in stderr
    assert f"corft collect --env {ENV_ID} --episodes 4" in stderr
    assert not list(out.glob("*.tmp"))
    assert len(index_episodes(out)) == saved
    assert index_episodes(out) == index_episodes(reference)[:saved]
    assert len(EpisodeDataset(out)) == saved


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--env", "corft/Push-v0"], "env_id: 'corft/PickPlace-v0' recorded, 'corft/Push-v0' now"),
        (["--positions", "unseen"], "env_kwargs: .*'train'.* recorded, .*'unseen'.* now"),
    ],
)
def test_resume_with_other_settings_is_refused(
    reference: Path, change: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = collect_args(reference, 5)
    flag = args.index(change[0])
    args[flag: flag + 2] = change
    assert main(args) == 1
    stderr = capsys.readouterr().err
    assert "corft collect: error:" in stderr and "holds episodes collected with other settings" in stderr
    assert re.search(message, stderr)
    assert len(EpisodeDataset(reference)) == 4


def test_resume_command_reproduces_the_run() -> None:
    config = CollectConfig(ENV_ID, 5, Path("my data/pick"), positions="all", seed=2, keep_failures=True,
                           chunk_size=4, image_size=IMAGE_SIZE, max_attempts=9)
    words = shlex.split(collect_command(config))
    assert words[0] == "corft"
    assert collect_config(build_parser().parse_args(words[1:])) == config


def test_workers_write_the_store_one_worker_writes(tmp_path):
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    # 4 episodes over 3 workers: the second batch computes attempts that are never added
    assert main(collect_args(serial, 4)) == 0
    assert main(collect_args(parallel, 4, "--workers", "3")) == 0
    assert_same_datasets(parallel, serial)
    assert read_index(parallel).num_attempts == read_index(serial).num_attempts


def test_workers_are_for_the_scripted_expert_in_sim(tmp_path, capsys):
    assert main(["collect", "--env", "corft/FR3Real-PickPlace-v0", "--robot-host", "twin", "--episodes", "1",
                 "--out", str(tmp_path / "x"), "--workers", "2", "--quiet"]) == 1
    assert "use one worker" in capsys.readouterr().err


def test_env_kwargs_reach_the_env_and_the_resume_command(tmp_path):
    out = tmp_path / "hidden"
    args = collect_args(out, 1, "--env-kwargs", '{"distractors": false}')
    assert main(args) == 0
    assert read_index(out).meta.env_kwargs["distractors"] is False
    config = collect_config(build_parser().parse_args(args))
    assert collect_config(build_parser().parse_args(shlex.split(collect_command(config))[1:])) == config
