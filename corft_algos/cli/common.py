"""What the ``corft`` subcommands share: exit statuses, argument types, the env and thread flags, Ctrl-C."""

from __future__ import annotations

import argparse
import ctypes
import json
from typing import Any

import torch

from corft_algos.runs import UsageError

#: Exit status after Ctrl-C, as a shell reports a SIGINT death.
EXIT_INTERRUPTED = 130
EXIT_ERROR = 1


def positive_int(text: str) -> int:
    """An argparse type: an int of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: an int of at least 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    value = float(text)
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type: a finite number of at least 0."""
    value = float(text)
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of at least 0, got {text}")
    return value


def json_object(text: str) -> dict[str, Any]:
    """An argparse type: a JSON object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object like '{{\"d_model\": 64}}', got {text!r}")
    return value


def add_env_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``--env-kwargs``, ``--robot-host``, ``--camera`` and ``--instruction``, read by :func:`env_kwargs_of`."""
    parser.add_argument("--env-kwargs", type=json_object, metavar="JSON", default={},
                        help='further gym.make arguments, e.g. \'{"distractors": false}\'')
    parser.add_argument("--instruction", metavar="TEXT",
                        help="real robot: the instruction of every episode, worded as in the training data")
    parser.add_argument("--robot-host", metavar="HOST",
                        help="real envs (corft/FR3Real-<Task>-v0): the robot's FCI address, or 'twin' to rehearse "
                             "on the simulated twin")
    parser.add_argument("--camera", action="append", default=[], metavar="NAME=SERIAL",
                        help="real envs on hardware: a RealSense serial number per camera, e.g. --camera front=123 "
                             "--camera wrist=456")


def env_kwargs_of(args: argparse.Namespace) -> dict[str, Any]:
    """``gym.make`` arguments from ``--env-kwargs``, ``--robot-host``, ``--camera`` and ``--instruction``.

    :raises UsageError: for a ``--camera`` that is not ``NAME=SERIAL``.
    """
    kwargs: dict[str, Any] = dict(args.env_kwargs)
    if args.robot_host is not None:
        kwargs["robot_host"] = args.robot_host
    cameras = {}
    for text in args.camera:
        name, _, serial = text.partition("=")
        if not name or not serial:
            raise UsageError(f"--camera takes NAME=SERIAL, e.g. --camera front=123456789012; got {text!r}")
        cameras[name] = serial
    if cameras:
        kwargs["cameras"] = cameras
    if args.instruction:
        kwargs["instruction"] = args.instruction
    return kwargs


def is_interrupt(exc: BaseException) -> bool:
    """Ctrl-C, also when it lands inside a ctypes call (MuJoCo's EGL rendering), which wraps it in an
    ``ArgumentError`` ("argument 1: KeyboardInterrupt")."""
    return isinstance(exc, KeyboardInterrupt) or (
        isinstance(exc, ctypes.ArgumentError) and "KeyboardInterrupt" in str(exc))


def add_threads_argument(parser: argparse.ArgumentParser, default: int | None = None) -> None:
    """Declare ``--threads``, applied by :func:`apply_threads` (training) or passed on (an evaluation).

    :param default: a fixed count (evaluations: the count changes the rollouts, so they pair only at one count);
        ``None`` leaves torch's choice, one thread per core.
    """
    shown = "torch's choice, one per core" if default is None else f"{default}, on every machine"
    parser.add_argument("--threads", type=positive_int, default=default, metavar="N",
                        help=f"CPU threads of torch (default: {shown}); 1 is much faster for small models on a "
                             "machine busy with other work, and the count changes an evaluation's rollouts")


def apply_threads(args: argparse.Namespace) -> None:
    """Set torch's intra-op thread count if ``--threads`` was given."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
