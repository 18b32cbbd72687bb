"""An exclusive lock on a folder that one process writes: an episode store, a training run.

``flock`` on ``<folder>/.lock``: the kernel releases it when the holder exits, however it exits, so
a lock left by a killed process is never stale. The holder writes its pid into the file, so the
refusal can say who holds it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

#: The lock file's name inside the folder.
LOCK_NAME = ".lock"


class FolderBusyError(RuntimeError):
    """Another live process holds the folder's lock."""


class FolderLock:
    """Hold ``folder``'s lock until :meth:`release` (or the end of a ``with`` block).

    :param folder: an existing directory.
    :raises FolderBusyError: naming the holder's pid if another process holds the lock.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.path = Path(folder) / LOCK_NAME
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 32).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            raise FolderBusyError(f"process {holder} is writing {Path(folder)}") from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, str(os.getpid()).encode(), 0)
        self._descriptor: int | None = descriptor

    def release(self) -> None:
        """Let the folder go (idempotent)."""
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()
