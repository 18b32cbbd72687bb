"""Reading a model file without running code: :mod:`zipfile`, :mod:`json` and :func:`safetensors.torch.load`
only, the JSON checked against the schema before anything is built; the old pickle-based format is refused."""

from __future__ import annotations

import contextlib
import json
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError

from corft_algos.model_format.schema import (CONFIG_FIELDS, FORMAT_VERSION, MODEL_JSON, OLD_FORMAT_MEMBER,
                                             OPTIMIZERS_JSON, OPTIMIZERS_TENSORS, POLICY_TENSORS, PRETRAINED_NAMES,
                                             ModelFileError, OldFormatError, SavedModel)


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
