"""Episode store: write/read round trip, lazy access, damage detection, resume bookkeeping."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import numpy as np
import pytest
from gymnasium import spaces

from corft_envs.collection import EpisodeRecorder
from corft_envs.episode_store import (
    INDEX_NAME,
    ConcatEpisodeDataset,
    DatasetError,
    DatasetMeta,
    EpisodeData,
    EpisodeDataset,
    EpisodeRecord,
    EpisodeWriter,
    open_episodes,
    read_index,
    space_from_json,
    space_to_json,
    write_episode_file,
)

ENV_ID = "test/TinyArm-v0"


class TinyArmEnv(gym.Env):
    """Test env with corft's observation/action layout on a point "gripper".

    The point moves by ``0.2 * action[:3]``; the episode terminates with
    reward 1 when it is within 0.15 of a seeded goal. Camera images are a
    deterministic function of the point and goal, so episodes are
    reproducible from the reset seed.
    """

    def __init__(self, image_size: int = 8) -> None:
        image = spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        self.observation_space = spaces.Dict(
            image_front=image,
            image_wrist=image,
            state=spaces.Box(-np.inf, np.inf, (15,), np.float32),
        )
        self.action_space = spaces.Box(-1, 1, (7,), np.float32)
        self._image_size = image_size
        self._point = np.zeros(3)
        self._goal = np.zeros(3)

    def _observation(self) -> dict[str, np.ndarray]:
        state = np.zeros(15, np.float32)
        state[:3], state[3:6] = self._point, self._goal
        shade = np.uint8(int(abs(self._point.sum()) * 100) % 256)
        front = np.full((self._image_size, self._image_size, 3), shade, np.uint8)
        front[0, 0] = np.clip(self._goal * 100 + 128, 0, 255).astype(np.uint8)
        return {"image_front": front, "image_wrist": 255 - front, "state": state}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._point = np.zeros(3)
        self._goal = self.np_random.uniform(-0.5, 0.5, 3)
        return self._observation(), {"instruction": f"reach goal {self.np_random.integers(100)}"}

    def step(self, action: np.ndarray):
        self._point = self._point + 0.2 * np.clip(action[:3], -1, 1)
        success = bool(np.linalg.norm(self._point - self._goal) < 0.15)
        return self._observation(), float(success), success, False, {"is_success": success}


def make_tiny_env(image_size: int = 8, max_steps: int = 6) -> gym.Env:
    return gym.wrappers.TimeLimit(TinyArmEnv(image_size), max_episode_steps=max_steps)


def record_episode(seed: int, image_size: int = 8, steer: bool = True) -> EpisodeData:
    """One TinyArm episode; steering toward the goal succeeds, random moves usually time out."""
    recorder = EpisodeRecorder(make_tiny_env(image_size))
    observation, _ = recorder.reset(seed=seed)
    rng = np.random.default_rng(seed)
    done = False
    while not done:
        action = rng.uniform(-1, 1, 7).astype(np.float32)
        if steer:
            action[:3] = np.clip((observation["state"][3:6] - observation["state"][:3]) / 0.2, -1, 1)
        observation, _, terminated, truncated, _ = recorder.step(action)
        done = terminated or truncated
    return recorder.episode()


def make_meta(image_size: int = 8, **overrides: Any) -> DatasetMeta:
    env = make_tiny_env(image_size)
    fields = dict(
        env_id=ENV_ID,
        env_kwargs={"image_size": image_size},
        observation_space=env.observation_space,
        action_space=env.action_space,
        chunk_size=None,
        seed=0,
        keep_failures=True,
    )
    fields.update(overrides)
    return DatasetMeta(**fields)


@pytest.fixture()
def episodes() -> list[EpisodeData]:
    recorded = [record_episode(0), record_episode(1, steer=False), record_episode(2)]
    assert [e.success for e in recorded] == [True, False, True]
    assert [e.truncated for e in recorded] == [False, True, False]
    return recorded


@pytest.fixture()
def store(tmp_path: Path, episodes: list[EpisodeData]) -> Path:
    root = tmp_path / "store"
    with EpisodeWriter(root, make_meta()) as writer:
        for episode in episodes:
            writer.add(episode, keep=True)
    return root


def assert_same_episode(loaded: EpisodeData, expected: EpisodeData) -> None:
    assert loaded.observations.keys() == expected.observations.keys()
    for key, array in expected.observations.items():
        np.testing.assert_array_equal(loaded.observations[key], array)
        assert loaded.observations[key].dtype == array.dtype
    np.testing.assert_array_equal(loaded.actions, expected.actions)
    np.testing.assert_array_equal(loaded.rewards, expected.rewards)
    np.testing.assert_array_equal(loaded.is_success, expected.is_success)
    assert (loaded.instruction, loaded.seed, loaded.terminated, loaded.truncated) == (
        expected.instruction, expected.seed, expected.terminated, expected.truncated
    )


def test_spaces_survive_json() -> None:
    space = make_meta().observation_space
    data = json.loads(json.dumps(space_to_json(space), allow_nan=False))
    assert space_from_json(data) == space
    uneven = spaces.Box(np.array([-1.0, 0.0], np.float32), np.array([1.0, np.inf], np.float32))
    assert space_from_json(json.loads(json.dumps(space_to_json(uneven), allow_nan=False))) == uneven
    text = spaces.Text(max_length=128, min_length=2, charset="abc ,.'-")
    assert space_from_json(json.loads(json.dumps(space_to_json(text)))) == text


def test_recorder_keeps_reset_and_final_observation(episodes: list[EpisodeData]) -> None:
    for episode in episodes:
        assert len(episode.observations["state"]) == episode.length + 1
        assert episode.rewards.shape == episode.is_success.shape == (episode.length,)
    success = episodes[0]
    assert success.terminated and success.is_success[-1] and success.rewards[-1] == 1.0
    assert np.linalg.norm(success.observations["state"][-1, :3] - success.observations["state"][-1, 3:6]) < 0.15


def test_round_trip(store: Path, episodes: list[EpisodeData]) -> None:
    dataset = EpisodeDataset(store)
    assert len(dataset) == 3
    for stored, expected in zip(dataset, episodes):
        assert_same_episode(stored.load(), expected)
        assert len(stored) == expected.length and stored.success == expected.success
    assert dataset.env_id == ENV_ID and dataset.env_kwargs == {"image_size": 8}
    assert dataset.observation_space == make_meta().observation_space
    assert dataset.action_space == make_meta().action_space
    assert dataset.chunk_size is None
    np.testing.assert_array_equal(dataset.lengths, [e.length for e in episodes])
    np.testing.assert_array_equal(dataset.successes, [True, False, True])
    np.testing.assert_array_equal(dataset.terminated, [True, False, True])
    np.testing.assert_array_equal(dataset.truncated, [False, True, False])
    assert dataset.instructions == [e.instruction for e in episodes]
    assert dataset.seeds == [0, 1, 2]


def test_images_are_compressed_one_frame_per_chunk(store: Path) -> None:
    with h5py.File(store / "episode_000000.h5", "r") as handle:
        image = handle["observations/image_front"]
        assert image.compression == "gzip" and image.chunks == (1, 8, 8, 3)
        assert handle["observations/state"].compression is None


def test_index_records_every_attempt(tmp_path: Path, episodes: list[EpisodeData]) -> None:
    with EpisodeWriter(tmp_path, make_meta(keep_failures=False)) as writer:
        for episode in episodes:
            writer.add(episode, keep=episode.success)
    index = json.loads((tmp_path / INDEX_NAME).read_text())
    assert [e["file"] for e in index["episodes"]] == ["episode_000000.h5", "episode_000001.h5"]
    assert [e["attempt"] for e in index["episodes"]] == [0, 2]
    assert [(e["attempt"], e["seed"], e["success"]) for e in index["discarded_attempts"]] == [(1, 1, False)]
    assert index["num_attempts"] == 3 and index["env_id"] == ENV_ID
    assert index["corft_version"]
    assert sorted(p.name for p in tmp_path.glob("*.h5")) == ["episode_000000.h5", "episode_000001.h5"]


def test_slicing_reads_one_episode_only(store: Path, episodes: list[EpisodeData]) -> None:
    dataset = EpisodeDataset(store)
    (store / "episode_000000.h5").write_bytes(b"not hdf5")  # damage another episode after loading
    view = dataset[2].observations["image_front"]
    assert view.shape == episodes[2].observations["image_front"].shape and view.dtype == np.uint8
    np.testing.assert_array_equal(view[1:3], episodes[2].observations["image_front"][1:3])
    np.testing.assert_array_equal(dataset[-1].actions[0], episodes[2].actions[0])
    with pytest.raises(DatasetError, match="episode_000000.h5"):
        dataset[0].actions[:]


def test_dataset_level_arrays_need_no_episode_file(store: Path) -> None:
    dataset = EpisodeDataset(store)
    for path in store.glob("episode_*.h5"):
        path.unlink()
    assert dataset.lengths.shape == (3,) and dataset.successes.sum() == 2
    assert len(dataset[1]) == dataset.lengths[1]


def test_dataset_pickles_for_workers(store: Path, episodes: list[EpisodeData]) -> None:
    dataset = EpisodeDataset(store)
    dataset[0].observations["state"][0]  # leaves an open handle behind
    copy = pickle.loads(pickle.dumps(dataset))
    np.testing.assert_array_equal(copy[0].observations["state"][:], episodes[0].observations["state"])
    dataset.close()
    copy.close()


def test_truncated_file_is_named(store: Path) -> None:
    path = store / "episode_000001.h5"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetError, match=r"episode_000001\.h5.*(truncated|corrupt)"):
        EpisodeDataset(store)


def test_missing_file_is_named(store: Path) -> None:
    (store / "episode_000002.h5").unlink()
    with pytest.raises(DatasetError, match=r"episode_000002\.h5.*missing"):
        EpisodeDataset(store)


def test_file_that_disagrees_with_spaces_is_named(store: Path) -> None:
    with h5py.File(store / "episode_000001.h5", "a") as handle:
        del handle["observations/state"]
        handle["observations/state"] = np.zeros((3, 4), np.float32)
    with pytest.raises(DatasetError, match=r"episode_000001\.h5.*'observations/state'"):
        EpisodeDataset(store)
    # Resuming the collection checks the arrays too, not only the attributes: no "complete" unreadable store.
    with pytest.raises(DatasetError, match=r"episode_000001\.h5: array 'observations/state' is float32\(3, 4\)"):
        EpisodeWriter(store, make_meta())


def test_missing_index_is_reported(store: Path) -> None:
    (store / INDEX_NAME).unlink()
    with pytest.raises(DatasetError, match=r"index\.json.*missing"):
        EpisodeDataset(store)


@pytest.mark.parametrize("content", ["{}", "[]", '{"episodes": []}'])
def test_an_index_without_its_fields_says_to_rebuild_it_not_to_recollect(store: Path, content: str) -> None:
    before = read_index(store)
    (store / INDEX_NAME).write_text(content)
    with pytest.raises(DatasetError, match=r"index\.json: unreadable .* delete it and run the same `corft collect`") \
            as error:
        EpisodeDataset(store)
    assert "re-collect" not in str(error.value)
    (store / INDEX_NAME).unlink()  # as the message says: the writer rebuilds it from the episode files
    with EpisodeWriter(store, make_meta()):
        pass
    assert read_index(store) == before


def test_check_compatible(store: Path) -> None:
    dataset = EpisodeDataset(store)
    dataset.check_compatible(make_tiny_env(8))
    with pytest.raises(DatasetError, match=r"image_front.*\(8, 8, 3\) recorded, \(16, 16, 3\) now"):
        dataset.check_compatible(make_tiny_env(16))


def test_writer_rebuilds_missing_or_stale_index(store: Path, episodes: list[EpisodeData]) -> None:
    before = read_index(store)
    index_path = store / INDEX_NAME
    stale = json.loads(index_path.read_text())
    stale["episodes"] = stale["episodes"][:1]
    index_path.write_text(json.dumps(stale))
    with EpisodeWriter(store, make_meta()) as writer:
        assert writer.next_attempt == 3
    assert read_index(store) == before
    index_path.unlink()
    with EpisodeWriter(store, make_meta()) as writer:
        writer.add(episodes[0], keep=True)
    assert [r.file for r in read_index(store).episodes][-1] == "episode_000003.h5"
    assert [r.attempt for r in read_index(store).episodes] == [0, 1, 2, 3]


def test_writer_removes_stale_temporaries(store: Path) -> None:
    (store / ".episode_000003.h5.tmp").write_bytes(b"half an episode")
    (store / ".index.json.tmp").write_text("{")
    with EpisodeWriter(store, make_meta()):
        pass
    assert not list(store.glob("*.tmp")) and len(EpisodeDataset(store)) == 3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"env_id": "test/Other-v0"}, "env_id: 'test/TinyArm-v0' recorded, 'test/Other-v0' now"),
        ({"env_kwargs": {"image_size": 9}}, "env_kwargs"),
        ({"seed": 7}, "seed: 0 recorded, 7 now"),
        ({"action_space": spaces.Box(-1, 1, (6,), np.float32)}, r"action_space: shape \(7,\) recorded"),
    ],
)
def test_writer_refuses_other_settings(store: Path, change: dict[str, Any], message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        EpisodeWriter(store, make_meta(**change))


def test_writer_refuses_a_second_writer(store: Path) -> None:
    with EpisodeWriter(store, make_meta()):
        with pytest.raises(DatasetError, match="another collector"):
            EpisodeWriter(store, make_meta())


def test_episode_must_fit_spaces(tmp_path: Path, episodes: list[EpisodeData]) -> None:
    record = EpisodeRecord("episode_000000.h5", 0, 0, "", False, 1, False, True)
    with pytest.raises(ValueError, match="image_front"):
        write_episode_file(tmp_path / "episode_000000.h5", episodes[0], make_meta(image_size=16), record)
    assert not list(tmp_path.iterdir())


def test_several_stores_read_as_one(store: Path, tmp_path: Path, episodes: list[EpisodeData]) -> None:
    other = tmp_path / "other"
    with EpisodeWriter(other, make_meta(env_id="test/OtherTask-v0")) as writer:
        writer.add(episodes[2], keep=True)
    union = open_episodes([store, other])
    assert isinstance(union, ConcatEpisodeDataset) and len(union) == 4
    assert union.env_id == ENV_ID and union.roots == [store, other]
    np.testing.assert_array_equal(union.lengths, [len(e.actions) for e in [*episodes, episodes[2]]])
    assert union.num_attempts == 4 and union.successes.tolist() == [True, False, True, True]
    assert_same_episode(union[3].load(), episodes[2])
    assert_same_episode(union[1].load(), episodes[1])
    assert type(open_episodes([store])) is EpisodeDataset and type(open_episodes(store)) is EpisodeDataset


def test_stores_with_other_spaces_cannot_be_read_as_one(store: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    with EpisodeWriter(other, make_meta(image_size=4)) as writer:
        writer.add(record_episode(0, image_size=4), keep=True)
    with pytest.raises(DatasetError, match=r"other cannot be read with .*store: observation_space\['image_front'\]"):
        open_episodes([store, other])
