"""`corft import` of datasets that corft did not write: LeRobot v3.0 (another robot's keys and action size, AV1
video at 30 fps, PNG image features, non-square frames, data and videos split over several files, no rewards)
and Minari (nested Dict observations, success infos or none); and LeRobot exports of a store split over several
files."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import gymnasium as gym
import imageio_ffmpeg
import minari
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from minari.data_collector import EpisodeBuffer
from PIL import Image

from corft_algos.cli import main
from corft_envs.episode_store import EpisodeDataset
from corft_envs.interop.lerobot import export_lerobot
from corft_envs.interop.foreign import resize_frames
from corft_envs.interop.minari import export_minari
from corft_envs.interop.video import MEAN_ERROR_BOUND
from tests.helpers import TINY_POLICY

pytestmark = pytest.mark.integration

FPS = 30
HEIGHT, WIDTH = 64, 96
LENGTHS = (12, 14)
TASKS = ("fold the towel", "open the drawer")


def _frames(length: int, shift: int) -> np.ndarray:
    """Smooth frames with a block moving right: what a video codec keeps well."""
    frames = np.zeros((length, HEIGHT, WIDTH, 3), np.uint8)
    frames[..., 0] = np.linspace(0, 255, WIDTH, dtype=np.uint8)[None, None]
    frames[..., 1] = np.linspace(0, 255, HEIGHT, dtype=np.uint8)[None, :, None]
    for t in range(length):
        frames[t, 10:40, shift + 3 * t:shift + 3 * t + 20, 2] = 200
    return frames


def _png(frame: np.ndarray) -> dict:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def _write_av1(path: Path, frames: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio_ffmpeg.write_frames(str(path), (WIDTH, HEIGHT), fps=FPS, codec="libsvtav1", pix_fmt_in="rgb24",
                                         pix_fmt_out="yuv420p", quality=None, macro_block_size=1,
                                         ffmpeg_log_level="error", output_params=["-crf", "20"])
    writer.send(None)
    for frame in frames:
        writer.send(frame.tobytes())
    writer.close()


@pytest.fixture(scope="module")
def foreign(tmp_path_factory) -> tuple[Path, list[dict]]:
    """A LeRobot v3.0 dataset as another robot's recorder writes one: 2 episodes of a 6-joint arm, a top camera
    (AV1 video, both episodes in one file) and a side camera (PNG images in the data), 64x96 frames at 30 fps,
    each episode in its own data file, no rewards. Returns the folder and what each episode holds."""
    root = tmp_path_factory.mktemp("foreign") / "towel_and_drawer"
    rng = np.random.default_rng(0)
    episodes, start = [], 0
    for number, length in enumerate(LENGTHS):
        episode = {"top": _frames(length, 2 * number), "side": _frames(length, 30 - 5 * number),
                   "state": rng.normal(size=(length, 6)).astype(np.float32),
                   "environment_state": rng.normal(size=(length, 3)).astype(np.float32),
                   "action": rng.normal(size=(length, 6)).astype(np.float32), "task": TASKS[number]}
        episodes.append(episode)
        frame_index = np.arange(length)
        table = pa.table({
            "observation.state": pa.FixedSizeListArray.from_arrays(pa.array(episode["state"].ravel()), 6),
            "observation.environment_state": pa.FixedSizeListArray.from_arrays(
                pa.array(episode["environment_state"].ravel()), 3),
            "action": pa.FixedSizeListArray.from_arrays(pa.array(episode["action"].ravel()), 6),
            "observation.images.side": pa.array([_png(frame) for frame in episode["side"]],
                                                pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            "timestamp": pa.array((frame_index / FPS).astype(np.float32)),
            "frame_index": pa.array(frame_index), "episode_index": pa.array(np.full(length, number)),
            "index": pa.array(start + frame_index), "task_index": pa.array(np.full(length, number))})
        path = root / f"data/chunk-000/file-{number:03d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        start += length
    _write_av1(root / "videos/observation.images.top/chunk-000/file-000.mp4",
               np.concatenate([episode["top"] for episode in episodes]))
    rows, start = [], 0
    for number, length in enumerate(LENGTHS):
        rows.append({"episode_index": number, "tasks": [TASKS[number]], "length": length, "data/chunk_index": 0,
                     "data/file_index": number, "dataset_from_index": start, "dataset_to_index": start + length,
                     "videos/observation.images.top/chunk_index": 0, "videos/observation.images.top/file_index": 0,
                     "videos/observation.images.top/from_timestamp": start / FPS,
                     "videos/observation.images.top/to_timestamp": (start + length) / FPS,
                     "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        start += length
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "meta/episodes/chunk-000/file-000.parquet")
    pq.write_table(pa.table({"task_index": [0, 1], "task": list(TASKS)}), root / "meta/tasks.parquet")
    camera = {"dtype": "video", "shape": [HEIGHT, WIDTH, 3], "names": ["height", "width", "channels"]}
    features = {"observation.images.top": camera, "observation.images.side": {**camera, "dtype": "image"},
                "observation.state": {"dtype": "float32", "shape": [6], "names": None},
                "observation.environment_state": {"dtype": "float32", "shape": [3], "names": None},
                "action": {"dtype": "float32", "shape": [6], "names": None},
                **{name: {"dtype": dtype, "shape": [1], "names": None} for name, dtype in (
                    ("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                    ("index", "int64"), ("task_index", "int64"))}}
    info = {"codebase_version": "v3.0", "robot_type": "so101", "total_episodes": 2, "total_frames": sum(LENGTHS),
            "total_tasks": 2, "chunks_size": 1000, "data_files_size_in_mb": 100, "video_files_size_in_mb": 200,
            "fps": FPS, "splits": {"train": "0:2"}, "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}"
            ".parquet", "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
            "features": features}
    (root / "meta/info.json").write_text(json.dumps(info))
    return root, episodes


def _fails(argv: list[str], capsys) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_resize_crops_the_centre_square_and_averages_when_halving():
    frames = np.zeros((1, 2, 4, 3), np.uint8)
    frames[0, :, 1:3, 0] = [[10, 20], [30, 40]]  # the centre square of a 2x4 frame
    frames[0, :, 0, 0] = frames[0, :, 3, 0] = 255  # cropped away
    np.testing.assert_array_equal(resize_frames(frames, 2)[0, ..., 0], [[10, 20], [30, 40]])
    assert resize_frames(frames, 1)[0, 0, 0, 0] == 25  # (10 + 20 + 30 + 40) / 4


def test_a_foreign_dataset_imports_with_its_keys_tasks_and_actions(foreign, tmp_path, capsys):
    source, episodes = foreign
    out = tmp_path / "store"
    assert "give --image-size N" in _fails(["import", "--format", "lerobot", str(source), "--out", str(out),
                                            "--demos-succeed"], capsys)
    assert "--demos-succeed" in _fails(["import", "--format", "lerobot", str(source), "--out", str(out),
                                        "--image-size", "32"], capsys)
    assert not out.exists()
    assert main(["import", "--format", "lerobot", str(source), "--out", str(out), "--image-size", "32",
                 "--demos-succeed"]) == 0
    with EpisodeDataset(out) as store:
        assert store.meta.env_id == "lerobot:towel_and_drawer"
        assert set(store.meta.observation_space.spaces) == {"image_top", "image_side", "state", "environment_state"}
        assert store.meta.observation_space["image_top"].shape == (32, 32, 3)
        assert store.meta.action_space.shape == (6,)
        assert list(store.lengths) == list(LENGTHS) and store.instructions == list(TASKS)
        for original, episode in zip(episodes, store):
            data = episode.load()
            np.testing.assert_array_equal(data.actions, original["action"])  # every recorded action kept
            for key in ("state", "environment_state"):  # the last observation repeated as the final one
                np.testing.assert_array_equal(data.observations[key],
                                              np.concatenate([original[key], original[key][-1:]]))
            side = resize_frames(original["side"], 32)  # PNG: lossless
            np.testing.assert_array_equal(data.observations["image_side"], np.concatenate([side, side[-1:]]))
            top = resize_frames(original["top"], 32)  # AV1: lossy
            error = np.abs(data.observations["image_top"][:-1].astype(np.int16) - top).mean()
            assert error <= MEAN_ERROR_BOUND, error
            assert data.rewards.tolist() == [0.0] * (len(data.rewards) - 1) + [1.0]
            assert data.success and data.terminated and not data.truncated and data.seed is None


def test_a_policy_trains_on_a_foreign_dataset_and_eval_asks_for_an_env(foreign, tmp_path, capsys):
    source, _ = foreign
    store, run = tmp_path / "store", tmp_path / "run"
    assert main(["import", "--format", "lerobot", str(source), "--out", str(store), "--image-size", "32",
                 "--demos-succeed"]) == 0
    assert main(["train", "--algo", "sft", "--data", str(store), "--out", str(run), "--steps", "2", "--batch-size",
                 "4", "--chunk-size", "4", "--policy-kwargs", json.dumps(TINY_POLICY), "--device", "cpu",
                 "--threads", "1", "--quiet"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    err = _fails(["eval", "--model", str(run / "model.zip"), "--episodes", "1", "--quiet"], capsys)
    assert "'lerobot:towel_and_drawer', which is not a registered env id" in err and "--env" in err


def test_a_dataset_with_rewards_keeps_them_and_refuses_demos_succeed(foreign, tmp_path, capsys):
    source, episodes = foreign
    copy = tmp_path / "rewarded"
    shutil.copytree(source, copy)
    info = json.loads((copy / "meta/info.json").read_text())
    info["features"]["next.reward"] = {"dtype": "float32", "shape": [1], "names": None}
    (copy / "meta/info.json").write_text(json.dumps(info))
    rewards = []
    for number, length in enumerate(LENGTHS):  # reward 1 at the middle frame only: a success there
        path = copy / f"data/chunk-000/file-{number:03d}.parquet"
        reward = (np.arange(length) == length // 2).astype(np.float32)
        pq.write_table(pq.read_table(path).append_column("next.reward", pa.array(reward)), path)
        rewards.append(reward)
    assert "drop --demos-succeed" in _fails(["import", "--format", "lerobot", str(copy), "--out",
                                             str(tmp_path / "s"), "--image-size", "32", "--demos-succeed"], capsys)
    assert main(["import", "--format", "lerobot", str(copy), "--out", str(tmp_path / "s"), "--image-size",
                 "32"]) == 0
    with EpisodeDataset(tmp_path / "s") as store:
        for reward, episode in zip(rewards, store):
            data = episode.load()
            np.testing.assert_array_equal(data.rewards, reward)
            np.testing.assert_array_equal(data.is_success, reward > 0)
            assert data.success and data.truncated and not data.terminated  # a success, not on the last step


def test_an_export_without_its_corft_index_imports_as_a_foreign_dataset(tiny_dataset, tmp_path):
    """A corft export read the way any LeRobot dataset is: the same steps (its final_observation frames are
    final observations, not steps), rewards, success and instructions; no env id nor seeds."""
    exported, back = tmp_path / "exported", tmp_path / "back"
    export_lerobot(tiny_dataset, exported)
    (exported / "meta/corft_index.json").unlink()
    assert main(["import", "--format", "lerobot", str(exported), "--out", str(back)]) == 0
    with EpisodeDataset(tiny_dataset) as original, EpisodeDataset(back) as imported:
        assert imported.meta.env_id == "lerobot:exported"
        assert set(imported.meta.observation_space.spaces) == set(original.meta.observation_space.spaces)
        assert list(imported.lengths) == list(original.lengths) and imported.instructions == original.instructions
        for before, after in zip(original, imported):
            before, after = before.load(), after.load()
            np.testing.assert_array_equal(after.actions, before.actions)
            np.testing.assert_array_equal(after.rewards, before.rewards)
            np.testing.assert_array_equal(after.is_success, before.is_success)
            np.testing.assert_allclose(after.observations["state"], before.observations["state"])
            for key in ("image_front", "image_wrist"):
                error = np.abs(after.observations[key].astype(np.int16) - before.observations[key]).mean()
                assert error <= MEAN_ERROR_BOUND, (key, error)


def test_an_export_split_over_files_and_chunks_comes_back_whole(tiny_dataset, tmp_path):
    """Size limits below one episode: each episode in its own data file and video file, one file per chunk
    folder; importing joins them back into the same store."""
    exported, back = tmp_path / "exported", tmp_path / "back"
    export_lerobot(tiny_dataset, exported, data_file_mb=1e-6, video_file_mb=1e-6, chunks_size=1)
    assert sorted(str(p.relative_to(exported)) for p in exported.glob("data/*/*.parquet")) == [
        "data/chunk-000/file-000.parquet", "data/chunk-001/file-000.parquet"]
    assert len(list(exported.glob("videos/observation.images.front/*/*.mp4"))) == 2
    rows = pq.read_table(exported / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [row["data/chunk_index"] for row in rows] == [0, 1]
    assert [row["videos/observation.images.wrist/from_timestamp"] for row in rows] == [0.0, 0.0]
    info = json.loads((exported / "meta/info.json").read_text())
    assert (info["chunks_size"], info["data_files_size_in_mb"]) == (1, 1e-6)
    assert main(["import", "--format", "lerobot", str(exported), "--out", str(back)]) == 0
    with EpisodeDataset(tiny_dataset) as original, EpisodeDataset(back) as imported:
        assert imported.meta.env_id == original.meta.env_id and list(imported.lengths) == list(original.lengths)
        for before, after in zip(original, imported):
            before, after = before.load(), after.load()
            np.testing.assert_array_equal(after.actions, before.actions)
            error = np.abs(after.observations["image_front"].astype(np.int16) - before.observations["image_front"])
            assert error.mean() <= MEAN_ERROR_BOUND


def test_options_of_another_format_or_for_an_export_are_refused(tiny_dataset, tmp_path, capsys):
    assert "video_file_mb does not apply to a minari export" in _fails(
        ["export", "--format", "minari", "--data", str(tiny_dataset), "--out", str(tmp_path / "e"),
         "--video-file-mb", "5"], capsys)
    exported = tmp_path / "exported"
    export_lerobot(tiny_dataset, exported)
    assert "drop --image-size and --demos-succeed" in _fails(
        ["import", "--format", "lerobot", str(exported), "--out", str(tmp_path / "s"), "--demos-succeed"], capsys)
    export_minari(tiny_dataset, tmp_path / "exported_minari")
    assert "drop --image-size, --demos-succeed and --instruction" in _fails(
        ["import", "--format", "minari", str(tmp_path / "exported_minari"), "--out", str(tmp_path / "s"),
         "--image-size", "32"], capsys)


def _minari_dataset(root: Path, dataset_id: str, with_infos: bool, monkeypatch) -> Path:
    """A Minari dataset as another project records one with Minari's own API: nested Dict observations (a
    64x96 camera and a 4-D position), a 2-D action, one episode ending in success and one truncated."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    observation_space = gym.spaces.Dict({
        "pixels": gym.spaces.Box(0, 255, (HEIGHT, WIDTH, 3), np.uint8),
        "agent": gym.spaces.Dict({"pos": gym.spaces.Box(-1, 1, (4,), np.float32)})})
    rng = np.random.default_rng(1)
    buffers = []
    for number, (steps, succeeds) in enumerate(((6, True), (9, False))):
        success = np.zeros(steps + 1, bool)
        success[-1] = succeeds
        buffers.append(EpisodeBuffer(
            id=number, seed=40 + number,
            observations={"pixels": _frames(steps + 1, 3 * number),
                          "agent": {"pos": rng.uniform(-1, 1, (steps + 1, 4)).astype(np.float32)}},
            actions=rng.uniform(-1, 1, (steps, 2)).astype(np.float32), rewards=list(success[1:].astype(float)),
            terminations=list(np.arange(steps) == steps - 1 if succeeds else np.zeros(steps, bool)),
            truncations=list(np.zeros(steps, bool) if succeeds else np.arange(steps) == steps - 1),
            infos={"success": success} if with_infos else {}))
    minari.create_dataset_from_buffers(dataset_id, buffers, observation_space=observation_space,
                                       action_space=gym.spaces.Box(-1, 1, (2,), np.float32), data_format="hdf5",
                                       jpeg_encoding=False)
    return root / dataset_id


