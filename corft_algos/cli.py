"""The ``corft`` command line.

Each subcommand has two functions here: ``add_<name>_parser`` declares its
arguments, ``run_<name>`` runs it and returns the exit status.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path
from typing import Sequence

import gymnasium as gym

from corft_envs.collection import CollectConfig, CollectionError, collect
from corft_envs.episode_store import DatasetError, episode_files

#: Exit status after Ctrl-C, as a shell reports a SIGINT death.
EXIT_INTERRUPTED = 130
EXIT_ERROR = 1


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_collect_parser(subparsers: argparse._SubParsersAction) -> None:
    """Declare ``corft collect``."""
    parser = subparsers.add_parser(
        "collect",
        help="record scripted-expert demonstrations into an episode store",
        description=(
            "Record scripted-expert episodes, one HDF5 file each plus index.json. Attempt k uses seed "
            "SEED + k. Re-running an interrupted command resumes it; the result equals an uninterrupted run."
        ),
    )
    add = parser.add_argument
    add("--env", dest="env_id", metavar="ID", required=True, help="Gymnasium id, e.g. corft/PickPlace-v0")
    add("--episodes", type=_positive_int, metavar="N", required=True, help="episodes to have in the store")
    add("--out", type=Path, metavar="DIR", required=True, help="store directory (created or resumed)")
    add("--positions", choices=("train", "unseen", "all"), default="train", help="object position set (default: train)")
    add("--seed", type=int, default=0, help="base seed (default: 0)")
    add("--keep-failures", action="store_true", help="keep unsuccessful episodes too")
    add("--chunk-size", type=_positive_int, metavar="H", help="let the expert act in chunks of H steps")
    add("--image-size", type=_positive_int, metavar="N", help="camera image side in pixels (env default: 96)")
    add("--max-attempts", type=_positive_int, metavar="N",
        help="give up after this many attempts in total (default: 10 x --episodes)")
    add("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_collect)


def collect_command(config: CollectConfig) -> str:
    """The ``corft collect`` command line that runs ``config`` (and resumes it)."""
    words = ["corft", "collect", "--env", config.env_id, "--episodes", str(config.episodes),
             "--positions", config.positions, "--out", str(config.out), "--seed", str(config.seed)]
    if config.keep_failures:
        words.append("--keep-failures")
    optional = {"--chunk-size": config.chunk_size, "--image-size": config.image_size,
                "--max-attempts": config.max_attempts}
    for flag, value in optional.items():
        if value is not None:
            words += [flag, str(value)]
    return shlex.join(words)


def collect_config(args: argparse.Namespace) -> CollectConfig:
    """The :class:`CollectConfig` that parsed ``corft collect`` arguments describe."""
    return CollectConfig(
        env_id=args.env_id,
        episodes=args.episodes,
        out=args.out,
        positions=args.positions,
        seed=args.seed,
        keep_failures=args.keep_failures,
        chunk_size=args.chunk_size,
        image_size=args.image_size,
        max_attempts=args.max_attempts,
    )


def run_collect(args: argparse.Namespace) -> int:
    """Run ``corft collect``; print a summary, or how to resume after Ctrl-C."""
    config = collect_config(args)
    try:
        summary = collect(config, progress=not args.quiet)
    except KeyboardInterrupt:
        saved = len(episode_files(config.out)) if config.out.is_dir() else 0
        print(f"\ninterrupted: {saved} episodes saved in {config.out}; resume with:\n  {collect_command(config)}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except (DatasetError, CollectionError, gym.error.Error) as exc:
        print(f"corft collect: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(summary.line())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``corft`` parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="corft", description="CO-RFT: chunked offline RL fine-tuning for VLAs.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_collect_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``corft`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
