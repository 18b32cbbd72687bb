"""Rebuilding a model from a read model file: the JSON checked against the algorithm and the arguments
given to ``load``, then the model constructed and given its saved state."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from corft_algos.model_format.schema import (MODEL_JSON, NORMALIZATION_FIELDS, OPTIMIZERS_JSON, POLICY_TENSORS,
                                             PRETRAINED_NAMES, ModelFileError, SavedModel, saved_parameters,
                                             to_json_value)
from corft_algos.policies import NormalizationStats
from corft_envs.episode_store import space_from_json

if TYPE_CHECKING:
    from corft_algos.common.base import OfflineAlgorithm


def _same(saved: Any, given: Any) -> bool:
    """Whether a value given to ``load`` equals the saved JSON value (compared as JSON: a tuple equals a list)."""
    try:
        return saved == to_json_value(given, "")
    except ValueError:
        return False


def _one_line(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + " ..."


def normalization_from_json(data: Mapping[str, Any]) -> NormalizationStats:
    """:class:`NormalizationStats` from ``corft_model.json``'s ``normalization`` lists.

    :raises KeyError: for a missing field; :raises ValueError: for values that are not numbers.
    """
    arrays = {name: np.asarray(data[name], dtype=bool if name == "binary_dims" else np.float32)
              for name in NORMALIZATION_FIELDS}
    return NormalizationStats(**arrays)


def restore_model(algorithm: type[OfflineAlgorithm], saved: SavedModel, device: torch.device | str = "auto",
                  **kwargs: Any) -> OfflineAlgorithm:
    """Build ``algorithm`` from a read model file: the JSON is checked first (the algorithm, the arguments
    against ``kwargs``), then the model is constructed with the saved arguments, given its spaces,
    statistics, instructions and progress, and its policy and optimizer states are loaded.

    :param kwargs: constructor arguments: ``dataset=...`` to train on, or others, which must equal the saved ones.
    :raises ValueError: if the file holds another algorithm's model, or a keyword argument conflicts with the
        saved value or is not a constructor argument.
    :raises ModelFileError: if the JSON does not describe a model this corft builds, or the tensors do not
        fit the model it describes.
    """
    config, source = saved.config, saved.source
    if config["algorithm_name"] != algorithm.algorithm_name:
        raise ValueError(f"{source} holds a {config['algorithm_name']!r} model; load it with that algorithm's "
                         f"class, not {algorithm.__name__} ({algorithm.algorithm_name!r})")
    arguments = config["arguments"]
    accepted = saved_parameters(algorithm)
    unknown = sorted(set(kwargs) - accepted - {"dataset"})
    if unknown:
        raise ValueError(f"{algorithm.__name__}.load takes no argument {', '.join(unknown)}; "
                         f"it takes dataset, env, device and {', '.join(sorted(accepted))}")
    conflicts = [f"{key}={value!r} (saved: {arguments[key]!r})" for key, value in kwargs.items()
                 if key in arguments and not _same(arguments[key], value)]
    if conflicts:
        raise ValueError(f"cannot load {source} with conflicting arguments: {', '.join(conflicts)}")
    unknown = sorted(set(arguments) - accepted)
    if unknown:
        raise ModelFileError(source, f"{MODEL_JSON} gives {algorithm.__name__} arguments it does not take: "
                                     f"{', '.join(unknown)}")
    unknown = sorted(set(config["progress"]) - set(algorithm.training_state_attributes))
    if unknown:
        raise ModelFileError(source, f"{MODEL_JSON} holds progress {algorithm.__name__} does not keep: "
                                     f"{', '.join(unknown)}")
    policy = algorithm.policy_aliases.get(config["policy_class"])
    if policy is None:
        raise ModelFileError(source, f"{MODEL_JSON} names the policy class {config['policy_class']!r}, which "
                                     f"{algorithm.__name__} does not have ({', '.join(algorithm.policy_aliases)})")
    try:
        spaces = {name: space_from_json(config[name]) for name in ("observation_space", "action_space")}
        normalization = normalization_from_json(config["normalization"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(source, f"{MODEL_JSON} describes spaces or statistics that cannot be built "
                                     f"({_one_line(exc)})") from None
    policy_kwargs = dict(kwargs.get("policy_kwargs", arguments.get("policy_kwargs")) or {})
    if policy_kwargs.get("vision_model") is not None:
        if not isinstance(config.get("vision_model_config"), dict):
            raise ModelFileError(source, f"{MODEL_JSON} names a vision_model folder but holds no vision_model_config "
                                         "to rebuild its tower from")
        policy_kwargs["vision_model_config"] = config["vision_model_config"]

    model = algorithm(policy=policy, device=device, _init_setup_model=False,
                      **{**arguments, **kwargs, "policy_kwargs": policy_kwargs})
    model.observation_space, model.action_space = spaces["observation_space"], spaces["action_space"]
    model.normalization, model.instructions = normalization, [str(text) for text in config["instructions"]]
    dataset = config["dataset"]
    model.dataset_env_id, model.dataset_env_kwargs = dataset.get("env_id"), dict(dataset.get("env_kwargs") or {})
    model.dataset_signatures = dataset.get("signatures")
    for name, value in config["progress"].items():
        setattr(model, name, value)
    model._setup_model()
    try:
        model.policy.load_state_dict(saved.policy_state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(source, f"{PRETRAINED_NAMES[POLICY_TENSORS] if source.is_dir() else POLICY_TENSORS} does "
                                     f"not fit the policy {MODEL_JSON} describes ({_one_line(exc)})") from None
    if saved.optimizers is not None:
        load_optimizer_states(model, *saved.optimizers, source=source)
    if "random_state" in config:  # absent from files converted from the old format
        try:
            model.set_random_state(config["random_state"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ModelFileError(source, f"{MODEL_JSON} holds random streams that cannot be restored "
                                         f"({_one_line(exc)})") from None
    return model


def load_optimizer_states(model: OfflineAlgorithm, described: Any, tensors: Mapping[str, torch.Tensor],
                          source: Path) -> None:
    """Give ``model``'s optimizers the states :func:`optimizer_files` wrote.

    :raises ModelFileError: if they are not ``model``'s optimizers or do not fit its parameters.
    """
    names = model.optimizer_names()
    if not isinstance(described, dict) or sorted(described) != sorted(names):
        found = sorted(described) if isinstance(described, dict) else type(described).__name__
        raise ModelFileError(source, f"{OPTIMIZERS_JSON} holds the optimizers {found}; "
                                     f"{type(model).__name__} has {sorted(names)}")
    for name in names:
        optimizer = getattr(model, name)
        try:
            state = {int(index): dict(values) for index, values in described[name]["state"].items()}
            for key, tensor in tensors.items():
                owner, index, entry = key.split("/")
                if owner == name:
                    state.setdefault(int(index), {})[entry] = tensor
            tuples = {key for group in optimizer.param_groups for key, value in group.items()
                      if isinstance(value, tuple)}
            groups = [{key: tuple(value) if key in tuples else value for key, value in group.items()}
                      for group in described[name]["param_groups"]]
            optimizer.load_state_dict({"state": state, "param_groups": groups})
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
            raise ModelFileError(source, f"the state of {name} in {OPTIMIZERS_JSON} does not fit the model "
                                         f"({_one_line(exc)})") from None
