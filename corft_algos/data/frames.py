"""The observations of every frame of an episode store, addressed by a global frame index.

An episode of ``T`` steps holds observations ``o_0 .. o_T`` (``T + 1`` frames, ``o_T`` follows the last
step); :class:`FrameStore` holds them all, in memory or read lazily from the episode files, for
:class:`~corft_algos.data.chunks.ChunkDataset` and the :class:`~corft_algos.feature_cache.FeatureCache`.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from gymnasium import spaces

from corft_envs.episode_store import EpisodeSource

#: Frames are held in memory under ``in_memory="auto"`` when they take fewer bytes than this.
DEFAULT_MEMORY_BUDGET = 4 * 2**30

#: ``in_memory``: frames in memory (``True``), read from the files (``False``), or in memory if they fit a budget.
InMemory = bool | Literal["auto"]


def episode_offsets(sizes: np.ndarray) -> np.ndarray:
    """``(N + 1,)`` int64 start of each episode's block in a concatenation, then the total."""
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def _resolve_in_memory(in_memory: InMemory, nbytes: int, memory_budget: int) -> bool:
    """Whether frames of ``nbytes`` bytes are held in memory under ``in_memory``."""
    if in_memory == "auto":
        return nbytes <= memory_budget
    if isinstance(in_memory, bool):
        return in_memory
    raise ValueError(f"in_memory must be True, False or 'auto', got {in_memory!r}")


def check_indices(indices: Any, size: int, what: str) -> np.ndarray:
    """``indices`` as an int64 array, every entry in ``[0, size)``."""
    array = np.asarray(indices)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise IndexError(f"{what} indices must be integers, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() >= size):
        raise IndexError(
            f"{what} indices must lie in [0, {size}), got values from {array.min()} to {array.max()}"
        )
    return array


class FrameStore:
    """The observation of every frame of every episode, addressed by a global frame index.

    Episode ``e``'s frame ``i`` (``0 <= i <= T_e``) has the global index
    ``frame_offsets[e] + i``, where ``frame_offsets[e] = Σ_{e' < e} (T_{e'} + 1)``.

    In memory, every key is one array over all frames and :meth:`get` is a
    fancy index. Lazily, :meth:`get` reads the selected frames from the
    episode files, one read per episode and key. Either way the store pickles
    (lazily it pickles without open files), so it can go to DataLoader workers.

    :param dataset: the episode store.
    :param in_memory: ``True`` to load every frame now, ``False`` to read on
        demand, ``"auto"`` to load when the frames take at most ``memory_budget`` bytes.
    :param memory_budget: byte budget of ``in_memory="auto"``.
    """

    def __init__(
        self, dataset: EpisodeSource, in_memory: InMemory = "auto", memory_budget: int = DEFAULT_MEMORY_BUDGET
    ) -> None:
        self.dataset = dataset
        self.observation_space: spaces.Dict = dataset.observation_space
        self.keys: tuple[str, ...] = tuple(self.observation_space.spaces)
        frames_per_episode = dataset.lengths + 1
        self.frame_offsets = episode_offsets(frames_per_episode)
        self.num_frames = int(self.frame_offsets[-1])
        self.episode_of_frame = np.repeat(np.arange(len(dataset), dtype=np.int64), frames_per_episode)
        self.instructions: list[str] = sorted(set(dataset.instructions))
        lookup = {text: number for number, text in enumerate(self.instructions)}
        self.episode_instruction_ids = np.array([lookup[text] for text in dataset.instructions], dtype=np.int64)
        self.instruction_ids = self.episode_instruction_ids[self.episode_of_frame]
        self.nbytes = sum(
            self.num_frames * int(np.prod(space.shape)) * np.dtype(space.dtype).itemsize
            for space in self.observation_space.spaces.values()
        )
        self.in_memory = _resolve_in_memory(in_memory, self.nbytes, memory_budget)
        self._arrays = self._load() if self.in_memory else None

    def _empty(self, count: int) -> dict[str, np.ndarray]:
        return {
            key: np.empty((count, *space.shape), dtype=space.dtype)
            for key, space in self.observation_space.spaces.items()
        }

    def _load(self) -> dict[str, np.ndarray]:
        arrays = self._empty(self.num_frames)
        for number, episode in enumerate(self.dataset):
            start, stop = self.frame_offsets[number], self.frame_offsets[number + 1]
            for key in self.keys:
                arrays[key][start:stop] = episode.observations[key][()]
        return arrays

    def _read_lazily(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Frames ``indices`` (1-D) read from the files, one read per episode and key."""
        out = self._empty(len(indices))
        episodes = self.episode_of_frame[indices]
        local = indices - self.frame_offsets[episodes]
        for number in np.unique(episodes):
            positions = np.flatnonzero(episodes == number)
            wanted, inverse = np.unique(local[positions], return_inverse=True)
            views = self.dataset[int(number)].observations
            for key in self.keys:
                out[key][positions] = views[key][wanted][inverse]
        return out

    def get(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """The observations of frames ``indices``, in the order given.

        :param indices: global frame indices, an int array of any shape ``S``.
        :returns: key -> array of shape ``(*S, *space.shape)``.
        :raises IndexError: if an index is not an integer in ``[0, num_frames)``.
        """
        indices = check_indices(indices, self.num_frames, "frame")
        flat = indices.reshape(-1)
        if self._arrays is not None:
            frames = {key: array[flat] for key, array in self._arrays.items()}
        else:
            frames = self._read_lazily(flat)
        return {key: array.reshape(*indices.shape, *array.shape[1:]) for key, array in frames.items()}

    def read_all(self, key: str) -> np.ndarray:
        """Every frame's value of observation ``key``, in global frame order.

        :raises KeyError: if the dataset has no observation ``key``.
        """
        if key not in self.keys:
            raise KeyError(f"no observation key {key!r} in this dataset; its keys are {list(self.keys)}")
        if self._arrays is not None:
            return self._arrays[key]
        return np.concatenate([episode.observations[key][()] for episode in self.dataset])

