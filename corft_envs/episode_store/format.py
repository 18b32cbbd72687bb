"""The episode store's on-disk format: layout constants, metadata records, errors, and reading one file.

Layout of a store directory::

    index.json            dataset metadata and one record per collection attempt
    episode_000000.h5     one finished episode
    episode_000001.h5
    ...

An episode of ``T`` steps holds, in its HDF5 file:

* ``observations/<key>``: ``T + 1`` observations (the reset observation, then
  the one after each step, the final one included); image keys (``uint8``
  frames of rank 3) are gzip-compressed, one frame per chunk;
* ``actions`` (``T`` step-level actions), ``rewards`` (``T``, float32),
  ``is_success`` (``T``, bool, ``info["is_success"]`` after each step);
* attributes ``dataset`` and ``episode``: JSON copies of the dataset metadata
  and of the episode's index record, so the files alone can rebuild the index.

The episode files are the ground truth: the writer rebuilds ``index.json``
from them when it is missing or behind.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np
from gymnasium import spaces

from corft_envs.episode_store.spaces import observation_action_differences, space_from_json, space_to_json

#: Version of the on-disk layout; readers refuse other versions.
FORMAT_VERSION = 1
#: Name of the metadata index inside a store directory.
INDEX_NAME = "index.json"
#: Names of finished episode files; group 1 is the episode number.
EPISODE_PATTERN = re.compile(r"^episode_(\d{6,})\.h5$")
_REBUILD_HINT = (
    "delete the file and run the same `corft collect` command again: it keeps "
    "every intact episode and collects replacements"
)


class DatasetError(Exception):
    """An episode store on disk is missing, damaged, or does not fit its use."""


class DiskFullError(DatasetError):
    """The store's disk has too little space for the next episode; every finished episode is intact."""


def damaged_file_error(path: Path, problems: Sequence[str]) -> DatasetError:
    """The error for a damaged episode file: its path, its problems, and how to repair the store."""
    return DatasetError(f"{path}: " + "; ".join(problems) + f"; {_REBUILD_HINT}")


def project_version() -> str:
    """The installed ``corft`` version, or ``"unknown"`` when not installed."""
    try:
        return metadata.version("corft")
    except metadata.PackageNotFoundError:
        return "unknown"


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
        return problems + observation_action_differences(self, other)


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


def expected_layout(meta: DatasetMeta, length: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Path -> (shape, dtype) that an episode of ``length`` steps must have."""
    layout = {
        f"observations/{key}": ((length + 1, *space.shape), np.dtype(space.dtype))
        for key, space in meta.observation_space.spaces.items()
    }
    layout["actions"] = ((length, *meta.action_space.shape), np.dtype(meta.action_space.dtype))
    layout["rewards"] = ((length,), np.dtype(np.float32))
    layout["is_success"] = ((length,), np.dtype(bool))
    return layout


def layout_problems(arrays: Mapping[str, Any], meta: DatasetMeta, length: int) -> list[str]:
    """What is missing or misshapen in ``arrays`` (numpy arrays or h5py datasets)."""
    problems = []
    for path, (shape, dtype) in expected_layout(meta, length).items():
        if path not in arrays:
            problems.append(f"array {path!r} is missing")
            continue
        array = arrays[path]
        if tuple(array.shape) != shape or np.dtype(array.dtype) != dtype:
            problems.append(
                f"array {path!r} is {np.dtype(array.dtype)}{tuple(array.shape)}, expected {dtype}{shape}"
            )
    return problems


def file_layout_problems(path: Path, meta: DatasetMeta, length: int) -> list[str]:
    """:func:`layout_problems` of an episode file's arrays, or why it cannot be read."""
    try:
        with h5py.File(path, "r") as handle:
            return layout_problems(handle, meta, length)
    except OSError as exc:
        return [f"cannot read ({exc})"]


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

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str | os.PathLike[str]) -> StoreIndex:
        """Inverse of :meth:`to_json`.

        :param source: where ``data`` was read from, named in the error for another format version.
        :raises DatasetError: if ``data`` is of another format version.
        :raises KeyError, ValueError, TypeError, AttributeError: if fields are missing or bad.
        """
        if "format_version" not in data:  # not an index this code wrote (e.g. `{}`): rebuildable, not too new
            raise KeyError("format_version")
        _check_format_version(source, data["format_version"])
        return cls(
            meta=DatasetMeta.from_json(data),
            episodes=tuple(EpisodeRecord.from_json(r) for r in data["episodes"]),
            discarded=tuple(EpisodeRecord.from_json(r) for r in data["discarded_attempts"]),
        )


def _check_format_version(source: str | os.PathLike[str], version: Any) -> None:
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
        return StoreIndex.from_json(json.loads(path.read_text(encoding="utf-8")), path)
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
        raise damaged_file_error(path, [f"truncated or corrupt ({exc})"]) from exc
    return meta, replace(record, file=path.name)


def episode_files(root: Path) -> list[Path]:
    """The finished episode files in ``root``, in name order."""
    return sorted(p for p in root.iterdir() if EPISODE_PATTERN.match(p.name))
