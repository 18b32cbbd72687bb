"""Reading an episode store: :class:`EpisodeDataset` and its lazily read :class:`Episode` arrays.

Dataset-level arrays come from ``index.json``; episode files are opened on
access, a bounded number at a time per process.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections import OrderedDict
from pathlib import Path
from types import TracebackType
from typing import Any, Iterator, TypeVar

import gymnasium as gym
import h5py
import numpy as np
from gymnasium import spaces

from corft_envs.episode_store.format import (
    INDEX_NAME,
    DatasetError,
    DatasetMeta,
    EpisodeData,
    EpisodeRecord,
    damaged_file_error,
    expected_layout,
    file_layout_problems,
    read_episode_metadata,
    read_index,
)
from corft_envs.episode_store.spaces import observation_action_differences

_Source = TypeVar("_Source", bound="EpisodeSource")
_MISSING_HINT = "run the same `corft collect` command again: it re-indexes the episode files and collects replacements"


class _HandleCache:
    """Per-process cache of open read-only HDF5 files.

    Pickling drops the handles and a forked process starts afresh, so objects
    holding a cache can be sent to DataLoader workers.
    """

    def __init__(self, max_open: int) -> None:
        self._max_open = max_open
        self._handles: OrderedDict[Path, h5py.File] = OrderedDict()
        self._pid = os.getpid()

    def get(self, path: Path) -> h5py.File:
        if self._pid != os.getpid():
            self._handles = OrderedDict()
            self._pid = os.getpid()
        handle = self._handles.get(path)
        if handle is not None:
            self._handles.move_to_end(path)
            return handle
        try:
            handle = h5py.File(path, "r")
        except OSError as exc:
            raise damaged_file_error(path, [f"cannot open ({exc})"]) from exc
        self._handles[path] = handle
        while len(self._handles) > self._max_open:
            self._handles.popitem(last=False)[1].close()
        return handle

    def close(self) -> None:
        if self._pid == os.getpid():
            for handle in self._handles.values():
                handle.close()
        self._handles.clear()

    def __getstate__(self) -> dict[str, int]:
        return {"max_open": self._max_open}

    def __setstate__(self, state: dict[str, int]) -> None:
        self.__init__(state["max_open"])


class LazyArray:
    """Array-like view of one array in an episode file, read on indexing.

    ``shape``, ``dtype`` and ``len`` come from the metadata without touching
    the file. Indexing reads only the selected elements; it accepts what
    h5py accepts (integers, slices with positive step, increasing index
    lists). ``np.asarray(lazy)`` reads the whole array.
    """

    def __init__(self, path: Path, name: str, shape: tuple[int, ...], dtype: np.dtype, handles: _HandleCache) -> None:
        self.path = path
        self.name = name
        self.shape = shape
        self.dtype = dtype
        self._handles = handles

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        handle = self._handles.get(self.path)
        try:
            return handle[self.name][key]
        except (OSError, KeyError) as exc:
            raise damaged_file_error(self.path, [f"cannot read {self.name!r} ({exc})"]) from exc

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        array = self[()]
        return array if dtype is None else array.astype(dtype)

    def __repr__(self) -> str:
        return f"LazyArray({self.path.name}:{self.name}, shape={self.shape}, dtype={self.dtype})"


class Episode:
    """One stored episode; arrays are :class:`LazyArray` views read on access.

    ``observations[key]`` has ``T + 1`` entries, ``actions``, ``rewards`` and
    ``is_success`` have ``T``; ``len(episode) == T``.
    """

    def __init__(self, path: Path, record: EpisodeRecord, meta: DatasetMeta, handles: _HandleCache) -> None:
        self.path = path
        self.record = record
        layout = expected_layout(meta, record.length)

        def view(name: str) -> LazyArray:
            shape, dtype = layout[name]
            return LazyArray(path, name, shape, dtype, handles)

        self.observations: dict[str, LazyArray] = {
            key: view(f"observations/{key}") for key in meta.observation_space.spaces
        }
        self.actions = view("actions")
        self.rewards = view("rewards")
        self.is_success = view("is_success")

    @property
    def instruction(self) -> str:
        """The language instruction."""
        return self.record.instruction

    @property
    def seed(self) -> int | None:
        """Seed the env was reset with."""
        return self.record.seed

    @property
    def success(self) -> bool:
        """Whether the task was solved at some step."""
        return self.record.success

    @property
    def terminated(self) -> bool:
        """The episode ended in a terminal state (success)."""
        return self.record.terminated

    @property
    def truncated(self) -> bool:
        """The episode ended at the time limit."""
        return self.record.truncated

    def __len__(self) -> int:
        return self.record.length

    def load(self) -> EpisodeData:
        """Read the whole episode into memory."""
        return EpisodeData(
            observations={key: np.asarray(view) for key, view in self.observations.items()},
            actions=np.asarray(self.actions),
            rewards=np.asarray(self.rewards),
            is_success=np.asarray(self.is_success),
            instruction=self.instruction,
            seed=self.seed,
            terminated=self.terminated,
            truncated=self.truncated,
        )

    def __repr__(self) -> str:
        return f"Episode({self.path.name}, length={len(self)}, success={self.success})"


class EpisodeSource(ABC):
    """The episodes of one or more stores, read-only: what :class:`EpisodeDataset` (one store) and
    :class:`~corft_envs.episode_store.concat.ConcatEpisodeDataset` (several) share.

    Everything per episode (lengths, instructions, successes, ...) comes from :attr:`records`; a
    subclass says where the records and the episodes come from.

    :param root: the (first) store directory, named in messages.
    :param meta: the (first) store's dataset metadata: the env and the spaces.
    """

    def __init__(self, root: Path, meta: DatasetMeta) -> None:
        self.root = root
        self._meta = meta

    @property
    def meta(self) -> DatasetMeta:
        """The dataset metadata from the (first) store's index."""
        return self._meta

    @property
    @abstractmethod
    def records(self) -> tuple[EpisodeRecord, ...]:
        """Index records of the episodes, in order."""

    @property
    @abstractmethod
    def num_attempts(self) -> int:
        """Collection attempts made, kept or not."""

    @property
    @abstractmethod
    def parts(self) -> list[EpisodeDataset]:
        """The stores read, in order."""

    @property
    @abstractmethod
    def store_of_episode(self) -> np.ndarray:
        """``(N,)`` int64, the position in :attr:`parts` of each episode's store."""

    @abstractmethod
    def __getitem__(self, index: int) -> Episode:
        """Episode ``index``, its arrays read lazily."""

    @abstractmethod
    def close(self) -> None:
        """Close the files this process has open."""

    @property
    def env_id(self) -> str:
        """Gymnasium id of the env the data was collected in."""
        return self.meta.env_id

    @property
    def env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments the env was made with."""
        return dict(self.meta.env_kwargs)

    @property
    def observation_space(self) -> spaces.Dict:
        """Step-level observation space."""
        return self.meta.observation_space

    @property
    def action_space(self) -> spaces.Box:
        """Step-level action space."""
        return self.meta.action_space

    @property
    def chunk_size(self) -> int | None:
        """Action-chunk length of the collecting policy, if it used chunks."""
        return self.meta.chunk_size

    @property
    def lengths(self) -> np.ndarray:
        """``(N,)`` int64 episode lengths ``T``."""
        return np.array([r.length for r in self.records], dtype=np.int64)

    @property
    def successes(self) -> np.ndarray:
        """``(N,)`` bool, whether each episode succeeded."""
        return np.array([r.success for r in self.records], dtype=bool)

    @property
    def terminated(self) -> np.ndarray:
        """``(N,)`` bool, whether each episode ended in a terminal state."""
        return np.array([r.terminated for r in self.records], dtype=bool)

    @property
    def truncated(self) -> np.ndarray:
        """``(N,)`` bool, whether each episode ended at the time limit."""
        return np.array([r.truncated for r in self.records], dtype=bool)

    @property
    def instructions(self) -> list[str]:
        """Each episode's instruction."""
        return [r.instruction for r in self.records]

    @property
    def seeds(self) -> list[int | None]:
        """Each episode's reset seed."""
        return [r.seed for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Episode]:
        return (self[i] for i in range(len(self)))

    def check_compatible(self, env: gym.Env) -> None:
        """Check that ``env``'s step-level spaces equal the recorded ones.

        :raises DatasetError: listing every difference.
        """
        problems = observation_action_differences(self, env)
        if problems:
            raise DatasetError(
                f"{self.root} (collected in {self.env_id} with {self.env_kwargs}) does not fit this env:\n  "
                + "\n  ".join(problems)
            )

    def __enter__(self: _Source) -> _Source:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class EpisodeDataset(EpisodeSource):
    """Read access to a store written by :class:`~corft_envs.episode_store.writer.EpisodeWriter`.

    Dataset-level attributes come from ``index.json``; ``dataset[i]`` gives an
    :class:`Episode` whose arrays are read lazily, with up to
    ``max_open_files`` HDF5 files kept open per process. The object pickles
    without its open files, so it can be handed to DataLoader workers.

    :param root: store directory.
    :param validate: open every episode file now and check its attributes and
        array shapes against the index (otherwise problems surface on access).
    :param max_open_files: size of the per-process cache of open files.
    :raises DatasetError: naming the file and the problem, if the index or an
        episode file is missing, truncated, corrupt, or disagrees with the
        recorded spaces.
    """

    def __init__(self, root: str | os.PathLike[str], *, validate: bool = True, max_open_files: int = 32) -> None:
        path = Path(root)
        index = read_index(path)
        super().__init__(path, index.meta)
        self._index = index
        self._handles = _HandleCache(max_open_files)
        for record in self._index.episodes:
            path = self.root / record.file
            if not path.is_file():
                raise DatasetError(f"{path}: listed in {self.root / INDEX_NAME} but missing; {_MISSING_HINT}")
            if validate:
                self._validate_file(path, record)

    def _validate_file(self, path: Path, record: EpisodeRecord) -> None:
        file_meta, file_record = read_episode_metadata(path)
        problems = [f"metadata: {p}" for p in self.meta.differences(file_meta)]
        if file_record != record:
            problems.append(f"episode attributes {file_record} differ from the index entry {record}")
        problems += file_layout_problems(path, self.meta, record.length)
        if problems:
            raise damaged_file_error(path, problems)

    @property
    def records(self) -> tuple[EpisodeRecord, ...]:
        """Index records of the episodes, in order."""
        return self._index.episodes

    @property
    def num_attempts(self) -> int:
        """Collection attempts made, kept or not."""
        return self._index.num_attempts

    @property
    def parts(self) -> list[EpisodeDataset]:
        """The stores read, in order: this one alone (:class:`ConcatEpisodeDataset` has several)."""
        return [self]

    @property
    def store_of_episode(self) -> np.ndarray:
        """``(N,)`` int64, the number of the store each episode comes from (all 0 for one store)."""
        return np.zeros(len(self), dtype=np.int64)

    def __getitem__(self, index: int) -> Episode:
        record = self.records[index]
        return Episode(self.root / record.file, record, self.meta, self._handles)

    def close(self) -> None:
        """Close the files this process has open."""
        self._handles.close()
