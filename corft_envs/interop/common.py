"""What the LeRobot and Minari conversions share: the optional packages, a new output folder, and writing
converted episodes back into an episode store."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import numpy as np

from corft_envs.episode_store import DatasetError, DatasetMeta, EpisodeData, EpisodeRecord, EpisodeWriter, StoreIndex
from corft_robots.extras import import_optional

def require(module: str) -> ModuleType:
    """Import an optional package of the ``interop`` extra.

    :raises MissingExtraError: naming the package and how to install it.
    """
    return import_optional(module, "interop", "converting data")


@contextmanager
def new_output(out: Path) -> Iterator[Path]:
    """Give ``out`` to the ``with`` block if it is missing or an empty folder; remove it if the block fails.

    :raises DatasetError: if ``out`` is a file or a folder that holds something.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "a file" if not out.is_dir() else "not empty"
        raise DatasetError(f"{out} is {what}; give --out a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    try:
        yield out
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise


def existing_folder(path: Path, what: str) -> Path:
    """``path`` if it is a folder.

    :param what: what the folder should hold, for the error.
    :raises DatasetError: if it is missing or a file.
    """
    if not path.is_dir():
        raise DatasetError(f"{path}: no such folder; give the folder of {what}")
    return path


def index_from_json(data: object, source: str) -> StoreIndex:
    """The store index that an export saved beside the data (:meth:`StoreIndex.to_json`).

    :param data: the JSON object, or its text.
    :param source: where it was read from, for the error.
    :raises DatasetError: if it is unreadable.
    """
    try:
        return StoreIndex.from_json(json.loads(data) if isinstance(data, str) else data, source)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DatasetError(f"{source}: the corft index is unreadable ({type(exc).__name__}: {exc}); "
                           "export the store again") from exc


def write_store(out: Path, index: StoreIndex, episodes: Iterable[EpisodeData]) -> None:
    """Write an episode store at ``out`` that equals the one ``index`` describes.

    The attempts are recorded in order with :class:`EpisodeWriter`, so the index, the file names and the
    attempt numbers come out as in the original store: each kept attempt from the next of ``episodes`` (in
    the order of ``index.episodes``), each discarded one from its record alone.

    :raises DatasetError: if ``episodes`` holds fewer episodes than ``index`` lists, or one does not fit its spaces.
    """
    kept = iter(episodes)
    with EpisodeWriter(out, index.meta) as writer:
        for record in sorted(index.episodes + index.discarded, key=lambda r: r.attempt):
            if record.file is None:
                writer.add(_summary_episode(record, index.meta), keep=False)
                continue
            episode = next(kept, None)
            if episode is None:
                raise DatasetError(f"the data holds fewer episodes than its corft index lists ({len(index.episodes)})")
            try:
                writer.add(episode, keep=True)
            except ValueError as exc:
                raise DatasetError(f"{record.file}: {exc}") from exc


def _summary_episode(record: EpisodeRecord, meta: DatasetMeta) -> EpisodeData:
    """An episode with a discarded attempt's summary (length, outcome, seed, instruction) and no observations:
    what :meth:`EpisodeWriter.add` reads of an attempt it does not keep."""
    is_success = np.zeros(record.length, dtype=bool)
    is_success[-1:] = record.success
    return EpisodeData(observations={}, actions=np.zeros((record.length, *meta.action_space.shape), np.float32),
                       rewards=np.zeros(record.length, np.float32), is_success=is_success,
                       instruction=record.instruction, seed=record.seed, terminated=record.terminated,
                       truncated=record.truncated)
