"""Where a LeRobotDataset v3.0 keeps its files, and reading one episode's frames back from them, however many
files its data and videos are split into.

A v3.0 dataset packs many episodes into each file: ``data/chunk-CCC/file-FFF.parquet`` holds frames (one row
each), ``videos/<feature>/chunk-CCC/file-FFF.mp4`` each camera's frames, episode after episode, and every row of
``meta/episodes/chunk-CCC/file-FFF.parquet`` says which data file and which video files (with the span
``from_timestamp``..``to_timestamp`` in each) hold one episode. A file grows until it passes its size limit
(``data_files_size_in_mb``, ``video_files_size_in_mb`` in ``meta/info.json``); then the next file starts, and
after ``chunks_size`` files the next chunk folder. An episode never spans two files.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from corft_envs.episode_store import DatasetError
from corft_envs.interop.common import require
from corft_envs.interop.video import read_video

#: The LeRobotDataset version written and read.
CODEBASE_VERSION = "v3.0"
INFO = "meta/info.json"
STATS = "meta/stats.json"
TASKS = "meta/tasks.parquet"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
#: LeRobot's defaults for how many files a chunk folder and how many MB a file may hold.
CHUNKS_SIZE, DATA_FILE_MB, VIDEO_FILE_MB = 1000, 100, 200


@dataclass(frozen=True)
class FileNumber:
    """A file's place in the layout: ``chunk-{chunk_index}/file-{file_index}``."""

    chunk_index: int = 0
    file_index: int = 0

    def next(self, chunks_size: int) -> FileNumber:
        """The file after this one: the next in its chunk, or the first of the next chunk after ``chunks_size``."""
        if self.file_index + 1 < chunks_size:
            return FileNumber(self.chunk_index, self.file_index + 1)
        return FileNumber(self.chunk_index + 1, 0)

    def path(self, template: str, **fields: str) -> str:
        """``template`` (``info.json``'s ``data_path`` or ``video_path``) filled in for this file."""
        return template.format(chunk_index=self.chunk_index, file_index=self.file_index, **fields)


