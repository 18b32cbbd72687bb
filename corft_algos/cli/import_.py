"""``corft import``: write a LeRobotDataset v3.0 or a Minari dataset that ``corft export`` wrote as an episode
store (``import`` is a Python keyword, hence the module's name)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from corft_algos.cli.common import EXIT_ERROR
from corft_envs.episode_store import DatasetError
from corft_envs.interop import FORMATS, import_store


def add_import_parser(subparsers: argparse._SubParsersAction) -> None:
    """Declare ``corft import``."""
    parser = subparsers.add_parser(
        "import",
        help="write a LeRobot or Minari dataset exported by corft as an episode store",
        description=(
            "Write a LeRobotDataset v3.0 or a Minari dataset that `corft export` wrote back as an episode store: "
            "the same episodes, attempts and settings as the store it came from (LeRobot: images within the "
            "video encoding's error). Needs the interop extra: pip install 'corft[interop]'."
        ),
    )
    parser.add_argument("--format", choices=sorted(FORMATS), required=True, help="the format of SRC")
    parser.add_argument("source", type=Path, metavar="SRC", help="the dataset folder to import")
    parser.add_argument("--out", type=Path, metavar="STORE", required=True,
                        help="the episode store to write (must be new or empty)")
    parser.set_defaults(handler=run_import)


def run_import(args: argparse.Namespace) -> int:
    """Run ``corft import``; one error line and exit status 1 for a dataset or folder it cannot use."""
    try:
        import_store(args.format, args.source, args.out)
    except DatasetError as exc:  # a missing interop extra is main's one line
        print(f"corft import: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {args.out}: the episode store of {args.source}")
    return 0