def test_a_foreign_minari_dataset_imports_with_its_nested_keys_and_success(tmp_path, capsys, monkeypatch):
    source = _minari_dataset(tmp_path / "minari", "elsewhere/reach/expert-v0", True, monkeypatch)
    out = tmp_path / "store"
    assert "give --image-size N" in _fails(["import", "--format", "minari", str(source), "--out", str(out)], capsys)
    assert "drop --demos-succeed" in _fails(["import", "--format", "minari", str(source), "--out", str(out),
                                             "--image-size", "32", "--demos-succeed"], capsys)
    assert main(["import", "--format", "minari", str(source), "--out", str(out), "--image-size", "32",
                 "--instruction", "reach the goal"]) == 0
    original = minari.MinariDataset(source / "data")
    with EpisodeDataset(out) as store:
        assert store.meta.env_id == "minari:elsewhere/reach/expert-v0"
        assert set(store.meta.observation_space.spaces) == {"image_pixels", "agent_pos"}
        assert store.seeds == [40, 41] and store.instructions == ["reach the goal"] * 2
        for before, episode in zip(original.iterate_episodes(), store):
            after = episode.load()
            np.testing.assert_array_equal(after.actions, before.actions)
            np.testing.assert_array_equal(after.rewards, np.asarray(before.rewards, np.float32))
            np.testing.assert_array_equal(after.is_success, np.asarray(before.infos["success"])[1:])
            np.testing.assert_array_equal(after.observations["agent_pos"], before.observations["agent"]["pos"])
            np.testing.assert_array_equal(after.observations["image_pixels"],
                                          resize_frames(before.observations["pixels"], 32))  # stored raw: exact
        first, second = store[0].load(), store[1].load()
        assert first.success and first.terminated and not second.success and second.truncated


def test_a_foreign_minari_dataset_without_success_needs_demos_succeed(tmp_path, capsys, monkeypatch):
    source = _minari_dataset(tmp_path / "minari", "elsewhere/reach/plain-v0", False, monkeypatch)
    out = tmp_path / "store"
    assert "say so with --demos-succeed" in _fails(["import", "--format", "minari", str(source), "--out", str(out),
                                                    "--image-size", "32"], capsys)
    assert not out.exists()
    assert main(["import", "--format", "minari", str(source), "--out", str(out), "--image-size", "32",
                 "--demos-succeed"]) == 0
    with EpisodeDataset(out) as store:
        assert all(episode.load().is_success.tolist() == [False] * (length - 1) + [True]
                   for episode, length in zip(store, store.lengths))
        assert store.instructions == ["", ""]
