"""An exclusive lock on a folder that one process writes: an episode store, a training run.

``flock`` on ``<folder>/.lock``: the kernel releases it when the holder exits, however it exits, so
a lock left by a killed process never blocks the next one. The holder writes its pid into the file, so
the refusal can say who holds it, and empties the file when it releases the lock; a pid found in the
file on taking the lock is therefore a holder that ended without releasing it (killed, or crashed),
which :attr:`FolderLock.taken_over_from` reports.
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
        left = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
        #: The pid (as written) of a holder that ended without releasing the lock, or ``None``.
        self.taken_over_from: str | None = left or None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, str(os.getpid()).encode(), 0)
        self._descriptor: int | None = descriptor

    def takeover_note(self) -> str | None:
        """One line saying whose stale lock was taken over, or ``None`` if it was released cleanly."""
        if self.taken_over_from is None:
            return None
        return (f"taking over {self.path} from process {self.taken_over_from}, which ended without releasing it "
                "(killed or crashed); its finished work is kept")

    def release(self) -> None:
        """Let the folder go (idempotent); the lock file is left empty."""
        if self._descriptor is not None:
            try:
                os.ftruncate(self._descriptor, 0)
            finally:
                os.close(self._descriptor)
                self._descriptor = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()
