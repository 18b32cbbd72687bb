"""The one episode loop: reset an env with a seed, step it with what an action source gives, until the episode ends.

:func:`run_episode` serves collection (:func:`corft_envs.collection.record_episode`: a scripted expert or a
trained policy, the store recorded by an :class:`~corft_envs.collection.EpisodeRecorder` inside the env) and
evaluation (:func:`corft_algos.evaluation.evaluate_episode`: a model's chunks, video frames kept by a
:class:`~corft_algos.evaluation.FrameRecorder` inside the env). Vectorized evaluation steps several envs in
lockstep, so it cannot run this loop; it keeps each episode's totals in the same :class:`EpisodeTally`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from corft_robots.contract import CONTROL_PERIOD

#: The action (or chunk) to step with for an observation; the flag is true on the episode's first call.
ActionSource = Callable[[Any, bool], np.ndarray]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpisodeOutcome:
    """How one episode went.

    :param seed: the ``reset`` seed.
    :param success: whether the task succeeded.
    :param steps: control steps executed (the sum of the chunks' ``chunk_len``).
    :param cycle_time_s: ``steps`` in seconds (10 Hz control).
    :param instruction: the episode's language instruction.
    :param episode_return: undiscounted sum of rewards (1 for a success, sparse reward).
    :param video: path of the episode's mp4, if recorded.
    :param rejected: on the real arm, why the safety layer rejected a chunk, which
        ended the episode as a failure (nothing of that chunk was sent).
    :param first_lifted: sim envs: the index of the first object the episode lifted (0: the one the
        instruction names; -1: none), ``None`` where the env does not report it.
    """

    seed: int
    success: bool
    steps: int
    cycle_time_s: float
    instruction: str
    episode_return: float
    video: str | None = None
    rejected: str | None = None
    first_lifted: int | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the return under the key ``"return"``)."""
        return {"seed": self.seed, "success": self.success, "steps": self.steps,
                "cycle_time_s": self.cycle_time_s, "instruction": self.instruction,
                "return": self.episode_return, "video": self.video, "rejected": self.rejected,
                "first_lifted": self.first_lifted}


@dataclass
class EpisodeTally:
    """The running totals of one episode, added up step by step (see :meth:`add`).

    :param seed: the ``reset`` seed.
    :param instruction: the episode's language instruction.
    """

    seed: int
    instruction: str
    steps: int = 0
    episode_return: float = 0.0
    success: bool = False
    first_lifted: int | None = None

    @property
    def first(self) -> bool:
        """Whether nothing has been stepped yet (the next action starts the episode)."""
        return self.steps == 0

    def add(self, reward: SupportsFloat, info: Mapping[str, Any]) -> None:
        """Count one ``env.step``: its control steps (``info["chunk_len"]``, 1 without a chunk wrapper), reward,
        success (once reached, kept) and ``info["first_lifted"]`` where the env reports it."""
        self.steps += int(info.get("chunk_len", 1))
        self.episode_return += float(reward)
        self.success = self.success or bool(info.get("is_success", False))
        if "first_lifted" in info:
            self.first_lifted = int(info["first_lifted"])

    def outcome(self, rejected: str | None = None) -> EpisodeOutcome:
        """The episode as it stands, ended (by a rejected chunk if ``rejected`` says why)."""
        return EpisodeOutcome(seed=self.seed, success=self.success, steps=self.steps,
                              cycle_time_s=self.steps * CONTROL_PERIOD, instruction=self.instruction,
                              episode_return=self.episode_return, rejected=rejected, first_lifted=self.first_lifted)


def run_episode(
    env: gym.Env, act: ActionSource, seed: int, ends_episode: tuple[type[Exception], ...] = ()
) -> EpisodeOutcome:
    """One episode from ``env.reset(seed=seed)``: step ``act(observation, first)`` until it terminates or truncates.

    :param env: the env to act in (wrappers inside it record what they need: transitions, frames).
    :param act: the action source; a scripted expert is reset by it on the first call.
    :param seed: the ``reset`` seed.
    :param ends_episode: exceptions of ``env.step`` that end the episode as a failure, their message in
        :attr:`EpisodeOutcome.rejected` (the real arm's :class:`~corft_robots.safety.SafetyViolation` in evaluation);
        any other propagates.
    """
    observation, info = env.reset(seed=seed)
    tally = EpisodeTally(seed, str(info.get("instruction", "")))
    terminated = truncated = False
    while not (terminated or truncated):
        action = act(observation, tally.first)
        try:
            observation, reward, terminated, truncated, info = env.step(action)
        except ends_episode as error:
            _log.warning("episode with seed %d ends as a failure: %s", seed, error)
            return tally.outcome(rejected=str(error))
        tally.add(reward, info)
    return tally.outcome()
