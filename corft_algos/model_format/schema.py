"""The model file's schema: its members and fields, its errors, and what a JSON value in it may be."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm

from corft_algos.argument_types import constructor_parameters

if TYPE_CHECKING:
    from corft_algos.common.base import OfflineAlgorithm

FORMAT_VERSION = 2
MODEL_JSON = "corft_model.json"
POLICY_TENSORS = "policy.safetensors"
OPTIMIZERS_JSON = "optimizers.json"
OPTIMIZERS_TENSORS = "optimizers.safetensors"
#: Every member of a model zip.
ZIP_MEMBERS = (MODEL_JSON, POLICY_TENSORS, OPTIMIZERS_JSON, OPTIMIZERS_TENSORS)
#: ``save_pretrained``'s file names for the zip's members (the optimizer files keep theirs).
PRETRAINED_NAMES = {MODEL_JSON: "config.json", POLICY_TENSORS: "model.safetensors"}
#: The member of stable-baselines3's zip holding its pickled objects: the old format.
OLD_FORMAT_MEMBER = "data"
#: Constructor parameters a model file does not hold: what the data, the env and the machine give when loading.
UNSAVED_PARAMETERS = frozenset({"policy", "dataset", "env", "device", "_init_setup_model"})


def saved_parameters(algorithm: type[OfflineAlgorithm]) -> set[str]:
    """The constructor arguments a model file holds: those of corft's constructors (stable-baselines3's own are
    not corft's to set), less :data:`UNSAVED_PARAMETERS`."""
    return constructor_parameters(algorithm, below=BaseAlgorithm) - UNSAVED_PARAMETERS


#: The top-level fields of ``corft_model.json`` and their JSON types (``vision_model_config`` is optional).
CONFIG_FIELDS: dict[str, type] = {"algorithm_name": str, "policy_class": str, "arguments": dict, "progress": dict,
                                  "observation_space": dict, "action_space": dict, "normalization": dict,
                                  "instructions": list, "dataset": dict}
NORMALIZATION_FIELDS = ("action_mean", "action_std", "binary_dims", "state_mean", "state_std")


class ModelFileError(ValueError):
    """A model file that cannot be read: damaged, incomplete or not a corft model. The message is one line
    that starts with the file's path.

    :param path: the model file (or ``save_pretrained`` folder).
    :param reason: what is wrong with it.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


class OldFormatError(ModelFileError):
    """A model zip in corft's old, pickle-based format (stable-baselines3's), which corft no longer opens."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        command = shlex.join(["corft", "convert-model", str(path), str(converted_path(path))])
        super().__init__(path, "this model file is in corft's old pickle-based format (stable-baselines3's zip), "
                               "which corft no longer opens because loading it could run any code the file holds. "
                               f"If you trust where it came from, convert it once with: {command}")


def converted_path(path: Path) -> Path:
    """Where ``corft convert-model`` is told to write the converted ``path`` in :class:`OldFormatError`."""
    return path.with_name(f"{path.stem}_v2.zip")


@dataclass(frozen=True)
class SavedModel:
    """A model file's contents, read without building anything.

    :param source: the file (or folder) read.
    :param config: ``corft_model.json``, checked to have :data:`CONFIG_FIELDS`.
    :param policy_state: the policy's state dict (CPU tensors).
    :param optimizers: ``optimizers.json`` and the tensors of ``optimizers.safetensors``; ``None`` for a
        ``save_pretrained`` folder written without them.
    """

    source: Path
    config: dict[str, Any]
    policy_state: dict[str, torch.Tensor]
    optimizers: tuple[dict[str, Any], dict[str, torch.Tensor]] | None


def to_json_value(value: Any, name: str) -> Any:
    """``value`` as JSON data: tuples become lists, numpy scalars numbers, paths strings.

    :param name: what ``value`` is, for the error.
    :raises ValueError: for anything else (a function, an object): a model file holds no code.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [to_json_value(item, f"{name}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, Mapping) and all(isinstance(key, str) for key in value):
        return {key: to_json_value(item, f"{name}[{key!r}]") for key, item in value.items()}
    raise ValueError(f"{name}={value!r} is a {type(value).__name__}; a model file holds JSON values only "
                     "(numbers, strings, booleans, None, and lists and string-keyed dicts of them)")
