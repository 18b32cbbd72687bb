"""corft's model file (format 2): JSON and safetensors, so that reading a model never runs code.

``model.save(path)`` writes one zip holding exactly

- ``corft_model.json``: what rebuilds the model: ``format_version``, ``algorithm_name``, the policy class's
  alias (``policy_class``), every constructor argument (``arguments``: chunk size, discount, batch size,
  learning rate and the numbers of its schedule, ``execute``, ``policy_kwargs``, the algorithm's options,
  ...), the training progress (``progress``: the gradient step count, CO-RFT's stage), the observation and
  action spaces (:func:`~corft_envs.episode_store.space_to_json`), the normalisation statistics and the
  instructions as JSON lists, the env and the stores the data came from (``dataset``) and, for a tower
  from a ``vision_model`` folder, that model's ``transformers`` config (``vision_model_config``), so that
  the folder is never read again, and the training's random streams (``random_state``), so that a resumed
  run draws the batches and noise an uninterrupted one would;
- ``policy.safetensors``: the policy's state dict;
- ``optimizers.json`` and ``optimizers.safetensors``: each optimizer's state dict for resuming, its
  tensors (moments, step counts) in the safetensors file, the rest (parameter groups) in the JSON.

``model.save_pretrained(folder)`` writes Hugging Face's layout: ``config.json`` (the same JSON as
``corft_model.json``) and ``model.safetensors``, plus the two optimizer files when asked.

Reading uses :mod:`zipfile`, :mod:`json` and :func:`safetensors.torch.load` only, and checks the JSON
before anything is built. A zip in the old format (stable-baselines3's, whose ``data`` member holds
pickled objects that run code when read) is refused with :class:`OldFormatError`;
``corft convert-model`` (:mod:`corft_algos.legacy_format`) converts a trusted one once.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import safetensors.torch
import torch
from safetensors import SafetensorError
from stable_baselines3.common.base_class import BaseAlgorithm

from corft_algos.argument_types import constructor_parameters
from corft_algos.networks.vision import vision_model_config_problems
from corft_algos.policies import NormalizationStats
from corft_envs.episode_store import project_version, space_from_json, space_to_json

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


# ----------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------


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


def model_config(model: OfflineAlgorithm) -> dict[str, Any]:
    """``corft_model.json`` of ``model`` (see the module docstring).

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


# ----------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Members:
    """The members of a model zip, or the files of a ``save_pretrained`` folder under the members' names."""

    path: Path
    read: Callable[[str], bytes | None]
    folder: bool

    def file_name(self, member: str) -> str:
        return PRETRAINED_NAMES.get(member, member) if self.folder else member

    def require(self, member: str) -> bytes:
        content = self.read(member)
        if content is None:
            raise ModelFileError(self.path, f"{self.file_name(member)} is missing: the model was not saved whole; "
                                            "save it again, or use another checkpoint")
        return content


@contextlib.contextmanager
def _open_members(path: Path) -> Iterator[_Members]:
    """:raises FileNotFoundError: if ``path`` does not exist.
    :raises OldFormatError: for a zip in the old format.
    :raises ModelFileError: for anything else that is not a corft model, or a zip member that fails its CRC."""
    if path.is_dir():
        if not (path / PRETRAINED_NAMES[MODEL_JSON]).is_file():
            raise ModelFileError(path, f"the folder holds no {PRETRAINED_NAMES[MODEL_JSON]}: it is not a model "
                                       "written by save_pretrained()")

        def read_file(member: str) -> bytes | None:
            file = path / PRETRAINED_NAMES.get(member, member)
            return file.read_bytes() if file.is_file() else None

        yield _Members(path, read_file, folder=True)
        return
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist; `corft train ... --out DIR` writes DIR/model.zip")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if MODEL_JSON not in names:
                if OLD_FORMAT_MEMBER in names:
                    raise OldFormatError(path)
                raise ModelFileError(path, f"not a corft model file (a zip with {MODEL_JSON})")
            yield _Members(path, lambda member: archive.read(member) if member in names else None, folder=False)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:  # not a zip, or a member whose bytes are damaged
        raise ModelFileError(path, f"not a readable model zip ({exc})") from None


def _parse_json(members: _Members, member: str) -> Any:
    try:
        return json.loads(members.require(member))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(members.path, f"{members.file_name(member)} is not valid JSON ({exc})") from None


def _parse_config(members: _Members) -> dict[str, Any]:
    name = members.file_name(MODEL_JSON)
    config = _parse_json(members, MODEL_JSON)
    if not isinstance(config, dict):
        raise ModelFileError(members.path, f"{name} holds a {type(config).__name__}, not an object")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise ModelFileError(members.path, f"{name} is in model format {version!r}; this corft reads format "
                                           f"{FORMAT_VERSION}" + ("; upgrade corft to load it" if newer else ""))
    for field, kind in CONFIG_FIELDS.items():
        if not isinstance(config.get(field), kind):
            raise ModelFileError(members.path, f"{name}: {field!r} is missing or not a JSON {kind.__name__}")
    return config


def _parse_tensors(members: _Members, member: str, content: bytes) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load(content)
    except SafetensorError as exc:
        raise ModelFileError(members.path, f"{members.file_name(member)} is damaged ({exc})") from None


def read_model_config(path: str | Path) -> dict[str, Any]:
    """``corft_model.json`` of a model zip (or ``config.json`` of a ``save_pretrained`` folder), checked to have
    :data:`CONFIG_FIELDS`; no tensor is read and nothing is built.

    :raises FileNotFoundError: if ``path`` does not exist.
    :raises OldFormatError: for a zip in the old, pickle-based format.
    :raises ModelFileError: for a damaged file or one that is not a corft model.
    """
    with _open_members(Path(path)) as members:
        return _parse_config(members)


def read_model(path: str | Path) -> SavedModel:
    """Everything a model zip or ``save_pretrained`` folder holds, checked to be whole and readable.

    :raises FileNotFoundError: if ``path`` does not exist.
    :raises OldFormatError: for a zip in the old, pickle-based format.
    :raises ModelFileError: for a missing or damaged member, or a file that is not a corft model.
    """
    with _open_members(Path(path)) as members:
        config = _parse_config(members)
        policy_state = _parse_tensors(members, POLICY_TENSORS, members.require(POLICY_TENSORS))
        described, tensors = members.read(OPTIMIZERS_JSON), members.read(OPTIMIZERS_TENSORS)
        if members.folder and described is None and tensors is None:
            optimizers = None
        else:
            optimizers = (_parse_json(members, OPTIMIZERS_JSON),
                          _parse_tensors(members, OPTIMIZERS_TENSORS, members.require(OPTIMIZERS_TENSORS)))
    return SavedModel(Path(path), config, policy_state, optimizers)


# ----------------------------------------------------------------------------
# Rebuilding a model
# ----------------------------------------------------------------------------


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
