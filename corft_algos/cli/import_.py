"""``corft import``: write a LeRobotDataset v3.0 (``corft export``'s, or one recorded elsewhere) or a Minari dataset
that ``corft export`` wrote as an episode store (``import`` is a Python keyword, hence the module's name)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from corft_algos.cli.common import EXIT_ERROR, positive_int
from corft_envs.episode_store import DatasetError
from corft_envs.interop import FORMATS, import_store


def add_import_parser(subparsers: argparse._SubParsersAction) -> None:
    """Declare ``corft import``."""
    parser = subparsers.add_parser(
        "import",
        help="write a LeRobot or Minari dataset (exported by corft or recorded elsewhere) as an episode store",
        description=(
            "Write a LeRobotDataset v3.0 or a Minari dataset that `corft export` wrote back as an episode store: "
            "the same episodes, attempts and settings as the store it came from (LeRobot: images within the "
            "video encoding's error). A LeRobotDataset v3.0 or a Minari dataset recorded elsewhere becomes a store "
            "of its cameras (image_<camera>), its observation vectors (state), actions, rewards, success and "
            "instructions, for training (--image-size, --demos-succeed, --instruction). Needs the interop extra: "
            "pip install 'corft[interop]'."
        ),
    )
    parser.add_argument("--format", choices=sorted(FORMATS), required=True, help="the format of SRC")
    parser.add_argument("source", type=Path, metavar="SRC", help="the dataset folder to import")
    parser.add_argument("--out", type=Path, metavar="STORE", required=True,
                        help="the episode store to write (must be new or empty)")
    parser.add_argument("--image-size", type=positive_int, metavar="N",
                        help="a dataset recorded elsewhere: crop each frame's centre square and resize it to N px "
                             "(needed when the cameras' frames are not square and of one size)")
    parser.add_argument("--demos-succeed", action="store_true",
                        help="a dataset recorded elsewhere that records no success (LeRobot: next.reward or "
                             "next.success; Minari: infos success or is_success): every episode is a successful "
                             "demonstration (success on its last step; LeRobot: reward 1 there)")
    parser.add_argument("--instruction", metavar="TEXT",
                        help="minari, recorded elsewhere: each episode's instruction where its metadata has none "
                             "(default: none)")
    parser.set_defaults(handler=run_import)


def run_import(args: argparse.Namespace) -> int:
    """Run ``corft import``; one error line and exit status 1 for a dataset or folder it cannot use."""
    try:
        options = {name: value for name, value in (("image_size", args.image_size), ("demos_succeed", args.demos_succeed),
                                                    ("instruction", args.instruction)) if value}
        import_store(args.format, args.source, args.out, **options)
    except DatasetError as exc:  # a missing interop extra is main's one line
        print(f"corft import: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {args.out}: the episode store of {args.source}")
    return 0
