"""An env's ``gym.make`` arguments from a command's own flags and its ``--env-kwargs``.

A flag such as ``--positions unseen`` and ``--env-kwargs '{"positions": "train"}'`` must not
disagree silently: whichever won, an "unseen" evaluation could run on train positions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def combine_env_kwargs(options: Mapping[str, Any], settings: Mapping[str, tuple[Any, str]]) -> dict[str, Any]:
    """``options`` (``--env-kwargs``) with ``settings`` added: ``{name: (value, where it comes from)}``.

    :raises ValueError: if ``options`` gives a setting's name another value, naming both and where each
        comes from.
    """
    conflicts = [f"--env-kwargs sets {name}={options[name]!r}, {source} sets {value!r}"
                 for name, (value, source) in settings.items() if name in options and options[name] != value]
    if conflicts:
        raise ValueError("; ".join(conflicts) + ": give each setting once, with its own flag")
    return {**options, **{name: value for name, (value, _) in settings.items()}}
