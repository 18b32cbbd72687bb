"""``corft eval``: the flags of an :class:`~corft_algos.runs.EvalRequest`, run by :func:`corft_algos.runs.evaluate`."""

from __future__ import annotations

import argparse
import ctypes
import sys
from pathlib import Path

import gymnasium as gym

from corft_algos.cli.common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    add_env_arguments,
    add_threads_argument,
    env_kwargs_of,
    is_interrupt,
    positive_int,
)
from corft_algos.evaluation import DEFAULT_EVAL_SEED
from corft_algos.runs import DEFAULT_EVAL_THREADS, EvalRequest, UsageError, evaluate
from corft_algos.selection import DEFAULT_CANDIDATE_NOISE, SELECTIONS
from corft_envs.episode_store import DatasetError
from corft_envs.layouts import POSITION_MODES
from corft_robots.errors import RobotError


def add_eval_parser(subparsers: argparse._SubParsersAction) -> None:
    """Declare ``corft eval``."""
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a trained model in simulation, on the twin or on the real arm",
        description=(
            "Run a saved model for N episodes (episode k reset with seed SEED + k) and report the success rate "
            "with its Wilson 95% interval and the cycle time (mean steps of successful episodes, 10 Hz)."
        ),
    )
    add = parser.add_argument
    add("--model", type=Path, metavar="PATH", required=True,
        help="model zip, e.g. runs/pp_corft/model.zip (or a save_pretrained folder)")
    add("--env", dest="env_id", metavar="ID", help="Gymnasium id (default: the env the training data came from)")
    add("--positions", choices=POSITION_MODES, default="train", help="object position set (default: train)")
    add("--episodes", type=positive_int, default=50, metavar="N", help="episodes (default: 50)")
    add("--seed", type=int, default=DEFAULT_EVAL_SEED,
        help=f"seed of the first episode (default: {DEFAULT_EVAL_SEED}, away from the demonstrations' seeds)")
    add("--execute", type=positive_int, metavar="K",
        help="run only the first K actions of each chunk (default: the model's own, saved at training)")
    add("--candidates", type=positive_int, default=1, metavar="N",
        help="CO-RFT models: draw N candidate chunks around the action expert's and run the one the critic "
             "ranks best (best-of-N; default: 1, the expert's chunk)")
    add("--selection", choices=SELECTIONS, default="critic",
        help="with --candidates: critic (best-of-N) or random (the same candidates, chosen at random: the "
             "baseline that isolates the critic's ranking)")
    add("--candidate-noise", type=float, default=DEFAULT_CANDIDATE_NOISE, metavar="SIGMA",
        help=f"with --candidates: σ of the candidates' offsets, normalised action units "
             f"(default: {DEFAULT_CANDIDATE_NOISE})")
    add("--candidate-models", type=Path, nargs="+", metavar="PATH",
        help="CO-RFT models: the candidates are the model's chunk and these models' chunks (an ensemble, "
             "e.g. SFT trained with other seeds), chosen by --selection; replaces --candidates")
    add("--video", type=Path, metavar="DIR", help="write one mp4 per episode here: both cameras, upscaled, labelled with the instruction, step, "
             "reward and success")
    add("--json", type=Path, metavar="PATH", help="write the result as JSON here")
    add("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    add("--workers", type=positive_int, default=1, metavar="N",
        help="sim envs: run episodes in N processes (gymnasium AsyncVectorEnv); the same result as one")
    add_env_arguments(parser)
    add_threads_argument(parser, default=DEFAULT_EVAL_THREADS)
    add("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_eval)



def eval_request(args: argparse.Namespace) -> EvalRequest:
    """The :class:`EvalRequest` that parsed ``corft eval`` arguments describe.

    :raises UsageError: for a ``--camera`` that is not ``NAME=SERIAL``.
    """
    return EvalRequest(
        model=args.model, env_id=args.env_id, positions=args.positions, episodes=args.episodes, seed=args.seed,
        execute=args.execute, candidates=args.candidates, selection=args.selection,
        candidate_noise=args.candidate_noise, candidate_models=tuple(args.candidate_models or ()),
        video=args.video, json=args.json, device=args.device, workers=args.workers, threads=args.threads,
        env_kwargs=env_kwargs_of(args), quiet=args.quiet)


def run_eval(args: argparse.Namespace) -> int:
    """Run ``corft eval``; one error line and exit status 1 for a missing or unfitting model."""
    try:
        evaluation = evaluate(eval_request(args))
    except (KeyboardInterrupt, ctypes.ArgumentError) as exc:
        if not is_interrupt(exc):
            raise
        print("\ninterrupted; the arm was stopped; nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except RobotError as exc:
        print(f"corft eval: error: {exc}; the arm was stopped; nothing written", file=sys.stderr)
        return EXIT_ERROR
    except (UsageError, RuntimeError, FileNotFoundError, ValueError, DatasetError, gym.error.Error) as exc:
        print(f"corft eval: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    for line in evaluation.report_lines():
        print(line)
    if args.json is not None:
        print(f"wrote {args.json}")
    return 0
