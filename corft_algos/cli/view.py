"""``corft view``: what an episode store holds, as a table of its episodes or a labelled video
(:mod:`corft_algos.store_view`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from corft_algos.cli.common import EXIT_ERROR, non_negative_int, positive_float
from corft_algos.store_view import summary_lines, write_store_video
from corft_envs.episode_store import DatasetError, EpisodeDataset
from corft_robots.contract import CONTROL_HZ


def add_view_parser(subparsers: argparse._SubParsersAction) -> None:
    """Declare ``corft view``."""
    parser = subparsers.add_parser(
        "view",
        help="look at an episode store: a table of its episodes, or a labelled video of them",
        description=(
            "Print one line per episode of STORE (steps, success, return, seed, instruction), or with --video "
            "write an mp4 of both cameras side by side, upscaled, with the instruction, step, reward and success "
            "drawn on every frame: of episode N, or of every episode one after another, each after a title card."
        ),
    )
    add = parser.add_argument
    add("store", type=Path, metavar="STORE", help="episode store directory, e.g. data/pickplace_30")
    add("--episode", type=non_negative_int, metavar="N", help="only episode N (counting from 0, as the table does)")
    add("--video", type=Path, metavar="OUT.mp4", help="write the labelled video here instead of printing the table")
    add("--fps", type=positive_float, default=float(CONTROL_HZ),
        help=f"frames per second of the video (default: {CONTROL_HZ}, the envs' control rate: real time)")
    parser.set_defaults(handler=run_view)


def video_lines(store: EpisodeDataset, args: argparse.Namespace) -> list[str]:
    """Write ``--video`` and say so.

    :raises ValueError: for an episode the store does not hold, or a video that cannot be written (why).
    """
    try:
        frames = write_store_video(store, args.video, episode=args.episode, fps=args.fps)
    except OSError as exc:
        reason = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else str(exc)
        raise ValueError(f"cannot write {args.video}: {reason}") from exc
    return [f"wrote {args.video} ({frames} frames at {args.fps:g} fps)"]


def run_view(args: argparse.Namespace) -> int:
    """Run ``corft view``; one error line and exit status 1 for a missing or damaged store, an episode it does
    not hold, or a video that cannot be written."""
    try:
        with EpisodeDataset(args.store, validate=False) as store:
            lines = summary_lines(store, args.episode) if args.video is None else video_lines(store, args)
    except (DatasetError, ValueError) as exc:
        print(f"corft view: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    for line in lines:
        print(line)
    return 0
