"""On-disk episode store: one HDF5 file per episode plus an ``index.json``.

Layout of a store directory::

    index.json            dataset metadata and one record per collection attempt
    episode_000000.h5     one finished episode
    episode_000001.h5
    ...

Every file is first written under a hidden temporary name
(``.episode_000012.h5.tmp``, ``.index.json.tmp``) and moved into place with
:func:`os.replace`, so a reader never sees half a file, and a killed writer
leaves at most a stale ``*.tmp`` that the next :class:`EpisodeWriter` removes.
An episode file is built in memory and written with plain file I/O, so a full
disk is an ``OSError`` (:class:`DiskFullError` from the writer), never a crash
inside h5py.

An episode of ``T`` steps holds, in its HDF5 file:

* ``observations/<key>``: ``T + 1`` observations (the reset observation, then
  the one after each step, the final one included); image keys (``uint8``
  frames of rank 3) are gzip-compressed, one frame per chunk;
* ``actions`` (``T`` step-level actions), ``rewards`` (``T``, float32),
  ``is_success`` (``T``, bool, ``info["is_success"]`` after each step);
* attributes ``dataset`` and ``episode``: JSON copies of the dataset metadata
  and of the episode's index record, so the files alone can rebuild the index.

The episode files are the ground truth: :class:`EpisodeWriter` rebuilds
``index.json`` from them when it is missing or behind. :class:`EpisodeDataset`
reads the index for dataset-level arrays and opens episode files lazily.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import re
import shutil
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any, Iterator, Mapping, Sequence

import gymnasium as gym
import h5py
import numpy as np
from gymnasium import spaces

from corft_envs.folder_lock import FolderBusyError, FolderLock

logger = logging.getLogger(__name__)

#: Version of the on-disk layout; readers refuse other versions.
FORMAT_VERSION = 1
#: Name of the metadata index inside a store directory.
INDEX_NAME = "index.json"
_EPISODE_PATTERN = re.compile(r"^episode_(\d{6,})\.h5$")
_REBUILD_HINT = (
    "delete the file and run the same `corft collect` command again: it keeps "
    "every intact episode and collects replacements"
)
#: Disk space (bytes) an episode write leaves free beside the episode's own uncompressed size: a write that
#: might fill the disk is refused before the episode file is started.
DISK_RESERVE_BYTES = 64 * 2**20
#: ``OSError`` numbers that mean there is no room for a write: a full disk, a quota, a file-size limit.
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_MISSING_HINT = "run the same `corft collect` command again: it re-indexes the episode files and collects replacements"


class DatasetError(Exception):
    """An episode store on disk is missing, damaged, or does not fit its use."""


class DiskFullError(DatasetError):
    """The store's disk has too little space for the next episode; every finished episode is intact."""


def project_version() -> str:
    """The installed ``corft`` version, or ``"unknown"`` when not installed."""
    try:
        return metadata.version("corft")
    except metadata.PackageNotFoundError:
        return "unknown"


# ----------------------------------------------------------------------------
# Spaces <-> JSON
# ----------------------------------------------------------------------------


def space_to_json(space: gym.Space) -> dict[str, Any]:
    """Serialize a ``Box``, ``Text`` or (nested) ``Dict`` space to plain JSON data (the episode store's
    index and corft's model files hold spaces this way).

    Infinite bounds are written as the strings ``"inf"`` / ``"-inf"`` so the
    result is standard JSON; bounds that are the same everywhere are written
    once as a scalar. A ``Text`` space keeps its lengths and its characters.
    """
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_json(s) for k, s in space.spaces.items()}}
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": np.dtype(space.dtype).name,
            "low": _bound_to_json(space.low),
            "high": _bound_to_json(space.high),
        }
    if isinstance(space, spaces.Text):
        return {"type": "Text", "min_length": space.min_length, "max_length": space.max_length,
                "charset": space.characters}
    raise ValueError(
        f"cannot store a {type(space).__name__} space; Box and Text spaces and Dict spaces of them can be stored"
    )


