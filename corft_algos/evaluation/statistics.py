"""The statistics of an evaluation: the success rate with its Wilson 95% interval, the cycle time, the report.

The cycle time is the mean number of control steps of the *successful* episodes, and the same in seconds
(steps x the 10 Hz control period).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from corft_envs.rollout import EpisodeOutcome
from corft_robots.contract import CONTROL_PERIOD


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial success rate (``z=1.96``: 95%).

    ``center = (p + z²/2n) / (1 + z²/n)``, ``half = z √(p(1-p)/n + z²/4n²) / (1 + z²/n)``.

    :param successes: number of successes, ``0 <= successes <= n``.
    :param n: number of trials, at least 1.
    :param z: the normal quantile of the two-sided confidence level.
    :raises ValueError: if the counts are impossible.
    """
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got successes={successes}, n={n}")
    p = successes / n
    denominator = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


@dataclass(frozen=True)
class EvalResult:
    """The episodes of an evaluation; the summary statistics are computed from ``episodes``.

    :param env_id: the Gymnasium id evaluated on.
    :param positions: the object position set (``"train"``, ``"unseen"``, ``"all"``).
    :param seed: seed of the first episode (episode ``k`` used ``seed + k``).
    :param episodes: one record per episode, in order (at least one).
    """

    env_id: str
    positions: str
    seed: int
    episodes: list[EpisodeOutcome]

    def __post_init__(self) -> None:
        if not self.episodes:
            raise ValueError("an EvalResult needs at least one episode")

    @property
    def num_episodes(self) -> int:
        """Number of episodes run."""
        return len(self.episodes)

    @property
    def successes(self) -> int:
        """Number of successful episodes."""
        return sum(record.success for record in self.episodes)

    @property
    def success_rate(self) -> float:
        """Fraction of successful episodes."""
        return self.successes / self.num_episodes

    @property
    def success_ci95(self) -> tuple[float, float]:
        """Wilson 95% interval of the success rate."""
        return wilson_interval(self.successes, self.num_episodes)

    @property
    def cycle_time_steps(self) -> float | None:
        """Mean control steps of the successful episodes; ``None`` if none succeeded."""
        steps = [record.steps for record in self.episodes if record.success]
        return float(np.mean(steps)) if steps else None

    @property
    def cycle_time_s(self) -> float | None:
        """:attr:`cycle_time_steps` in seconds (x the control period); ``None`` if none succeeded."""
        steps = self.cycle_time_steps
        return None if steps is None else steps * CONTROL_PERIOD

    @property
    def named_object_first_rate(self) -> float | None:
        """Fraction of the episodes whose first lifted object was the one the instruction names (an episode
        that lifted nothing counts against it); ``None`` where the env does not report lifts."""
        lifted = [record.first_lifted for record in self.episodes]
        if any(value is None for value in lifted):
            return None
        return sum(value == 0 for value in lifted) / len(lifted)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: the summary statistics, the settings and every episode."""
        return {
            "env_id": self.env_id,
            "positions": self.positions,
            "num_episodes": self.num_episodes,
            "seed": self.seed,
            "success_rate": self.success_rate,
            "success_ci95": list(self.success_ci95),
            "cycle_time_steps": self.cycle_time_steps,
            "cycle_time_s": self.cycle_time_s,
            "named_object_first_rate": self.named_object_first_rate,
            "episodes": [record.to_json() for record in self.episodes],
        }
