"""Convert a model zip in corft's old, pickle-based format (stable-baselines3's) to the model format.

The old format keeps objects pickled in its ``data`` member, and reading it unpickles them: a crafted file
runs any code it holds. corft no longer opens such files anywhere else
(:class:`~corft_algos.model_format.OldFormatError`); this module, behind ``corft convert-model``, is the
one place that unpickles, once per file, for files their user trusts. The converted file is checked to
load (without unpickling) with the same policy weights.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch
from stable_baselines3.common.base_class import BaseAlgorithm

from corft_algos.common.base import OfflineAlgorithm
from corft_algos.model_format import MODEL_JSON, OLD_FORMAT_MEMBER, write_model_zip
from corft_algos.registry import get_algorithm

#: What ``corft convert-model`` says before converting.
TRUST_WARNING = ("reading a model file in the old format unpickles it, which runs any code the file holds: "
                 "convert only files you trust (ones you or your team trained)")


def old_algorithm_name(path: Path) -> str:
    """The algorithm name in an old-format zip's ``data`` JSON, read without unpickling anything.

    :raises FileNotFoundError: if ``path`` does not exist.
    :raises ValueError: if ``path`` is not a model zip in the old format.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if MODEL_JSON in names:
                raise ValueError(f"{path} is already in the model format; load it as it is")
            if OLD_FORMAT_MEMBER not in names:
                raise ValueError(f"{path} is not a corft model zip in the old format (it has no "
                                 f"{OLD_FORMAT_MEMBER!r} member)")
            data = json.loads(archive.read(OLD_FORMAT_MEMBER))
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a readable model zip ({exc})") from None
    name = data.get("algorithm_name") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name:
        raise ValueError(f"{path} holds no algorithm_name: it was not saved by a corft algorithm")
    return name


def convert_old_model(old: str | Path, new: str | Path) -> OfflineAlgorithm:
    """Load the old-format zip ``old`` (unpickling it: only for trusted files) and save it to ``new`` in the
    model format; returns the model.

    :raises FileNotFoundError: if ``old`` does not exist.
    :raises FileExistsError: if ``new`` exists.
    :raises ValueError: if ``new`` does not end in ``.zip``, ``old`` is not an old-format corft model, or the
        converted file does not load with the same policy weights.
    """
    old, new = Path(old), Path(new)
    algorithm = get_algorithm(old_algorithm_name(old))
    if new.suffix != ".zip":
        raise ValueError(f"{new}: name the converted model NAME.zip")
    if new.exists():
        raise FileExistsError(f"{new} exists; choose another path for the converted model")
    # stable-baselines3's loader, which unpickles `data`: the one call of it in corft.
    model = BaseAlgorithm.load.__func__(algorithm, old, device="cpu")
    write_model_zip(model, new)
    reloaded = algorithm.load(new, device="cpu").policy.state_dict()
    different = [name for name, value in model.policy.state_dict().items()
                 if name not in reloaded or not torch.equal(reloaded[name], value)]
    if different:
        new.unlink()
        raise ValueError(f"the converted {new} did not load with the same weights ({', '.join(different[:5])}); "
                         "nothing was written")
    return model
