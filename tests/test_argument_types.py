"""Command-line constructor arguments checked against the constructors' type hints, by hand."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import pytest

from corft_algos import CORFT
from corft_algos.argument_types import constructor_type_hints, fits, type_problems


@pytest.mark.parametrize("value, annotation, expected", [
    (3, int, True), (True, int, False), (3.0, int, False),
    (3, float, True), (2.5, float, True), (False, float, False), ("2.5", float, False),
    (True, bool, True), (1, bool, False),
    (None, int | None, True), ("x", int | None, False),
    ([1, 2.5], Sequence[float], True), ([1, "a"], Sequence[float], False), ("ab", Sequence[float], False),
    ((0.0, 1.0), tuple[float, float] | None, True), ({"a": 1}, dict[str, Any] | None, True),
    ([1], dict[str, Any], False), ("cosine", Literal["cosine", "constant"], True),
    ("linear", Literal["cosine", "constant"], False), (object(), Any, True),
])
def test_fits_by_hand(value, annotation, expected):
    assert fits(value, annotation) is expected


def test_hints_come_from_every_constructor_of_the_algorithm():
    hints = constructor_type_hints(CORFT)
    assert hints["max_grad_norm"] is float and "actor_q_weight" in hints and "return" not in hints
    assert type_problems({"max_grad_norm": "x", "batch_size": 64, "unknown": "y"}, hints) == [
        "max_grad_norm='x' is not float"]
