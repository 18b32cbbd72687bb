"""Writing a model file: ``corft_model.json``, the policy's and the optimizers' tensors, as one zip or as
Hugging Face's ``save_pretrained`` layout."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import safetensors.torch
import torch

from corft_algos.model_format.schema import (FORMAT_VERSION, MODEL_JSON, NORMALIZATION_FIELDS, OPTIMIZERS_JSON,
                                             OPTIMIZERS_TENSORS, POLICY_TENSORS, PRETRAINED_NAMES, saved_parameters,
                                             to_json_value)
from corft_algos.networks.vision import vision_model_config_problems
from corft_envs.episode_store import project_version, space_to_json

if TYPE_CHECKING:
    from corft_algos.common.base import OfflineAlgorithm


def model_config(model: OfflineAlgorithm) -> dict[str, Any]:
    """``corft_model.json`` of ``model`` (see :mod:`corft_algos.model_format`).

    :raises ValueError: if a constructor argument is not an attribute of the same name or not a JSON value,
        the policy class has no alias, or a ``vision_model`` tower cannot be rebuilt from its config.
    """
    algorithm = type(model)
    arguments = {}
    for name in sorted(saved_parameters(algorithm)):
        if not hasattr(model, name):
            raise ValueError(f"cannot save {algorithm.__name__}: its constructor takes {name!r}, which is not an "
                             "attribute of the model; keep every constructor argument in an attribute of its name")
        value = getattr(model, name)
        if name == "policy_kwargs":  # the tower's config is saved beside them, from the policy
            value = {key: item for key, item in value.items() if key != "vision_model_config"}
        arguments[name] = to_json_value(value, name)
    aliases = [alias for alias, policy in algorithm.policy_aliases.items() if policy is model.policy_class]
    if not aliases:
        raise ValueError(f"cannot save {algorithm.__name__}: its policy class {model.policy_class.__name__} has no "
                         f"name in {algorithm.__name__}.policy_aliases, by which a model file names it")
    config: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "algorithm_name": algorithm.algorithm_name,
        "corft_version": project_version(),
        "policy_class": aliases[0],
        "arguments": arguments,
        "progress": {name: to_json_value(getattr(model, name), name) for name in algorithm.training_state_attributes},
        "observation_space": space_to_json(model.observation_space),
        "action_space": space_to_json(model.action_space),
        "normalization": {name: np.asarray(getattr(model.normalization, name)).tolist()
                          for name in NORMALIZATION_FIELDS},
        "instructions": list(model.instructions),
        "dataset": {"env_id": model.dataset_env_id, "env_kwargs": to_json_value(model.dataset_env_kwargs, "env_kwargs"),
                    # None for a model converted from a file older than the signatures
                    "signatures": getattr(model, "dataset_signatures", None)},
    }
    if model.policy.vision_model_config is not None:
        config["vision_model_config"] = checked_vision_model_config(model)
    # the sampler's, augmentation's and torch's random streams: a resumed run draws what an uninterrupted one would
    config["random_state"] = model.random_state()
    return config


def checked_vision_model_config(model: OfflineAlgorithm) -> dict[str, Any]:
    """The config of the ``vision_model`` folder the policy's tower came from, checked to rebuild the tower.

    :raises ValueError: if it does not (saving would leave the model depending on the folder).
    """
    policy = model.policy
    problems = vision_model_config_problems(policy.vision_model_config, policy.vision.model) if policy.image_keys \
        else []
    if problems:
        raise ValueError(f"cannot save {type(model).__name__}: its vision tower, from the folder "
                         f"{model.policy_kwargs['vision_model']}, cannot be rebuilt from that model's transformers "
                         f"config ({'; '.join(problems)}), so loading would depend on the folder; use a vision_model "
                         "that AutoModel.from_config rebuilds (a transformers model without custom code)")
    return policy.vision_model_config


def optimizer_files(model: OfflineAlgorithm) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``optimizers.json`` and the tensors of ``optimizers.safetensors``: per optimizer, its parameter groups
    and the non-tensor entries of its state in the JSON, each state tensor under ``<optimizer>/<index>/<key>``."""
    described: dict[str, Any] = {}
    tensors: dict[str, torch.Tensor] = {}
    for name in model.optimizer_names():
        state = getattr(model, name).state_dict()
        entries: dict[str, dict[str, Any]] = {}
        for index, values in state["state"].items():
            entries[str(index)] = {}
            for key, value in values.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{name}/{index}/{key}"] = value
                else:
                    entries[str(index)][key] = to_json_value(value, f"{name} state {key}")
        described[name] = {"param_groups": to_json_value(state["param_groups"], f"{name} param_groups"),
                           "state": entries}
    return described, tensors


def _tensor_bytes(tensors: Mapping[str, torch.Tensor]) -> bytes:
    return safetensors.torch.save({name: value.detach().cpu().contiguous() for name, value in tensors.items()})


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=1) + "\n").encode("utf-8")


def model_files(model: OfflineAlgorithm, include_optimizers: bool = True) -> dict[str, bytes]:
    """The contents of a model file, by zip member name (:data:`ZIP_MEMBERS`)."""
    files = {MODEL_JSON: _json_bytes(model_config(model)), POLICY_TENSORS: _tensor_bytes(model.policy.state_dict())}
    if include_optimizers:
        described, tensors = optimizer_files(model)
        files.update({OPTIMIZERS_JSON: _json_bytes(described), OPTIMIZERS_TENSORS: _tensor_bytes(tensors)})
    return files


def write_model_zip(model: OfflineAlgorithm, path: str | Path) -> Path:
    """Write ``model`` to the zip ``path`` (``.zip`` appended when it has no suffix, as stable-baselines3 does);
    returns the path written."""
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".zip")
    files = model_files(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content, zipfile.ZIP_DEFLATED if name.endswith(".json") else zipfile.ZIP_STORED)
    return path


def write_pretrained(model: OfflineAlgorithm, folder: str | Path, include_optimizers: bool = False) -> Path:
    """Write ``model`` in Hugging Face's layout into ``folder`` (created): ``config.json`` and
    ``model.safetensors``, plus the optimizer files if ``include_optimizers``; returns the folder."""
    folder = Path(folder)
    files = model_files(model, include_optimizers)
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / PRETRAINED_NAMES.get(name, name)).write_bytes(content)
    return folder
