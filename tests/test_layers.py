"""The packages' layering: robots at the bottom (numpy-only contract), corft_envs on it, corft_algos, benchmarks on top."""

import ast
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
    code = ("import sys, robots, robots.safety, robots.base, robots.franka, robots.contract, robots.fr3; "
            "print(sorted(name for name in ('mujoco', 'corft_envs', 'corft_algos') if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
