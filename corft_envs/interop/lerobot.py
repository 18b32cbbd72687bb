"""An episode store as a LeRobotDataset v3.0 folder, and back; and LeRobot datasets recorded elsewhere in.

Layout written (LeRobot's v3.0 layout; :mod:`~corft_envs.interop.lerobot_files` says how files split)::

    meta/info.json                                   version, fps, features, counts, path templates, file sizes
    meta/stats.json                                  per feature: min, max, mean, std, count, q01 ... q99
    meta/tasks.parquet                               the instructions (LeRobot's tasks), indexed by task_index
    meta/episodes/chunk-000/file-000.parquet         one row per episode: its frames, data file, video spans, stats
    meta/corft_index.json                            the store's index.json (env, spaces, every attempt)
    data/chunk-CCC/file-FFF.parquet                  one row per frame
    videos/observation.images.<camera>/chunk-CCC/file-FFF.mp4   each camera's frames, episode after episode

A data file takes episodes until the next would take it past ``data_file_mb`` (uncompressed), a video file
until the next episode's encoding would take it past ``video_file_mb``; then the next file starts, and after
``chunks_size`` files the next chunk folder (LeRobot's defaults: 100 MB, 200 MB, 1000 files).

An episode of ``T`` steps becomes ``T + 1`` frames: frame ``t`` holds observation ``t`` (``image_<camera>``
as ``observation.images.<camera>``, the other keys as ``observation.<key>``), ``action`` ``t``,
``next.reward``, ``next.done`` and ``next.success`` of step ``t``. The last frame holds the final
observation; it has no step of its own, so it repeats the last action (as LeRobot pads past an episode's
end), has reward 0, and ``final_observation`` is true on it alone: drop those frames to train on steps only.
The instruction is the frame's ``task``. Everything but the images comes back exactly; the images are
H.264 video (:mod:`corft_envs.interop.video`), within :data:`~corft_envs.interop.video.MEAN_ERROR_BOUND`.

Importing a folder this module wrote takes the env id, the spaces and the attempts from
``meta/corft_index.json``, everything per frame from the data, the videos and the tasks. A dataset recorded
elsewhere (no ``meta/corft_index.json``) is imported by :mod:`~corft_envs.interop.lerobot_foreign`.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from corft_envs.episode_store import DatasetError, DatasetMeta, EpisodeData, EpisodeDataset, StoreIndex, read_index
from corft_envs.interop.common import existing_folder, index_from_json, new_output, require, write_store
from corft_envs.interop.lerobot_files import (
    CHUNKS_SIZE,
    CODEBASE_VERSION,
    DATA_FILE_MB,
    DATA_PATH,
    EPISODES_PATH,
    INFO,
    STATS,
    TASKS,
    VIDEO_FILE_MB,
    VIDEO_PATH,
    FileNumber,
    FrameReader,
    read_episode_rows,
    read_info,
    read_tasks,
)
from corft_envs.interop.lerobot_foreign import import_foreign_lerobot
from corft_envs.interop.video import CODEC, PIXEL_FORMAT, VideoWriter, concatenate_videos
from corft_robots.contract import CONTROL_HZ

#: Frames per second: corft's envs take one action per control period.
FPS = CONTROL_HZ
#: Where the store's index goes, beside LeRobot's metadata.
CORFT_INDEX = "meta/corft_index.json"
#: The features every LeRobot dataset has, beside its own.
INDEX_FEATURES = {
    "timestamp": "float32", "frame_index": "int64", "episode_index": "int64", "index": "int64", "task_index": "int64",
}
#: The per-step features corft adds, each one value per frame.
STEP_FEATURES = {"next.reward": "float32", "next.done": "bool", "next.success": "bool", "final_observation": "bool"}
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)


def is_image_key(meta: DatasetMeta, key: str) -> bool:
    """Whether observation ``key`` is a camera: ``uint8`` frames of rank 3."""
    space = meta.observation_space[key]
    return space.dtype == np.uint8 and len(space.shape) == 3


def observation_feature(meta: DatasetMeta, key: str) -> str:
    """The LeRobot feature of observation ``key``: ``observation.images.<camera>`` for ``image_<camera>``,
    ``observation.<key>`` otherwise."""
    if is_image_key(meta, key):
        return "observation.images." + key.removeprefix("image_")
    return "observation." + key


def features_of(meta: DatasetMeta) -> dict[str, dict[str, Any]]:
    """``info.json``'s features for a store with ``meta``'s spaces (without the videos' ``info``)."""
    features: dict[str, dict[str, Any]] = {}
    for key, space in meta.observation_space.spaces.items():
        if is_image_key(meta, key):
            features[observation_feature(meta, key)] = {
                "dtype": "video", "shape": list(space.shape), "names": ["height", "width", "channels"]}
        else:
            features[observation_feature(meta, key)] = {
                "dtype": np.dtype(space.dtype).name, "shape": list(space.shape), "names": None}
    features["action"] = {"dtype": np.dtype(meta.action_space.dtype).name, "shape": list(meta.action_space.shape),
                          "names": None}
    for name, dtype in {**STEP_FEATURES, **INDEX_FEATURES}.items():
        features[name] = {"dtype": dtype, "shape": [1], "names": None}
    return features


def export_lerobot(store: Path, out: Path, data_file_mb: float = DATA_FILE_MB, video_file_mb: float = VIDEO_FILE_MB,
                   chunks_size: int = CHUNKS_SIZE) -> None:
    """Write the episode store ``store`` as a LeRobotDataset v3.0 folder ``out`` (new or empty).

    :param data_file_mb: the size (MB, uncompressed) a data file may reach before the next starts.
    :param video_file_mb: the size (MB) a video file may reach before the next starts.
    :param chunks_size: files per chunk folder.
    :raises DatasetError: if the store cannot be read, or ``out`` holds something.
    :raises ValueError: for a size or a chunk size that is not positive.
    :raises ImportError: without ``pyarrow`` (``pip install 'corft[interop]'``).
    """
    if min(data_file_mb, video_file_mb) <= 0 or chunks_size < 1:
        raise ValueError(f"file sizes must be positive and chunks_size at least 1, got data_file_mb={data_file_mb}, "
                         f"video_file_mb={video_file_mb}, chunks_size={chunks_size}")
    pa, pq = require("pyarrow"), require("pyarrow.parquet")
    pd = require("pandas")
    index = read_index(store)
    meta = index.meta
    features = features_of(meta)
    cameras = {key: observation_feature(meta, key) for key in meta.observation_space.spaces if is_image_key(meta, key)}
    with EpisodeDataset(store) as dataset, new_output(out), tempfile.TemporaryDirectory(dir=out) as parts:
        tasks = list(dict.fromkeys(dataset.instructions))
        data_files = _DataFiles(out, data_file_mb, chunks_size)
        video_files = {feature: _VideoFiles(out, feature, Path(parts), video_file_mb, chunks_size)
                       for feature in cameras.values()}
        episodes: list[dict[str, Any]] = []
        frames = 0
        for number, episode in enumerate(dataset):
            data = episode.load()
            columns = _frame_columns(meta, data, number, frames, tasks.index(data.instruction))
            row = {"episode_index": number, "tasks": [data.instruction], "length": data.length + 1,
                   "dataset_from_index": frames, "dataset_to_index": frames + data.length + 1}
            stats = {name: _stats(values, features[name]["dtype"]) for name, values in columns.items()}
            file = data_files.add(columns)
            row |= {"data/chunk_index": file.chunk_index, "data/file_index": file.file_index}
            for key, feature in cameras.items():
                file, start, end = video_files[feature].add(data.observations[key])
                row |= {f"videos/{feature}/chunk_index": file.chunk_index,
                        f"videos/{feature}/file_index": file.file_index,
                        f"videos/{feature}/from_timestamp": start / FPS, f"videos/{feature}/to_timestamp": end / FPS}
                stats[feature] = _stats(data.observations[key], "video")
            row |= {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0, "stats": stats}
            episodes.append(row)
            frames += data.length + 1
        data_files.close()
        for videos in video_files.values():
            videos.close()
        stats = {name: _aggregate([row["stats"][name] for row in episodes]) for name in features} if episodes else {}
        for row in episodes:
            row |= {f"stats/{name}/{stat}": value.tolist() for name, values in row.pop("stats").items()
                    for stat, value in values.items()}
        pq.write_table(pa.Table.from_pylist(episodes),
                       _new_file(out / FileNumber().path(EPISODES_PATH)))
        pq.write_table(pa.Table.from_pandas(pd.DataFrame({"task_index": np.arange(len(tasks))},
                                                         index=pd.Index(tasks, name="task"))), out / TASKS)
        for feature in cameras.values():
            height, width, channels = features[feature]["shape"]
            features[feature]["info"] = {
                "video.height": height, "video.width": width, "video.codec": CODEC, "video.pix_fmt": PIXEL_FORMAT,
                "is_depth_map": False, "video.fps": FPS, "video.channels": channels, "has_audio": False}
        info = {"codebase_version": CODEBASE_VERSION, "robot_type": "fr3", "total_episodes": len(episodes),
                "total_frames": frames, "total_tasks": len(tasks), "chunks_size": chunks_size,
                "data_files_size_in_mb": data_file_mb, "video_files_size_in_mb": video_file_mb, "fps": FPS,
                "splits": {"train": f"0:{len(episodes)}"}, "data_path": DATA_PATH, "video_path": VIDEO_PATH,
                "features": features}
        _write_json(out / INFO, info)
        _write_json(out / STATS, {name: {k: v.tolist() for k, v in values.items()} for name, values in stats.items()})
        _write_json(out / CORFT_INDEX, index.to_json())


class _DataFiles:
    """The data parquet files: episodes' frame columns gathered into one file until the next episode would take
    it past the size limit."""

    def __init__(self, out: Path, file_mb: float, chunks_size: int) -> None:
        self._pa, self._pq = require("pyarrow"), require("pyarrow.parquet")
        self.out, self.limit, self.chunks_size = out, file_mb * 1e6, chunks_size
        self.number = FileNumber()
        self._pending: list[dict[str, np.ndarray]] = []
        self._bytes = 0

    def add(self, columns: dict[str, np.ndarray]) -> FileNumber:
        """Take one episode's columns; return the file it goes into."""
        size = sum(values.nbytes for values in columns.values())
        if self._pending and self._bytes + size > self.limit:
            self._write()
            self.number = self.number.next(self.chunks_size)
        self._pending.append(columns)
        self._bytes += size
        return self.number

    def close(self) -> None:
        """Write the last file."""
        if self._pending:
            self._write()

    def _write(self) -> None:
        table = {name: np.concatenate([columns[name] for columns in self._pending]) for name in self._pending[0]}
        self._pq.write_table(_arrow_table(self._pa, table), _new_file(self.out / self.number.path(DATA_PATH)))
        self._pending, self._bytes = [], 0


class _VideoFiles:
    """One camera's video files: each episode encoded on its own (its size is then known), and the episodes of
    a file joined without re-encoding once the next would take it past the size limit."""

    def __init__(self, out: Path, feature: str, parts: Path, file_mb: float, chunks_size: int) -> None:
        self.out, self.feature, self.parts, self.limit, self.chunks_size = out, feature, parts, file_mb * 1e6, chunks_size
        self.number = FileNumber()
        self._pending: list[Path] = []
        self._bytes = self._frames = self._encoded = 0

    def add(self, frames: np.ndarray) -> tuple[FileNumber, int, int]:
        """Encode one episode's ``(T + 1, H, W, 3)`` frames; return its file and its frame span in the file."""
        part = self.parts / f"{self.feature}-{self._encoded}.mp4"
        self._encoded += 1
        writer = VideoWriter(part, *frames.shape[1:3], FPS)
        try:
            writer.append(frames)
        finally:
            writer.close()
        size = part.stat().st_size
        if self._pending and self._bytes + size > self.limit:
            self._write()
            self.number = self.number.next(self.chunks_size)
        self._pending.append(part)
        start = self._frames
        self._bytes, self._frames = self._bytes + size, self._frames + len(frames)
        return self.number, start, self._frames

    def close(self) -> None:
        """Write the last file."""
        if self._pending:
            self._write()

    def _write(self) -> None:
        target = self.out / self.number.path(VIDEO_PATH, video_key=self.feature)
        if len(self._pending) == 1:
            _new_file(target)
            self._pending[0].replace(target)
        else:
            concatenate_videos(self._pending, target)
            for part in self._pending:
                part.unlink()
        self._pending, self._bytes, self._frames = [], 0, 0


def import_lerobot(source: Path, out: Path, image_size: int | None = None, demos_succeed: bool = False) -> None:
    """Write the LeRobotDataset v3.0 folder ``source`` as an episode store at ``out`` (new or empty).

    A dataset :func:`export_lerobot` wrote comes back as the store it was. One recorded elsewhere is converted
    by :func:`~corft_envs.interop.lerobot_foreign.import_foreign_lerobot`, which takes ``image_size`` and
    ``demos_succeed``; for a corft export these must be left unset.

    :raises DatasetError: if ``source`` is missing, of another LeRobot version, lacks a feature the store
        needs, or ``out`` holds something.
    :raises ImportError: without ``pyarrow`` (``pip install 'corft[interop]'``).
    """
    existing_folder(source, "a LeRobotDataset v3.0 (meta/info.json, data/, videos/)")
    info = read_info(source)
    if not (source / CORFT_INDEX).is_file():
        import_foreign_lerobot(source, out, info, image_size=image_size, demos_succeed=demos_succeed)
        return
    if image_size is not None or demos_succeed:
        raise DatasetError(f"{source} was written by `corft export` and comes back as the store it was: drop "
                           "--image-size and --demos-succeed, which convert datasets recorded elsewhere")
    index = index_from_json((source / CORFT_INDEX).read_text(encoding="utf-8"), str(source / CORFT_INDEX))
    expected = features_of(index.meta)
    missing = [f"{name} ({spec['dtype']} {spec['shape']})" for name, spec in expected.items()
               if name not in info["features"] or list(info["features"][name]["shape"]) != spec["shape"]]
    if missing:
        raise DatasetError(f"{source / INFO}: features missing or of another shape: {', '.join(missing)}; "
                           f"a store of {index.meta.env_id} needs them all")
    rows = read_episode_rows(source)
    if len(rows) != len(index.episodes):
        raise DatasetError(f"{source}: {len(rows)} episodes, but {CORFT_INDEX} lists {len(index.episodes)}")
    with new_output(out), FrameReader(source, info) as reader:
        write_store(out, index, _episodes(source, reader, index, rows))


def _episodes(source: Path, reader: FrameReader, index: StoreIndex,
              rows: list[dict[str, Any]]) -> Iterator[EpisodeData]:
    """The episodes of the dataset, in order, rebuilt from the data parquet, the videos and the tasks."""
    meta = index.meta
    instructions = read_tasks(source)
    cameras = {key: observation_feature(meta, key) for key in meta.observation_space.spaces if is_image_key(meta, key)}
    for row, record in zip(rows, index.episodes):
        columns = reader.columns(row)
        steps = row["length"] - 1
        observations = {key: columns[observation_feature(meta, key)].astype(meta.observation_space[key].dtype)
                        for key in meta.observation_space.spaces if not is_image_key(meta, key)}
        for key, feature in cameras.items():
            observations[key] = reader.video(row, feature)
        yield EpisodeData(observations=observations,
                          actions=columns["action"][:steps].astype(meta.action_space.dtype),
                          rewards=columns["next.reward"][:steps], is_success=columns["next.success"][:steps],
                          instruction=instructions[int(columns["task_index"][0])], seed=record.seed,
                          terminated=record.terminated, truncated=record.truncated)


def _frame_columns(meta: DatasetMeta, data: EpisodeData, episode: int, start: int, task: int) -> dict[str, np.ndarray]:
    """The data parquet's columns of one episode's ``T + 1`` frames, cameras left out."""
    steps = data.length
    last = np.arange(steps + 1) == steps
    columns = {observation_feature(meta, key): values for key, values in data.observations.items()
               if not is_image_key(meta, key)}
    columns["action"] = np.concatenate([data.actions, data.actions[-1:]])
    columns["next.reward"] = np.append(data.rewards, np.float32(0))
    columns["next.done"] = np.arange(steps + 1) >= steps - 1
    columns["next.success"] = np.append(data.is_success, data.is_success[-1:])
    columns["final_observation"] = last
    frame_index = np.arange(steps + 1, dtype=np.int64)
    columns["timestamp"] = (frame_index / FPS).astype(np.float32)
    columns["frame_index"] = frame_index
    columns["episode_index"] = np.full(steps + 1, episode, dtype=np.int64)
    columns["index"] = start + frame_index
    columns["task_index"] = np.full(steps + 1, task, dtype=np.int64)
    return columns


def _arrow_table(pa: Any, columns: dict[str, np.ndarray]) -> Any:
    """A pyarrow table of the frame columns: vectors as fixed-size lists, scalars as plain values."""
    arrays = {}
    for name, values in columns.items():
        if values.ndim == 1:
            arrays[name] = pa.array(values)
        else:
            arrays[name] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
    return pa.table(arrays)


def _stats(values: np.ndarray, dtype: str) -> dict[str, np.ndarray]:
    """LeRobot's statistics of one feature over frames: per channel in ``[0, 1]`` with shape ``(3, 1, 1)`` for
    video, per component for vectors, shape ``(1,)`` for scalars; ``count`` is the number of frames."""
    count = np.array([len(values)])
    if dtype == "video":
        values = values.reshape(-1, values.shape[-1]) / 255.0  # pixels x channels
        shape = (values.shape[-1], 1, 1)
    else:
        values = values.astype(np.float64).reshape(len(values), -1)
        shape = (values.shape[-1],)
    stats = {"min": values.min(axis=0), "max": values.max(axis=0), "mean": values.mean(axis=0),
             "std": values.std(axis=0)}
    stats |= {f"q{round(q * 100):02d}": np.quantile(values, q, axis=0) for q in QUANTILES}
    stats = {name: value.reshape(shape) for name, value in stats.items()}
    stats["count"] = count
    return stats


def _aggregate(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The dataset's statistics from the episodes', as LeRobot aggregates them: the pooled mean and std, the
    extreme min and max, and the count-weighted mean of each quantile."""
    counts = np.array([part["count"][0] for part in parts], dtype=np.float64)
    weights = (counts / counts.sum()).reshape(-1, *[1] * parts[0]["mean"].ndim)
    means = np.stack([part["mean"] for part in parts])
    mean = (weights * means).sum(axis=0)
    variance = (weights * (np.stack([part["std"] for part in parts]) ** 2 + (means - mean) ** 2)).sum(axis=0)
    stats = {"min": np.min([part["min"] for part in parts], axis=0),
             "max": np.max([part["max"] for part in parts], axis=0), "mean": mean, "std": np.sqrt(variance)}
    stats |= {name: (weights * np.stack([part[name] for part in parts])).sum(axis=0)
              for name in parts[0] if name.startswith("q")}
    stats["count"] = np.array([int(counts.sum())])
    return stats


def _new_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _write_json(path: Path, data: Any) -> None:
    _new_file(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
