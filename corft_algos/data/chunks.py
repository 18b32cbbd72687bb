"""The offline chunk dataset of SFT, BC and CO-RFT training: samples, sampling and statistics.

Notation (``DESIGN.md`` section 4): an episode of ``T`` steps holds
observations ``o_0 .. o_T`` (``T + 1`` frames, ``o_T`` follows the last
step), actions ``a_0 .. a_{T-1}`` and rewards ``r_0 .. r_{T-1}``; it ended
either *terminated* (success) or *truncated* (time limit). ``H`` is the chunk
length and ``γ`` the per-step discount.

:class:`~corft_algos.data.frames.FrameStore` holds every frame's observation under a global
frame index. :class:`ChunkDataset` has one sample per start step ``(e, t)``,
``0 <= t < T_e``, with the chunk ``a_{t:t+H}``, its rewards, the ``valid`` and
``done`` masks of the per-prefix TD target

    y_j = Σ_{i=0..j} γ^i r_{t+i} + γ^{j+1} (1 - d_{t+j}) min_k Q̄_k^{(H-1)}(c_{t+j+1}, ã),

the frame indices of ``o_t`` and of every ``o_{t+j+1}``, and the Monte-Carlo
return ``G_t`` used as the Cal-QL floor. Every per-sample array is computed
once at construction, so drawing a batch costs ``O(batch)``.
"""

from __future__ import annotations

import itertools
import operator
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from gymnasium import spaces
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, WeightedRandomSampler

from corft_algos.data.frames import DEFAULT_MEMORY_BUDGET, FrameStore, InMemory, check_indices, episode_offsets
from corft_envs.chunking import check_chunk_settings
from corft_envs.episode_store import EpisodeDataset, EpisodeSource

#: Lower bound of every standard deviation returned by the statistics methods.
STD_FLOOR = 1e-3

#: A batch (or one sample): field name -> array; ``"observation"`` maps to a dict of arrays.
Batch = dict[str, Any]


def discounted_returns(rewards: np.ndarray, lengths: np.ndarray, gamma: float) -> np.ndarray:
    """Monte-Carlo return of every step, to the end of its episode, without bootstrap.

    ``G_t = Σ_{i=0}^{T-1-t} γ^i r_{t+i}``, computed backwards as
    ``G_t = r_t + γ G_{t+1}`` with ``G_T = 0``, all episodes at once.

    :param rewards: ``(Σ T_e,)`` rewards of every episode, concatenated in order.
    :param lengths: ``(N,)`` episode lengths ``T_e``.
    :param gamma: per-step discount.
    :returns: ``(Σ T_e,)`` float64 returns, aligned with ``rewards``.
    """
    offsets = episode_offsets(lengths)
    episode = np.repeat(np.arange(len(lengths)), lengths)
    step = np.arange(offsets[-1]) - offsets[episode]
    returns = np.zeros((len(lengths), int(lengths.max(initial=0)) + 1), dtype=np.float64)
    returns[episode, step] = rewards
    for column in range(returns.shape[1] - 2, -1, -1):
        returns[:, column] += gamma * returns[:, column + 1]
    return returns[episode, step]