def space_from_json(data: Mapping[str, Any]) -> gym.Space:
    """Inverse of :func:`space_to_json`.

    :raises ValueError: for an unknown space type.
    """
    kind = data.get("type")
    if kind == "Dict":
        return spaces.Dict({k: space_from_json(s) for k, s in data["spaces"].items()})
    if kind == "Box":
        shape = tuple(int(n) for n in data["shape"])
        dtype = np.dtype(data["dtype"])
        return spaces.Box(
            low=_bound_from_json(data["low"], shape, dtype),
            high=_bound_from_json(data["high"], shape, dtype),
            shape=shape,
            dtype=dtype,
        )
    if kind == "Text":
        return spaces.Text(min_length=int(data["min_length"]), max_length=int(data["max_length"]),
                           charset=str(data["charset"]))
    raise ValueError(f"unknown space type {kind!r} (expected 'Box', 'Text' or 'Dict')")


def _number_to_json(value: np.generic) -> int | float | str:
    if value.dtype.kind in "biu":
        return int(value)
    number = float(value)
    if np.isinf(number):
        return "inf" if number > 0 else "-inf"
    return number


def _bound_to_json(bound: np.ndarray) -> Any:
    flat = bound.ravel()
    if flat.size and np.all(flat == flat[0]):
        return _number_to_json(flat[0])
    return [_number_to_json(v) for v in flat]


