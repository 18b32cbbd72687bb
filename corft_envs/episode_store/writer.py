"""Writing an episode store: :class:`EpisodeWriter` and atomic, in-memory-built episode files.

Every file is first written under a hidden temporary name
(``.episode_000012.h5.tmp``, ``.index.json.tmp``) and moved into place with
:func:`os.replace`, so a reader never sees half a file, and a killed writer
leaves at most a stale ``*.tmp`` that the next :class:`EpisodeWriter` removes.
An episode file is built in memory and written with plain file I/O, so a full
disk is an ``OSError`` (:class:`DiskFullError` from the writer), never a crash
inside h5py.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import shutil
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Iterator, Mapping

import h5py
import numpy as np

from corft_envs.episode_store.format import (
    EPISODE_PATTERN,
    FORMAT_VERSION,
    INDEX_NAME,
    DatasetError,
    DatasetMeta,
    DiskFullError,
    EpisodeData,
    EpisodeRecord,
    StoreIndex,
    damaged_file_error,
    episode_files,
    file_layout_problems,
    layout_problems,
    project_version,
    read_episode_metadata,
    read_index,
)
from corft_envs.folder_lock import FolderBusyError, FolderLock

logger = logging.getLogger(__name__)

#: Disk space (bytes) an episode write leaves free beside the episode's own uncompressed size: a write that
#: might fill the disk is refused before the episode file is started.
DISK_RESERVE_BYTES = 64 * 2**20
#: ``OSError`` numbers that mean there is no room for a write: a full disk, a quota, a file-size limit.
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _temporary_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, sync it, and move it into place.

    :raises OSError: if the write fails; the temporary file is removed and ``path`` is as it was.
    """
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


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` to ``path`` as indented JSON, atomically."""
    _write_atomic(path, (json.dumps(data, indent=1) + "\n").encode("utf-8"))


def _disk_full_advice(episodes: int) -> str:
    """The end of a :class:`DiskFullError` message: the store is intact, and how to go on."""
    return (f"the store's {episodes} finished episodes are intact. Free some space and run the same command "
            "again to resume, or collect elsewhere with --out")


def _storage_options(array: np.ndarray) -> dict[str, Any]:
    """gzip with one frame per chunk for image arrays, plain storage otherwise."""
    if array.dtype == np.uint8 and array.ndim == 4:
        return {"compression": "gzip", "compression_opts": 4, "chunks": (1, *array.shape[1:])}
    return {}


def episode_file_image(episode: EpisodeData, meta: DatasetMeta, record: EpisodeRecord) -> bytes:
    """The bytes of ``episode``'s HDF5 file, built in memory (h5py never touches the disk).

    :raises ValueError: if the episode's arrays do not fit ``meta``'s spaces.
    """
    problems = layout_problems(episode.arrays(), meta, episode.length)
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
    _write_atomic(path, episode_file_image(episode, meta, record))



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
                f"limit is reached); nothing partial was kept and {_disk_full_advice(len(episode_files(self.root)))}"
            ) from None

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
                f"free); nothing was written and {_disk_full_advice(len(self.episodes))}")

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
            problems = file_layout_problems(path, self.meta, record.length)  # else a "complete" unreadable store
            if problems:
                raise damaged_file_error(path, problems)
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
        numbers = [int(EPISODE_PATTERN.match(r.file).group(1)) for r in self._index.episodes]
        return f"episode_{max(numbers, default=-1) + 1:06d}.h5"

    def _write_index(self) -> None:
        _write_json_atomic(self.root / INDEX_NAME, self._index.to_json())