def read_info(source: Path) -> dict[str, Any]:
    """``meta/info.json``, checked to be of LeRobot's v3.0.

    :raises DatasetError: if it is missing, unreadable, or of another version.
    """
    path = source / INFO
    if not path.is_file():
        raise DatasetError(f"{path}: missing; {source} is not a LeRobot dataset")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        version, features, fps = info["codebase_version"], info["features"], info["fps"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from exc
    if version != CODEBASE_VERSION:
        advice = (" convert it first with LeRobot's `python -m lerobot.scripts.convert_dataset_v21_to_v30`"
                  if str(version).startswith("v2") else "")
        raise DatasetError(f"{path}: LeRobotDataset {version}, corft reads {CODEBASE_VERSION};"
                           f"{advice or ' export it again'}")
    if not isinstance(features, dict) or not isinstance(fps, (int, float)) or fps <= 0:
        raise DatasetError(f"{path}: 'features' must be an object and 'fps' a positive number")
    return info


def read_tasks(source: Path) -> dict[int, str]:
    """The tasks (LeRobot's instructions) by ``task_index``, from ``meta/tasks.parquet``, whose index is the text."""
    pq = require("pyarrow.parquet")
    path = source / TASKS
    if not path.is_file():
        raise DatasetError(f"{path}: missing; a LeRobot v3.0 dataset lists its tasks there")
    tasks = pq.read_table(path).to_pydict()
    return {int(number): str(text) for number, text in zip(tasks["task_index"], tasks["task"])}


def read_episode_rows(source: Path) -> list[dict[str, Any]]:
    """Every row of ``meta/episodes/*/*.parquet``, in episode order.

    :raises DatasetError: if there are none.
    """
    pq = require("pyarrow.parquet")
    files = sorted((source / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not files:
        raise DatasetError(f"{source}: no meta/episodes/chunk-*/file-*.parquet; a LeRobot v3.0 dataset lists its "
                           "episodes there")
    rows = [row for path in files for row in pq.read_table(path).to_pylist()]
    return sorted(rows, key=lambda row: row["episode_index"])


def column_array(table: Any, name: str) -> np.ndarray:
    """A data parquet column as an array: ``(frames, n)`` for list columns (vectors), an object array of dicts for
    struct columns (LeRobot's encoded images), ``(frames,)`` for scalars."""
    column = table.column(name).combine_chunks()
    if hasattr(column, "field"):  # a struct
        return np.array(column.to_pylist(), dtype=object)
    if hasattr(column, "flatten"):  # a list
        return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1)
    return column.to_numpy(zero_copy_only=False)


class FrameReader:
    """Reads episodes' frames from a v3.0 dataset's files: the data rows of one episode, and the decoded frames
    of its span in each video. Episodes read in order decode each video file once; use it as a context manager.

    :param source: the dataset folder.
    :param info: its ``meta/info.json`` (:func:`read_info`).
    """

    def __init__(self, source: Path, info: dict[str, Any]) -> None:
        self._pq = require("pyarrow.parquet")
        self.source, self.fps = source, float(info["fps"])
        self._data_path, self._video_path = info.get("data_path", DATA_PATH), info.get("video_path", VIDEO_PATH)
        self._table: tuple[str, dict[str, np.ndarray]] | None = None
        self._videos: dict[str, tuple[str, Iterator[np.ndarray], int]] = {}

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def columns(self, row: dict[str, Any]) -> dict[str, np.ndarray]:
        """The data columns of episode ``row`` (a :func:`read_episode_rows` row), its frames in order."""
        path = FileNumber(row["data/chunk_index"], row["data/file_index"]).path(self._data_path)
        if self._table is None or self._table[0] != path:
            if not (self.source / path).is_file():
                raise DatasetError(f"{self.source / path}: missing; episode {row['episode_index']} is there")
            table = self._pq.read_table(self.source / path)
            self._table = (path, {name: column_array(table, name) for name in table.column_names})
        columns = self._table[1]
        frames = np.flatnonzero(columns["episode_index"] == row["episode_index"])
        if len(frames) != row["length"]:
            raise DatasetError(f"{self.source / path}: {len(frames)} frames of episode {row['episode_index']}, "
                               f"its row in meta/episodes says {row['length']}")
        frames = frames[np.argsort(columns["frame_index"][frames], kind="stable")]
        return {name: values[frames] for name, values in columns.items()}

    def video(self, row: dict[str, Any], feature: str) -> np.ndarray:
        """The ``(length, H, W, 3)`` ``uint8`` frames of episode ``row`` in the video of ``feature``."""
        number = FileNumber(row[f"videos/{feature}/chunk_index"], row[f"videos/{feature}/file_index"])
        path = number.path(self._video_path, video_key=feature)
        start = round(row[f"videos/{feature}/from_timestamp"] * self.fps)
        opened, frames, position = self._videos.get(feature, (None, iter(()), 0))
        if opened != path or position > start:
            if not (self.source / path).is_file():
                raise DatasetError(f"{self.source / path}: missing; episode {row['episode_index']} is there")
            frames, position = read_video(self.source / path), 0
        for _ in zip(range(start - position), frames):
            position += 1
        episode = [frame for _, frame in zip(range(row["length"]), frames)]
        self._videos[feature] = (path, frames, position + len(episode))
        if position != start or len(episode) < row["length"]:
            raise DatasetError(f"{self.source / path}: the video ends before episode {row['episode_index']}'s "
                               f"{row['length']} frames from {start}")
        return np.stack(episode)

    def images(self, values: np.ndarray, name: str) -> np.ndarray:
        """Decode an ``image`` feature's column (LeRobot's ``{"bytes", "path"}`` PNG or JPEG structs) to
        ``(frames, H, W, 3)`` ``uint8``."""
        image_module = require("PIL.Image")
        frames = []
        for value in values:
            if not isinstance(value, dict) or not value.get("bytes"):
                raise DatasetError(f"{self.source}: image feature {name!r} holds no encoded bytes")
            with image_module.open(io.BytesIO(value["bytes"])) as image:
                frames.append(np.asarray(image.convert("RGB")))
        return np.stack(frames)

    def close(self) -> None:
        """Stop the video decoders."""
        for _, frames, _ in self._videos.values():
            if hasattr(frames, "close"):
                frames.close()
        self._videos.clear()