def _bound_from_json(data: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    values = [float(v) if isinstance(v, str) else v for v in (data if isinstance(data, list) else [data])]
    array = np.asarray(values, dtype=np.float64)
    array = np.full(shape, array[0]) if array.size == 1 else array.reshape(shape)
    return array.astype(dtype)


def space_differences(expected: gym.Space, actual: gym.Space, name: str) -> list[str]:
    """Human-readable differences between two spaces, empty when they match.

    :param expected: the space recorded with the data.
    :param actual: the space it is compared with (an env's, a new run's).
    :param name: how to call the space in messages, e.g. ``"observation_space"``.
    """
    if isinstance(expected, spaces.Dict) and isinstance(actual, spaces.Dict):
        problems = [f"{name}: key {k!r} missing" for k in expected.spaces if k not in actual.spaces]
        problems += [f"{name}: unexpected key {k!r}" for k in actual.spaces if k not in expected.spaces]
        for key in (k for k in expected.spaces if k in actual.spaces):
            problems += space_differences(expected[key], actual[key], f"{name}[{key!r}]")
        return problems
    if isinstance(expected, spaces.Box) and isinstance(actual, spaces.Box):
        problems = []
        if expected.shape != actual.shape:
            problems.append(f"{name}: shape {expected.shape} recorded, {actual.shape} now")
        if expected.dtype != actual.dtype:
            problems.append(f"{name}: dtype {expected.dtype} recorded, {actual.dtype} now")
        if not problems:
            for bound in ("low", "high"):
                if not np.array_equal(getattr(expected, bound), getattr(actual, bound)):
                    problems.append(f"{name}: {bound} bounds differ")
        return problems
    return [f"{name}: {type(expected).__name__} recorded, {type(actual).__name__} now"]


# ----------------------------------------------------------------------------
# Metadata records
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetMeta:
    """What every episode of a store shares: env, spaces, collection settings.

    :param env_id: the Gymnasium id the episodes were collected in.
    :param env_kwargs: keyword arguments given to ``gym.make`` (JSON values).
    :param observation_space: step-level observation space, a ``Dict`` of ``Box``.
    :param action_space: step-level action space, a ``Box``.
    :param chunk_size: action-chunk length the collecting policy used, if any.
    :param seed: base seed; attempt ``k`` resets the env with ``seed + k``.
    :param keep_failures: whether unsuccessful attempts are kept as episodes.
    """

    env_id: str
    env_kwargs: dict[str, Any]
    observation_space: spaces.Dict
    action_space: spaces.Box
    chunk_size: int | None = None
    seed: int | None = None
    keep_failures: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.observation_space, spaces.Dict) or not all(
            isinstance(s, spaces.Box) for s in self.observation_space.spaces.values()
        ):
            raise ValueError(
                f"observation space must be a Dict of Box spaces to be stored, got {self.observation_space}"
            )
        if not isinstance(self.action_space, spaces.Box):
            raise ValueError(f"action space must be a Box to be stored, got {self.action_space}")
        try:
            normalized = json.loads(json.dumps(self.env_kwargs))
        except TypeError as exc:
            raise ValueError(f"env_kwargs must hold JSON values only: {exc}") from exc
        object.__setattr__(self, "env_kwargs", normalized)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data for the index and the episode files' attributes."""
        return {
            "env_id": self.env_id,
            "env_kwargs": self.env_kwargs,
            "observation_space": space_to_json(self.observation_space),
            "action_space": space_to_json(self.action_space),
            "chunk_size": self.chunk_size,
            "seed": self.seed,
            "keep_failures": self.keep_failures,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DatasetMeta:
        """Inverse of :meth:`to_json`; raises ``KeyError``/``ValueError`` on bad data."""
        return cls(
            env_id=str(data["env_id"]),
            env_kwargs=dict(data["env_kwargs"]),
            observation_space=space_from_json(data["observation_space"]),
            action_space=space_from_json(data["action_space"]),
            chunk_size=data["chunk_size"],
            seed=data["seed"],
            keep_failures=bool(data["keep_failures"]),
        )

    def differences(self, other: DatasetMeta) -> list[str]:
        """How ``other`` (a new request) differs from this recorded metadata."""
        problems = [
            f"{name}: {getattr(self, name)!r} recorded, {getattr(other, name)!r} now"
            for name in ("env_id", "env_kwargs", "chunk_size", "seed", "keep_failures")
            if getattr(self, name) != getattr(other, name)
        ]
        problems += space_differences(self.observation_space, other.observation_space, "observation_space")
        problems += space_differences(self.action_space, other.action_space, "action_space")
        return problems


@dataclass(frozen=True)
class EpisodeRecord:
    """Index entry for one collection attempt.

    :param file: episode file name inside the store, ``None`` for an attempt
        that was not kept.
    :param attempt: attempt number, counting from 0 over the store's life.
    :param seed: seed the env was reset with.
    :param instruction: the episode's language instruction.
    :param success: whether ``info["is_success"]`` held at some step.
    :param length: number of steps ``T``.
    :param terminated: the episode ended in a terminal state (success).
    :param truncated: the episode ended at the time limit.
    """

    file: str | None
    attempt: int
    seed: int | None
    instruction: str
    success: bool
    length: int
    terminated: bool
    truncated: bool

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data for the index."""
        return {
            "file": self.file,
            "attempt": self.attempt,
            "seed": self.seed,
            "instruction": self.instruction,
            "success": self.success,
            "length": self.length,
            "terminated": self.terminated,
            "truncated": self.truncated,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EpisodeRecord:
        """Inverse of :meth:`to_json`; raises ``KeyError``/``ValueError`` on bad data."""
        return cls(
            file=data["file"],
            attempt=int(data["attempt"]),
            seed=data["seed"],
            instruction=str(data["instruction"]),
            success=bool(data["success"]),
            length=int(data["length"]),
            terminated=bool(data["terminated"]),
            truncated=bool(data["truncated"]),
        )


@dataclass
class EpisodeData:
    """One finished episode held in memory, as recorded or as fully loaded.

    :param observations: key -> array of ``T + 1`` observations.
    :param actions: ``(T, *action_shape)`` step-level actions.
    :param rewards: ``(T,)`` rewards.
    :param is_success: ``(T,)`` ``info["is_success"]`` after each step.
    :param instruction: the language instruction given at reset.
    :param seed: seed the env was reset with.
    :param terminated: the last step was terminal.
    :param truncated: the last step hit the time limit.
    """

    observations: dict[str, np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    is_success: np.ndarray
    instruction: str
    seed: int | None
    terminated: bool
    truncated: bool

    def __post_init__(self) -> None:
        self.rewards = np.asarray(self.rewards, dtype=np.float32)
        self.is_success = np.asarray(self.is_success, dtype=bool)

    @property
    def length(self) -> int:
        """Number of steps ``T``."""
        return len(self.actions)

    @property
    def success(self) -> bool:
        """Whether ``info["is_success"]`` held at some step."""
        return bool(self.is_success.any())

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array under its path inside an episode file."""
        named = {f"observations/{key}": value for key, value in self.observations.items()}
        named.update(actions=self.actions, rewards=self.rewards, is_success=self.is_success)
        return named


def _expected_layout(meta: DatasetMeta, length: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Path -> (shape, dtype) that an episode of ``length`` steps must have."""
    layout = {
        f"observations/{key}": ((length + 1, *space.shape), np.dtype(space.dtype))
        for key, space in meta.observation_space.spaces.items()
    }
    layout["actions"] = ((length, *meta.action_space.shape), np.dtype(meta.action_space.dtype))
    layout["rewards"] = ((length,), np.dtype(np.float32))
    layout["is_success"] = ((length,), np.dtype(bool))
    return layout


def _layout_problems(arrays: Mapping[str, Any], meta: DatasetMeta, length: int) -> list[str]:
    """What is missing or misshapen in ``arrays`` (numpy arrays or h5py datasets)."""
    problems = []
    for path, (shape, dtype) in _expected_layout(meta, length).items():
        if path not in arrays:
            problems.append(f"array {path!r} is missing")
            continue
        array = arrays[path]
        if tuple(array.shape) != shape or np.dtype(array.dtype) != dtype:
            problems.append(
                f"array {path!r} is {np.dtype(array.dtype)}{tuple(array.shape)}, expected {dtype}{shape}"
            )
    return problems


def _file_layout_problems(path: Path, meta: DatasetMeta, length: int) -> list[str]:
    """:func:`_layout_problems` of an episode file's arrays, or why it cannot be read."""
    try:
        with h5py.File(path, "r") as handle:
            return _layout_problems(handle, meta, length)
    except OSError as exc:
        return [f"cannot read ({exc})"]


# ----------------------------------------------------------------------------
# Atomic file writing
# ----------------------------------------------------------------------------


def _temporary_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    tmp = _temporary_path(path)
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _storage_options(array: np.ndarray) -> dict[str, Any]:
    """gzip with one frame per chunk for image arrays, plain storage otherwise."""
    if array.dtype == np.uint8 and array.ndim == 4:
        return {"compression": "gzip", "compression_opts": 4, "chunks": (1, *array.shape[1:])}
    return {}


def episode_file_image(episode: EpisodeData, meta: DatasetMeta, record: EpisodeRecord) -> bytes:
    """The bytes of ``episode``'s HDF5 file, built in memory (h5py never touches the disk).

    :raises ValueError: if the episode's arrays do not fit ``meta``'s spaces.
    """
    problems = _layout_problems(episode.arrays(), meta, episode.length)
    if problems:
        raise ValueError(f"episode does not fit the dataset's spaces: {'; '.join(problems)}")
    image = io.BytesIO()
    with h5py.File(image, "w") as handle:
        handle.attrs["format_version"] = FORMAT_VERSION
        handle.attrs["corft_version"] = project_version()
        handle.attrs["dataset"] = json.dumps(meta.to_json())
        handle.attrs["episode"] = json.dumps(record.to_json())
        for name, array in episode.arrays().items():
            handle.create_dataset(name, data=array, **_storage_options(array))
    return image.getvalue()


def write_episode_file(path: Path, episode: EpisodeData, meta: DatasetMeta, record: EpisodeRecord) -> None:
    """Write ``episode`` to ``path`` atomically (temporary file, then rename).

    The file is built in memory and written with plain file I/O: h5py writing to a full disk reports the
    failure only while closing, and can crash the process there; a plain write raises ``OSError``.

    :raises ValueError: if the episode's arrays do not fit ``meta``'s spaces.
    :raises OSError: if the write fails (``errno.ENOSPC`` on a full disk); the temporary file is removed.
    """
    data = episode_file_image(episode, meta, record)
    tmp = _temporary_path(path)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------
# Reading metadata back
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreIndex:
    """The content of ``index.json``.

    :param meta: dataset metadata.
    :param episodes: records of the kept episodes, in file-name order.
    :param discarded: records of attempts that were not kept.
    """

    meta: DatasetMeta
    episodes: tuple[EpisodeRecord, ...]
    discarded: tuple[EpisodeRecord, ...] = ()

    @property
    def num_attempts(self) -> int:
        """Attempts recorded so far, i.e. the number of the next attempt."""
        attempts = [r.attempt for r in self.episodes + self.discarded]
        return max(attempts) + 1 if attempts else 0

    def to_json(self) -> dict[str, Any]:
        """The JSON document written to ``index.json``."""
        return {
            "format_version": FORMAT_VERSION,
            "corft_version": project_version(),
            **self.meta.to_json(),
            "num_episodes": len(self.episodes),
            "num_attempts": self.num_attempts,
            "episodes": [r.to_json() for r in self.episodes],
            "discarded_attempts": [r.to_json() for r in self.discarded],
        }


def _check_format_version(source: Path, version: Any) -> None:
    if version != FORMAT_VERSION:
        raise DatasetError(
            f"{source}: format version {version!r}, this corft reads version {FORMAT_VERSION}; "
            "re-collect the data with this corft version"
        )


def read_index(root: str | os.PathLike[str]) -> StoreIndex:
    """Read and check ``root/index.json``.

    :raises DatasetError: if it is missing, not valid JSON, or lacks fields.
    """
    path = Path(root) / INDEX_NAME
    if not Path(root).is_dir():
        raise DatasetError(f"{root}: no such directory; collect data first with `corft collect --out {root} ...`")
    if not path.is_file():
        raise DatasetError(
            f"{path}: missing. If {root} holds episode files from an interrupted `corft collect`, "
            "run that command again to rebuild the index"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if "format_version" not in data:  # not an index this code wrote (e.g. `{}`): rebuildable, not too new
            raise KeyError("format_version")
        _check_format_version(path, data["format_version"])
        return StoreIndex(
            meta=DatasetMeta.from_json(data),
            episodes=tuple(EpisodeRecord.from_json(r) for r in data["episodes"]),
            discarded=tuple(EpisodeRecord.from_json(r) for r in data["discarded_attempts"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DatasetError(
            f"{path}: unreadable ({type(exc).__name__}: {exc}); delete it and run the same "
            "`corft collect` command again to rebuild it from the episode files"
        ) from exc


def read_episode_metadata(path: Path) -> tuple[DatasetMeta, EpisodeRecord]:
    """The dataset metadata and index record stored in an episode file's attributes.

    The record's ``file`` is the file's actual name.

    :raises DatasetError: if the file cannot be opened or its attributes are bad.
    """
    try:
        with h5py.File(path, "r") as handle:
            _check_format_version(path, handle.attrs.get("format_version"))
            meta = DatasetMeta.from_json(json.loads(handle.attrs["dataset"]))
            record = EpisodeRecord.from_json(json.loads(handle.attrs["episode"]))
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise DatasetError(f"{path}: truncated or corrupt ({exc}); {_REBUILD_HINT}") from exc
    return meta, replace(record, file=path.name)


def episode_files(root: Path) -> list[Path]:
    """The finished episode files in ``root``, in name order."""
    return sorted(p for p in root.iterdir() if _EPISODE_PATTERN.match(p.name))


# ----------------------------------------------------------------------------
# Writing a store
# ----------------------------------------------------------------------------


class EpisodeWriter:
    """Appends episodes to a store directory, resuming what is already there.

    On opening, the writer takes an exclusive lock on the directory, removes
    stale ``*.tmp`` files, checks that recorded metadata (index and every
    episode file) equals ``meta``, and rewrites ``index.json`` from the episode
    files, keeping the index's records of attempts that were not kept.

    :param root: store directory, created if missing.
    :param meta: metadata of the episodes to be written.
    :raises DatasetError: if the directory holds data collected with other
        settings, a damaged episode file, or is locked by another writer.
    """

    def __init__(self, root: str | os.PathLike[str], meta: DatasetMeta) -> None:
        self.root = Path(root)
        self.meta = meta
        if self.root.exists() and not self.root.is_dir():
            raise DatasetError(f"{self.root} is a file; give a directory for the episode store (created if missing)")
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = self._acquire_lock()
        try:
            self._remove_stale_temporaries()
            self._index = self._reconcile()
            self._write_index()
        except BaseException:
            self.close()
            raise

    @property
    def episodes(self) -> tuple[EpisodeRecord, ...]:
        """Records of the kept episodes, in order."""
        return self._index.episodes

    @property
    def discarded(self) -> tuple[EpisodeRecord, ...]:
        """Records of attempts that were not kept."""
        return self._index.discarded

    @property
    def next_attempt(self) -> int:
        """Number the next :meth:`add` will record."""
        return self._index.num_attempts

    def add(self, episode: EpisodeData, keep: bool) -> EpisodeRecord:
        """Record the next attempt; write its episode file if ``keep``.

        The episode file is in place before the index mentions it.
        """
        record = EpisodeRecord(
            file=self._next_file_name() if keep else None,
            attempt=self.next_attempt,
            seed=episode.seed,
            instruction=episode.instruction,
            success=episode.success,
            length=episode.length,
            terminated=episode.terminated,
            truncated=episode.truncated,
        )
        if keep:
            self._check_free_space(episode)
            with self._no_space_is_disk_full(record.file):
                write_episode_file(self.root / record.file, episode, self.meta, record)
            self._index = replace(self._index, episodes=self._index.episodes + (record,))
        else:
            self._index = replace(self._index, discarded=self._index.discarded + (record,))
        with self._no_space_is_disk_full(INDEX_NAME):
            self._write_index()
        return record

    @contextmanager
    def _no_space_is_disk_full(self, name: str) -> Iterator[None]:
        """Turn a write failing for want of space into :class:`DiskFullError`, counting the intact episodes.

        Both writes are atomic: a failed one leaves the file it replaces as it was (an index one episode
        short is rebuilt from the episode files on resume).
        """
        try:
            yield
        except OSError as exc:
            if exc.errno not in NO_SPACE_ERRNOS:
                raise
            raise DiskFullError(
                f"{self.root}: writing {name} failed: {exc.strerror} (the disk is full, or a quota or file-size "
                f"limit is reached); nothing partial was kept and the store's {len(episode_files(self.root))} "
                "finished episodes are intact. Free some space and run the same command again to resume, or "
                "collect elsewhere with --out") from None

    def _check_free_space(self, episode: EpisodeData) -> None:
        """Refuse to write ``episode`` unless its uncompressed size plus :data:`DISK_RESERVE_BYTES` is free.

        :raises DiskFullError: naming the free and the needed space; the store keeps every finished episode.
        """
        needed = sum(array.nbytes for array in episode.arrays().values()) + DISK_RESERVE_BYTES
        free = shutil.disk_usage(self.root).free
        if free < needed:
            raise DiskFullError(
                f"{self.root}: {free / 2**20:.0f} MiB free on its disk, but an episode write needs up to "
                f"{needed / 2**20:.0f} MiB (the episode uncompressed plus {DISK_RESERVE_BYTES / 2**20:.0f} MiB kept "
                f"free); nothing was written and the store's {len(self.episodes)} finished episodes are intact. "
                "Free some space and run the same command again to resume, or collect elsewhere with --out")

    def close(self) -> None:
        """Release the directory lock."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _acquire_lock(self) -> FolderLock:
        try:
            lock = FolderLock(self.root)
        except FolderBusyError as exc:
            raise DatasetError(f"{self.root}: another collector ({exc}) is writing here; wait for it to "
                               "finish or use another --out") from None
        if lock.takeover_note() is not None:
            logger.warning(lock.takeover_note())
        return lock

    def _remove_stale_temporaries(self) -> None:
        for path in self.root.glob(".*.tmp"):
            logger.info("removing unfinished file %s", path)
            path.unlink()

    def _reconcile(self) -> StoreIndex:
        recorded = read_index(self.root) if (self.root / INDEX_NAME).exists() else None
        if recorded is not None:
            self._check_meta(self.root / INDEX_NAME, recorded.meta)
        kept = []
        for path in episode_files(self.root):
            file_meta, record = read_episode_metadata(path)
            self._check_meta(path, file_meta)
            problems = _file_layout_problems(path, self.meta, record.length)  # else a "complete" unreadable store
            if problems:
                raise DatasetError(f"{path}: " + "; ".join(problems) + f"; {_REBUILD_HINT}")
            kept.append(record)
        discarded = recorded.discarded if recorded is not None else ()
        if recorded is not None:
            on_disk = {r.file for r in kept}
            for missing in (r.file for r in recorded.episodes if r.file not in on_disk):
                logger.warning("%s: listed in %s but missing; collecting a replacement", missing, INDEX_NAME)
        index = StoreIndex(self.meta, tuple(kept), tuple(discarded))
        self._check_unique_attempts(index)
        return index

    def _check_meta(self, source: Path, recorded: DatasetMeta) -> None:
        problems = recorded.differences(self.meta)
        if problems:
            raise DatasetError(
                f"{self.root} holds episodes collected with other settings ({source.name}):\n  "
                + "\n  ".join(problems)
                + "\nRepeat the original settings to resume, or write to another output directory."
            )

    def _check_unique_attempts(self, index: StoreIndex) -> None:
        seen: dict[int, str] = {}
        for record in index.episodes + index.discarded:
            where = record.file or f"a discarded attempt in {INDEX_NAME}"
            if record.attempt in seen:
                raise DatasetError(
                    f"{self.root}: attempt {record.attempt} is recorded twice ({seen[record.attempt]} "
                    f"and {where}); remove the duplicate episode file"
                )
            seen[record.attempt] = where

    def _next_file_name(self) -> str:
        numbers = [int(_EPISODE_PATTERN.match(r.file).group(1)) for r in self._index.episodes]
        return f"episode_{max(numbers, default=-1) + 1:06d}.h5"

    def _write_index(self) -> None:
        _write_json_atomic(self.root / INDEX_NAME, self._index.to_json())


# ----------------------------------------------------------------------------
# Reading a store
# ----------------------------------------------------------------------------


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
            raise DatasetError(f"{path}: cannot open ({exc}); {_REBUILD_HINT}") from exc
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
            raise DatasetError(f"{self.path}: cannot read {self.name!r} ({exc}); {_REBUILD_HINT}") from exc

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
        layout = _expected_layout(meta, record.length)

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


class EpisodeDataset:
    """Read access to a store written by :class:`EpisodeWriter`.

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
        self.root = Path(root)
        self._index = read_index(self.root)
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
        problems += _file_layout_problems(path, self.meta, record.length)
        if problems:
            raise DatasetError(f"{path}: " + "; ".join(problems) + f"; {_REBUILD_HINT}")

    @property
    def meta(self) -> DatasetMeta:
        """The dataset metadata from the index."""
        return self._index.meta

    @property
    def records(self) -> tuple[EpisodeRecord, ...]:
        """Index records of the episodes, in order."""
        return self._index.episodes

    @property
    def num_attempts(self) -> int:
        """Collection attempts made, kept or not."""
        return self._index.num_attempts

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
    def parts(self) -> list[EpisodeDataset]:
        """The stores read, in order: this one alone (:class:`ConcatEpisodeDataset` has several)."""
        return [self]

    @property
    def store_of_episode(self) -> np.ndarray:
        """``(N,)`` int64, the number of the store each episode comes from (all 0 for one store)."""
        return np.zeros(len(self), dtype=np.int64)

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

    def __getitem__(self, index: int) -> Episode:
        record = self.records[index]
        return Episode(self.root / record.file, record, self.meta, self._handles)

    def __iter__(self) -> Iterator[Episode]:
        return (self[i] for i in range(len(self)))

    def check_compatible(self, env: gym.Env) -> None:
        """Check that ``env``'s step-level spaces equal the recorded ones.

        :raises DatasetError: listing every difference.
        """
        problems = space_differences(self.observation_space, env.observation_space, "observation_space")
        problems += space_differences(self.action_space, env.action_space, "action_space")
        if problems:
            raise DatasetError(
                f"{self.root} (collected in {self.env_id} with {self.env_kwargs}) does not fit this env:\n  "
                + "\n  ".join(problems)
            )

    def close(self) -> None:
        """Close the files this process has open."""
        self._handles.close()

    def __enter__(self) -> EpisodeDataset:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class ConcatEpisodeDataset(EpisodeDataset):
    """Several stores with the same spaces read as one, e.g. other tasks' demos to pretrain a base policy.

    Episodes are numbered store after store. ``root``, ``meta``, ``env_id`` and
    ``env_kwargs`` are the first store's (``roots`` lists them all); everything
    per episode (lengths, instructions, successes, ...) covers every store.

    :param roots: store directories, at least one.
    :raises DatasetError: if a store cannot be read, or its spaces differ from the first store's.
    """

    def __init__(self, roots: Sequence[str | os.PathLike[str]], *, validate: bool = True,
                 max_open_files: int = 32) -> None:
        if not roots:
            raise DatasetError("ConcatEpisodeDataset needs at least one store directory")
        self._parts = [EpisodeDataset(root, validate=validate, max_open_files=max_open_files) for root in roots]
        first = self._parts[0]
        for part in self.parts[1:]:
            problems = space_differences(first.observation_space, part.observation_space, "observation_space")
            problems += space_differences(first.action_space, part.action_space, "action_space")
            if problems:
                raise DatasetError(f"{part.root} cannot be read with {first.root}: " + "; ".join(problems)
                                   + " ('recorded' is the first store's); collect both with the same image size")
        self.root = first.root
        self.roots = [part.root for part in self.parts]
        self._index = first._index
        self._handles = first._handles
        self._part_of = [(number, local) for number, part in enumerate(self.parts) for local in range(len(part))]

    @property
    def parts(self) -> list[EpisodeDataset]:
        """The stores read, in the order given."""
        return self._parts

    @property
    def records(self) -> tuple[EpisodeRecord, ...]:
        """Index records of every store's episodes, store after store."""
        return tuple(record for part in self.parts for record in part.records)

    @property
    def num_attempts(self) -> int:
        """Collection attempts made over all stores."""
        return sum(part.num_attempts for part in self.parts)

    @property
    def store_of_episode(self) -> np.ndarray:
        """``(N,)`` int64, the position in ``roots`` of each episode's store."""
        return np.array([number for number, _ in self._part_of], dtype=np.int64)

    def __getitem__(self, index: int) -> Episode:
        number, local = self._part_of[index]
        return self.parts[number][local]

    def close(self) -> None:
        """Close the files this process has open, in every store."""
        for part in self.parts:
            part.close()


def store_signatures(dataset: EpisodeDataset) -> list[str]:
    """One digest per store read (``ConcatEpisodeDataset``'s in order) over what its index says of its
    episodes: the env id, and each episode's file, length, seed, instruction and outcome. Two folders
    with the same episodes have the same signature wherever they are; a store with other or more
    episodes has another. Read from the index only, so it is cheap for any store size."""
    signatures = []
    for store in dataset.parts:
        digest = hashlib.blake2b(digest_size=12)
        digest.update(json.dumps([store.env_id, [[r.file, r.length, r.seed, r.instruction, r.success]
                                                 for r in store.records]]).encode())
        signatures.append(digest.hexdigest())
    return signatures


def open_episodes(roots: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> EpisodeDataset:
    """One store as :class:`EpisodeDataset`, several as :class:`ConcatEpisodeDataset`."""
    if isinstance(roots, (str, os.PathLike)):
        return EpisodeDataset(roots)
    return EpisodeDataset(roots[0]) if len(roots) == 1 else ConcatEpisodeDataset(roots)
