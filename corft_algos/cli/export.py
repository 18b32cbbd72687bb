"""``corft export``: write an episode store as a LeRobotDataset v3.0 or a Minari dataset."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from corft_algos.cli.common import EXIT_ERROR, positive_float
from corft_envs.episode_store import DatasetError
from corft_envs.interop import FORMATS, export_store
from corft_envs.interop.lerobot_files import DATA_FILE_MB, VIDEO_FILE_MB


def add_export_parser(subparsers: argparse._SubParsersAction) -> None:
    """Declare ``corft export``."""
    parser = subparsers.add_parser(
        "export",
        help="write an episode store as a LeRobotDataset v3.0 or a Minari dataset",
        description=(
            "Write an episode store in another format, keeping both cameras, the state, the actions, the rewards, "
            "success, the episode boundaries and the instructions (LeRobot's tasks). LeRobot: H.264 videos (lossy), "
            "the rest exact. Minari: everything exact. `corft import` turns the result back into the same store. "
            "Needs the interop extra: pip install 'corft[interop]'."
        ),
    )
    parser.add_argument("--format", choices=sorted(FORMATS), required=True, help="the format to write")
    parser.add_argument("--data", type=Path, metavar="STORE", required=True, help="the episode store to export")
    parser.add_argument("--out", type=Path, metavar="DIR", required=True,
                        help="the folder to write (must be new or empty)")
    parser.add_argument("--data-file-mb", type=positive_float, metavar="MB",
                        help=f"lerobot: start the next data file once one would pass MB, uncompressed (default: "
                             f"{DATA_FILE_MB}, LeRobot's)")
    parser.add_argument("--video-file-mb", type=positive_float, metavar="MB",
                        help=f"lerobot: start the next video file once one would pass MB (default: {VIDEO_FILE_MB}, "
                             "LeRobot's)")
    parser.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    """Run ``corft export``; one error line and exit status 1 for a store or folder it cannot use."""
    try:
        options = {name: getattr(args, name) for name in ("data_file_mb", "video_file_mb")
                   if getattr(args, name) is not None}
        export_store(args.format, args.data, args.out, **options)
    except DatasetError as exc:  # a missing interop extra is main's one line
        print(f"corft export: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {args.out}: {args.data} as a {args.format} dataset")
    return 0
