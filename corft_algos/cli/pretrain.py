"""``corft pretrain``: collect multi-task language-conditioned data and train a base policy on it
(:mod:`corft_algos.pretrain`)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from corft_algos.cli.common import EXIT_ERROR, EXIT_INTERRUPTED, add_threads_argument, apply_threads, positive_int
from corft_algos.cli.train import run_training
from corft_algos.presets import PRESETS
from corft_algos.pretrain import (
    PretrainConfig,
    PretrainTraining,
    collect_pretraining_data,
    write_manifest,
)
from corft_algos.runs import RunFolder
from corft_algos.runs.training import cotraining_flags
from corft_envs.collection import CollectionError
from corft_envs.episode_store import DatasetError
from corft_envs.tasks import PRETRAIN_TASKS


def add_pretrain_parser(subparsers: argparse._SubParsersAction) -> None:
    """Declare ``corft pretrain``."""
    parser = subparsers.add_parser(
        "pretrain",
        help="collect multi-task language-conditioned data and train a base policy on it",
        description=(
            "Build the pretrained base policy that few-shot fine-tuning starts from (the paper's setting): "
            "collect --episodes scripted episodes of each pretraining task (objects anywhere, every colour, "
            "distractors on) into OUT/data/<Task>, train SFT on them into OUT (model.zip), and write "
            "OUT/manifest.json with what the base saw. The fine-tuning targets (PickPlace, Push, Stack) are "
            "refused. Re-running resumes. Fine-tune it with `corft train --init-from OUT/model.zip`."
        ),
    )
    add = parser.add_argument
    add("--out", type=Path, metavar="DIR", required=True, help="the base's folder (created, or resumed)")
    add("--tasks", nargs="+", default=list(PRETRAIN_TASKS), metavar="TASK",
        help=f"pretraining tasks (default: {' '.join(PRETRAIN_TASKS)})")
    add("--episodes", type=positive_int, default=1000, metavar="N", help="episodes per task (default: 1000)")
    add("--image-size", type=positive_int, default=128, metavar="N",
        help="camera image side; fine-tuning data must use the same (default: 128)")
    add("--steps", type=positive_int, default=8000, metavar="N",
        help="SFT gradient steps (default: 8000, what the committed base was trained with)")
    add("--seed", type=int, default=0, help="training seed (default: 0)")
    add("--workers", type=positive_int, default=1, metavar="N", help="collection processes (default: 1)")
    add("--collect-only", action="store_true",
        help="only collect OUT/data/<Task> (the same episodes the committed base saw, with the defaults): the "
             f"base's data, to co-train with when fine-tuning (`corft train {cotraining_flags('OUT')} "
             "--init-from OUT/model.zip`)")
    add("--preset", default="default", metavar="NAME", help=f"training recipe: {', '.join(PRESETS)}")
    add("--config", type=Path, metavar="FILE", help="training configuration file, as for `corft train`")
    add_threads_argument(parser)
    add("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run_pretrain)



def run_pretrain(args: argparse.Namespace) -> int:
    """Run ``corft pretrain``: collect, train, write the manifest; one error line and status 1 for bad input."""
    apply_threads(args)
    began = time.perf_counter()
    try:
        config = PretrainConfig(out=args.out, tasks=tuple(args.tasks), episodes=args.episodes,
                                image_size=args.image_size, workers=args.workers)
        stores = collect_pretraining_data(config, progress=not args.quiet)
    except KeyboardInterrupt:
        print("\ninterrupted; every finished episode is kept; run the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (DatasetError, CollectionError, ValueError) as exc:
        print(f"corft pretrain: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.collect_only:
        print(f"pretraining data: {', '.join(map(str, stores))}")
        return 0
    training = PretrainTraining(steps=args.steps, seed=args.seed, preset=args.preset, config=args.config)
    status = run_training(training.request(config, stores, quiet=args.quiet))
    if status != 0:
        return status
    manifest = write_manifest(config, training, time.perf_counter() - began)
    print(f"base policy: {RunFolder(config.out).model_path}; what it saw: {manifest}")
    return 0
