"""A LeRobotDataset v3.0 recorded elsewhere (another robot, LeRobot's own recorder, the Hub) as an episode store.

What becomes what:

- ``observation.images.<camera>`` (``video`` or ``image`` features) becomes ``image_<camera>``: ``uint8``
  ``(S, S, 3)`` frames. The policy reads square frames of one size, so frames of another shape need
  ``image_size=S``: the centre square is cropped and resized to ``S`` (bilinear, antialiased).
- ``observation.state`` becomes ``state``, and every other numeric ``observation.<name>`` vector ``<name>``
  (dots as ``_``), ``float32``, unbounded; ``action`` the action, ``float32``, unbounded (corft normalises
  actions by the data's statistics, not by the space's bounds).
- A dataset of ``N`` frames per episode becomes ``N`` steps: frame ``t``'s observation and action, and the
  final observation repeated after the last, so that every recorded action, reward and success is kept. Where a
  ``final_observation`` feature marks the last frame as the final observation only (as ``corft export``
  writes it), it is one: ``N - 1`` steps.
- ``next.reward`` and ``next.success`` are the rewards and success where the dataset records them (one of the
  two is enough: the reward is then 1 on a successful step, or success a positive reward). Datasets of
  demonstrations usually record neither: ``demos_succeed=True`` declares every episode a successful
  demonstration (reward 1 and success on its last step, as corft's own demonstrations); otherwise the
  import is refused rather than guessing.
- The instruction is the episode's task (``meta/tasks.parquet``).
- The store's env id is ``lerobot:<folder name>``: no Gymnasium env, so ``corft eval`` asks for ``--env``.
  Seeds are unknown (``None``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from corft_envs.episode_store import DatasetError, DatasetMeta, EpisodeData
from corft_envs.interop.foreign import camera_spaces, resize_frames, write_episodes
from corft_envs.interop.lerobot_files import FrameReader, read_episode_rows, read_tasks

#: Feature dtypes that hold camera frames.
IMAGE_DTYPES = ("video", "image")
#: The prefix of the store's env id for an imported dataset: not a Gymnasium id (``gym.make`` refuses ``:``-less
#: ids it does not know, and corft refuses ids with ``:``), so nothing can be made from it.
ENV_ID_PREFIX = "lerobot:"


def import_foreign_lerobot(source: Path, out: Path, info: dict[str, Any], image_size: int | None = None,
                           demos_succeed: bool = False) -> None:
    """Write the LeRobot v3.0 dataset ``source`` (not written by corft) as an episode store at ``out`` (new or
    empty), as the module docstring describes.

    :param info: ``source``'s ``meta/info.json`` (:func:`~corft_envs.interop.lerobot_files.read_info`).
    :param image_size: crop the centre square of each frame and resize it to this many pixels.
    :param demos_succeed: every episode is a successful demonstration (for datasets without rewards).
    :raises DatasetError: for a dataset without an ``action`` vector or cameras of one square size (without
        ``image_size``), without rewards or success (without ``demos_succeed``), or with them and
        ``demos_succeed``, or an ``out`` that holds something.
    """
    features: dict[str, dict[str, Any]] = info["features"]
    cameras = {name: camera_key(name) for name, spec in features.items()
               if name.startswith("observation.") and spec.get("dtype") in IMAGE_DTYPES}
    vectors = {name: vector_key(name) for name, spec in features.items()
               if name.startswith("observation.") and name not in cameras and _is_numeric_vector(spec)}
    action = features.get("action")
    if action is None or not _is_numeric_vector(action):
        raise DatasetError(f"{source}: no numeric 'action' vector among the features ({', '.join(features)}); "
                           "corft trains policies that output one")
    recorded = [name for name in ("next.reward", "next.success") if name in features]
    if demos_succeed and recorded:
        raise DatasetError(f"{source} records {' and '.join(recorded)}: drop --demos-succeed, the import uses them")
    if not demos_succeed and not recorded:
        raise DatasetError(f"{source} records neither next.reward nor next.success; if every episode is a "
                           "successful demonstration, say so with --demos-succeed (reward 1 and success on each "
                           "episode's last step)")
    frames = camera_spaces(source, {key: _frame_shape(features[name]) for name, key in cameras.items()}, image_size)
    observation_space = spaces.Dict(
        frames | {key: spaces.Box(-np.inf, np.inf, tuple(features[name]["shape"]), np.float32)
                  for name, key in vectors.items()})
    meta = DatasetMeta(env_id=ENV_ID_PREFIX + source.resolve().name, env_kwargs={},
                       observation_space=observation_space,
                       action_space=spaces.Box(-np.inf, np.inf, tuple(action["shape"]), np.float32),
                       keep_failures=not demos_succeed)
    rows = read_episode_rows(source)
    with FrameReader(source, info) as reader:
        write_episodes(out, meta, _episodes(source, reader, rows, features, cameras, vectors, image_size,
                                            demos_succeed), source)


def camera_key(feature: str) -> str:
    """The store key of a camera feature: ``observation.images.top`` -> ``image_top``."""
    name = feature.removeprefix("observation.").removeprefix("images.").removeprefix("image.")
    return "image_" + re.sub(r"\W", "_", name)


def vector_key(feature: str) -> str:
    """The store key of a vector feature: ``observation.state`` -> ``state``, ``observation.a.b`` -> ``a_b``."""
    return re.sub(r"\W", "_", feature.removeprefix("observation."))


def _is_numeric_vector(spec: dict[str, Any]) -> bool:
    shape = spec.get("shape")
    return (isinstance(shape, list) and len(shape) == 1 and str(spec.get("dtype", "")).startswith(
        ("float", "int", "uint", "bool")))


def _frame_shape(spec: dict[str, Any]) -> tuple[int, int, int]:
    """``(H, W, 3)`` of a camera feature, whose ``shape`` is in the order its ``names`` give (``height``,
    ``width``, ``channels`` by default)."""
    names = spec.get("names") or ["height", "width", "channels"]
    sizes = dict(zip(names, spec["shape"]))
    try:
        return int(sizes["height"]), int(sizes["width"]), 3
    except KeyError as exc:
        raise DatasetError(f"a camera feature's names {names} give no {exc}") from exc


def _episodes(source: Path, reader: FrameReader, rows: list[dict[str, Any]], features: dict[str, dict[str, Any]],
              cameras: dict[str, str], vectors: dict[str, str], image_size: int | None,
              demos_succeed: bool) -> Iterator[EpisodeData]:
    """The dataset's episodes, in order, as the module docstring describes."""
    instructions = read_tasks(source)
    for row in rows:
        columns = reader.columns(row)
        observations = {}
        for name, key in cameras.items():
            frames = (reader.video(row, name) if features[name]["dtype"] == "video"
                      else reader.images(columns[name], name))
            observations[key] = frames if image_size is None else resize_frames(frames, image_size)
        for name, key in vectors.items():
            observations[key] = columns[name].reshape(len(columns[name]), -1).astype(np.float32)
        steps = row["length"]
        if "final_observation" in columns:  # the last frame is the final observation, no step of its own
            steps -= 1
            columns = {name: values[:steps] for name, values in columns.items()}
        else:
            observations = {key: np.concatenate([values, values[-1:]]) for key, values in observations.items()}
        if demos_succeed:
            is_success = np.arange(steps) == steps - 1
            rewards = is_success.astype(np.float32)
        else:
            rewards = columns["next.reward"].reshape(-1).astype(np.float32) if "next.reward" in columns else None
            is_success = (columns["next.success"].reshape(-1).astype(bool) if "next.success" in columns
                          else rewards > 0)
            rewards = is_success.astype(np.float32) if rewards is None else rewards
        task = int(columns["task_index"][0])
        if task not in instructions:
            raise DatasetError(f"{source}: episode {row['episode_index']}'s task_index {task} is not in "
                               "meta/tasks.parquet")
        yield EpisodeData(observations=observations,
                          actions=columns["action"].reshape(steps, -1).astype(np.float32), rewards=rewards,
                          is_success=is_success, instruction=instructions[task], seed=None,
                          terminated=bool(is_success[-1]), truncated=not is_success[-1])
