"""Chunk dataset: hand-computed chunks, masks, returns, frame indexing, sampling weights, loaders, statistics."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces

from corft_algos.data import STD_FLOOR, ChunkDataset, FrameStore, discounted_returns, to_torch
from corft_envs.collection import CollectConfig, collect
from corft_envs.episode_store import DatasetMeta, EpisodeData, EpisodeDataset, EpisodeWriter, open_episodes

META = DatasetMeta(
    env_id="test/Tiny-v0",
    env_kwargs={},
    observation_space=spaces.Dict(
        image_front=spaces.Box(0, 255, (8, 8, 3), np.uint8),
        state=spaces.Box(-np.inf, np.inf, (3,), np.float32),
    ),
    action_space=spaces.Box(-1, 1, (2,), np.float32),
)
PICK, DRAWER = "pick the red cube", "open the drawer"

# Episode 0: T = 5, terminated with reward 1 on the last step (frames 0..5).
ACTIONS_0 = [[-1.0, 1], [-0.5, -1], [0.0, 1], [0.5, 1], [1.0, -1]]
REWARDS_0 = [0, 0, 0, 0, 1]
# Episode 1: T = 4, truncated at the time limit without reward (frames 6..10).
ACTIONS_1 = [[0.25, 1], [0.25, -1], [0.75, -1], [0.75, 1]]
REWARDS_1 = [0, 0, 0, 0]


def episode(
    actions: list[list[float]],
    rewards: list[float],
    *,
    terminated: bool,
    tag: int,
    instruction: str = PICK,
    states: list[list[float]] | None = None,
) -> EpisodeData:
    """An episode whose frame ``i`` is an image filled with ``10 * tag + i`` and, by default, state ``[i, tag, -i]``."""
    length = len(actions)
    frames = np.arange(length + 1)
    images = np.broadcast_to((10 * tag + frames)[:, None, None, None], (length + 1, 8, 8, 3)).astype(np.uint8)
    if states is None:
        states = np.stack([frames, np.full(length + 1, tag), -frames], axis=1)
    return EpisodeData(
        observations={"image_front": images, "state": np.asarray(states, dtype=np.float32)},
        actions=np.asarray(actions, dtype=np.float32),
        rewards=np.asarray(rewards, dtype=np.float32),
        is_success=np.asarray(rewards) > 0,
        instruction=instruction,
        seed=tag,
        terminated=terminated,
        truncated=not terminated,
    )


def write_store(root: Path, episodes: list[EpisodeData]) -> Path:
    with EpisodeWriter(root, META) as writer:
        for item in episodes:
            writer.add(item, keep=True)
    return root


@pytest.fixture
def two_episodes(tmp_path: Path) -> Path:
    """Episode 0 terminated (T = 5, reward on its last step), episode 1 truncated (T = 4, no reward)."""
    return write_store(
        tmp_path / "store",
        [
            episode(ACTIONS_0, REWARDS_0, terminated=True, tag=0, instruction=PICK),
            episode(ACTIONS_1, REWARDS_1, terminated=False, tag=1, instruction=DRAWER),
        ],
    )


# ----------------------------------------------------------------------------
# Chunks, masks and returns against hand-computed values
# ----------------------------------------------------------------------------


def test_terminated_episode_chunks_by_hand(two_episodes: Path) -> None:
    data = ChunkDataset(two_episodes, chunk_size=3, gamma=0.5)
    valid = [[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 0, 0]]
    done = [[0, 0, 0], [0, 0, 0], [0, 0, 1], [0, 1, 1], [1, 1, 1]]
    rewards = [[0, 0, 0], [0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0]]
    next_frames = [[1, 2, 3], [2, 3, 4], [3, 4, 5], [4, 5, 5], [5, 5, 5]]
    mc_return = [0.5**4, 0.5**3, 0.25, 0.5, 1.0]
    zero = [0.0, 0.0]
    a = ACTIONS_0
    actions = [[a[0], a[1], a[2]], [a[1], a[2], a[3]], [a[2], a[3], a[4]], [a[3], a[4], zero], [a[4], zero, zero]]
    for t in range(5):
        sample = data[t]
        assert sample["frame"] == t
        np.testing.assert_array_equal(sample["valid"], np.array(valid[t], dtype=bool))
        np.testing.assert_array_equal(sample["imitate"], np.array(valid[t], dtype=bool))  # a success: imitated
        np.testing.assert_array_equal(sample["done"], np.array(done[t], dtype=bool))
        np.testing.assert_array_equal(sample["rewards"], np.array(rewards[t], dtype=np.float32))
        np.testing.assert_array_equal(sample["next_frames"], next_frames[t])
        np.testing.assert_array_equal(sample["actions"], np.array(actions[t], dtype=np.float32))
        assert sample["mc_return"] == pytest.approx(mc_return[t])
        assert sample["observation"]["image_front"][0, 0, 0] == t
    sample = data[2]
    assert sample["frame"].dtype == np.int64 and sample["frame"].shape == ()
    assert sample["next_frames"].dtype == np.int64 and sample["next_frames"].shape == (3,)
    assert sample["actions"].dtype == np.float32 and sample["actions"].shape == (3, 2)
    assert sample["rewards"].dtype == np.float32 and sample["mc_return"].dtype == np.float32
    assert sample["valid"].dtype == bool and sample["done"].dtype == bool
    assert sample["instruction"].dtype == np.int64


def test_truncated_episode_bootstraps_and_masks(two_episodes: Path) -> None:
    data = ChunkDataset(two_episodes, chunk_size=3, gamma=0.5)
    valid = [[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 0, 0]]
    next_frames = [[7, 8, 9], [8, 9, 10], [9, 10, 10], [10, 10, 10]]
    for t in range(4):
        sample = data[5 + t]
        assert sample["frame"] == 6 + t
        np.testing.assert_array_equal(sample["done"], np.zeros(3, dtype=bool))
        np.testing.assert_array_equal(sample["valid"], np.array(valid[t], dtype=bool))
        np.testing.assert_array_equal(sample["imitate"], np.zeros(3, dtype=bool))  # a failure: critic data only
        np.testing.assert_array_equal(sample["next_frames"], next_frames[t])
        assert sample["mc_return"] == 0.0
    np.testing.assert_array_equal(data[8]["actions"], [ACTIONS_1[3], [0, 0], [0, 0]])


def test_step_cost_shifts_every_reward_and_return_by_hand(two_episodes: Path) -> None:
    plain = ChunkDataset(two_episodes, chunk_size=3, gamma=0.5, success_oversample=2.0)
    data = ChunkDataset(two_episodes, chunk_size=3, gamma=0.5, success_oversample=2.0, step_cost=0.1)
    # success episode: rewards 0, 0, 0, 0, 1 become -0.1 x 4, 0.9; steps past the end stay 0
    np.testing.assert_allclose(data[2]["rewards"], [-0.1, -0.1, 0.9], rtol=1e-6)
    np.testing.assert_allclose(data[4]["rewards"], [0.9, 0.0, 0.0], rtol=1e-6)
    # G_4 = 0.9, G_3 = -0.1 + 0.5 * 0.9, G_0 = -0.1 (1 + 0.5 + 0.25 + 0.125) + 0.0625 * 0.9
    assert [float(data[t]["mc_return"]) for t in (4, 3, 0)] == pytest.approx([0.9, 0.35, -0.13125])
    assert float(data[8]["mc_return"]) == pytest.approx(-0.1)  # the failure's last step: its cost alone
    np.testing.assert_array_equal(data.sample_weights, plain.sample_weights)  # success chunks: the stored rewards'
    with pytest.raises(ValueError, match="step_cost must be a finite cost >= 0"):
        ChunkDataset(two_episodes, chunk_size=3, step_cost=-0.1)


def test_truncated_returns_do_not_bootstrap(tmp_path: Path) -> None:
    root = write_store(tmp_path / "dense", [episode([[0, 1]] * 3, [1, 2, 3], terminated=False, tag=0)])
    data = ChunkDataset(root, chunk_size=2, gamma=0.5)
    # G_0 = 1 + 0.5*2 + 0.25*3, G_1 = 2 + 0.5*3, G_2 = 3
    assert [float(data[t]["mc_return"]) for t in range(3)] == [2.75, 3.5, 3.0]
    np.testing.assert_array_equal(data[2]["rewards"], [3, 0])


def test_discounted_returns_restart_at_each_episode() -> None:
    rewards = np.array([1, 1, 0, 2, 4], dtype=np.float32)
    returns = discounted_returns(rewards, np.array([2, 0, 3]), gamma=0.5)
    np.testing.assert_allclose(returns, [1.5, 1.0, 2.0, 4.0, 4.0])


def test_chunk_of_one_is_a_single_step(two_episodes: Path) -> None:
    data = ChunkDataset(two_episodes, chunk_size=1, gamma=0.5)
    assert [bool(data[t]["done"][0]) for t in range(len(data))] == [False] * 4 + [True] + [False] * 4
    assert bool(data.sample_batch(np.arange(len(data)), with_observations=False)["valid"].all())
    np.testing.assert_array_equal(data.sample_weights, [1, 1, 1, 1, 1, 1, 1, 1, 1])


# ----------------------------------------------------------------------------
# Frame indexing and the frame store
# ----------------------------------------------------------------------------


def test_global_frame_indexing_across_episodes(two_episodes: Path) -> None:
    data = ChunkDataset(two_episodes, chunk_size=3, gamma=0.5)
    assert len(data) == 9 and data.num_frames == 11 and data.num_episodes == 2
    np.testing.assert_array_equal(data.frames.frame_offsets, [0, 6, 11])
    np.testing.assert_array_equal(data.frames.episode_of_frame, [0] * 6 + [1] * 5)
    np.testing.assert_array_equal(data.episode_of_sample, [0] * 5 + [1] * 4)
    np.testing.assert_array_equal(data.step_of_sample, [0, 1, 2, 3, 4, 0, 1, 2, 3])
    observation = data.frames.get(np.array([6, 10, 5]))
    np.testing.assert_array_equal(observation["image_front"][:, 0, 0, 0], [10, 14, 5])
    np.testing.assert_array_equal(observation["state"], [[0, 1, 0], [4, 1, -4], [5, 0, -5]])
    assert data.instructions == [DRAWER, PICK]
    np.testing.assert_array_equal(data.frames.instruction_ids, [1] * 6 + [0] * 5)
    assert [int(data[i]["instruction"]) for i in (0, 4, 5, 8)] == [1, 1, 0, 0]


@pytest.mark.parametrize("in_memory", [True, False])
def test_frame_store_gathers_in_the_given_order(two_episodes: Path, in_memory: bool) -> None:
    store = FrameStore(EpisodeDataset(two_episodes), in_memory=in_memory)
    assert store.in_memory is in_memory
    indices = np.array([[9, 0, 9], [3, 10, 6]])
    frames = store.get(indices)
    assert frames["image_front"].shape == (2, 3, 8, 8, 3) and frames["image_front"].dtype == np.uint8
    assert frames["state"].shape == (2, 3, 3) and frames["state"].dtype == np.float32
    np.testing.assert_array_equal(frames["image_front"][..., 0, 0, 0], [[13, 0, 13], [3, 14, 10]])
    with pytest.raises(IndexError, match=r"\[0, 11\)"):
        store.get(np.array([11]))


def test_frame_store_lazy_and_in_memory_agree(two_episodes: Path) -> None:
    dataset = EpisodeDataset(two_episodes)
    assert FrameStore(dataset, in_memory="auto").in_memory
    assert not FrameStore(dataset, in_memory="auto", memory_budget=1).in_memory
    assert FrameStore(dataset).nbytes == 11 * (8 * 8 * 3 + 3 * 4)
    indices = np.random.default_rng(0).integers(0, 11, size=40)
    eager, lazy = FrameStore(dataset, in_memory=True).get(indices), FrameStore(dataset, in_memory=False).get(indices)
    for key in ("image_front", "state"):
        np.testing.assert_array_equal(eager[key], lazy[key])
    with pytest.raises(ValueError, match="in_memory must be True, False or 'auto'"):
        FrameStore(dataset, in_memory="yes")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------
# Batches, pickling, loaders
# ----------------------------------------------------------------------------


def assert_batches_equal(left: dict, right: dict) -> None:
    assert left.keys() == right.keys()
    for key in left:
        if isinstance(left[key], dict):
            assert_batches_equal(left[key], right[key])
        else:
            np.testing.assert_array_equal(left[key], right[key])
            assert np.asarray(left[key]).dtype == np.asarray(right[key]).dtype


@pytest.mark.parametrize("in_memory", [True, False])
def test_sample_batch_equals_stacked_items(two_episodes: Path, in_memory: bool) -> None:
    data = ChunkDataset(two_episodes, chunk_size=3, gamma=0.5, in_memory=in_memory)
    indices = np.array([8, 0, 4, 4, 5, 2])
    batch = data.sample_batch(indices)
    items = [data[int(i)] for i in indices]
    stacked = {key: np.stack([item[key] for item in items]) for key in items[0] if key != "observation"}
    keys = items[0]["observation"]
    stacked["observation"] = {key: np.stack([item["observation"][key] for item in items]) for key in keys}
    assert_batches_equal(batch, stacked)
    assert "observation" not in data.sample_batch(indices, with_observations=False)
    single = to_torch(data[3])
    assert single["frame"].shape == () and single["observation"]["image_front"].shape == (8, 8, 3)
    assert_batches_equal(data[-1], data[8])
    with pytest.raises(IndexError):
        data[9]
    with pytest.raises(IndexError, match=r"\[0, 9\)"):
        data.sample_batch(np.array([0, 9]))


def test_lazy_and_in_memory_datasets_agree(two_episodes: Path) -> None:
    eager = ChunkDataset(two_episodes, chunk_size=4, gamma=0.9, in_memory=True)
    lazy = ChunkDataset(two_episodes, chunk_size=4, gamma=0.9, in_memory=False)
    indices = np.random.default_rng(1).integers(0, len(eager), size=30)
    assert_batches_equal(eager.sample_batch(indices), lazy.sample_batch(indices))


@pytest.mark.parametrize("in_memory", [True, False])
def test_pickle_round_trip(two_episodes: Path, in_memory: bool) -> None:
    data = ChunkDataset(two_episodes, chunk_size=3, gamma=0.5, success_oversample=2.0, in_memory=in_memory)
    data.sample_batch(np.arange(len(data)))  # opens files in the lazy case
    copy = pickle.loads(pickle.dumps(data))
    indices = np.arange(len(data))
    assert_batches_equal(copy.sample_batch(indices), data.sample_batch(indices))
    np.testing.assert_array_equal(copy.sample_weights, data.sample_weights)
    assert copy.frames.in_memory is in_memory


def test_loader_with_a_worker_yields_tensor_batches(two_episodes: Path) -> None:
    data = ChunkDataset(two_episodes, chunk_size=3, gamma=0.5, in_memory=False)
    loader = data.make_loader(batch_size=4, num_workers=1, num_samples=12)
    batches = list(loader)
    assert len(batches) == 3
    batch = batches[0]
    shapes = {key: tuple(value.shape) for key, value in batch.items() if key != "observation"}
    assert shapes == {"frame": (4,), "next_frames": (4, 3), "actions": (4, 3, 2), "rewards": (4, 3),
                      "valid": (4, 3), "imitate": (4, 3), "done": (4, 3), "mc_return": (4,), "instruction": (4,)}
    assert batch["observation"]["image_front"].shape == (4, 8, 8, 3)
    assert batch["observation"]["image_front"].dtype == torch.uint8
    assert batch["observation"]["state"].shape == (4, 3)
    assert batch["valid"].dtype == torch.bool and batch["actions"].dtype == torch.float32
    expected = data.sample_batch(batch["frame"].numpy() - data.frames.episode_of_frame[batch["frame"].numpy()])
    np.testing.assert_array_equal(batch["observation"]["state"].numpy(), expected["observation"]["state"])


def test_loader_options(two_episodes: Path) -> None:
    data = ChunkDataset(two_episodes, chunk_size=3, gamma=0.5)
    loader = data.make_loader(batch_size=2, with_observations=False, seed=3)
    batches = list(loader)
    assert len(batches) == 4 and "observation" not in batches[0]
    again = list(data.make_loader(batch_size=2, with_observations=False, seed=3))
    assert all(torch.equal(a["frame"], b["frame"]) for a, b in zip(batches, again))
    with pytest.raises(ValueError, match="yields no batch"):
        data.make_loader(batch_size=10)


# ----------------------------------------------------------------------------
# Success oversampling
# ----------------------------------------------------------------------------


def test_success_windows_are_weighted(two_episodes: Path) -> None:
    data = ChunkDataset(two_episodes, chunk_size=3, gamma=0.5, success_oversample=4.0)
    # windows [t, t+3) of episode 0 hold its rewarded step 4 for t = 2, 3, 4
    np.testing.assert_array_equal(data.sample_weights, [1, 1, 4, 4, 4, 1, 1, 1, 1])
    assert data.sample_weights.dtype == np.float64
    np.testing.assert_array_equal(ChunkDataset(two_episodes, chunk_size=3).sample_weights, np.ones(9))


def success_frequency_ratio(drawn: np.ndarray, weights: np.ndarray) -> float:
    """How much more often one success sample is drawn than one other sample."""
    counts = np.bincount(drawn, minlength=len(weights))
    success = weights > 1
    return counts[success].mean() / counts[~success].mean()


def test_sampler_draws_success_windows_more_often(two_episodes: Path) -> None:
    data = ChunkDataset(two_episodes, chunk_size=3, gamma=0.5, success_oversample=4.0)
    sampler = data.make_sampler(30_000, generator=torch.Generator().manual_seed(0))
    drawn = np.fromiter(iter(sampler), dtype=np.int64)
    assert len(drawn) == 30_000
    assert success_frequency_ratio(drawn, data.sample_weights) == pytest.approx(4.0, rel=0.1)
    assert np.mean(data.sample_weights[drawn] > 1) == pytest.approx(12 / 18, abs=0.02)


def test_iterate_batches_draws_success_windows_more_often(two_episodes: Path) -> None:
    data = ChunkDataset(two_episodes, chunk_size=3, gamma=0.5, success_oversample=4.0)
    batches = data.iterate_batches(1000, np.random.default_rng(0), with_observations=False)
    frames = torch.cat([next(batches)["frame"] for _ in range(30)]).numpy()
    drawn = frames - data.frames.episode_of_frame[frames]  # frame -> sample: one extra frame per earlier episode
    assert success_frequency_ratio(drawn, data.sample_weights) == pytest.approx(4.0, rel=0.1)
    batch = next(data.iterate_batches(5, np.random.default_rng(1)))
    assert isinstance(batch["actions"], torch.Tensor) and batch["actions"].shape == (5, 3, 2)
    assert batch["observation"]["image_front"].shape == (5, 8, 8, 3)


def test_store_mix_gives_each_store_its_share_by_hand(two_episodes: Path, tmp_path: Path) -> None:
    # store 0: episodes 0 (T = 5) and 1 (T = 4), 9 samples; store 1: one episode of T = 4 (4 samples)
    other = write_store(tmp_path / "other", [episode(ACTIONS_1, REWARDS_1, terminated=False, tag=2)])
    union = open_episodes([two_episodes, other])
    np.testing.assert_array_equal(union.store_of_episode, [0, 0, 1])
    data = ChunkDataset(union, chunk_size=3, gamma=0.5, success_oversample=4.0, store_mix=(3, 1))
    # success weights u = [1, 1, 4, 4, 4, 1, 1, 1, 1 | 1, 1, 1, 1]; store 0 sums to 18, store 1 to 4
    expected = np.array([1, 1, 4, 4, 4, 1, 1, 1, 1, 0, 0, 0, 0]) * 0.75 / 18 + np.r_[np.zeros(9), np.ones(4)] * 0.25 / 4
    np.testing.assert_allclose(data.sampling_probabilities(oversample_success=True), expected)
    uniform = np.r_[np.full(9, 0.75 / 9), np.full(4, 0.25 / 4)]
    np.testing.assert_allclose(data.sampling_probabilities(oversample_success=False), uniform)
    drawn = data.make_sampler(20_000, generator=torch.Generator().manual_seed(0))
    assert np.mean(np.fromiter(iter(drawn), dtype=np.int64) >= 9) == pytest.approx(0.25, abs=0.015)
    plain = ChunkDataset(union, chunk_size=3)
    assert plain.store_mix is None and plain.sampling_probabilities(oversample_success=False) is None
    for bad in ((1.0,), (1.0, 0.0), (1.0, float("nan"))):
        with pytest.raises(ValueError, match=r"store_mix must give one positive share per store \(2 stores"):
            ChunkDataset(union, chunk_size=3, store_mix=bad)


# ----------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------


def test_action_and_state_stats_by_hand(tmp_path: Path) -> None:
    states_0 = [[0, 7, -1], [1, 7, 1], [2, 7, -1]]
    states_1 = [[3, 7, 1], [4, 7, -1], [5, 7, 1]]
    root = write_store(
        tmp_path / "stats",
        [
            episode([[-0.5, 1], [0.0, -1]], [0, 0], terminated=False, tag=0, states=states_0),
            episode([[0.5, 1], [1.0, 1]], [0, 1], terminated=True, tag=1, states=states_1),
        ],
    )
    data = ChunkDataset(root, chunk_size=4)  # padding past the ends must not enter the statistics
    actions = data.action_stats()
    # dim 0: {-0.5, 0, 0.5, 1}; dim 1: {1, -1, 1, 1}
    np.testing.assert_allclose(actions["mean"], [0.25, 0.5])
    np.testing.assert_allclose(actions["std"], [np.sqrt(0.3125), np.sqrt(0.75)], rtol=1e-6)
    np.testing.assert_array_equal(actions["min"], [-0.5, -1])
    np.testing.assert_array_equal(actions["max"], [1, 1])
    np.testing.assert_array_equal(actions["binary_dims"], [1])
    assert actions["mean"].dtype == np.float32
    states = data.state_stats()
    # dim 0: 0..5; dim 1: constant (std floored); dim 2: alternating -1, +1
    np.testing.assert_allclose(states["mean"], [2.5, 7.0, 0.0])
    np.testing.assert_allclose(states["std"], [np.sqrt(35 / 12), STD_FLOOR, 1.0], rtol=1e-6)
    lazy = ChunkDataset(root, chunk_size=4, in_memory=False).state_stats()
    np.testing.assert_array_equal(lazy["std"], states["std"])
    with pytest.raises(KeyError, match="no observation key 'proprio'"):
        data.state_stats("proprio")


# ----------------------------------------------------------------------------
# Metadata and validation
# ----------------------------------------------------------------------------


def test_metadata_passthrough(two_episodes: Path) -> None:
    data = ChunkDataset(EpisodeDataset(two_episodes), chunk_size=3, gamma=0.9)
    assert data.env_id == "test/Tiny-v0" and data.env_kwargs == {}
    assert data.observation_space == META.observation_space
    assert data.action_space == META.action_space
    assert (data.chunk_size, data.gamma) == (3, 0.9)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"chunk_size": 0}, "chunk_size must be an integer >= 1"),
        ({"chunk_size": 2.5}, "chunk_size must be an integer >= 1"),
        ({"gamma": 0.0}, "gamma must satisfy 0 < gamma <= 1"),
        ({"gamma": 1.5}, "gamma must satisfy 0 < gamma <= 1"),
        ({"success_oversample": 0.5}, "success_oversample must be >= 1"),
    ],
)
def test_bad_settings_are_refused(two_episodes: Path, settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ChunkDataset(two_episodes, **{"chunk_size": 3, **settings})


@pytest.mark.parametrize("array", ["actions", "rewards", "observations/state"])
def test_nan_or_inf_in_a_store_is_refused_naming_the_file_and_array(tmp_path: Path, array: str) -> None:
    actions, rewards = [list(row) for row in ACTIONS_1], list(REWARDS_1)
    states = [[i, 2, -i] for i in range(len(actions) + 1)]
    if array == "actions":
        actions[2][1] = float("nan")
    elif array == "rewards":
        rewards[3] = float("inf")
    else:
        states[1][0] = float("nan")
    store = write_store(tmp_path / "store", [episode(ACTIONS_0, REWARDS_0, terminated=True, tag=0),
                                             episode(actions, rewards, terminated=False, tag=2, states=states)])
    with pytest.raises(ValueError, match=rf"episode_000001\.h5: {array} holds NaN or inf \(first at index"):
        ChunkDataset(store, chunk_size=2)


def test_missing_and_empty_stores_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="corft collect"):
        ChunkDataset(tmp_path / "nowhere", chunk_size=3)
    empty = write_store(tmp_path / "empty", [])
    with pytest.raises(ValueError, match="holds no steps"):
        ChunkDataset(empty, chunk_size=3)


# ----------------------------------------------------------------------------
# Real collected data
# ----------------------------------------------------------------------------


@pytest.mark.integration
def test_real_collected_episodes(tmp_path: Path) -> None:
    collect(CollectConfig(env_id="corft/PickPlace-v0", episodes=2, out=tmp_path / "d", image_size=32), progress=False)
    data = ChunkDataset(tmp_path / "d", chunk_size=10)
    lengths = data.episodes.lengths
    assert len(data) == lengths.sum() and data.num_frames == lengths.sum() + 2
    action_dim = data.action_space.shape[0]
    batch = data.sample_batch(np.arange(len(data)))
    assert batch["actions"].shape == (len(data), 10, action_dim)
    assert batch["observation"]["image_front"].shape == (len(data), 32, 32, 3)
    assert batch["observation"]["state"].shape == (len(data), 15)
    for last in np.cumsum(lengths) - 1:
        assert bool(batch["done"][last, 0]) and batch["rewards"][last, 0] == 1.0
        assert batch["mc_return"][last] == 1.0 and not batch["valid"][last, 1:].any()
    assert not batch["done"][np.cumsum(lengths) - 2, 0].any()
    assert action_dim - 1 in data.action_stats()["binary_dims"]
