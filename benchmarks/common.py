"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import TypeVar

ArgsT = TypeVar("ArgsT")


def parse_dataclass_args(args_class: type[ArgsT], description: str) -> ArgsT:
    """Command-line flags ``--field-name`` for every field of a dataclass of settings, defaults kept.

    A ``bool`` field gets ``--field-name`` and ``--no-field-name``.
    """
    parser = argparse.ArgumentParser(description=description)
    for field in fields(args_class):
        flag = f"--{field.name.replace('_', '-')}"
        if isinstance(field.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default)
        else:
            parser.add_argument(flag, type=type(field.default), default=field.default)
    return args_class(**vars(parser.parse_args()))
