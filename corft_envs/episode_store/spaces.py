"""Gymnasium spaces as plain JSON data, and how two spaces differ.

The episode store's index and episode files, and corft's model files, hold their observation and action
spaces this way; the differences are what a store, a model or an env that does not fit reports.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

import gymnasium as gym
import numpy as np
from gymnasium import spaces


def space_to_json(space: gym.Space) -> dict[str, Any]:
    """Serialize a ``Box``, ``Text`` or (nested) ``Dict`` space to plain JSON data (the episode store's
    index and corft's model files hold spaces this way).

    Infinite bounds are written as the strings ``"inf"`` / ``"-inf"`` so the
    result is standard JSON; bounds that are the same everywhere are written
    once as a scalar. A ``Text`` space keeps its lengths and its characters.
    """
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_json(s) for k, s in space.spaces.items()}}
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": np.dtype(space.dtype).name,
            "low": _bound_to_json(space.low),
            "high": _bound_to_json(space.high),
        }
    if isinstance(space, spaces.Text):
        return {"type": "Text", "min_length": space.min_length, "max_length": space.max_length,
                "charset": space.characters}
    raise ValueError(
        f"cannot store a {type(space).__name__} space; Box and Text spaces and Dict spaces of them can be stored"
    )


def space_from_json(data: Mapping[str, Any]) -> gym.Space:
    """Inverse of :func:`space_to_json`.

    :raises ValueError: for an unknown space type.
    """
    kind = data.get("type")
    if kind == "Dict":
        return spaces.Dict({k: space_from_json(s) for k, s in data["spaces"].items()})
    if kind == "Box":
        shape = tuple(int(n) for n in data["shape"])
        dtype = np.dtype(data["dtype"])
        return spaces.Box(
            low=_bound_from_json(data["low"], shape, dtype),
            high=_bound_from_json(data["high"], shape, dtype),
            shape=shape,
            dtype=dtype,
        )
    if kind == "Text":
        return spaces.Text(min_length=int(data["min_length"]), max_length=int(data["max_length"]),
                           charset=str(data["charset"]))
    raise ValueError(f"unknown space type {kind!r} (expected 'Box', 'Text' or 'Dict')")


def _number_to_json(value: np.generic) -> int | float | str:
    if value.dtype.kind in "biu":
        return int(value)
    number = float(value)
    if np.isinf(number):
        return "inf" if number > 0 else "-inf"
    return number


def _bound_to_json(bound: np.ndarray) -> Any:
    flat = bound.ravel()
    if flat.size and np.all(flat == flat[0]):
        return _number_to_json(flat[0])
    return [_number_to_json(v) for v in flat]


def _bound_from_json(data: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    values = [float(v) if isinstance(v, str) else v for v in (data if isinstance(data, list) else [data])]
    array = np.asarray(values, dtype=np.float64)
    array = np.full(shape, array[0]) if array.size == 1 else array.reshape(shape)
    return array.astype(dtype)


def space_differences(expected: gym.Space, actual: gym.Space, name: str) -> list[str]:
    """Human-readable differences between two spaces, empty when they match.

    :param expected: the space recorded with the data.
    :param actual: the space it is compared with (an env's, a new run's).
    :param name: how to call the space in messages, e.g. ``"observation_space"``.
    """
    if isinstance(expected, spaces.Dict) and isinstance(actual, spaces.Dict):
        problems = [f"{name}: key {k!r} missing" for k in expected.spaces if k not in actual.spaces]
        problems += [f"{name}: unexpected key {k!r}" for k in actual.spaces if k not in expected.spaces]
        for key in (k for k in expected.spaces if k in actual.spaces):
            problems += space_differences(expected[key], actual[key], f"{name}[{key!r}]")
        return problems
    if isinstance(expected, spaces.Box) and isinstance(actual, spaces.Box):
        problems = []
        if expected.shape != actual.shape:
            problems.append(f"{name}: shape {expected.shape} recorded, {actual.shape} now")
        if expected.dtype != actual.dtype:
            problems.append(f"{name}: dtype {expected.dtype} recorded, {actual.dtype} now")
        if not problems:
            for bound in ("low", "high"):
                if not np.array_equal(getattr(expected, bound), getattr(actual, bound)):
                    problems.append(f"{name}: {bound} bounds differ")
        return problems
    return [f"{name}: {type(expected).__name__} recorded, {type(actual).__name__} now"]


class HasSpaces(Protocol):
    """Anything with step-level spaces: an env, a store's metadata, a dataset."""

    @property
    def observation_space(self) -> gym.Space:
        """The observation space."""

    @property
    def action_space(self) -> gym.Space:
        """The action space."""


def observation_action_differences(expected: HasSpaces, actual: HasSpaces) -> list[str]:
    """:func:`space_differences` of the observation spaces, then of the action spaces, empty when both match.

    :param expected: what holds the recorded spaces (a store's metadata, a dataset).
    :param actual: what holds the spaces compared with them (an env, a new run's metadata, another store).
    """
    return (space_differences(expected.observation_space, actual.observation_space, "observation_space")
            + space_differences(expected.action_space, actual.action_space, "action_space"))