def to_torch(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The same (nested) dict with every numpy array as a ``torch.Tensor`` sharing its memory (shapes kept)."""
    return {
        key: to_torch(value) if isinstance(value, Mapping) else torch.as_tensor(value) for key, value in batch.items()
    }


def _first(batch: Mapping[str, Any]) -> Batch:
    """Entry 0 of every array in a batch of one, as arrays (0-d for scalar fields)."""
    return {key: _first(value) if isinstance(value, Mapping) else value[0, ...] for key, value in batch.items()}


def _moments(values: np.ndarray) -> dict[str, np.ndarray]:
    """Per-dimension mean, std (population, floored at :data:`STD_FLOOR`), min and max, as float32."""
    values = values.astype(np.float64)
    return {
        "mean": values.mean(axis=0).astype(np.float32),
        "std": np.maximum(values.std(axis=0), STD_FLOOR).astype(np.float32),
        "min": values.min(axis=0).astype(np.float32),
        "max": values.max(axis=0).astype(np.float32),
    }


def _open_episodes(episodes: EpisodeSource | str | os.PathLike[str]) -> EpisodeSource:
    if isinstance(episodes, EpisodeSource):
        return episodes
    path = Path(episodes)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no such episode store; collect demonstrations first, e.g. "
            f"`corft collect --env corft/PickPlace-v0 --episodes 50 --out {path}`"
        )
    return EpisodeDataset(path)


def _check_store_mix(store_mix: Sequence[float] | None, stores: int) -> np.ndarray | None:
    """``store_mix`` as shares summing to 1, or ``None``.

    :raises ValueError: if it has not one positive, finite entry per store.
    """
    if store_mix is None:
        return None
    mix = np.asarray(store_mix, dtype=np.float64)
    if mix.shape != (stores,) or not np.all(np.isfinite(mix)) or not np.all(mix > 0):
        raise ValueError(f"store_mix must give one positive share per store ({stores} stores read), got "
                         f"{list(store_mix)}; e.g. {[1.0] * stores} draws every store equally often")
    return mix / mix.sum()


def _check_settings(chunk_size: int, gamma: float, success_oversample: float) -> None:
    check_chunk_settings(chunk_size, gamma)
    if not success_oversample >= 1.0:
        raise ValueError(
            f"success_oversample must be >= 1 (1 samples uniformly, k draws success windows k times as "
            f"often), got {success_oversample!r}"
        )


class _BatchFetcher(Dataset):
    """Map-style view whose items are whole batches: ``fetcher[indices] = dataset.sample_batch(indices)``."""

    def __init__(self, dataset: ChunkDataset, with_observations: bool) -> None:
        self.dataset = dataset
        self.with_observations = with_observations

    def __getitem__(self, indices: list[int]) -> Batch:
        return self.dataset.sample_batch(np.asarray(indices, dtype=np.int64), self.with_observations)


class _BatchShards(Sampler[list[int]]):
    """The same slice of every batch of index lists."""

    def __init__(self, batches: BatchSampler, shard: slice) -> None:
        self.batches, self.shard = batches, shard

    def __iter__(self) -> Iterator[list[int]]:
        return (batch[self.shard] for batch in self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class ChunkDataset(Dataset):
    """One sample per start step ``(e, t)``, ``0 <= t < T_e``, in episode then step order.

    Sample ``(e, t)``, with ``j = 0 .. H-1``:

    * ``frame`` (int64): global frame index of ``o_t``;
    * ``next_frames`` (int64, ``(H,)``): frame of ``o_{min(t+j+1, T)}``, clamped to ``o_T``;
    * ``actions`` (float32, ``(H, A)``): ``a_{t+j}``, zeros where ``t+j >= T``;
    * ``rewards`` (float32, ``(H,)``): ``r_{t+j}``, zeros where ``t+j >= T``; with a
      ``step_cost`` c, ``r_{t+j} = r^stored_{t+j} − c`` (the store is not changed);
    * ``valid`` (bool, ``(H,)``): ``t + j < T``; invalid steps are masked out of
      every loss, never padded into targets;
    * ``imitate`` (bool, ``(H,)``): ``valid`` in a successful episode, else all
      False: the imitation losses' mask, so a policy's failed rollouts
      (``corft collect --policy --keep-failures``) teach the critic, not the actor;
    * ``done`` (bool, ``(H,)``): ``d_{t+j} = 1`` iff the episode terminated and
      ``t + j >= T - 1`` (terminated at or before ``t+j``); always 0 for
      truncated episodes, which bootstrap;
    * ``mc_return`` (float32): ``G_t = Σ_{i=0}^{T-1-t} γ^i r_{t+i}``;
    * ``instruction`` (int64): index of the episode's instruction in :attr:`instructions`;
    * ``observation``: dict of ``o_t``'s arrays.

    Sample ``i`` is the ``i``-th step of the concatenated episodes, so
    ``episode_of_sample[i]`` and ``step_of_sample[i]`` give ``(e, t)``.
    ``sample_weights[i]`` is ``success_oversample`` where the window
    ``[t, t+H)`` holds a step with a stored reward > 0, else 1.

    Co-training: with ``store_mix`` ``(m_0, ..., m_{S-1})`` for the ``S`` stores of a
    :class:`~corft_envs.episode_store.ConcatEpisodeDataset`, store ``s`` gets the share
    ``m_s / Σ m`` of the draws whatever its size, e.g. ``(1, 1)`` gives 30 target demos
    half of every batch beside 1000 episodes of a base policy's data (co-fine-tuning, as
    RT-2 and OpenVLA keep their pretraining data in the mix). Within a store the draws
    follow the weights above: ``w_i = m_s u_i / Σ_{j∈s} u_j`` with ``u`` the success
    weights (or ones for uniform draws, :meth:`sampling_probabilities`).

    :param episodes: an episode store or its directory.
    :param chunk_size: chunk length ``H`` >= 1.
    :param gamma: per-step discount, ``0 < γ <= 1``.
    :param success_oversample: weight >= 1 of the samples whose chunk holds a rewarded step.
    :param step_cost: c >= 0 subtracted from every step's reward, a cost of time: with the tasks'
        sparse reward (1 at the success step, which ends the episode) a return is ``γ^k − c (1 − γ^{k+1})
        / (1 − γ)`` for success in ``k`` more steps, so a step of delay costs about ``c + (1 − γ) Q``
        instead of ``(1 − γ) Q``, and a failure that runs on is worth down to ``−c / (1 − γ)`` instead of 0.
    :param in_memory: frames in memory (``True``), read from the files
        (``False``), or in memory if they fit ``memory_budget`` (``"auto"``).
    :param memory_budget: byte budget of ``in_memory="auto"``.
    :param store_mix: share of the draws of each store, in store order (``None``: in proportion to size).
    :raises FileNotFoundError: if ``episodes`` is a path that does not exist.
    :raises ValueError: on a setting out of range or a store without steps.
    """

    def __init__(
        self,
        episodes: EpisodeSource | str | os.PathLike[str],
        chunk_size: int,
        gamma: float = 0.99,
        success_oversample: float = 1.0,
        in_memory: InMemory = "auto",
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        store_mix: Sequence[float] | None = None,
        step_cost: float = 0.0,
    ) -> None:
        _check_settings(chunk_size, gamma, success_oversample)
        if not (np.isfinite(step_cost) and step_cost >= 0):
            raise ValueError(f"step_cost must be a finite cost >= 0 subtracted from every reward, got {step_cost!r}")
        self.episodes = _open_episodes(episodes)
        self.store_mix = _check_store_mix(store_mix, len(self.episodes.parts))
        lengths = self.episodes.lengths
        if lengths.sum() == 0:
            raise ValueError(
                f"{self.episodes.root} holds no steps ({len(lengths)} episodes); collect demonstrations "
                "into it first with `corft collect`"
            )
        self.chunk_size = int(chunk_size)
        self.gamma = float(gamma)
        self.success_oversample = float(success_oversample)
        self.step_cost = float(step_cost)
        self.frames = FrameStore(self.episodes, in_memory, memory_budget)
        self._step_actions, self._stored_rewards = self._read_steps()
        self._step_rewards = self._stored_rewards.copy()
        self._step_rewards[:-1] -= self.step_cost  # the trailing padding row stays 0
        self._build_samples(lengths)

    def _read_steps(self) -> tuple[np.ndarray, np.ndarray]:
        """Actions and rewards of every step, concatenated, plus one trailing zero row for padding.

        :raises ValueError: naming the episode file and array if an action, reward or state is NaN or inf
            (training on it would diverge at the first step, far from the cause).
        """
        action_shape = self.episodes.action_space.shape
        actions, rewards = [], []
        for episode in self.episodes:
            arrays = {"actions": np.asarray(episode.actions, dtype=np.float32),
                      "rewards": np.asarray(episode.rewards, dtype=np.float32)}
            if "state" in episode.observations:
                arrays["observations/state"] = np.asarray(episode.observations["state"], dtype=np.float32)
            for name, values in arrays.items():
                if not np.all(np.isfinite(values)):
                    where = np.argwhere(~np.isfinite(values))[0]
                    raise ValueError(f"{episode.path}: {name} holds NaN or inf (first at index "
                                     f"{tuple(int(i) for i in where)}); delete the episode file and run its "
                                     "`corft collect` command again to replace it")
            actions.append(arrays["actions"])
            rewards.append(arrays["rewards"])
        padding_action = np.zeros((1, *action_shape), dtype=np.float32)
        padding_reward = np.zeros(1, dtype=np.float32)
        return np.concatenate([*actions, padding_action]), np.concatenate([*rewards, padding_reward])

    def _build_samples(self, lengths: np.ndarray) -> None:
        """Every per-sample array, vectorised over all start steps."""
        step_offsets = episode_offsets(lengths)
        total_steps = int(step_offsets[-1])
        episode = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
        step = np.arange(total_steps, dtype=np.int64) - step_offsets[episode]
        length = lengths[episode][:, None]
        window = step[:, None] + np.arange(self.chunk_size, dtype=np.int64)
        self.episode_of_sample = episode
        self.step_of_sample = step
        self._frame = self.frames.frame_offsets[episode] + step
        self._next_frames = self.frames.frame_offsets[episode][:, None] + np.minimum(window + 1, length)
        self._valid = window < length
        self._imitate = self._valid & self.episodes.successes[episode][:, None]
        self._steps = np.where(self._valid, step_offsets[episode][:, None] + window, total_steps)
        self._done = self.episodes.terminated[episode][:, None] & (window >= length - 1)
        self._mc_return = discounted_returns(self._step_rewards[:-1], lengths, self.gamma).astype(np.float32)
        self._instruction = self.frames.episode_instruction_ids[episode]
        rewarded = (self._stored_rewards[self._steps] > 0).any(axis=1)
        store = self.episodes.store_of_episode[episode]
        self.sample_weights = self._mixed(np.where(rewarded, self.success_oversample, 1.0), store)
        self._uniform_weights = None if self.store_mix is None else self._mixed(np.ones(total_steps), store)

    def _mixed(self, weights: np.ndarray, store: np.ndarray) -> np.ndarray:
        """``weights`` rescaled so that store ``s``'s samples sum to its share of :attr:`store_mix`."""
        if self.store_mix is None:
            return weights
        totals = np.bincount(store, weights=weights, minlength=len(self.store_mix))
        return weights * (self.store_mix / totals)[store]

    def sampling_probabilities(self, oversample_success: bool) -> np.ndarray | None:
        """``P(i)`` of a draw: by :attr:`sample_weights` if ``oversample_success``, else uniform within each
        store (at the stores' :attr:`store_mix` shares); ``None`` for plain uniform draws."""
        weights = self.sample_weights if oversample_success else self._uniform_weights
        return None if weights is None else weights / weights.sum()

    # ------------------------------------------------------------------ sampling

    def __len__(self) -> int:
        return len(self._frame)

    def sample_batch(self, indices: np.ndarray, with_observations: bool = True) -> Batch:
        """Samples ``indices`` stacked along a leading batch axis, in the order given.

        The same fields as :meth:`__getitem__`, gathered by fancy indexing.

        :param indices: ``(B,)`` sample indices in ``[0, len(self))``; repeats allowed.
        :param with_observations: also read ``o_t`` into ``"observation"``
            (skip it when training on cached features indexed by ``"frame"``).
        :raises IndexError: on an index out of range.
        """
        indices = check_indices(indices, len(self), "sample")
        if indices.ndim != 1:
            raise IndexError(f"sample indices must be a 1-D array, got shape {indices.shape}")
        steps = self._steps[indices]
        batch: Batch = {
            "frame": self._frame[indices],
            "next_frames": self._next_frames[indices],
            "actions": self._step_actions[steps],
            "rewards": self._step_rewards[steps],
            "valid": self._valid[indices],
            "imitate": self._imitate[indices],
            "done": self._done[indices],
            "mc_return": self._mc_return[indices],
            "instruction": self._instruction[indices],
        }
        if with_observations:
            batch["observation"] = self.frames.get(batch["frame"])
        return batch

    def __getitem__(self, index: int) -> Batch:
        """Sample ``index`` (negative counts from the end) as a dict of numpy arrays."""
        position = operator.index(index)
        if not -len(self) <= position < len(self):
            raise IndexError(f"sample index {position} out of range for {len(self)} samples")
        return _first(self.sample_batch(np.array([position % len(self)])))

    def make_sampler(self, num_samples: int, generator: torch.Generator | None = None) -> WeightedRandomSampler:
        """Draws ``num_samples`` sample indices with replacement, ``P(i) ∝ sample_weights[i]``."""
        weights = torch.as_tensor(self.sample_weights, dtype=torch.float64)
        return WeightedRandomSampler(weights, num_samples, replacement=True, generator=generator)

    def make_loader(
        self,
        batch_size: int,
        num_workers: int = 0,
        seed: int = 0,
        drop_last: bool = True,
        pin_memory: bool = False,
        num_samples: int | None = None,
        with_observations: bool = True,
        shard: slice | None = None,
    ) -> DataLoader:
        """A DataLoader of weighted batches of torch tensors, fetched with :meth:`sample_batch`.

        One pass draws ``num_samples`` samples (default ``len(self)``) with
        :meth:`make_sampler`; every pass draws afresh from a generator seeded
        with ``seed``. With workers, they persist between passes, so looping
        ``for batch in loader`` again and again is cheap.

        :param batch_size: samples per batch.
        :param num_workers: DataLoader worker processes.
        :param seed: seed of the sampling generator.
        :param drop_last: drop a last incomplete batch.
        :param pin_memory: put batches in pinned memory (for GPU transfer).
        :param num_samples: samples drawn per pass.
        :param with_observations: include ``"observation"`` (``o_t``'s arrays).
        :param shard: fetch only this slice of each batch (a data-parallel rank's share of the global
            batch: every rank draws the same batches from the same ``seed``).
        :raises ValueError: if a pass would yield no batch.
        """
        draws = len(self) if num_samples is None else num_samples
        if batch_size < 1 or draws < 1 or (drop_last and draws < batch_size):
            raise ValueError(
                f"a pass of {draws} samples in batches of {batch_size} (drop_last={drop_last}) yields no batch; "
                "use batch_size >= 1 and num_samples >= batch_size"
            )
        generator = torch.Generator().manual_seed(seed)
        batches: Iterable[list[int]] = BatchSampler(self.make_sampler(draws, generator), batch_size, drop_last)
        if shard is not None:
            batches = _BatchShards(batches, shard)
        return DataLoader(
            _BatchFetcher(self, with_observations),
            batch_size=None,
            sampler=batches,
            num_workers=num_workers,
            collate_fn=to_torch,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
        )

    def draw_batch(
        self,
        batch_size: int,
        rng: np.random.Generator,
        oversample_success: bool = True,
        with_observations: bool = True,
        shard: slice = slice(None),
    ) -> dict[str, Any]:
        """A batch of torch tensors drawn in this process with ``rng``: the training's sampler.

        Draws ``rng.choice(len, batch_size, p=sampling_probabilities(oversample_success))`` and fetches
        ``shard`` of those samples with :meth:`sample_batch`.

        :param shard: the slice of the drawn batch to fetch (a data-parallel rank's share of the global
            batch: every rank draws the same indices from the same stream).
        """
        indices = rng.choice(len(self), size=batch_size, p=self.sampling_probabilities(oversample_success))
        return to_torch(self.sample_batch(indices[shard], with_observations))

    def iterate_batches(
        self, batch_size: int, rng: np.random.Generator, with_observations: bool = True
    ) -> Iterator[dict[str, Any]]:
        """Endless weighted batches of torch tensors, each one :meth:`draw_batch` with success oversampling.

        :raises ValueError: if ``batch_size < 1``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return (self.draw_batch(batch_size, rng, with_observations=with_observations) for _ in itertools.count())

    # ---------------------------------------------------------------- statistics

    def action_stats(self) -> dict[str, np.ndarray]:
        """Statistics of every recorded action (every valid step).

        :returns: ``mean``, ``std`` (population, floored at :data:`STD_FLOOR`),
            ``min`` and ``max`` per action dim (float32, ``(A,)``), and
            ``binary_dims`` (int64): the dims whose values are all exactly -1 or +1.
        """
        actions = self._step_actions[:-1].reshape(len(self._step_actions) - 1, -1)
        stats = _moments(actions)
        stats["binary_dims"] = np.flatnonzero(np.all(np.abs(actions) == 1.0, axis=0)).astype(np.int64)
        return stats

    def state_stats(self, key: str = "state") -> dict[str, np.ndarray]:
        """``mean`` and ``std`` (population, floored at :data:`STD_FLOOR`) of observation ``key`` over all frames.

        :raises KeyError: if the dataset has no observation ``key``.
        """
        stats = _moments(self.frames.read_all(key))
        return {"mean": stats["mean"], "std": stats["std"]}

    # ------------------------------------------------------------------ metadata

    @property
    def env_id(self) -> str:
        """Gymnasium id of the env the data was collected in."""
        return self.episodes.env_id

    @property
    def env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments the env was made with."""
        return self.episodes.env_kwargs

    @property
    def observation_space(self) -> spaces.Dict:
        """The recorded step-level observation space."""
        return self.episodes.observation_space

    @property
    def action_space(self) -> spaces.Box:
        """The recorded step-level action space (one action, not a chunk)."""
        return self.episodes.action_space

    @property
    def instructions(self) -> list[str]:
        """The dataset's unique instructions, sorted; ``"instruction"`` fields index into it."""
        return list(self.frames.instructions)

    @property
    def num_episodes(self) -> int:
        """Number of episodes."""
        return len(self.episodes)

    @property
    def num_frames(self) -> int:
        """Number of frames, ``Σ_e (T_e + 1)``."""
        return self.frames.num_frames
