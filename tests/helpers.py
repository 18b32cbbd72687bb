"""What several test modules share: the tiny policy, an algorithm factory, a `corft train` command line, a scripted
expert that fails on odd seeds, the success label of a video frame, and polling.

The fixtures (tiny dataset, envs, one observation) live in ``conftest.py``; this module holds the plain values and
functions, imported as ``from tests.helpers import ...``.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from corft_algos.common.base import OfflineAlgorithm
from corft_algos.labelled_video import FrameLayout
from corft_algos.registry import get_algorithm
from corft_envs.experts import make_expert

if TYPE_CHECKING:
    from corft_robots.franka import FrankaArm

#: The smallest SigLIP-tower policy the algorithms train: fast on a CPU, every part present.
TINY_POLICY: dict[str, Any] = {
    "d_model": 32,
    "vision_arch": "siglip",
    "vision_pooling": "attention",
    "vision_tokens": 2,
    "proprio_dims": None,
    "vision_config": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
    "fusion_layers": 1,
    "heads": 2,
    "critic_layers": 1,
}

#: Each built-in algorithm's settings for a few-step run (short phases, no warm-up).
ALGORITHM_KWARGS: dict[str, dict[str, Any]] = {
    "bc": {},
    "sft": {"chunk_size": 4},
    "offline_rl_h1": {"il_steps": 2, "critic_warmup_steps": 0, "policy_delay": 1},
    "corft": {"chunk_size": 4, "il_steps": 2, "critic_warmup_steps": 0, "policy_delay": 1},
}

#: Actions per chunk of :func:`train_args`' runs.
CHUNK = 10


def make_algorithm(name: str, dataset: Path, **overrides: Any) -> OfflineAlgorithm:
    """The registered algorithm ``name`` with :data:`TINY_POLICY` and :data:`ALGORITHM_KWARGS`, on ``dataset``.

    :param overrides: constructor arguments replacing the defaults.
    """
    kwargs = {"batch_size": 4, "seed": 0, "policy_kwargs": TINY_POLICY, **ALGORITHM_KWARGS[name], **overrides}
    return get_algorithm(name)(dataset=dataset, **kwargs)


def train_args(data: Path, out: Path, steps: int, *extra: str) -> list[str]:
    """``corft train`` arguments: ``steps`` SFT steps of :data:`TINY_POLICY` on CPU, a checkpoint every 2, quiet."""
    return ["train", "--algo", "sft", "--data", str(data), "--out", str(out), "--steps", str(steps),
            "--batch-size", "4", "--chunk-size", str(CHUNK), "--checkpoint-every", "2", "--log-interval", "2",
            "--policy-kwargs", json.dumps(TINY_POLICY), "--device", "cpu", "--threads", "1", "--quiet", *extra]


class IdleOnOddSeeds:
    """The scripted expert, except that on odd seeds it holds still, so those attempts time out."""

    def __init__(self, env) -> None:
        self._expert = make_expert(env)
        self._idle = False

    def reset(self, seed: int) -> None:
        self._expert.reset(seed)
        self._idle = seed % 2 == 1

    def act(self, observation: dict) -> np.ndarray:
        return np.zeros(7, np.float32) if self._idle else self._expert.act(observation)

    def act_chunk(self, observation: dict, horizon: int) -> np.ndarray:
        return np.zeros((horizon, 7), np.float32) if self._idle else self._expert.act_chunk(observation, horizon)


def success_pixels(frame: np.ndarray, layout: FrameLayout) -> int:
    """Pixels of a labelled video frame's text panel in the colour of a success label (green)."""
    panel = frame[layout.panel_top:].astype(int)
    red, green, blue = panel[..., 0], panel[..., 1], panel[..., 2]
    return int(((green > red + 80) & (green > blue + 60)).sum())


def wait_for_files(folder: Path, pattern: str, process: subprocess.Popen[str], count: int = 1,
                   timeout: float = 300.0) -> None:
    """Poll until ``folder`` holds ``count`` files matching ``pattern``, written by the running ``process``.

    ``timeout`` only bounds a hung process (it returns as soon as the files are there): a starved CPU can take
    a minute over what is 2 s on a quiet one.

    :raises AssertionError: if ``process`` exits first, or ``timeout`` seconds pass.
    """
    deadline = time.monotonic() + timeout
    while len(list(folder.glob(pattern))) < count:
        assert process.poll() is None, f"{process.args} exited early: {process.communicate()}"
        assert time.monotonic() < deadline, f"{process.args} wrote no {count} x {folder / pattern} in {timeout} s"
        time.sleep(0.01)


def sent_since(arm: FrankaArm, before: dict[str, int]) -> dict[str, int]:
    """Commands of each kind ``arm``'s driver handed to franky since ``before`` (an earlier ``commands_sent``)."""
    return {kind: count - before[kind] for kind, count in arm.commands_sent.items()}
