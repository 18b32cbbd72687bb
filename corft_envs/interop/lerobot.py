"""An episode store as a LeRobotDataset v3.0 folder, and back.

Layout written (LeRobot's v3.0 layout, one file of each kind)::

    meta/info.json                                   version, fps, features, counts, path templates
    meta/stats.json                                  per feature: min, max, mean, std, count, q01 ... q99
    meta/tasks.parquet                               the instructions (LeRobot's tasks), indexed by task_index
    meta/episodes/chunk-000/file-000.parquet         one row per episode: its frames, video spans, stats
    meta/corft_index.json                            the store's index.json (env, spaces, every attempt)
    data/chunk-000/file-000.parquet                  one row per frame
    videos/observation.images.<camera>/chunk-000/file-000.mp4   each camera's frames, episode after episode

An episode of ``T`` steps becomes ``T + 1`` frames: frame ``t`` holds observation ``t`` (``image_<camera>``
as ``observation.images.<camera>``, the other keys as ``observation.<key>``), ``action`` ``t``,
``next.reward``, ``next.done`` and ``next.success`` of step ``t``. The last frame holds the final
observation; it has no step of its own, so it repeats the last action (as LeRobot pads past an episode's
end), has reward 0, and ``final_observation`` is true on it alone: drop those frames to train on steps only.
The instruction is the frame's ``task``. Everything but the images comes back exactly; the images are
AV1 video (:mod:`corft_envs.interop.video`), within :data:`~corft_envs.interop.video.MEAN_ERROR_BOUND`.

Importing reads a folder this module wrote: the env id, the spaces and the attempts come from
``meta/corft_index.json``, everything per frame from the data, the videos and the tasks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from corft_envs.episode_store import DatasetError, DatasetMeta, EpisodeData, EpisodeDataset, StoreIndex, read_index
from corft_envs.interop.common import existing_folder, index_from_json, new_output, require, write_store
from corft_envs.interop.video import CODEC, PIXEL_FORMAT, VideoWriter, read_video
from corft_robots.contract import CONTROL_HZ

#: The LeRobotDataset version written and read.
CODEBASE_VERSION = "v3.0"
#: Frames per second: corft's envs take one action per control period.
FPS = CONTROL_HZ
#: Where the store's index goes, beside LeRobot's metadata.
CORFT_INDEX = "meta/corft_index.json"
INFO = "meta/info.json"
STATS = "meta/stats.json"
TASKS = "meta/tasks.parquet"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
#: LeRobot's defaults for how many files a chunk folder and how many MB a file may hold.
CHUNKS_SIZE, DATA_FILE_MB, VIDEO_FILE_MB = 1000, 100, 200
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


def export_lerobot(store: Path, out: Path) -> None:
    """Write the episode store ``store`` as a LeRobotDataset v3.0 folder ``out`` (new or empty).

    :raises DatasetError: if the store cannot be read, or ``out`` holds something.
    :raises ImportError: without ``pyarrow`` (``pip install 'corft[interop]'``).
    """
    pa, pq = require("pyarrow"), require("pyarrow.parquet")
    pd = require("pandas")
    index = read_index(store)
    meta = index.meta
    features = features_of(meta)
    cameras = {key: observation_feature(meta, key) for key in meta.observation_space.spaces if is_image_key(meta, key)}
    with EpisodeDataset(store) as dataset, new_output(out):
        tasks = list(dict.fromkeys(dataset.instructions))
        videos = {feature: VideoWriter(out / VIDEO_PATH.format(video_key=feature, chunk_index=0, file_index=0),
                                       *meta.observation_space[key].shape[:2], FPS)
                  for key, feature in cameras.items()}
        frames: list[dict[str, np.ndarray]] = []
        episodes: list[dict[str, Any]] = []
        try:
            for number, episode in enumerate(dataset):
                data = episode.load()
                start = sum(len(f["index"]) for f in frames)
                columns = _frame_columns(meta, data, number, start, tasks.index(data.instruction))
                row = {"episode_index": number, "tasks": [data.instruction], "length": data.length + 1,
                       "data/chunk_index": 0, "data/file_index": 0,
                       "dataset_from_index": start, "dataset_to_index": start + data.length + 1}
                for key, feature in cameras.items():
                    video = videos[feature]
                    row |= {f"videos/{feature}/chunk_index": 0, f"videos/{feature}/file_index": 0,
                            f"videos/{feature}/from_timestamp": video.frames / FPS}
                    video.append(data.observations[key])
                    row[f"videos/{feature}/to_timestamp"] = video.frames / FPS
                    columns[feature] = data.observations[key]
                row |= {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
                row["stats"] = {name: _stats(values, features[name]["dtype"]) for name, values in columns.items()}
                for feature in cameras.values():
                    del columns[feature]
                frames.append(columns)
                episodes.append(row)
        finally:
            for video in videos.values():
                video.close()
        table = {name: np.concatenate([f[name] for f in frames]) for name in frames[0]} if frames else {}
        pq.write_table(_arrow_table(pa, table), _new_file(out / DATA_PATH.format(chunk_index=0, file_index=0)))
        stats = {name: _aggregate([row["stats"][name] for row in episodes]) for name in features} if episodes else {}
        for row in episodes:
            row |= {f"stats/{name}/{stat}": value.tolist() for name, values in row.pop("stats").items()
                    for stat, value in values.items()}
        pq.write_table(pa.Table.from_pylist(episodes),
                       _new_file(out / EPISODES_PATH.format(chunk_index=0, file_index=0)))
        pq.write_table(pa.Table.from_pandas(pd.DataFrame({"task_index": np.arange(len(tasks))},
                                                         index=pd.Index(tasks, name="task"))), out / TASKS)
        for feature in cameras.values():
            height, width, channels = features[feature]["shape"]
            features[feature]["info"] = {
                "video.height": height, "video.width": width, "video.codec": CODEC, "video.pix_fmt": PIXEL_FORMAT,
                "is_depth_map": False, "video.fps": FPS, "video.channels": channels, "has_audio": False}
        info = {"codebase_version": CODEBASE_VERSION, "robot_type": "fr3", "total_episodes": len(episodes),
                "total_frames": len(table.get("index", ())), "total_tasks": len(tasks), "chunks_size": CHUNKS_SIZE,
                "data_files_size_in_mb": DATA_FILE_MB, "video_files_size_in_mb": VIDEO_FILE_MB, "fps": FPS,
                "splits": {"train": f"0:{len(episodes)}"}, "data_path": DATA_PATH, "video_path": VIDEO_PATH,
                "features": features}
        _write_json(out / INFO, info)
        _write_json(out / STATS, {name: {k: v.tolist() for k, v in values.items()} for name, values in stats.items()})
        _write_json(out / CORFT_INDEX, index.to_json())


def import_lerobot(source: Path, out: Path) -> None:
    """Write the LeRobotDataset v3.0 folder ``source``, written by :func:`export_lerobot`, as an episode store at
    ``out`` (new or empty).

    :raises DatasetError: if ``source`` is missing, of another LeRobot version, not written by corft, lacks a
        feature the store needs, or ``out`` holds something.
    :raises ImportError: without ``pyarrow`` (``pip install 'corft[interop]'``).
    """
    pq = require("pyarrow.parquet")
    existing_folder(source, "a LeRobotDataset v3.0 (meta/info.json, data/, videos/)")
    info = _read_info(source)
    if not (source / CORFT_INDEX).is_file():
        raise DatasetError(f"{source}: no {CORFT_INDEX}; corft imports the LeRobot datasets that `corft export` "
                           "wrote (that file holds the env id, the spaces and the attempts an episode store records)")
    index = index_from_json((source / CORFT_INDEX).read_text(encoding="utf-8"), str(source / CORFT_INDEX))
    expected = features_of(index.meta)
    missing = [f"{name} ({spec['dtype']} {spec['shape']})" for name, spec in expected.items()
               if name not in info["features"] or list(info["features"][name]["shape"]) != spec["shape"]]
    if missing:
        raise DatasetError(f"{source / INFO}: features missing or of another shape: {', '.join(missing)}; "
                           f"a store of {index.meta.env_id} needs them all")
    rows = pq.read_table(source / EPISODES_PATH.format(chunk_index=0, file_index=0)).to_pylist()
    if len(rows) != len(index.episodes):
        raise DatasetError(f"{source}: {len(rows)} episodes, but {CORFT_INDEX} lists {len(index.episodes)}")
    with new_output(out):
        write_store(out, index, _episodes(pq, source, info, index, rows))


def _read_info(source: Path) -> dict[str, Any]:
    """``meta/info.json``, checked to be of LeRobot's v3.0.

    :raises DatasetError: if it is missing, unreadable, or of another version.
    """
    path = source / INFO
    if not path.is_file():
        raise DatasetError(f"{path}: missing; {source} is not a LeRobot dataset")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        version, features = info["codebase_version"], info["features"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from exc
    if version != CODEBASE_VERSION:
        advice = (" convert it first with LeRobot's `python -m lerobot.scripts.convert_dataset_v21_to_v30`"
                  if str(version).startswith("v2") else "")
        raise DatasetError(f"{path}: LeRobotDataset {version}, corft reads {CODEBASE_VERSION};"
                           f"{advice or ' export it again'}")
    if not isinstance(features, dict):
        raise DatasetError(f"{path}: 'features' is not an object")
    return info


def _episodes(pq: Any, source: Path, info: dict[str, Any], index: StoreIndex,
              rows: list[dict[str, Any]]) -> Iterator[EpisodeData]:
    """The episodes of the dataset, in order, rebuilt from the data parquet, the videos and the tasks."""
    meta = index.meta
    tasks = pq.read_table(source / TASKS).to_pydict()
    instructions = dict(zip(tasks["task_index"], tasks["task"]))
    data = pq.read_table(source / DATA_PATH.format(chunk_index=0, file_index=0))
    columns = {name: _column(data, name) for name in data.column_names}
    cameras = {key: observation_feature(meta, key) for key in meta.observation_space.spaces if is_image_key(meta, key)}
    videos = {feature: read_video(source / VIDEO_PATH.format(video_key=feature, chunk_index=0, file_index=0))
              for feature in cameras.values()}
    for row, record in zip(rows, index.episodes):
        frames = slice(row["dataset_from_index"], row["dataset_to_index"])
        steps = row["length"] - 1
        observations = {key: columns[observation_feature(meta, key)][frames].astype(meta.observation_space[key].dtype)
                        for key in meta.observation_space.spaces if not is_image_key(meta, key)}
        for key, feature in cameras.items():
            observations[key] = _video_frames(videos[feature], row["length"], source / feature)
        task = columns["task_index"][frames]
        yield EpisodeData(observations=observations,
                          actions=columns["action"][frames][:steps].astype(meta.action_space.dtype),
                          rewards=columns["next.reward"][frames][:steps],
                          is_success=columns["next.success"][frames][:steps],
                          instruction=instructions[int(task[0])], seed=record.seed, terminated=record.terminated,
                          truncated=record.truncated)


def _column(table: Any, name: str) -> np.ndarray:
    """A data parquet column as an array, ``(frames, n)`` for fixed-size lists."""
    column = table.column(name).combine_chunks()
    if hasattr(column, "flatten"):
        return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1)
    return column.to_numpy(zero_copy_only=False)


def _video_frames(video: Iterator[np.ndarray], count: int, name: Path) -> np.ndarray:
    """The next ``count`` frames of ``video``.

    :raises DatasetError: if it ends first.
    """
    frames = [frame for _, frame in zip(range(count), video)]
    if len(frames) < count:
        raise DatasetError(f"{name}: the video ends before the frames its episodes list")
    return np.stack(frames)


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
