"""The ``corft`` command line: ``collect`` demonstrations, ``train`` an algorithm, ``eval`` a model (and
``pretrain`` a base, ``bench`` a study, ``convert-model`` an old-format model file).

Each subcommand has two functions here: ``add_<name>_parser`` declares its
arguments, ``run_<name>`` runs it and returns the exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import inspect
import json
import logging
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from stable_baselines3.common.logger import Logger, make_output_format

from corft_algos.argument_types import constructor_parameters, constructor_type_hints, type_problems
from corft_algos.callbacks import (
    GradientStepCheckpoint,
    LastMetrics,
    SimEvalCallback,
    list_checkpoints,
    save_atomically,
)
from corft_algos.common.base import PRECISIONS, OfflineAlgorithm, TrainingDivergedError
from corft_algos.distributed import Rank, barrier, distributed_session, resolve_device, shard_of
from corft_algos.evaluation import (
    DEFAULT_EVAL_SEED,
    EvalResult,
    load_model,
    make_eval_env,
    model_image_size,
    rollout_execute,
    run_episodes,
    trained_env_id,
    trained_scene,
)
from corft_algos.legacy_format import TRUST_WARNING, convert_old_model
from corft_algos.model_format import ModelFileError, OldFormatError, read_model, read_model_config
from corft_algos.pretrain import PRETRAIN_TASKS, PretrainConfig, collect_pretraining_data, write_manifest
from corft_algos.policies import VLAPolicy
from corft_algos.presets import CONFIG_NAME, FROM_BASE_PRESET, PRESETS, TrainConfig, get_preset, load_config_file
from corft_algos.registry import available_algorithms, get_algorithm
from corft_algos.rollouts import PolicyActor
from corft_algos.selection import DEFAULT_CANDIDATE_NOISE, SELECTIONS, ChunkSelector
from corft_algos.vector_eval import evaluate_vectorized
from corft_envs.collection import CollectConfig, CollectionError, ScriptedPolicy, collect
from corft_envs.episode_store import (DatasetError, EpisodeDataset, episode_files, open_episodes,
                                      store_signatures)
from corft_envs.folder_lock import FolderBusyError, FolderLock
from corft_envs.keyboard import KeyScriptExhausted, ScriptedKeys, TerminalKeys
from corft_envs.teleop import KEY_HELP, KeyboardTeleop
from robots.errors import RobotError

#: Exit status after Ctrl-C, as a shell reports a SIGINT death.
EXIT_INTERRUPTED = 130
EXIT_ERROR = 1
POSITIONS = ("train", "unseen", "all")
#: Gradient steps of a single-stage algorithm without ``--steps``: CO-RFT's default
#: il_steps + rl_steps, so the baselines get the same budget.
DEFAULT_STEPS = 6000
MODEL_NAME = "model.zip"
CHECKPOINT_DIR = "checkpoints"


class UsageError(Exception):
    """A command line that cannot run as given; the message says what to change."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object like '{{\"d_model\": 64}}', got {text!r}")
    return value


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
    add("--episodes", type=_positive_int, metavar="N", required=True, help="episodes to have in the store")
    add("--out", type=Path, metavar="DIR", required=True, help="store directory (created or resumed)")
    add("--positions", choices=POSITIONS, default="train", help="object position set (default: train)")
    add("--seed", type=int, default=0, help="base seed (default: 0)")
    add("--keep-failures", action="store_true", help="keep unsuccessful episodes too")
    add("--chunk-size", type=_positive_int, metavar="H", help="let the expert act in chunks of H steps")
    add("--image-size", type=_positive_int, metavar="N", help="camera image side in pixels (env default: 128)")
    add("--max-attempts", type=_positive_int, metavar="N",
        help="give up after this many attempts in total (default: 10 x --episodes)")
    add("--workers", type=_positive_int, default=1, metavar="N",
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
    add("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_collect)


def add_env_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``--env-kwargs``, ``--robot-host``, ``--camera`` and ``--instruction``, read by :func:`env_kwargs_of`."""
    parser.add_argument("--env-kwargs", type=_json_object, metavar="JSON", default={},
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


def collect_command(config: CollectConfig) -> str:
    """The ``corft collect`` command line that runs ``config`` (and resumes it)."""
    words = ["corft", "collect", "--env", config.env_id, "--episodes", str(config.episodes),
             "--positions", config.positions, "--out", str(config.out), "--seed", str(config.seed)]
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
        return config, None
    if args.teleop is not None:
        raise UsageError("--policy and --teleop both choose who acts: pass one of them")
    check_model_file(args.policy, "--policy")
    model = load_model(args.policy, device="cpu")
    config = dataclasses.replace(config, chunk_size=config.chunk_size or rollout_execute(model) or model.chunk_size,
                                 image_size=config.image_size or model_image_size(model))
    return config, lambda env: PolicyActor(model, env)


def is_interrupt(exc: BaseException) -> bool:
    """Ctrl-C, also when it lands inside a ctypes call (MuJoCo's EGL rendering), which wraps it in an
    ``ArgumentError`` ("argument 1: KeyboardInterrupt")."""
    return isinstance(exc, KeyboardInterrupt) or (
        isinstance(exc, ctypes.ArgumentError) and "KeyboardInterrupt" in str(exc))


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
        print(f"\ninterrupted: {saved} episodes saved in {config.out}; resume with:\n  {collect_command(config)}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except (RobotError, KeyScriptExhausted) as exc:
        saved = len(episode_files(config.out)) if config.out.is_dir() else 0
        print(f"corft collect: error: {exc}\n{saved} episodes saved in {config.out}; the arm was stopped. "
              f"Resume with:\n  {collect_command(config)}", file=sys.stderr)
        return EXIT_ERROR
    except (UsageError, DatasetError, CollectionError, FileNotFoundError, TypeError, ValueError,
            gym.error.Error) as exc:
        print(f"corft collect: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(summary.line())
    return 0

# ----------------------------------------------------------------------------
# corft train
# ----------------------------------------------------------------------------


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """Declare ``--threads``, applied by :func:`apply_threads`."""
    parser.add_argument("--threads", type=_positive_int, metavar="N",
                        help="CPU threads of torch (default: torch's choice, one per core); 1 is much faster "
                             "for small models on a machine busy with other work")


def apply_threads(args: argparse.Namespace) -> None:
    """Set torch's intra-op thread count if ``--threads`` was given."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)


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
    add("--store-mix", type=_positive_float, nargs="+", metavar="SHARE",
        help="with several --data stores, each one's share of the training draws, e.g. `--data DEMOS BASE_DATA "
             "--store-mix 1 1`: half of every batch from 30 demos, half from a base policy's data (co-training); "
             "default: in proportion to their sizes")
    add("--out", type=Path, metavar="DIR", required=True, help="run directory (created, or resumed)")
    add("--steps", type=_positive_int, metavar="N",
        help=f"gradient steps of a single-stage algorithm (default: {DEFAULT_STEPS})")
    add("--il-steps", type=_non_negative_int, metavar="N", help="staged algorithms (corft): imitation steps")
    add("--rl-steps", type=_non_negative_int, metavar="N", help="staged algorithms (corft): offline RL steps")
    add("--chunk-size", type=_positive_int, metavar="H", help="actions per chunk (default: the algorithm's)")
    add("--batch-size", type=_positive_int, metavar="B", help="samples per gradient step")
    add("--learning-rate", type=float, metavar="LR", help="learning rate (stage 1 for corft)")
    add("--gamma", type=float, help="per-step discount")
    add("--policy-kwargs", type=_json_object, metavar="JSON", help='VLAPolicy arguments, e.g. \'{"d_model": 64}\'')
    add("--num-workers", type=_non_negative_int, metavar="N",
        help="DataLoader worker processes sampling chunks (default 0: in this process); frames of a store "
             "larger than the memory budget are read lazily from its files either way")
    add("--algo-kwargs", type=_json_object, metavar="JSON", default={},
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
    add("--checkpoint-every", type=_positive_int, default=500, metavar="K", help="gradient steps between checkpoints")
    add("--keep-checkpoints", type=_positive_int, default=5, metavar="N",
        help="keep only the newest N checkpoints (default: 5)")
    add("--log-interval", type=_positive_int, default=100, metavar="K", help="gradient steps between log lines")
    add("--eval-env", metavar="ID", help="evaluate in this sim env during training (best_model.zip is kept)")
    add("--eval-every", type=_positive_int, default=500, metavar="K", help="gradient steps between evaluations")
    add("--eval-episodes", type=_positive_int, default=10, metavar="N", help="episodes per evaluation")
    add("--eval-positions", choices=POSITIONS, default="train", help="object positions of the evaluations")
    add("--tensorboard", action="store_true", help="also write TensorBoard events into OUT")
    add("--quiet", action="store_true", help="no progress bar and no log tables on stdout")
    parser.set_defaults(handler=run_train)


#: ``corft train`` flags that set algorithm constructor arguments of the same name.
ALGORITHM_FLAGS = ("chunk_size", "batch_size", "learning_rate", "gamma", "num_workers", "store_mix")


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """The run's configuration: the preset, overridden by ``--config``, overridden by the flags; written back
    into ``args`` (constructor arguments that have flags of their own move to those).

    :raises UsageError: for an unknown preset, an unreadable config file or no algorithm at all.
    """
    if args.preset is None:
        args.preset = FROM_BASE_PRESET if args.init_from is not None else "default"
    try:
        preset = get_preset(args.preset)
        from_file = load_config_file(args.config) if args.config is not None else TrainConfig()
        algo = args.algo or from_file.algo or preset.algo
        if algo is not None:
            preset = preset.for_algorithm(is_staged(get_algorithm(algo)))
        config = preset.merged(from_file)
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    flags = {name: getattr(args, name) for name in ALGORITHM_FLAGS if getattr(args, name) is not None}
    twice = sorted(set(flags) & set(args.algo_kwargs))
    if twice:
        raise UsageError(f"--algo-kwargs sets {', '.join(twice)}, which have flags of their own: use those")
    config = config.merged(TrainConfig(algo=args.algo, steps=args.steps, il_steps=args.il_steps,
                                       rl_steps=args.rl_steps, algo_kwargs={**args.algo_kwargs, **flags},
                                       policy_kwargs=args.policy_kwargs or {}))
    if config.algo is None:
        raise UsageError("no algorithm: pass --algo NAME (or an algo field in --config)")
    args.algo, args.steps, args.il_steps, args.rl_steps = config.algo, config.steps, config.il_steps, config.rl_steps
    args.algo_kwargs = {key: value for key, value in config.algo_kwargs.items() if key not in ALGORITHM_FLAGS}
    for name in ALGORITHM_FLAGS:
        setattr(args, name, config.algo_kwargs.get(name))
    args.policy_kwargs = config.policy_kwargs or None
    return config


def is_staged(algorithm: type[OfflineAlgorithm]) -> bool:
    """Whether ``algorithm`` trains in stages set by ``il_steps`` and ``rl_steps`` (CO-RFT and its variants)."""
    return {"il_steps", "rl_steps"} <= constructor_parameters(algorithm)


def algorithm_kwargs(args: argparse.Namespace, algorithm: type[OfflineAlgorithm]) -> dict[str, Any]:
    """Constructor arguments set on the command line (the others keep the algorithm's defaults).

    ``rl_steps`` is left out: it sets the training length, which a resumed run may extend.

    :raises UsageError: if the step flags do not fit the algorithm.
    """
    staged = is_staged(algorithm)
    if staged and args.steps is not None:
        raise UsageError(f"--algo {args.algo} trains --il-steps + --rl-steps gradient steps; drop --steps")
    if not staged and (args.il_steps is not None or args.rl_steps is not None):
        raise UsageError(f"--il-steps and --rl-steps are for staged algorithms such as corft; "
                         f"give --algo {args.algo} its total with --steps")
    given = {"chunk_size": args.chunk_size, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
             "gamma": args.gamma, "policy_kwargs": args.policy_kwargs, "il_steps": args.il_steps,
             "num_workers": args.num_workers, "store_mix": args.store_mix}
    given = {key: value for key, value in given.items() if value is not None}
    if args.store_mix is not None and len(args.store_mix) != len(args.data):
        raise UsageError(f"--store-mix gives {len(args.store_mix)} shares for {len(args.data)} --data stores; "
                         "give one share per store, in the same order")
    twice = sorted({*given, "seed", "rl_steps"} & set(args.algo_kwargs))
    if twice:
        raise UsageError(f"--algo-kwargs sets {', '.join(twice)}, which have flags of their own: use those")
    unknown = sorted(set(args.algo_kwargs) - constructor_parameters(algorithm))
    if unknown:
        raise UsageError(f"--algo {args.algo} takes no argument {', '.join(unknown)}")
    problems = type_problems(args.algo_kwargs, constructor_type_hints(algorithm))
    if problems:
        raise UsageError("--algo-kwargs: " + "; ".join(problems))
    check_policy_kwargs(args.policy_kwargs or {})
    return {**args.algo_kwargs, **given, "seed": args.seed}


#: VLAPolicy arguments the algorithm sets from the data, not the user.
POLICY_ARGUMENTS_FROM_DATA = ("observation_space", "action_space", "lr_schedule", "normalization", "instructions",
                              "with_critic")


def check_policy_kwargs(policy_kwargs: dict[str, Any]) -> None:
    """:raises UsageError: for a ``--policy-kwargs`` name VLAPolicy does not take, or a value of the wrong type."""
    names = set(inspect.signature(VLAPolicy.__init__).parameters) - {"self", *POLICY_ARGUMENTS_FROM_DATA}
    unknown = sorted(set(policy_kwargs) - names)
    if unknown:
        raise UsageError(f"--policy-kwargs: VLAPolicy takes no argument {', '.join(unknown)}; "
                         f"it takes {', '.join(sorted(names))}")
    problems = type_problems(policy_kwargs, constructor_type_hints(VLAPolicy))
    if problems:
        raise UsageError("--policy-kwargs: " + "; ".join(problems))


def total_steps(model: OfflineAlgorithm, args: argparse.Namespace) -> int:
    """Gradient steps the run must reach: ``il_steps + rl_steps`` for a staged algorithm, else ``--steps``."""
    if is_staged(type(model)):
        return int(model.il_steps + model.rl_steps)
    return args.steps or DEFAULT_STEPS


def saved_state_problem(path: Path) -> str | None:
    """Why the saved model or checkpoint ``path`` cannot be resumed from (a damaged zip, a member whose
    bytes fail their CRC, a missing member, JSON or tensors that do not parse), or ``None`` if it is intact.

    :raises OldFormatError: for a file in the old pickle-based format: not skipped, since a run that went on
        without it would overwrite the run's state.
    """
    try:
        read_model(path)
    except OldFormatError:
        raise
    except ModelFileError as exc:
        return exc.reason
    except OSError as exc:
        return f"it cannot be read ({exc})"
    return None


def check_model_file(path: Path, flag: str) -> None:
    """Refuse a damaged model zip before loading it (see :func:`saved_state_problem`); a missing one is left
    to the loader's own message.

    :raises UsageError: naming ``flag``, ``path`` and what is damaged.
    """
    problem = saved_state_problem(path) if path.is_file() else None
    if problem is not None:
        raise UsageError(f"{flag} {path} cannot be loaded: {problem}; use an intact copy, or another checkpoint "
                         "of its run (OUT/checkpoints/)")


def resume_point(out: Path, report: Callable[[str], None] | None = None) -> tuple[int, Path] | None:
    """The most advanced intact saved state in a run directory, ``(steps, path)``; model.zip wins a tie.

    A damaged model.zip or checkpoint (a write cut short by a full disk, a copy gone wrong) is skipped
    for the next newest intact one, and ``report`` is told which and why.
    """
    candidates = [(steps, 0, path) for steps, path in list_checkpoints(out / CHECKPOINT_DIR)]
    final = out / MODEL_NAME
    if final.is_file():
        problem = saved_state_problem(final)
        if problem is None:
            candidates.append((int(read_model_config(final)["progress"]["num_timesteps"]), 1, final))
        elif report is not None:
            report(f"skipping {final}: {problem}")
    for steps, _, path in sorted(candidates, reverse=True):
        problem = saved_state_problem(path) if path != final else None
        if problem is None:
            return steps, path
        if report is not None:
            report(f"skipping {path}: {problem}")
    return None


def load_for_resume(path: Path, args: argparse.Namespace, algorithm: type[OfflineAlgorithm],
                    dataset: EpisodeDataset, kwargs: dict[str, Any]) -> OfflineAlgorithm:
    """Load a saved run state to continue it, after checking that the command line fits it.

    :raises UsageError: if the algorithm, the chunk size or another given argument differs from the saved one.
    """
    config = read_model_config(path)
    saved = config["algorithm_name"]
    if saved != algorithm.algorithm_name:
        raise UsageError(f"{path} holds a {saved!r} model and this run would resume it; "
                         f"rerun with --algo {saved} or choose a new --out")
    chunk_size = config["arguments"].get("chunk_size")
    if args.chunk_size is not None and args.chunk_size != chunk_size:
        raise UsageError(f"--chunk-size {args.chunk_size} differs from chunk size {chunk_size} of {path}, "
                         f"which this run would resume; rerun with --chunk-size {chunk_size} "
                         "or choose a new --out")
    trained_on = config["dataset"].get("signatures")  # None in models converted from files that predate them
    if trained_on is not None and trained_on != store_signatures(dataset):
        stores = recorded_data(args.out)
        was = ", ".join(stores) if stores else f"{len(trained_on)} store(s) with other episodes"
        own = f"--data {shlex.join(stores)}" if stores else "the run's own --data"
        raise UsageError(f"--data {' '.join(map(str, args.data))} is not the data {path} was trained on ({was}); "
                         "resuming on it would keep the old normalisation, instructions and env id: rerun with "
                         f"{own} or choose a new --out")
    try:
        model = algorithm.load(path, dataset=dataset, device=args.device, **kwargs)
    except ValueError as exc:
        raise UsageError(f"cannot resume from {path}: {exc}; rerun with the saved values or choose a new --out") \
            from None
    if args.rl_steps is not None:
        model.rl_steps = args.rl_steps
    if args.precision is not None:  # a run may resume on other hardware
        model.precision = args.precision
    return model


def build_model(args: argparse.Namespace) -> tuple[OfflineAlgorithm, Path | None]:
    """The model to train: resumed from ``--out`` if it holds a saved state, else new.

    Returns the model and the path it was resumed from (``None`` for a new one).
    """
    algorithm = get_algorithm(args.algo)
    kwargs = algorithm_kwargs(args, algorithm)
    dataset = open_episodes(args.data)
    saved = resume_point(args.out, report=print)
    if saved is not None:
        return load_for_resume(saved[1], args, algorithm, dataset, kwargs), saved[1]
    if args.rl_steps is not None:
        kwargs["rl_steps"] = args.rl_steps
    if args.precision is not None:
        kwargs["precision"] = args.precision
    model = algorithm(dataset=dataset, device=args.device, **kwargs)
    if args.init_from is not None:
        if not args.init_from.is_file():
            raise FileNotFoundError(f"--init-from {args.init_from} does not exist")
        check_model_file(args.init_from, "--init-from")
        copied = model.init_from(args.init_from)
        print(f"initialised {len(copied)} tensors from {args.init_from}")
        if len(args.data) == 1:
            print("tip: co-train with the base's own data to keep what it knows: --data DEMOS BASE/data/Lift "
                  "--store-mix 1 1 --algo-kwargs '{\"feature_cache_views\": 1}' (one view reuses the feature "
                  "cache its pretraining built; `corft pretrain --collect-only` collects the data; "
                  "benchmarks/RESULTS.md)")
    return model, None


def make_logger(args: argparse.Namespace, start: int) -> Logger:
    """SB3 logger into ``--out``: progress.csv (progress_from_step_<N>.csv when resumed at N), stdout, TensorBoard."""
    formats = [*([] if args.quiet else ["stdout"]), "csv", *(["tensorboard"] if args.tensorboard else [])]
    suffix = f"_from_step_{start}" if start else ""
    return Logger(str(args.out), [make_output_format(name, str(args.out), suffix) for name in formats])


def resume_note(out: Path, checkpoint_every: int) -> str:
    """Which saved state a rerun of the command resumes from."""
    saved = resume_point(out)
    if saved is None:
        return f"no checkpoint was written yet (one every {checkpoint_every} steps); a rerun starts over"
    steps, path = saved
    return f"the last good checkpoint is kept at {path} (step {steps}); rerun the same command to resume from it"


def train_summary(model: OfflineAlgorithm, start: int, seconds: float, metrics: LastMetrics,
                  evaluation: SimEvalCallback | None, path: Path) -> list[str]:
    """The lines ``corft train`` prints at the end."""
    done = model.num_timesteps - start
    resumed = f", resumed at step {start}" if start else ""
    lines = [f"{model.algorithm_name}: {done} gradient steps in {seconds:.1f} s "
             f"({done / max(seconds, 1e-9):.2f} steps/s), now at step {model.num_timesteps}{resumed}"]
    if metrics.metrics:
        lines.append("last step: " + ", ".join(f"{name} {value:.4g}" for name, value in metrics.metrics.items()))
    if evaluation is not None and evaluation.best_result is not None:
        best = evaluation.best_result
        lines.append(f"best eval in {evaluation.env_id}: success rate {best.success_rate:.3f} at step "
                     f"{evaluation.best_step} ({path.parent / 'best_model.zip'})")
    lines.append(f"model: {path}")
    return lines


def make_callbacks(args: argparse.Namespace, model: OfflineAlgorithm,
                   rank: Rank) -> tuple[list[Any], LastMetrics, SimEvalCallback | None]:
    """Checkpoints, last metrics and, with ``--eval-env``, evaluation (its env is made now, so a bad id fails early).

    Under torchrun only rank 0 writes checkpoints and evaluates; the others keep the last metrics alone.
    """
    metrics = LastMetrics()
    if not rank.is_main:
        return [metrics], metrics, None
    callbacks: list[Any] = [GradientStepCheckpoint(args.checkpoint_every, args.out / CHECKPOINT_DIR,
                                                   keep_last=args.keep_checkpoints), metrics]
    evaluation = None
    if args.eval_env is not None:
        env = make_eval_env(model, args.eval_env, positions=args.eval_positions)
        evaluation = SimEvalCallback(args.eval_env, args.eval_every, args.eval_episodes, positions=args.eval_positions,
                                     best_model_save_path=args.out, env=env, verbose=0 if args.quiet else 1)
        callbacks.append(evaluation)
    return callbacks, metrics, evaluation


def train(args: argparse.Namespace, rank: Rank = Rank()) -> int:
    """Build or resume the model, train it to the requested steps, save model.zip; returns the exit status.

    Under torchrun every rank runs this; rank 0 alone prints, logs, evaluates and saves.

    :raises UsageError: for input that cannot work (missing dataset, unfitting checkpoint or eval env, ...).
    """
    say = print if rank.is_main else _silent
    config = resolve_config(args)
    try:
        model, resumed_from = build_model(args)
        start, target = model.num_timesteps, total_steps(model, args)
        shard_of(model.batch_size, rank)  # the global batch must split evenly across the processes
        callbacks, metrics, evaluation = make_callbacks(args, model, rank)
    except (DatasetError, FileNotFoundError, ValueError, gym.error.Error) as exc:
        raise UsageError(str(exc)) from None
    final = args.out / MODEL_NAME
    try:
        if start > target:
            raise UsageError(f"{resumed_from} is at gradient step {start}, past the requested {target}; "
                             "ask for at least that many steps or choose a new --out")
        if resumed_from == final and start == target:
            say(f"already trained: {final} is at gradient step {start}")
            return 0
        if resumed_from is not None:
            say(f"resumed from {resumed_from} at gradient step {start}")
        processes = f" in {rank.world_size} processes" if rank.world_size > 1 else ""
        say(f"training {args.algo} on {', '.join(map(str, args.data))} to gradient step {target}{processes}; "
            f"logs and checkpoints in {args.out}")
        if rank.is_main:
            write_config(args.out, config)
            write_data_record(args.out, args.data)
        model.set_logger(make_logger(args, start) if rank.is_main else Logger(folder=None, output_formats=[]))
        began = time.perf_counter()
        model.learn(target - start, callback=callbacks, log_interval=args.log_interval,
                    reset_num_timesteps=start == 0, progress_bar=not args.quiet)
    except TrainingDivergedError as exc:
        if rank.is_main:
            print(f"corft train: error: training diverged at gradient step {model.num_timesteps + 1}: {exc} "
                  f"({resume_note(args.out, args.checkpoint_every)})", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if evaluation is not None:
            evaluation.close()
    if model.num_timesteps % args.log_interval:
        model.dump_training_logs()
    if rank.is_main:
        save_atomically(model, final)
    barrier()
    for line in train_summary(model, start, time.perf_counter() - began, metrics, evaluation, final):
        say(line)
    return 0


def write_config(out: Path, config: TrainConfig) -> None:
    """The resolved configuration as ``OUT/config.json`` (written atomically)."""
    write_json_atomically(out / CONFIG_NAME, config.to_json())


def write_json_atomically(path: Path, data: Any) -> None:
    """``data`` as indented JSON in ``path``, through a temporary file (its folder created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    temporary.replace(path)


#: The run folder's record of the stores it trains on: a resume on other data is refused naming them.
DATA_RECORD = "data.json"


def write_data_record(out: Path, data: Sequence[Path]) -> None:
    """``OUT/data.json``: the absolute paths of the stores this run trains on (rewritten by every run of it)."""
    write_json_atomically(out / DATA_RECORD, {"data": [str(Path(root).resolve()) for root in data]})


def recorded_data(out: Path) -> list[str] | None:
    """The stores ``OUT/data.json`` names, or ``None`` without a readable one (runs from before it was written)."""
    try:
        stores = json.loads((out / DATA_RECORD).read_text(encoding="utf-8"))["data"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [str(store) for store in stores] if isinstance(stores, list) and stores else None


def _silent(*_: Any, **__: Any) -> None:
    """``print`` for the ranks other than 0."""


@contextlib.contextmanager
def run_folder_lock(out: Path, rank: Rank) -> Iterator[None]:
    """Hold ``out``'s lock while this run writes it (rank 0 alone: torchrun's processes are one run).

    :raises UsageError: if ``out`` is a file, or another live ``corft train`` holds the lock.
    """
    if not rank.is_main:
        yield
        return
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a directory for the run (created if missing)")
    out.mkdir(parents=True, exist_ok=True)
    try:
        lock = FolderLock(out)
    except FolderBusyError as exc:
        raise UsageError(f"another corft train ({exc}) is training in --out {out}; wait for it to finish or "
                         "choose another --out") from None
    with lock:
        if lock.takeover_note() is not None:
            print(lock.takeover_note())
        yield


def run_train(args: argparse.Namespace) -> int:
    """Run ``corft train`` (also as one of torchrun's processes); one error line and exit status 1 for bad input
    or divergence, 130 after Ctrl-C."""
    apply_threads(args)
    rank = Rank()
    try:
        try:
            device = resolve_device(args.device)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        args.device = str(device)
        with distributed_session(device) as rank, run_folder_lock(args.out, rank):
            return train(args, rank)
    except KeyboardInterrupt:
        if rank.is_main:
            print(f"\ninterrupted; {resume_note(args.out, args.checkpoint_every)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UsageError as exc:
        if rank.is_main:
            print(f"corft train: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


# ----------------------------------------------------------------------------
# corft eval
# ----------------------------------------------------------------------------


def add_eval_parser(subparsers: argparse._SubParsersAction) -> None:
    """Declare ``corft eval``."""
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a trained model in simulation, on the twin or on the real arm",
        description=(
            "Run a saved model for N episodes (episode k reset with seed SEED + k) and report the success rate "
            "with its Wilson 95%% interval and the cycle time (mean steps of successful episodes, 10 Hz)."
        ),
    )
    add = parser.add_argument
    add("--model", type=Path, metavar="PATH", required=True,
        help="model zip, e.g. runs/pp_corft/model.zip (or a save_pretrained folder)")
    add("--env", dest="env_id", metavar="ID", help="Gymnasium id (default: the env the training data came from)")
    add("--positions", choices=POSITIONS, default="train", help="object position set (default: train)")
    add("--episodes", type=_positive_int, default=50, metavar="N", help="episodes (default: 50)")
    add("--seed", type=int, default=DEFAULT_EVAL_SEED,
        help=f"seed of the first episode (default: {DEFAULT_EVAL_SEED}, away from the demonstrations' seeds)")
    add("--execute", type=_positive_int, metavar="K",
        help="run only the first K actions of each chunk (default: the model's own, saved at training)")
    add("--candidates", type=_positive_int, default=1, metavar="N",
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
    add("--video", type=Path, metavar="DIR", help="write one mp4 of the front camera per episode here")
    add("--json", type=Path, metavar="PATH", help="write the result as JSON here")
    add("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    add("--workers", type=_positive_int, default=1, metavar="N",
        help="sim envs: run episodes in N processes (gymnasium AsyncVectorEnv); the same result as one")
    add_env_arguments(parser)
    add_threads_argument(parser)
    add("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_eval)


def eval_report(result: EvalResult, model_path: Path, model: OfflineAlgorithm, env_kwargs: dict[str, Any],
                execute: int | None) -> list[str]:
    """The lines ``corft eval`` prints: settings, one line per episode, success rate and cycle time."""
    executed = "whole chunks" if execute is None else f"{execute} actions per chunk"
    if isinstance(model, ChunkSelector) and model.members:
        executed += (f", {model.selection} choice of {model.n_candidates} candidates (the model's chunk and "
                     f"{len(model.members)} other models')")
    elif isinstance(model, ChunkSelector):
        executed += f", {model.selection} choice of {model.n_candidates} candidates (σ {model.noise})"
    scene = {key: value for key, value in env_kwargs.items() if key != "operator_keys"}
    lines = [f"{model_path} ({model.algorithm_name}, {model.num_timesteps} gradient steps, H={model.chunk_size}) "
             f"in {result.env_id}, {result.positions} positions, {result.num_episodes} episodes, "
             f"seeds {result.seed}..{result.seed + result.num_episodes - 1}, {executed}, env kwargs {scene}"]
    for k, record in enumerate(result.episodes):
        outcome = "success" if record.success else "failure" if record.rejected is None else "failure (chunk rejected)"
        lines.append(f"  episode {k:3d}  seed {record.seed}  {outcome}  {record.steps:4d} steps  "
                     f"{record.cycle_time_s:5.1f} s  {record.instruction!r}")
    low, high = result.success_ci95
    lines.append(f"success rate {result.success_rate:.3f} ({result.successes}/{result.num_episodes}), "
                 f"95% CI [{low:.3f}, {high:.3f}]")
    if result.named_object_first_rate is not None:
        lines.append(f"first object lifted is the named one: {result.named_object_first_rate:.3f}")
    if result.cycle_time_steps is None:
        lines.append("cycle time: none (no successful episode)")
    else:
        lines.append(f"cycle time {result.cycle_time_steps:.1f} steps = {result.cycle_time_s:.2f} s "
                     "(mean of the successful episodes)")
    return lines


def run_eval(args: argparse.Namespace) -> int:
    """Run ``corft eval``; one error line and exit status 1 for a missing or unfitting model."""
    apply_threads(args)
    operator_keys = None
    try:
        check_model_file(args.model, "--model")
        for path in args.candidate_models or []:
            check_model_file(path, "--candidate-models")
        model = load_model(args.model, device=args.device)
        if args.candidate_models and args.candidates > 1:
            raise UsageError("--candidate-models sets the candidates (the model's chunk and theirs): drop --candidates")
        if args.candidate_models:
            members = [load_model(path, device=args.device) for path in args.candidate_models]
            model = ChunkSelector(model, selection=args.selection, seed=args.seed, members=members)
        elif args.candidates > 1:
            model = ChunkSelector(model, args.candidates, args.candidate_noise, args.selection, seed=args.seed)
        env_id = args.env_id or trained_env_id(model)
        env_kwargs = {**trained_scene(model), **env_kwargs_of(args)}
        args.execute = rollout_execute(model, args.execute)
        if args.workers > 1 and (args.video is not None or "robot_host" in env_kwargs):
            raise UsageError("--workers runs sim envs only, without --video: drop --workers for these")
        if env_kwargs.get("robot_host", "twin") != "twin":  # on hardware the operator labels the episodes
            operator_keys = TerminalKeys()
            env_kwargs["operator_keys"] = operator_keys
            print("Enter = success, Backspace = failure, Ctrl-C stops the arm", file=sys.stderr)
        result = run_evaluation(args, model, env_id, env_kwargs)
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
    finally:
        if operator_keys is not None:
            operator_keys.close()
    for line in eval_report(result, args.model, model, env_kwargs, args.execute):
        print(line)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


def run_evaluation(args: argparse.Namespace, model: OfflineAlgorithm, env_id: str,
                   env_kwargs: dict[str, Any]) -> EvalResult:
    """The episodes ``corft eval`` asks for: in one env, or over ``--workers`` processes (the same result)."""
    if args.workers > 1:
        return evaluate_vectorized(model, env_id, args.workers, positions=args.positions, episodes=args.episodes,
                                   seed=args.seed, execute=args.execute, progress=not args.quiet,
                                   env_kwargs=env_kwargs)
    env = make_eval_env(model, env_id, positions=args.positions, execute=args.execute,
                        record_video=args.video is not None, env_kwargs=env_kwargs)
    try:
        return run_episodes(model, env, env_id, args.positions, episodes=args.episodes, seed=args.seed,
                            video_dir=args.video, progress=not args.quiet)
    finally:
        env.close()

# ----------------------------------------------------------------------------
# corft pretrain
# ----------------------------------------------------------------------------


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
    add("--episodes", type=_positive_int, default=1000, metavar="N", help="episodes per task (default: 1000)")
    add("--image-size", type=_positive_int, default=128, metavar="N",
        help="camera image side; fine-tuning data must use the same (default: 128)")
    add("--steps", type=_positive_int, default=8000, metavar="N",
        help="SFT gradient steps (default: 8000, what the committed base was trained with)")
    add("--seed", type=int, default=0, help="training seed (default: 0)")
    add("--workers", type=_positive_int, default=1, metavar="N", help="collection processes (default: 1)")
    add("--collect-only", action="store_true",
        help="only collect OUT/data/<Task> (the same episodes the committed base saw, with the defaults): the "
             "base's data, to co-train with when fine-tuning (`corft train --data DEMOS OUT/data/Lift "
             "--store-mix 1 1 --init-from BASE`)")
    add("--preset", default="default", metavar="NAME", help=f"training recipe: {', '.join(PRESETS)}")
    add("--config", type=Path, metavar="FILE", help="training configuration file, as for `corft train`")
    add_threads_argument(parser)
    add("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run_pretrain)


#: Cached views of each pretraining frame: one (many episodes need no shifted copies, and the cache of
#: 1000 episodes takes a third of the time).
PRETRAIN_CACHE_VIEWS = 1


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
    train_args = build_parser().parse_args([
        "train", "--algo", "sft", "--data", *map(str, stores), "--out", str(args.out), "--steps", str(args.steps),
        "--seed", str(args.seed), "--preset", args.preset,
        "--algo-kwargs", json.dumps({"feature_cache_views": PRETRAIN_CACHE_VIEWS}),
        *(["--config", str(args.config)] if args.config else []),
        *(["--threads", str(args.threads)] if args.threads else []), *(["--quiet"] if args.quiet else [])])
    status = run_train(train_args)
    if status != 0:
        return status
    command = shlex.join(["corft", "pretrain", "--out", str(args.out), "--tasks", *args.tasks,
                          "--episodes", str(args.episodes), "--image-size", str(args.image_size),
                          "--steps", str(args.steps), "--seed", str(args.seed), "--workers", str(args.workers),
                          "--preset", args.preset, *(["--config", str(args.config)] if args.config else [])])
    train_config = json.loads((args.out / CONFIG_NAME).read_text(encoding="utf-8"))
    manifest = write_manifest(config, command, train_config, time.perf_counter() - began)
    print(f"base policy: {args.out / MODEL_NAME}; what it saw: {manifest}")
    return 0


# ----------------------------------------------------------------------------
# corft convert-model
# ----------------------------------------------------------------------------


def add_convert_model_parser(subparsers: argparse._SubParsersAction) -> None:
    """Declare ``corft convert-model``."""
    parser = subparsers.add_parser(
        "convert-model",
        help="convert a model file in the old pickle-based format to the model format (trusted files only)",
        description=(
            "Convert a model zip saved in corft's old format (stable-baselines3's, with pickled objects) to "
            "the model format (JSON and safetensors), which loads without running code. WARNING: "
            f"{TRUST_WARNING}. The converted file is checked to load with the same weights."
        ),
    )
    parser.add_argument("old", type=Path, metavar="OLD.zip", help="the model zip in the old format")
    parser.add_argument("new", type=Path, metavar="NEW.zip", help="where to write the converted model (must not exist)")
    parser.set_defaults(handler=run_convert_model)


def run_convert_model(args: argparse.Namespace) -> int:
    """Run ``corft convert-model``; one error line and exit status 1 for a file it cannot convert."""
    print(f"corft convert-model: warning: {TRUST_WARNING}", file=sys.stderr)
    try:
        model = convert_old_model(args.old, args.new)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"corft convert-model: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {args.new}: a {model.algorithm_name} model at gradient step {model.num_timesteps}, in the model "
          "format (it loads without running code; the old file can go)")
    return 0


# ----------------------------------------------------------------------------
# corft bench
# ----------------------------------------------------------------------------


def add_bench_parser(subparsers: argparse._SubParsersAction) -> None:
    """Declare ``corft bench paper`` (the study lives in :mod:`benchmarks.paper`)."""
    from benchmarks import paper

    parser = subparsers.add_parser("bench", help="run a benchmark study", description="Run a benchmark study.")
    studies = parser.add_subparsers(dest="study", required=True, metavar="STUDY")
    study = studies.add_parser("paper", help="the paper's claims in simulation: CO-RFT against BC baselines",
                               description=paper.__doc__.split("\n\n")[0])
    paper.add_arguments(study)
    study.set_defaults(handler=paper.run_from_args)


def build_parser() -> argparse.ArgumentParser:
    """The ``corft`` parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="corft", description="CO-RFT: chunked offline RL fine-tuning for VLAs.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_collect_parser(subparsers)
    add_train_parser(subparsers)
    add_eval_parser(subparsers)
    add_pretrain_parser(subparsers)
    add_bench_parser(subparsers)
    add_convert_model_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``corft`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
