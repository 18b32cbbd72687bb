"""A Minari dataset recorded elsewhere (not by ``corft export``) as an episode store.

What becomes what:

- The observation space: a ``Box`` is one key, a ``Dict`` (nested ones too, their names joined with ``_``)
  one key per ``Box``. ``uint8`` frames ``(H, W, 3)`` are cameras, ``image_<name>`` (a name that starts with
  ``image_`` already keeps it); a flat observation ``Box`` is ``state``, a vector in a ``Dict`` keeps its name
  (``observation`` and ``state`` become ``state``), as ``float32``. The policy reads square frames of one size:
  ``image_size=S`` crops each frame's centre square and resizes it to ``S``. Other spaces (``Discrete``,
  ``Text``, ...) are refused, naming them.
- The action space must be a ``Box`` vector; actions are ``float32``.
- Every recorded step is kept, with its reward, and ``terminations`` / ``truncations`` end the episode as
  recorded. Success is ``infos["success"]`` or ``infos["is_success"]`` where the dataset recorded infos;
  otherwise ``demos_succeed=True`` declares each episode a successful demonstration (success on its last
  step, the rewards as recorded), or the import is refused rather than guessing.
- The instruction is the episode metadata's ``instruction`` if any, else ``instruction`` (default: none,
  ``""``). The seed is the episode's, if recorded.
- The store's env id is ``minari:<dataset id>``, not a Gymnasium id: ``corft eval`` of a model trained on it
  asks for ``--env``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from corft_envs.episode_store import DatasetError, DatasetMeta, EpisodeData
from corft_envs.interop.foreign import camera_spaces, resize_frames, write_episodes

#: The prefix of the store's env id for an imported Minari dataset (not a Gymnasium id).
ENV_ID_PREFIX = "minari:"
#: The info keys read as success, in order.
SUCCESS_INFO_KEYS = ("success", "is_success")
#: Vector names that become the policy's ``state``.
STATE_NAMES = ("observation", "state")


def import_foreign_minari(dataset: Any, out: Path, image_size: int | None = None, demos_succeed: bool = False,
                          instruction: str = "") -> None:
    """Write the Minari dataset ``dataset`` (a ``minari.MinariDataset`` not written by corft) as an episode store
    at ``out`` (new or empty), as the module docstring describes.

    :param image_size: crop the centre square of each frame and resize it to this many pixels.
    :param demos_succeed: every episode is a successful demonstration (for datasets without success infos).
    :param instruction: each episode's instruction where its metadata has none.
    :raises DatasetError: for spaces corft cannot store, cameras that are not square and of one size (without
        ``image_size``), no success infos (without ``demos_succeed``) or success infos with it, or an ``out``
        that holds something.
    """
    source = dataset.spec.dataset_id
    keys = observation_keys(dataset.observation_space, source)
    action_space = dataset.action_space
    if not isinstance(action_space, spaces.Box) or len(action_space.shape) != 1:
        raise DatasetError(f"{source}: the action space is {action_space}; corft trains policies that output one "
                           "vector (a Box of rank 1)")
    cameras = {path: key for path, key in keys.items() if key.startswith("image_")}
    frames = camera_spaces(source, {key: _space_at(dataset.observation_space, path).shape
                                    for path, key in cameras.items()}, image_size)
    observation_space = spaces.Dict({
        key: frames[key] if path in cameras
        else spaces.Box(-np.inf, np.inf, _space_at(dataset.observation_space, path).shape, np.float32)
        for path, key in keys.items()})
    meta = DatasetMeta(env_id=ENV_ID_PREFIX + source, env_kwargs={}, observation_space=observation_space,
                       action_space=spaces.Box(-np.inf, np.inf, action_space.shape, np.float32),
                       keep_failures=not demos_succeed)
    write_episodes(out, meta, _episodes(dataset, source, keys, cameras, image_size, demos_succeed, instruction),
                   source)


def observation_keys(space: spaces.Space, source: str) -> dict[tuple[str, ...], str]:
    """The store key of every ``Box`` in the observation space, by its path of ``Dict`` keys.

    :raises DatasetError: for a part that is not a ``Box`` or a ``Dict``, or two parts with one key.
    """
    if isinstance(space, spaces.Box):
        return {(): "image_observation" if _is_camera(space) else "state"}
    keys: dict[tuple[str, ...], str] = {}
    others: list[str] = []

    def visit(part: spaces.Space, path: tuple[str, ...]) -> None:
        if isinstance(part, spaces.Dict):
            for name, child in part.spaces.items():
                visit(child, (*path, name))
        elif isinstance(part, spaces.Box):
            name = "_".join(path)
            if _is_camera(part):
                keys[path] = name if name.startswith("image_") else "image_" + name
            else:
                keys[path] = "state" if name in STATE_NAMES else name
        else:
            others.append(f"{'.'.join(path)} ({type(part).__name__})")

    visit(space, ())
    if others:
        raise DatasetError(f"{source}: observation parts corft cannot store: {', '.join(others)}; an episode store "
                           "holds arrays (Box spaces) only")
    if len(set(keys.values())) < len(keys):
        raise DatasetError(f"{source}: two observation parts map to one store key ({sorted(keys.values())})")
    return keys


def _is_camera(space: spaces.Box) -> bool:
    return space.dtype == np.uint8 and len(space.shape) == 3 and space.shape[-1] == 3


def _space_at(space: spaces.Space, path: tuple[str, ...]) -> spaces.Box:
    for name in path:
        space = space[name]
    return space


def _value_at(observations: Any, path: tuple[str, ...]) -> np.ndarray:
    for name in path:
        observations = observations[name]
    return np.asarray(observations)


def _episodes(dataset: Any, source: str, keys: dict[tuple[str, ...], str], cameras: dict[tuple[str, ...], str],
              image_size: int | None, demos_succeed: bool, instruction: str) -> Iterator[EpisodeData]:
    """The dataset's episodes, in order, as the module docstring describes."""
    metadata = dataset.storage.get_episode_metadata(dataset.episode_indices)
    for episode, about in zip(dataset.iterate_episodes(), metadata):
        observations = {}
        for path, key in keys.items():
            values = _value_at(episode.observations, path)
            if path in cameras:
                observations[key] = values if image_size is None else resize_frames(values, image_size)
            else:
                observations[key] = values.reshape(len(values), -1).astype(np.float32)
        infos = episode.infos or {}
        recorded = [key for key in SUCCESS_INFO_KEYS if key in infos]
        steps = len(episode.rewards)
        if recorded and demos_succeed:
            raise DatasetError(f"{source} records infos[{recorded[0]!r}]: drop --demos-succeed, the import uses it")
        if recorded:
            is_success = np.asarray(infos[recorded[0]]).reshape(-1).astype(bool)[-steps:]  # after each step
        elif demos_succeed:
            is_success = np.arange(steps) == steps - 1
        else:
            raise DatasetError(f"{source} records no success (infos 'success' or 'is_success'); if every episode "
                               "is a successful demonstration, say so with --demos-succeed (success on each "
                               "episode's last step)")
        seed = about.get("seed")
        yield EpisodeData(observations=observations, actions=np.asarray(episode.actions, np.float32),
                          rewards=np.asarray(episode.rewards, np.float32), is_success=is_success,
                          instruction=str(about.get("instruction", instruction)),
                          seed=None if seed is None else int(seed),
                          terminated=bool(episode.terminations[-1]), truncated=bool(episode.truncations[-1]))
