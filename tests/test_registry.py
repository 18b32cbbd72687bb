"""The algorithm registry: built-in names, third-party algorithms through the ``corft.algorithms`` entry points."""

import importlib
import sys
import textwrap

import pytest

from corft_algos import CORFT, SFT
from corft_algos import registry
from corft_algos.registry import ENTRY_POINT_GROUP, available_algorithms, get_algorithm, register_algorithm

BUILT_IN = ["bc", "corft", "offline_rl_h1", "sft"]


@pytest.fixture
def isolated_registry(monkeypatch):
    """A copy of the registry that the test may change; the original comes back afterwards."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


@pytest.fixture
def toy_distribution(tmp_path, monkeypatch, isolated_registry):
    """An installed-looking distribution on sys.path that declares the ``toy`` algorithm as an entry point."""
    (tmp_path / "toy_corft_plugin.py").write_text(textwrap.dedent('''
        """A third-party algorithm: SFT under another name."""
        from corft_algos.sft import SFT


        class ToyAlgorithm(SFT):
            algorithm_name = "toy"
    '''))
    dist_info = tmp_path / "toy_corft_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-corft-plugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\ntoy = toy_corft_plugin:ToyAlgorithm\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield
    sys.modules.pop("toy_corft_plugin", None)


def test_built_in_algorithms_are_registered_by_name():
    assert set(BUILT_IN) <= set(available_algorithms())
    assert get_algorithm("corft") is CORFT
    assert get_algorithm("sft") is SFT


def test_entry_point_algorithm_is_found(toy_distribution):
    algorithm = get_algorithm("toy")
    assert algorithm.__module__ == "toy_corft_plugin" and algorithm.__name__ == "ToyAlgorithm"
    assert issubclass(algorithm, SFT)
    assert available_algorithms() == sorted([*BUILT_IN, "toy"])


def test_entry_points_are_listed_before_any_lookup(toy_distribution):
    assert "toy" in available_algorithms()
    assert get_algorithm("toy").algorithm_name == "toy"


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown algorithm 'sac'; registered: bc, corft, offline_rl_h1, sft$"):
        get_algorithm("sac")


def test_registering_is_idempotent_and_names_are_unique(isolated_registry):
    assert register_algorithm("sft", SFT) is SFT
    with pytest.raises(ValueError, match="'sft' is already registered to SFT"):
        register_algorithm("sft", CORFT)
    register_algorithm("my_sft", SFT)
    assert get_algorithm("my_sft") is SFT
