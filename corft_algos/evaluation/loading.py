"""Loading a saved model of any registered algorithm, the algorithm's name read from the model file's JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from corft_algos.model_format import read_model_config
from corft_algos.registry import get_algorithm


def saved_algorithm_name(path: str | Path) -> str:
    """The name of the algorithm that saved a model file (read from its JSON; nothing is built).

    :raises FileNotFoundError: if ``path`` does not exist.
    :raises ValueError: if it is not a corft model file, is damaged, or is in the old pickle-based format.
    """
    return read_model_config(path)["algorithm_name"]


def load_model(path: str | Path, device: str = "auto", **kwargs: Any) -> Any:
    """Load a saved model (a zip, or a ``save_pretrained`` folder) with the class registered under the
    algorithm name stored in it. Nothing in the file runs as code.

    :param path: the model zip or folder.
    :param device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
    :param kwargs: passed to the class's ``load`` (e.g. ``dataset=...``).
    :raises FileNotFoundError: if ``path`` does not exist.
    :raises ValueError: if the file cannot be loaded (see :func:`corft_algos.model_format.read_model`), or names
        an algorithm that is not registered.
    """
    return get_algorithm(saved_algorithm_name(path)).load(path, device=device, **kwargs)
