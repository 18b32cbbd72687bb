"""Check constructor arguments from the command line against the constructors' type hints, before building.

``--algo-kwargs '{"max_grad_norm": "x"}'`` would otherwise pass construction and fail at the first
gradient step; ``--policy-kwargs '{"d_model": "x"}'`` deep inside torch. The checks here cover the
types the constructors use (``int``, ``float``, ``bool``, ``str``, ``None``, unions of them, sequences
and mappings); an annotation they do not understand accepts any value.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any


def constructor_type_hints(klass: type) -> dict[str, Any]:
    """The type hints of the ``__init__`` parameters along ``klass``'s MRO (a subclass's win)."""
    hints: dict[str, Any] = {}
    for base in reversed(klass.__mro__):
        if "__init__" in vars(base):
            try:
                hints.update(typing.get_type_hints(vars(base)["__init__"]))
            except (NameError, TypeError):  # an annotation that does not resolve here: leave it unchecked
                continue
    hints.pop("return", None)
    return hints


def constructor_parameters(klass: type, below: type = object) -> set[str]:
    """Names of the arguments ``klass``'s constructors along its MRO take (``self``, ``*args`` and ``**kwargs``
    left out).

    :param below: count only the constructors of the classes that derive from it, not its own nor its bases'.
    """
    return {name for base in klass.__mro__ if "__init__" in vars(base) and base is not below and issubclass(base, below)
            for name in inspect.signature(vars(base)["__init__"]).parameters} - {"self", "args", "kwargs"}


def fits(value: Any, annotation: Any) -> bool:
    """Whether ``value`` is of the type ``annotation`` names (an int fits ``float``; a bool fits neither)."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if annotation is type(None) or annotation is None:
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, option) for option in typing.get_args(annotation))
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    container = origin or annotation
    if isinstance(container, type) and issubclass(container, Sequence) and container is not str:
        if not isinstance(value, (list, tuple)):
            return False
        items = [item for item in typing.get_args(annotation) if item is not Ellipsis]
        return len(items) != 1 or all(fits(item, items[0]) for item in value)
    if container in (dict, Mapping):
        return isinstance(value, Mapping)
    return True


def type_problems(values: Mapping[str, Any], hints: Mapping[str, Any]) -> list[str]:
    """One line per value that does not fit its parameter's hint: ``name=value is not <hint>``."""
    return [f"{name}={value!r} is not {_describe(hints[name])}" for name, value in values.items()
            if name in hints and not fits(value, hints[name])]


def _describe(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("collections.abc.", "")
