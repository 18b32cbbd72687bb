"""Episode stores to and from other formats: LeRobotDataset v3.0 (:mod:`~corft_envs.interop.lerobot`) and Minari
(:mod:`~corft_envs.interop.minari`).

The conversions need the ``interop`` extra (``pip install 'corft[interop]'``: minari, pyarrow, pandas); they import
it when called, so the rest of corft runs without it. An export keeps the store's ``index.json`` beside the data,
and an import writes it back: ``import(export(store))`` is the same store (for LeRobot, images within the video
encoding's error, see :mod:`~corft_envs.interop.video`). Datasets recorded elsewhere are imported too
(:mod:`~corft_envs.interop.lerobot_foreign`, :mod:`~corft_envs.interop.minari_foreign`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corft_envs.episode_store import DatasetError
from corft_envs.interop.lerobot import export_lerobot, import_lerobot
from corft_envs.interop.minari import export_minari, import_minari

__all__ = ["FORMATS", "Format", "export_store", "import_store"]


@dataclass(frozen=True)
class Format:
    """A format's export and import, and the keyword options each takes beside its folders."""

    export: Callable[..., None]
    import_: Callable[..., None]
    export_options: tuple[str, ...] = ()
    import_options: tuple[str, ...] = ()


#: The formats by name.
FORMATS = {
    "lerobot": Format(export_lerobot, import_lerobot, ("data_file_mb", "video_file_mb", "chunks_size"),
                      ("image_size", "demos_succeed")),
    "minari": Format(export_minari, import_minari, (), ("image_size", "demos_succeed", "instruction")),
}


def _format(format: str, direction: str, options: dict[str, Any]) -> Format:
    """The format named ``format``, checked to take ``options`` in ``direction`` (``export`` or ``import``)."""
    if format not in FORMATS:
        raise DatasetError(f"unknown format {format!r}; the formats are {', '.join(FORMATS)}")
    allowed = FORMATS[format].export_options if direction == "export" else FORMATS[format].import_options
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DatasetError(f"{', '.join(unknown)} {'does' if len(unknown) == 1 else 'do'} not apply to a {format} "
                           f"{direction}" + (f" (it takes {', '.join(allowed)})" if allowed else ""))
    return FORMATS[format]


def export_store(format: str, store: Path, out: Path, **options: Any) -> None:
    """Write the episode store ``store`` in ``format`` (a key of :data:`FORMATS`) to the new or empty folder ``out``.

    :param options: the format's export options (:attr:`Format.export_options`).
    :raises DatasetError: for an unknown format or option, a store that cannot be read, or an ``out`` that holds
        something.
    :raises ImportError: without the ``interop`` extra.
    """
    _format(format, "export", options).export(Path(store), Path(out), **options)


def import_store(format: str, source: Path, out: Path, **options: Any) -> None:
    """Write the ``format`` dataset ``source`` as an episode store in the new or empty folder ``out``.

    :param options: the format's import options (:attr:`Format.import_options`).
    :raises DatasetError: for an unknown format or option, a missing or unsupported source, or an ``out`` that
        holds something.
    :raises ImportError: without the ``interop`` extra.
    """
    _format(format, "import", options).import_(Path(source), Path(out), **options)
