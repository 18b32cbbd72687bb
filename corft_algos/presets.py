"""Named training recipes and configuration files for ``corft train``.

A :class:`TrainConfig` holds what ``corft train`` is told beyond the data and the run folder: the
algorithm, its step budget and constructor arguments (``policy_kwargs`` among them). It is built
in layers, each overriding the one before:

1. the library's defaults (the constructors' own: the best measured recipe, benchmarks/RESULTS.md);
2. a named preset (:data:`PRESETS`, ``--preset NAME``);
3. a configuration file (``--config FILE``, JSON or YAML, the fields of :class:`TrainConfig`);
4. the command line's flags.

The resolved configuration is written to the run folder (``config.json``), and every constructor
argument is saved in the model, so a run can be repeated from either.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class TrainConfig:
    """What a training run is told, beyond its data and its folder.

    :param algo: registered algorithm name (``sft``, ``corft``, ...); ``None``: given by ``--algo``.
    :param steps: gradient steps of a single-stage algorithm.
    :param il_steps: imitation steps of a staged algorithm (CO-RFT).
    :param rl_steps: offline RL steps of a staged algorithm.
    :param algo_kwargs: constructor arguments of the algorithm (``chunk_size``, ``batch_size``,
        ``learning_rate``, ``execute``, ``lr_schedule_kind``, CO-RFT's ``actor_q_weight``, ...).
    :param policy_kwargs: :class:`~corft_algos.policies.VLAPolicy` arguments.
    """

    algo: str | None = None
    steps: int | None = None
    il_steps: int | None = None
    rl_steps: int | None = None
    algo_kwargs: dict[str, Any] = field(default_factory=dict)
    policy_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("steps", "il_steps", "rl_steps"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        for name in ("algo_kwargs", "policy_kwargs"):
            if not isinstance(getattr(self, name), Mapping):
                raise ValueError(f"{name} must be a mapping of argument names to values, "
                                 f"got {type(getattr(self, name)).__name__}")
        if "policy_kwargs" in self.algo_kwargs:
            raise ValueError("give the policy's arguments as policy_kwargs, not inside algo_kwargs")

    def merged(self, other: TrainConfig) -> TrainConfig:
        """This configuration overridden by ``other``'s set fields (dicts merged key by key)."""
        return TrainConfig(
            algo=other.algo or self.algo,
            steps=other.steps if other.steps is not None else self.steps,
            il_steps=other.il_steps if other.il_steps is not None else self.il_steps,
            rl_steps=other.rl_steps if other.rl_steps is not None else self.rl_steps,
            algo_kwargs={**self.algo_kwargs, **other.algo_kwargs},
            policy_kwargs={**self.policy_kwargs, **other.policy_kwargs},
        )

    def for_algorithm(self, staged: bool) -> TrainConfig:
        """The step budget that fits the algorithm: ``il_steps``/``rl_steps`` for a staged one (CO-RFT),
        ``steps`` for the others; a preset carries both."""
        if staged:
            return dataclasses.replace(self, steps=None)
        return dataclasses.replace(self, il_steps=None, rl_steps=None)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str) -> TrainConfig:
        """:raises ValueError: naming ``source`` and the unknown field, or a badly typed one."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{source}: unknown field {unknown[0]!r}; a training configuration has "
                             f"{', '.join(sorted(names))}")
        try:
            return cls(**data)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None


#: Named recipes; the library's defaults are the ``default`` preset's (the best measured).
PRESETS: dict[str, TrainConfig] = {
    # The constructors' defaults: the frozen ImageNet MobileNetV2 with cached features, 128 px data.
    "default": TrainConfig(),
    # The earlier recipe: a small ResNet trained from scratch (GroupNorm) with pooling steered by the
    # instruction, at 64 px; what the full study of benchmarks/RESULTS.md measured before.
    "scratch": TrainConfig(policy_kwargs={"vision_arch": "resnet", "vision_pooling": "attention",
                                          "language_pooling": True}),
    # For a GPU: the same tower fine-tuned with every other parameter (the paper's stage 1), no cache.
    "full_finetune": TrainConfig(policy_kwargs={"freeze_vision": False}),
    # Fine-tuning a pretrained base (`corft train --init-from`, which picks this preset unless told
    # otherwise): a gentler, shorter adaptation that keeps what the base knows; measured better from
    # the committed base on 30 PickPlace demos than the from-scratch budget of 1e-3 for 6000 steps
    # (benchmarks/RESULTS.md). CO-RFT imitates with the same budget, then 1000 offline RL steps.
    "from_base": TrainConfig(steps=3000, il_steps=3000, rl_steps=1000, algo_kwargs={"learning_rate": 3e-4}),
}
#: The preset ``corft train --init-from`` uses when none is named.
FROM_BASE_PRESET = "from_base"


def load_config_file(path: str | Path) -> TrainConfig:
    """A :class:`TrainConfig` from a JSON or YAML file.

    :raises FileNotFoundError: if the file does not exist.
    :raises ValueError: if it cannot be parsed, is not a mapping, or has an unknown field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) if path.suffix.lower() in (".yaml", ".yml") else json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"--config {path}: cannot parse it ({exc})") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"--config {path}: the file must hold a mapping of fields, got {type(data).__name__}")
    return TrainConfig.from_mapping(data, f"--config {path}")


def get_preset(name: str) -> TrainConfig:
    """:raises ValueError: for an unknown name, listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"--preset {name!r} is unknown; use one of {', '.join(PRESETS)}") from None
