"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import TypeVar

ArgsT = TypeVar("ArgsT")


def parse_dataclass_args(args_class: type[ArgsT], description: str) -> ArgsT:
    """Command-line flags ``--field-name`` for every field of a dataclass of settings, defaults kept."""
    parser = argparse.ArgumentParser(description=description)
    for field in fields(args_class):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default), default=field.default)
    return args_class(**vars(parser.parse_args()))
