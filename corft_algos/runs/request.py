"""What a training run is asked for (:class:`TrainRequest`, the fields of ``corft train``) and its resolution
into a configuration and the algorithm's constructor arguments, with every check of their fit."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corft_algos.argument_types import constructor_parameters, constructor_type_hints, type_problems
from corft_algos.common.base import OfflineAlgorithm
from corft_algos.policies import VLAPolicy
from corft_algos.presets import FROM_BASE_PRESET, TrainConfig, get_preset, load_config_file
from corft_algos.registry import get_algorithm
from corft_algos.runs.folder import UsageError

#: Gradient steps of a single-stage algorithm without ``steps``: CO-RFT's default il_steps + rl_steps, so the
#: baselines get the same budget.
DEFAULT_STEPS = 6000
#: :class:`TrainRequest` fields that set algorithm constructor arguments of the same name.
ALGORITHM_FLAGS = ("chunk_size", "batch_size", "learning_rate", "gamma", "num_workers", "store_mix")
#: VLAPolicy arguments the algorithm sets from the data, not the user.
POLICY_ARGUMENTS_FROM_DATA = ("observation_space", "action_space", "lr_schedule", "normalization", "instructions",
                              "with_critic")


@dataclass(frozen=True)
class TrainRequest:
    """A training run as ``corft train`` describes it: each field is the flag of the same name (``None``: not
    given), with the same defaults.

    :param data: episode stores (several with the same spaces are read as one).
    :param out: the run folder (:class:`~corft_algos.runs.RunFolder`; created, or resumed).
    :param algo: registered algorithm name (or from ``config``/``preset``).
    :param preset: named recipe (default: ``from_base`` with ``init_from``, else ``default``).
    :param config: a JSON or YAML configuration file, overriding the preset; the fields here override it.
    :param steps: gradient steps of a single-stage algorithm (default :data:`DEFAULT_STEPS`).
    :param il_steps: staged algorithms (CO-RFT): imitation steps.
    :param rl_steps: staged algorithms: offline RL steps.
    :param algo_kwargs: further constructor arguments (not those with a field of their own).
    :param policy_kwargs: :class:`~corft_algos.policies.VLAPolicy` arguments.
    :param store_mix: with several stores, each one's share of the training draws.
    :param init_from: a model whose weights start a new run (ignored when resuming).
    :param device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
    :param precision: ``auto``, ``bf16`` or ``fp32`` (default: the saved one, or ``auto``).
    :param checkpoint_every: gradient steps between checkpoints.
    :param keep_checkpoints: the newest checkpoints kept.
    :param log_interval: gradient steps between log lines.
    :param eval_env: a sim env to evaluate in during training (best_model.zip is kept).
    :param eval_every: gradient steps between evaluations.
    :param eval_episodes: episodes per evaluation.
    :param eval_positions: object positions of the evaluations.
    :param tensorboard: also write TensorBoard events.
    :param quiet: no progress bar and no log tables on stdout.
    """

    data: tuple[Path, ...]
    out: Path
    algo: str | None = None
    preset: str | None = None
    config: Path | None = None
    steps: int | None = None
    il_steps: int | None = None
    rl_steps: int | None = None
    chunk_size: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    gamma: float | None = None
    num_workers: int | None = None
    store_mix: list[float] | None = None
    algo_kwargs: dict[str, Any] = field(default_factory=dict)
    policy_kwargs: dict[str, Any] | None = None
    init_from: Path | None = None
    seed: int = 0
    device: str = "auto"
    precision: str | None = None
    checkpoint_every: int = 500
    keep_checkpoints: int = 5
    log_interval: int = 100
    eval_env: str | None = None
    eval_every: int = 500
    eval_episodes: int = 10
    eval_positions: str = "train"
    tensorboard: bool = False
    quiet: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", tuple(Path(root) for root in self.data))
        object.__setattr__(self, "out", Path(self.out))


def resolve(request: TrainRequest) -> tuple[TrainRequest, TrainConfig]:
    """The run's configuration: the preset, overridden by ``config``, overridden by the request's fields; and the
    request with it written back (constructor arguments that have fields of their own move to those).

    :raises UsageError: for an unknown preset, an unreadable config file or no algorithm at all.
    """
    preset_name = request.preset or (FROM_BASE_PRESET if request.init_from is not None else "default")
    try:
        preset = get_preset(preset_name)
        from_file = load_config_file(request.config) if request.config is not None else TrainConfig()
        algo = request.algo or from_file.algo or preset.algo
        if algo is not None:
            preset = preset.for_algorithm(is_staged(get_algorithm(algo)))
        config = preset.merged(from_file)
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    flags = {name: getattr(request, name) for name in ALGORITHM_FLAGS if getattr(request, name) is not None}
    twice = sorted(set(flags) & set(request.algo_kwargs))
    if twice:
        raise UsageError(f"--algo-kwargs sets {', '.join(twice)}, which have flags of their own: use those")
    config = config.merged(TrainConfig(algo=request.algo, steps=request.steps, il_steps=request.il_steps,
                                       rl_steps=request.rl_steps, algo_kwargs={**request.algo_kwargs, **flags},
                                       policy_kwargs=request.policy_kwargs or {}))
    if config.algo is None:
        raise UsageError("no algorithm: pass --algo NAME (or an algo field in --config)")
    resolved = dataclasses.replace(
        request, preset=preset_name, algo=config.algo, steps=config.steps, il_steps=config.il_steps,
        rl_steps=config.rl_steps, policy_kwargs=config.policy_kwargs or None,
        algo_kwargs={key: value for key, value in config.algo_kwargs.items() if key not in ALGORITHM_FLAGS},
        **{name: config.algo_kwargs.get(name) for name in ALGORITHM_FLAGS})
    return resolved, config


def is_staged(algorithm: type[OfflineAlgorithm]) -> bool:
    """Whether ``algorithm`` trains in stages set by ``il_steps`` and ``rl_steps`` (CO-RFT and its variants)."""
    return {"il_steps", "rl_steps"} <= constructor_parameters(algorithm)


def algorithm_kwargs(request: TrainRequest, algorithm: type[OfflineAlgorithm]) -> dict[str, Any]:
    """Constructor arguments the (resolved) request sets (the others keep the algorithm's defaults).

    ``rl_steps`` is left out: it sets the training length, which a resumed run may extend.

    :raises UsageError: if the step fields do not fit the algorithm.
    """
    staged = is_staged(algorithm)
    if staged and request.steps is not None:
        raise UsageError(f"--algo {request.algo} trains --il-steps + --rl-steps gradient steps; drop --steps")
    if not staged and (request.il_steps is not None or request.rl_steps is not None):
        raise UsageError(f"--il-steps and --rl-steps are for staged algorithms such as corft; "
                         f"give --algo {request.algo} its total with --steps")
    given = {"chunk_size": request.chunk_size, "batch_size": request.batch_size,
             "learning_rate": request.learning_rate, "gamma": request.gamma,
             "policy_kwargs": request.policy_kwargs, "il_steps": request.il_steps,
             "num_workers": request.num_workers, "store_mix": request.store_mix}
    given = {key: value for key, value in given.items() if value is not None}
    if request.store_mix is not None and len(request.store_mix) != len(request.data):
        raise UsageError(f"--store-mix gives {len(request.store_mix)} shares for {len(request.data)} --data stores; "
                         "give one share per store, in the same order")
    twice = sorted({*given, "seed", "rl_steps"} & set(request.algo_kwargs))
    if twice:
        raise UsageError(f"--algo-kwargs sets {', '.join(twice)}, which have flags of their own: use those")
    unknown = sorted(set(request.algo_kwargs) - constructor_parameters(algorithm))
    if unknown:
        raise UsageError(f"--algo {request.algo} takes no argument {', '.join(unknown)}")
    problems = type_problems(request.algo_kwargs, constructor_type_hints(algorithm))
    if problems:
        raise UsageError("--algo-kwargs: " + "; ".join(problems))
    check_policy_kwargs(request.policy_kwargs or {})
    return {**request.algo_kwargs, **given, "seed": request.seed}


def check_policy_kwargs(policy_kwargs: dict[str, Any]) -> None:
    """:raises UsageError: for a ``policy_kwargs`` name VLAPolicy does not take, or a value of the wrong type."""
    names = set(inspect.signature(VLAPolicy.__init__).parameters) - {"self", *POLICY_ARGUMENTS_FROM_DATA}
    unknown = sorted(set(policy_kwargs) - names)
    if unknown:
        raise UsageError(f"--policy-kwargs: VLAPolicy takes no argument {', '.join(unknown)}; "
                         f"it takes {', '.join(sorted(names))}")
    problems = type_problems(policy_kwargs, constructor_type_hints(VLAPolicy))
    if problems:
        raise UsageError("--policy-kwargs: " + "; ".join(problems))


def total_steps(model: OfflineAlgorithm, request: TrainRequest) -> int:
    """Gradient steps the run must reach: ``il_steps + rl_steps`` for a staged algorithm, else ``steps``."""
    if is_staged(type(model)):
        return int(model.il_steps + model.rl_steps)
    return request.steps or DEFAULT_STEPS
