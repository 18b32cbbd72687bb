"""``corft train``: the flags of a :class:`~corft_algos.runs.TrainRequest`, trained by :func:`corft_algos.runs.train`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from corft_algos.cli.common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    add_threads_argument,
    apply_threads,
    json_object,
    non_negative_int,
    positive_float,
    positive_int,
)
from corft_algos.common.base import PRECISIONS, TrainingDivergedError
from corft_algos.distributed import launcher_rank
from corft_algos.presets import FROM_BASE_PRESET, PRESETS
from corft_algos.registry import available_algorithms
from corft_algos.runs import DEFAULT_STEPS, RunFolder, TrainRequest, UsageError, train
from corft_envs.layouts import POSITION_MODES


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    """Declare ``corft train``."""
    parser = subparsers.add_parser(
        "train",
        help="train an algorithm on an episode store",
        description=(
            "Train a registered algorithm on demonstrations from `corft collect`. OUT receives the logs "
            "(progress.csv, TensorBoard events), checkpoints/rl_model_<N>_steps.zip every K gradient steps and "
            "model.zip at the end. Running the command again resumes from the most advanced of model.zip and "
            "the latest checkpoint, up to the requested number of steps."
        ),
    )
    add = parser.add_argument
    add("--algo", metavar="NAME", help=f"algorithm: {', '.join(available_algorithms())} (or from --config)")
    add("--preset", metavar="NAME",
        help=f"named recipe: {', '.join(PRESETS)} (default: {FROM_BASE_PRESET} with --init-from, else default: "
             "the library's defaults; both the best measured)")
    add("--config", type=Path, metavar="FILE",
        help="a JSON or YAML file with the fields algo, steps, il_steps, rl_steps, algo_kwargs, policy_kwargs; "
             "it overrides the preset, and flags override it; the resolved configuration goes to OUT/config.json")
    add("--data", type=Path, nargs="+", metavar="DIR", required=True,
        help="episode store written by `corft collect`; several with the same spaces are read as one "
             "(e.g. other tasks' demos, to pretrain a base policy)")
    add("--store-mix", type=positive_float, nargs="+", metavar="SHARE",
        help="with several --data stores, each one's share of the training draws, e.g. `--data DEMOS BASE_DATA "
             "--store-mix 1 1`: half of every batch from 30 demos, half from a base policy's data (co-training); "
             "default: in proportion to their sizes")
    add("--out", type=Path, metavar="DIR", required=True, help="run directory (created, or resumed)")
    add("--steps", type=positive_int, metavar="N",
        help=f"gradient steps of a single-stage algorithm (default: {DEFAULT_STEPS})")
    add("--il-steps", type=non_negative_int, metavar="N", help="staged algorithms (corft): imitation steps")
    add("--rl-steps", type=non_negative_int, metavar="N", help="staged algorithms (corft): offline RL steps")
    add("--chunk-size", type=positive_int, metavar="H", help="actions per chunk (default: the algorithm's)")
    add("--batch-size", type=positive_int, metavar="B", help="samples per gradient step")
    add("--learning-rate", type=float, metavar="LR", help="learning rate (stage 1 for corft)")
    add("--gamma", type=float, help="per-step discount")
    add("--policy-kwargs", type=json_object, metavar="JSON", help='VLAPolicy arguments, e.g. \'{"d_model": 64}\'')
    add("--num-workers", type=non_negative_int, metavar="N",
        help="DataLoader worker processes sampling chunks (default 0: in this process); frames of a store "
             "larger than the memory budget are read lazily from its files either way")
    add("--algo-kwargs", type=json_object, metavar="JSON", default={},
        help='further algorithm arguments, e.g. \'{"calql_alpha": 0.0, "boundary_only": true}\' for corft')
    add("--init-from", type=Path, metavar="MODEL",
        help="start a new run from another model's weights where names and shapes match (e.g. a policy "
             "pretrained on other tasks); ignored when resuming")
    add("--seed", type=int, default=0, help="random seed (default: 0)")
    add("--device", default="auto",
        help="cpu, cuda or auto (default: auto); under torchrun, cuda is each process's cuda:LOCAL_RANK")
    add("--precision", choices=PRECISIONS,
        help="auto (the default: bf16 autocast on a GPU for a policy of 50 M parameters or more, else fp32), "
             "bf16 or fp32")
    add_threads_argument(parser)
    add("--checkpoint-every", type=positive_int, default=500, metavar="K", help="gradient steps between checkpoints")
    add("--keep-checkpoints", type=positive_int, default=5, metavar="N",
        help="keep only the newest N checkpoints (default: 5)")
    add("--log-interval", type=positive_int, default=100, metavar="K", help="gradient steps between log lines")
    add("--eval-env", metavar="ID", help="evaluate in this sim env during training (best_model.zip is kept)")
    add("--eval-every", type=positive_int, default=500, metavar="K", help="gradient steps between evaluations")
    add("--eval-episodes", type=positive_int, default=10, metavar="N", help="episodes per evaluation")
    add("--eval-positions", choices=POSITION_MODES, default="train", help="object positions of the evaluations")
    add("--tensorboard", action="store_true", help="also write TensorBoard events into OUT")
    add("--quiet", action="store_true", help="no progress bar and no log tables on stdout")
    parser.set_defaults(handler=run_train)



def train_request(args: argparse.Namespace) -> TrainRequest:
    """The :class:`TrainRequest` that parsed ``corft train`` arguments describe."""
    return TrainRequest(
        data=tuple(args.data), out=args.out, algo=args.algo, preset=args.preset, config=args.config,
        steps=args.steps, il_steps=args.il_steps, rl_steps=args.rl_steps, chunk_size=args.chunk_size,
        batch_size=args.batch_size, learning_rate=args.learning_rate, gamma=args.gamma,
        num_workers=args.num_workers, store_mix=args.store_mix, algo_kwargs=args.algo_kwargs,
        policy_kwargs=args.policy_kwargs, init_from=args.init_from, seed=args.seed, device=args.device,
        precision=args.precision, checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
        log_interval=args.log_interval, eval_env=args.eval_env, eval_every=args.eval_every,
        eval_episodes=args.eval_episodes, eval_positions=args.eval_positions, tensorboard=args.tensorboard,
        quiet=args.quiet)


def run_train(args: argparse.Namespace) -> int:
    """Run ``corft train`` (also as one of torchrun's processes)."""
    apply_threads(args)
    return run_training(train_request(args))


def run_training(request: TrainRequest) -> int:
    """Train ``request``; one error line and exit status 1 for bad input or divergence, 130 after Ctrl-C (rank 0
    alone prints them)."""
    try:
        train(request)
    except KeyboardInterrupt:
        if launcher_rank().is_main:
            print(f"\ninterrupted; {RunFolder(request.out).resume_note(request.checkpoint_every)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except TrainingDivergedError as exc:
        if launcher_rank().is_main:
            print(f"corft train: error: {exc} ({RunFolder(request.out).resume_note(request.checkpoint_every)})",
                  file=sys.stderr)
        return EXIT_ERROR
    except UsageError as exc:
        if launcher_rank().is_main:
            print(f"corft train: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return 0
