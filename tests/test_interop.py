"""`corft export` / `corft import`: LeRobotDataset v3.0 and Minari round trips, LeRobot's v3.0 layout, Minari's
DataCollector on a corft env, serialisable env specs, and the errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gymnasium as gym
import imageio_ffmpeg
import minari
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from gymnasium.envs.registration import EnvSpec

from corft_algos.cli import main
from corft_envs import REAL_ENV_IDS, SIM_ENV_IDS
from corft_envs.episode_store import EpisodeDataset, EpisodeWriter, INDEX_NAME
from corft_envs.interop.common import require
from corft_envs.interop.video import MEAN_ERROR_BOUND

pytestmark = pytest.mark.integration

#: LeRobot v3.0's own features of every dataset, with their dtypes (lerobot.utils.constants.DEFAULT_FEATURES).
LEROBOT_INDEX_FEATURES = {"timestamp": "float32", "frame_index": "int64", "episode_index": "int64",
                          "index": "int64", "task_index": "int64"}
#: The keys of LeRobot v3.0's meta/info.json (lerobot.datasets.utils.DatasetInfo).
LEROBOT_INFO_KEYS = {"codebase_version", "fps", "features", "total_episodes", "total_frames", "total_tasks",
                     "chunks_size", "data_files_size_in_mb", "video_files_size_in_mb", "data_path", "video_path",
                     "robot_type", "splits"}
#: The columns LeRobot v3.0 reads from each row of meta/episodes/*.parquet, beside each video's four.
LEROBOT_EPISODE_COLUMNS = {"episode_index", "tasks", "length", "data/chunk_index", "data/file_index",
                           "dataset_from_index", "dataset_to_index", "meta/episodes/chunk_index",
                           "meta/episodes/file_index"}


@pytest.fixture(scope="module")
def store(tiny_dataset, tmp_path_factory) -> Path:
    """The two 32 px PickPlace demos, written with a discarded attempt between them (attempts 0 and 2 kept)."""
    out = tmp_path_factory.mktemp("interop") / "store"
    with EpisodeDataset(tiny_dataset) as source, EpisodeWriter(out, source.meta) as writer:
        first, second = source[0].load(), source[1].load()
        writer.add(first, keep=True)
        writer.add(second, keep=False)
        writer.add(second, keep=True)
    return out


@pytest.fixture(scope="module")
def exported(store, tmp_path_factory) -> dict[str, Path]:
    """The store exported in each format with `corft export`."""
    folders = {}
    for fmt in ("lerobot", "minari"):
        folders[fmt] = tmp_path_factory.mktemp("exported") / fmt
        assert main(["export", "--format", fmt, "--data", str(store), "--out", str(folders[fmt])]) == 0
    return folders


def _index(root: Path) -> dict:
    data = json.loads((root / INDEX_NAME).read_text())
    del data["corft_version"]
    return data


@pytest.mark.parametrize("fmt", ["lerobot", "minari"])
def test_export_then_import_gives_the_same_store(fmt, store, exported, tmp_path):
    back = tmp_path / "back"
    assert main(["import", "--format", fmt, str(exported[fmt]), "--out", str(back)]) == 0
    assert _index(back) == _index(store)  # the env, the spaces, every attempt (the discarded one too)
    assert sorted(p.name for p in back.glob("episode_*.h5")) == sorted(p.name for p in store.glob("episode_*.h5"))
    with EpisodeDataset(store) as original, EpisodeDataset(back) as imported:
        for before, after in zip(original, imported):
            before, after = before.load(), after.load()
            for name, array in before.arrays().items():
                other = after.arrays()[name]
                assert other.dtype == array.dtype and other.shape == array.shape, name
                if fmt == "lerobot" and name.startswith("observations/image_"):
                    error = np.abs(other.astype(np.int16) - array).mean()
                    assert error <= MEAN_ERROR_BOUND, f"{name}: mean error {error:.2f}"
                else:
                    np.testing.assert_array_equal(other, array, err_msg=name)
            assert (after.instruction, after.seed, after.terminated, after.truncated) == (
                before.instruction, before.seed, before.terminated, before.truncated)


def test_lerobot_export_has_the_v3_layout(store, exported):
    """The output checked against LeRobot v3.0's layout as its dataset code reads it (LeRobot needs Python
    3.12; this machine has 3.11)."""
    root = exported["lerobot"]
    info = json.loads((root / "meta/info.json").read_text())
    assert set(info) == LEROBOT_INFO_KEYS and info["codebase_version"] == "v3.0" and info["fps"] == 10
    features = info["features"]
    for name, dtype in LEROBOT_INDEX_FEATURES.items():
        assert features[name] == {"dtype": dtype, "shape": [1], "names": None}
    cameras = [name for name, spec in features.items() if spec["dtype"] == "video"]
    assert sorted(cameras) == ["observation.images.front", "observation.images.wrist"]
    assert all("/" not in name for name in features)
    with EpisodeDataset(store) as dataset:
        lengths = dataset.lengths + 1  # T steps, T + 1 observations
        instructions = dataset.instructions
    assert info["total_episodes"] == len(lengths) and info["total_frames"] == lengths.sum()
    assert info["splits"] == {"train": f"0:{len(lengths)}"}

    data = pq.read_table(root / info["data_path"].format(chunk_index=0, file_index=0)).to_pydict()
    assert set(data) == {name for name, spec in features.items() if spec["dtype"] != "video"}
    assert data["index"] == list(range(info["total_frames"]))
    np.testing.assert_allclose(data["timestamp"], np.array(data["frame_index"]) / info["fps"], atol=1e-4)
    assert all(len(value) == features[name]["shape"][0] for name in ("observation.state", "action")
               for value in data[name])

    episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    tasks = pd.read_parquet(root / "meta/tasks.parquet")  # as LeRobot reads it: the task text is the index
    start = 0
    for number, (episode, length) in enumerate(zip(episodes, lengths)):
        assert LEROBOT_EPISODE_COLUMNS <= set(episode)
        assert (episode["episode_index"], episode["length"]) == (number, length)
        assert (episode["dataset_from_index"], episode["dataset_to_index"]) == (start, start + length)
        frames = slice(start, start + length)
        assert set(data["episode_index"][frames]) == {number}
        assert episode["tasks"] == [instructions[number]]
        assert set(data["task_index"][frames]) == {int(tasks.loc[instructions[number], "task_index"])}
        assert data["final_observation"][frames] == [False] * (length - 1) + [True]
        for camera in cameras:
            assert episode[f"videos/{camera}/from_timestamp"] == pytest.approx(start / info["fps"])
            assert episode[f"videos/{camera}/to_timestamp"] == pytest.approx((start + length) / info["fps"])
        start += length
    for camera in cameras:
        video = root / info["video_path"].format(video_key=camera, chunk_index=0, file_index=0)
        assert imageio_ffmpeg.count_frames_and_secs(str(video))[0] == info["total_frames"]

    stats = json.loads((root / "meta/stats.json").read_text())
    assert set(stats) == set(features)
    for name, values in stats.items():
        assert {"min", "max", "mean", "std", "count", "q01", "q99"} <= set(values), name
        assert values["count"] == [info["total_frames"]]
    assert np.shape(stats["observation.images.front"]["mean"]) == (3, 1, 1)
    front = stats["observation.images.front"]
    assert 0 <= np.min(front["min"]) <= np.max(front["max"]) <= 1
    np.testing.assert_allclose(stats["action"]["mean"], np.mean(data["action"], axis=0), atol=1e-6)


def test_minari_export_loads_in_minari_with_its_env(store, exported):
    dataset = minari.MinariDataset(exported["minari"] / "data")
    with EpisodeDataset(store) as original:
        assert dataset.total_episodes == len(original) and dataset.total_steps == original.lengths.sum()
        assert [m["seed"] for m in dataset.storage.get_episode_metadata(range(len(original)))] == original.seeds
        assert [m["instruction"] for m in dataset.storage.get_episode_metadata(range(2))] == original.instructions
        episode = next(dataset.iterate_episodes())
        np.testing.assert_array_equal(episode.observations["image_wrist"], original[0].observations["image_wrist"])
        assert episode.infos["is_success"][-1] and episode.terminations[-1]
    env = dataset.recover_environment()  # from the env spec: the registered entry point is a string
    try:
        assert env.observation_space == dataset.observation_space
    finally:
        env.close()


def test_minari_data_collector_records_a_corft_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    # record_infos=False (Minari's default): its check needs the same info keys at reset and step, and a corft
    # env's reset info (instruction) differs from its step info (first_lifted)
    env = minari.DataCollector(gym.make("corft/Push-v0", image_size=32, max_episode_steps=3),
                               jpeg_encoding=False)
    observations = [env.reset(seed=5)[0]]
    truncated = False
    while not truncated:
        observation, _, _, truncated, _ = env.step(env.action_space.sample())
        observations.append(observation)
    env.create_dataset("corft/Push/collector-v0")
    env.close()
    dataset = minari.load_dataset("corft/Push/collector-v0")
    episode = next(dataset.iterate_episodes())
    assert len(episode) == 3 and episode.truncations[-1]
    np.testing.assert_array_equal(episode.observations["image_front"], [o["image_front"] for o in observations])
    assert dataset.env_spec.entry_point == "corft_envs:make_sim_env"
    assert dataset.env_spec.kwargs == {"task": "Push", "image_size": 32}
    remade = dataset.recover_environment()
    try:
        np.testing.assert_array_equal(remade.reset(seed=5)[0]["image_front"], observations[0]["image_front"])
    finally:
        remade.close()


@pytest.mark.parametrize("env_id", SIM_ENV_IDS + REAL_ENV_IDS)
def test_every_registered_env_spec_serialises(env_id):
    spec = gym.spec(env_id)
    assert isinstance(spec.entry_point, str)
    assert EnvSpec.from_json(spec.to_json()) == spec


def test_a_missing_interop_package_names_the_extra():
    with pytest.raises(ImportError, match=r"converting data needs 'a_package_corft_does_not_have'.*"
                                          r"pip install 'corft\[interop\]'"):
        require("a_package_corft_does_not_have")


def _fails(argv: list[str], capsys) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_bad_folders_are_one_error_line(store, exported, tmp_path, capsys):
    assert "no such directory" in _fails(["export", "--format", "minari", "--data", str(tmp_path / "none"),
                                          "--out", str(tmp_path / "x")], capsys)
    assert "not empty" in _fails(["export", "--format", "lerobot", "--data", str(store),
                                  "--out", str(exported["minari"])], capsys)
    assert "no such folder" in _fails(["import", "--format", "lerobot", str(tmp_path / "none"),
                                       "--out", str(tmp_path / "y")], capsys)
    assert "not empty" in _fails(["import", "--format", "minari", str(exported["minari"]), "--out", str(store)],
                                 capsys)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    with pytest.raises(SystemExit):
        main(["export", "--format", "rlds", "--data", str(store), "--out", str(tmp_path / "z")])
    assert "invalid choice: 'rlds'" in capsys.readouterr().err


def _edited_lerobot(exported: Path, tmp_path: Path, edit) -> Path:
    copy = tmp_path / "edited"
    shutil.copytree(exported, copy)
    info = json.loads((copy / "meta/info.json").read_text())
    edit(copy, info)
    (copy / "meta/info.json").write_text(json.dumps(info))
    return copy


@pytest.mark.parametrize("edit, message", [
    (lambda root, info: info.update(codebase_version="v2.1"), "LeRobotDataset v2.1, corft reads v3.0"),
    (lambda root, info: info["features"].pop("observation.images.wrist"), "observation.images.wrist"),
], ids=["old-version", "missing-feature"])
def test_lerobot_datasets_corft_cannot_import_are_one_error_line(edit, message, exported, tmp_path, capsys):
    source = _edited_lerobot(exported["lerobot"], tmp_path, edit)
    err = _fails(["import", "--format", "lerobot", str(source), "--out", str(tmp_path / "store")], capsys)
    assert message in err
    assert not (tmp_path / "store").exists()


def test_a_minari_export_without_its_corft_index_imports_as_a_foreign_dataset(store, exported, tmp_path):
    """Read the way any Minari dataset is: the same steps, rewards, success and seeds; no env arguments."""
    copy = tmp_path / "minari"
    shutil.copytree(exported["minari"], copy)
    metadata = json.loads((copy / "data/metadata.json").read_text())
    del metadata["corft_index"]
    (copy / "data/metadata.json").write_text(json.dumps(metadata))
    assert main(["import", "--format", "minari", str(copy), "--out", str(tmp_path / "s")]) == 0
    with EpisodeDataset(store) as original, EpisodeDataset(tmp_path / "s") as imported:
        assert imported.meta.env_id == "minari:" + metadata["dataset_id"]
        assert imported.seeds == original.seeds and list(imported.lengths) == list(original.lengths)
        for before, after in zip(original, imported):
            before, after = before.load(), after.load()
            for name, array in before.arrays().items():
                np.testing.assert_array_equal(after.arrays()[name], array, err_msg=name)
