"""Algorithms by name, extensible through the ``corft.algorithms`` entry-point group.

A third-party package adds an algorithm by declaring, in its ``setup.cfg``::

    [options.entry_points]
    corft.algorithms =
        my_algo = my_package.algo:MyAlgorithm

after which ``get_algorithm("my_algo")`` and ``corft train --algo my_algo`` find it.
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corft_algos.common.base import OfflineAlgorithm

ENTRY_POINT_GROUP = "corft.algorithms"

_REGISTRY: dict[str, type[OfflineAlgorithm]] = {}


def register_algorithm(name: str, algorithm: type[OfflineAlgorithm]) -> type[OfflineAlgorithm]:
    """Register ``algorithm`` under ``name``; registering the same class twice is a no-op.

    :raises ValueError: if ``name`` is taken by another class.
    """
    existing = _REGISTRY.get(name)
    if existing is not None and existing is not algorithm:
        raise ValueError(f"algorithm name {name!r} is already registered to {existing.__qualname__}")
    _REGISTRY[name] = algorithm
    return algorithm


def _load_entry_points() -> None:
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name not in _REGISTRY:
            register_algorithm(entry_point.name, entry_point.load())


def available_algorithms() -> list[str]:
    """Names of every registered algorithm, entry points included, sorted."""
    _load_entry_points()
    return sorted(_REGISTRY)


def get_algorithm(name: str) -> type[OfflineAlgorithm]:
    """The algorithm class registered as ``name``.

    :raises ValueError: naming the registered algorithms if ``name`` is unknown.
    """
    if name not in _REGISTRY:
        _load_entry_points()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown algorithm {name!r}; registered: {', '.join(available_algorithms())}"
        ) from None
