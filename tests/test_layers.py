"""The packages' layering: robots at the bottom (numpy-only contract), corft_envs on it, corft_algos, benchmarks on top."""

import ast
import configparser
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def imported_packages(package: str) -> dict[str, set[str]]:
    """The top-level packages each source file of ``package`` imports (at any depth of the file), by file."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(REPO))] = names
    return found


def layer_violations(package: str, forbidden: set[str]) -> list[str]:
    return [f"{path} imports {sorted(names & forbidden)}"
            for path, names in imported_packages(package).items() if names & forbidden]


@pytest.mark.parametrize("package, forbidden", [
    ("robots", {"corft_envs", "corft_algos", "benchmarks"}),
    ("corft_envs", {"corft_algos", "benchmarks"}),
    ("corft_algos", {"benchmarks"}),
])
def test_a_layer_imports_nothing_from_the_layers_above(package, forbidden):
    assert layer_violations(package, forbidden) == []


def test_the_hardware_layer_loads_without_the_simulator_or_the_algorithms():
    code = ("import sys, corft_robots, corft_robots.safety, corft_robots.base, corft_robots.franka, corft_robots.contract, corft_robots.fr3; "
            "print(sorted(name for name in ('mujoco', 'corft_envs', 'corft_algos') if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


#: The installed name of each top-level source folder (setup.cfg's package_dir: PyPI's "robots" project owns
#: the top-level name robots).
INSTALLED_NAMES = {"corft_envs": "corft_envs", "corft_algos": "corft_algos", "robots": "corft_robots"}


def test_setup_cfg_lists_every_package_under_its_installed_name():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    on_disk = {".".join((INSTALLED_NAMES[init.relative_to(REPO).parts[0]], *init.relative_to(REPO).parts[1:-1]))
               for folder in INSTALLED_NAMES for init in (REPO / folder).rglob("__init__.py")}
    assert listed == on_disk
    assert config["options"]["package_dir"].split() == ["corft_robots", "=", "robots"]


def test_every_module_imports_as_installed_from_outside_the_repository(tmp_path):
    """No module imports a folder's name instead of its installed one (``robots`` for ``corft_robots``), which
    only the repository's root on ``sys.path`` would hide."""
    code = ("import importlib, pkgutil, sys\n"
            "for name in ('corft_robots', 'corft_envs', 'corft_algos'):\n"
            "    package = importlib.import_module(name)\n"
            "    for module in pkgutil.walk_packages(package.__path__, name + '.'):\n"
            "        if not module.name.endswith('.__main__'):  # a command line, run on import\n"
            "            importlib.import_module(module.name)\n"
            "print('robots' in sys.modules, len([m for m in sys.modules if m.startswith('corft_')]))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    imported, count = result.stdout.split()
    assert imported == "False" and int(count) > 50
