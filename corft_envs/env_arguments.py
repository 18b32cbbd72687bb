"""An env's ``gym.make`` arguments from a command's own flags and its ``--env-kwargs``.

A flag such as ``--positions unseen`` and ``--env-kwargs '{"positions": "train"}'`` must not
disagree silently: whichever won, an "unseen" evaluation could run on train positions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


#: Chunking arguments of the envs, which ``corft collect`` and ``corft eval`` apply themselves (they wrap the
#: step-level env in :class:`~corft_envs.chunking.ActionChunk`); in ``--env-kwargs`` they would wrap it twice.
CHUNK_KWARGS = ("chunk_size", "gamma", "execute")


def combine_env_kwargs(options: Mapping[str, Any], settings: Mapping[str, tuple[Any, str]],
                       reserved: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``options`` (``--env-kwargs``) with ``settings`` added: ``{name: (value, where it comes from)}``.

    :param reserved: arguments ``options`` may not hold at all, each with what to use instead (the command
        sets them another way, e.g. the chunking it applies itself).
    :raises ValueError: if ``options`` holds a reserved name, or gives a setting's name another value, naming
        both and where each comes from.
    """
    taken = [f"--env-kwargs may not set {name}: {advice}" for name, advice in (reserved or {}).items()
             if name in options]
    if taken:
        raise ValueError("; ".join(taken))
    conflicts = [f"--env-kwargs sets {name}={options[name]!r}, {source} sets {value!r}"
                 for name, (value, source) in settings.items() if name in options and options[name] != value]
    if conflicts:
        raise ValueError("; ".join(conflicts) + ": give each setting once, with its own flag")
    return {**options, **{name: value for name, (value, _) in settings.items()}}
