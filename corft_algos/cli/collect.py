"""``corft collect``: record demonstrations (scripted expert, keyboard teleop or a trained policy) into an
episode store."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import gymnasium as gym

from corft_algos.cli.common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    add_env_arguments,
    env_kwargs_of,
    is_interrupt,
    non_negative_float,
    positive_int,
)
from corft_algos.evaluation import load_model
from corft_algos.rollouts import policy_collection
from corft_algos.runs import UsageError, check_model_file
from corft_envs.collection import CollectConfig, CollectionError, ScriptedPolicy, collect
from corft_envs.episode_store import DatasetError, episode_files
from corft_envs.keyboard import KeyScriptExhausted, ScriptedKeys, TerminalKeys
from corft_envs.layouts import POSITION_MODES
from corft_envs.teleop import KEY_HELP, KeyboardTeleop
from corft_robots.errors import RobotError


def add_collect_parser(subparsers: argparse._SubParsersAction) -> None:
    """Declare ``corft collect``."""
    parser = subparsers.add_parser(
        "collect",
        help="record demonstrations (scripted expert, keyboard teleop or a trained policy) into an episode store",
        description=(
            "Record episodes, one HDF5 file each plus index.json, by the task's scripted expert (sim envs and "
            "the twin), by keyboard teleoperation (--teleop keyboard; real envs and the twin) or by a trained "
            "policy (--policy MODEL). Attempt k uses seed SEED + k. Re-running an interrupted command resumes it; "
            "the result equals an uninterrupted run."
        ),
    )
    add = parser.add_argument
    add("--env", dest="env_id", metavar="ID", required=True, help="Gymnasium id, e.g. corft/PickPlace-v0")
    add("--episodes", type=positive_int, metavar="N", required=True, help="episodes to have in the store")
    add("--out", type=Path, metavar="DIR", required=True, help="store directory (created or resumed)")
    add("--positions", choices=POSITION_MODES, default="train", help="object position set (default: train)")
    add("--seed", type=int, default=0, help="base seed (default: 0)")
    add("--keep-failures", action="store_true", help="keep unsuccessful episodes too")
    add("--chunk-size", type=positive_int, metavar="H", help="let the expert act in chunks of H steps")
    add("--image-size", type=positive_int, metavar="N", help="camera image side in pixels (env default: 128)")
    add("--max-attempts", type=positive_int, metavar="N",
        help="give up after this many attempts in total (default: 10 x --episodes)")
    add("--workers", type=positive_int, default=1, metavar="N",
        help="sim envs: run N attempts at once in N processes (gymnasium AsyncVectorEnv); the same store as one")
    add_env_arguments(parser)
    add("--teleop", choices=("keyboard",),
        help="record a teleoperator instead of the scripted expert (real envs; the twin with --robot-host twin)")
    add("--teleop-script", type=Path, metavar="FILE",
        help="replay key presses from FILE instead of the terminal, one line of keys per control step "
             "(<enter> and <backspace> stand for those keys): rehearsals and tests")
    add("--policy", type=Path, metavar="MODEL",
        help="record a trained model's rollouts instead of the scripted expert (with --keep-failures: offline RL "
             "data with failures); it replans every --chunk-size actions (default: its whole chunk), and "
             "--image-size defaults to its own")
    add("--policy-noise", type=non_negative_float, default=0.0, metavar="SIGMA",
        help="with --policy: move each of its chunks by one Gaussian offset of σ SIGMA, normalised action units "
             "(as `corft eval --candidates` draws them), seeded by the episode's seed: rollouts whose actions vary "
             "around the policy's, for a critic to learn what other actions lead to (default: 0, its own chunks)")
    add("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_collect)


def actor_arguments(args: argparse.Namespace) -> list[str]:
    """The flags that choose who acts (``--policy``, ``--policy-noise``, ``--teleop``, ``--teleop-script``), as
    given: what :func:`collect_command` adds for a resume to record the same actor."""
    words: list[str] = []
    if args.policy is not None:
        words += ["--policy", str(args.policy)]
        if args.policy_noise:
            words += ["--policy-noise", str(args.policy_noise)]
    if args.teleop is not None:
        words += ["--teleop", args.teleop]
    if args.teleop_script is not None:
        words += ["--teleop-script", str(args.teleop_script)]
    return words


def collect_command(config: CollectConfig, actor: Sequence[str] = ()) -> str:
    """The ``corft collect`` command line that runs ``config`` (and resumes it), with the ``actor`` flags
    (:func:`actor_arguments`; none: the scripted expert)."""
    words = ["corft", "collect", "--env", config.env_id, "--episodes", str(config.episodes),
             "--positions", config.positions, "--out", str(config.out), "--seed", str(config.seed), *actor]
    if config.keep_failures:
        words.append("--keep-failures")
    optional = {"--chunk-size": config.chunk_size, "--image-size": config.image_size,
                "--max-attempts": config.max_attempts, "--robot-host": config.robot_host,
                "--instruction": config.env_options.get("instruction"),
                "--workers": config.workers if config.workers > 1 else None}
    for flag, value in optional.items():
        if value is not None:
            words += [flag, str(value)]
    for name, serial in config.env_options.get("cameras", {}).items():
        words += ["--camera", f"{name}={serial}"]
    extra = {key: value for key, value in config.env_options.items() if key not in ("cameras", "instruction")}
    if extra:
        words += ["--env-kwargs", json.dumps(extra)]
    return shlex.join(words)


def collect_config(args: argparse.Namespace) -> CollectConfig:
    """The :class:`CollectConfig` that parsed ``corft collect`` arguments describe."""
    env_options = env_kwargs_of(args)
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
        robot_host=env_options.pop("robot_host", None),
        env_options=env_options,
        workers=args.workers,
    )


@contextlib.contextmanager
def teleop_policy(args: argparse.Namespace) -> Iterator[Callable[[gym.Env], ScriptedPolicy] | None]:
    """With ``--teleop``: a factory of :class:`KeyboardTeleop` on the terminal or ``--teleop-script``; else ``None``.

    The terminal gets its settings back on leaving.

    :raises UsageError: for ``--teleop-script`` without ``--teleop``, a missing script or no terminal.
    """
    if args.teleop is None:
        if args.teleop_script is not None:
            raise UsageError("--teleop-script replays keys for --teleop keyboard: pass both")
        yield None
        return
    try:
        keys = ScriptedKeys.from_file(args.teleop_script) if args.teleop_script else TerminalKeys()
    except (FileNotFoundError, RuntimeError) as exc:
        raise UsageError(str(exc)) from None
    print(KEY_HELP, file=sys.stderr)
    try:
        yield lambda env: KeyboardTeleop(env, keys)
    finally:
        if isinstance(keys, TerminalKeys):
            keys.close()


def with_model_policy(args: argparse.Namespace,
                      config: CollectConfig) -> tuple[CollectConfig, Callable[[gym.Env], ScriptedPolicy] | None]:
    """With ``--policy``: the config with the model's executed actions per chunk and image size as defaults, and a
    :class:`~corft_algos.rollouts.PolicyActor` factory; else ``config`` and ``None``.

    :raises UsageError: for ``--policy`` together with ``--teleop``.
    """
    if args.policy is None:
        if args.policy_noise:
            raise UsageError("--policy-noise moves a trained policy's chunks: pass --policy MODEL too")
        return config, None
    if args.teleop is not None:
        raise UsageError("--policy and --teleop both choose who acts: pass one of them")
    check_model_file(args.policy, "--policy")
    model = load_model(args.policy, device="cpu")
    return policy_collection(model, config, args.policy_noise)


def run_collect(args: argparse.Namespace) -> int:
    """Run ``corft collect``; print a summary, or how to resume after Ctrl-C or a hardware fault."""
    try:
        config, make_actor = with_model_policy(args, collect_config(args))
        with teleop_policy(args) as make_teleop:
            make_policy = make_actor or make_teleop
            options = {} if make_policy is None else {"make_policy": make_policy}
            summary = collect(config, progress=not args.quiet, **options)
    except (KeyboardInterrupt, ctypes.ArgumentError) as exc:
        if not is_interrupt(exc):
            raise
        saved = len(episode_files(config.out)) if config.out.is_dir() else 0
        resume = collect_command(config, actor_arguments(args))
        print(f"\ninterrupted: {saved} episodes saved in {config.out}; resume with:\n  {resume}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except (RobotError, KeyScriptExhausted) as exc:
        saved = len(episode_files(config.out)) if config.out.is_dir() else 0
        print(f"corft collect: error: {exc}\n{saved} episodes saved in {config.out}; the arm was stopped. "
              f"Resume with:\n  {collect_command(config, actor_arguments(args))}", file=sys.stderr)
        return EXIT_ERROR
    except (UsageError, DatasetError, CollectionError, FileNotFoundError, TypeError, ValueError,
            gym.error.Error) as exc:
        print(f"corft collect: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(summary.line())
    return 0
