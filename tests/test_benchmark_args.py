"""The benchmark scripts' flags: one per settings field, with its type; bools switch both ways."""

from dataclasses import dataclass

import pytest

from benchmarks.common import parse_dataclass_args


@dataclass
class Settings:
    episodes: int = 5
    dynamics_factor: float = 0.1
    model: str = ""
    distractors: bool = True


def parse(monkeypatch, *argv: str) -> Settings:
    monkeypatch.setattr("sys.argv", ["benchmark", *argv])
    return parse_dataclass_args(Settings, "test")


def test_defaults_are_kept_and_values_take_the_field_type(monkeypatch):
    assert parse(monkeypatch) == Settings()
    assert parse(monkeypatch, "--episodes", "3", "--dynamics-factor", "0.3", "--model", "m.zip") == Settings(
        episodes=3, dynamics_factor=0.3, model="m.zip")


def test_bool_fields_switch_off_and_on(monkeypatch):
    assert parse(monkeypatch, "--no-distractors").distractors is False
    assert parse(monkeypatch, "--distractors").distractors is True


def test_a_bad_value_is_refused(monkeypatch):
    with pytest.raises(SystemExit):
        parse(monkeypatch, "--episodes", "many")
