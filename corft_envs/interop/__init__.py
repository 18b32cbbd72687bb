"""Episode stores to and from other formats: LeRobotDataset v3.0 (:mod:`~corft_envs.interop.lerobot`) and Minari
(:mod:`~corft_envs.interop.minari`).

The conversions need the ``interop`` extra (``pip install 'corft[interop]'``: minari, pyarrow, pandas); they import
it when called, so the rest of corft runs without it. An export keeps the store's ``index.json`` beside the data,
and an import writes it back: ``import(export(store))`` is the same store (for LeRobot, images within the video
encoding's error, see :mod:`~corft_envs.interop.video`).
"""

from __future__ import annotations

from pathlib import Path

from corft_envs.episode_store import DatasetError
from corft_envs.interop.lerobot import export_lerobot, import_lerobot
from corft_envs.interop.minari import export_minari, import_minari

__all__ = ["FORMATS", "export_store", "import_store"]

#: The formats, each with its export and import.
FORMATS = {"lerobot": (export_lerobot, import_lerobot), "minari": (export_minari, import_minari)}


def _converters(format: str) -> tuple:
    if format not in FORMATS:
        raise DatasetError(f"unknown format {format!r}; the formats are {', '.join(FORMATS)}")
    return FORMATS[format]


def export_store(format: str, store: Path, out: Path) -> None:
    """Write the episode store ``store`` in ``format`` (a key of :data:`FORMATS`) to the new or empty folder ``out``.

    :raises DatasetError: for an unknown format, a store that cannot be read, or an ``out`` that holds something.
    :raises ImportError: without the ``interop`` extra.
    """
    _converters(format)[0](Path(store), Path(out))


def import_store(format: str, source: Path, out: Path) -> None:
    """Write the ``format`` dataset ``source`` (exported by corft) as an episode store in the new or empty folder
    ``out``.

    :raises DatasetError: for an unknown format, a missing or unsupported source, or an ``out`` that holds something.
    :raises ImportError: without the ``interop`` extra.
    """
    _converters(format)[1](Path(source), Path(out))
