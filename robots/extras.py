"""corft's optional dependencies: the extras of ``pip install 'corft[...]'`` and the one way to import them.

The core (the sim envs, the episode store, training and evaluation) needs none of them. Each is imported
where it is used, through :func:`import_optional`, so a missing one fails with the extra that brings it.
This module sits in the bottom package (:mod:`corft_robots`), so ``corft_envs``, ``corft_algos`` and the
benchmarks all use it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: Extra name -> what it brings (the README's install section lists the same).
EXTRAS: dict[str, str] = {
    "real": ("the real FR3 and its RealSense cameras, and their rehearsal on the twin (franky-control, pyrealsense2, "
             "pillow, franky-sim with its simulation server's dependencies)"),
    "video": "labelled mp4 videos of episodes (imageio, imageio-ffmpeg, pillow)",
    "bench": "the benchmarks' plots (matplotlib)",
    "tb": "TensorBoard logs of training (tensorboard)",
    "interop": "episode stores to and from LeRobot and Minari datasets (minari, pyarrow, pandas, imageio-ffmpeg)",
}


class MissingExtraError(ModuleNotFoundError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def import_optional(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module``, one of the packages of corft's ``extra``.

    :param module: the module to import, e.g. ``"pyrealsense2"``.
    :param extra: the extra that installs it (a key of :data:`EXTRAS`).
    :param purpose: what needs it, for the message, e.g. ``"writing evaluation videos"``.
    :raises MissingExtraError: if ``module`` (or a package it imports) is not installed.
    :raises KeyError: for an ``extra`` not in :data:`EXTRAS`.
    """
    brings = EXTRAS[extra]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        raise MissingExtraError(
            f"{purpose} needs {module!r}, which cannot be imported ({error}); it comes with corft's {extra!r} "
            f"extra, {brings}: pip install 'corft[{extra}]'", name=error.name) from error
