"""Collect demonstrations into an episode store: a scripted expert's, or a teleoperator's.

:func:`collect` runs attempt ``k`` with seed ``seed + k`` until the store
holds the requested number of episodes, so a killed run is resumed by running
it again: the :class:`~corft_envs.episode_store.EpisodeWriter` picks up the
finished episodes and the attempt count, and the result equals an
uninterrupted run.

:class:`EpisodeRecorder` buffers step-level transitions. It wraps the
step-level env *below* any action-chunk wrapper, so whatever a policy sends
(one action or a chunk), the store receives one entry per control step.
"""

from __future__ import annotations

import contextlib
import functools
import math
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv
from tqdm import tqdm

from corft_envs.chunking import ActionChunk
from corft_envs.env_arguments import CHUNK_KWARGS, combine_env_kwargs
from corft_envs.episode_store import DatasetMeta, EpisodeData, EpisodeWriter
from corft_envs.experts import make_expert
from corft_envs.rollout import ActionSource, run_episode

#: Attempts allowed per requested episode when ``max_attempts`` is not given.
DEFAULT_ATTEMPTS_PER_EPISODE = 10


class CollectionError(RuntimeError):
    """Collection cannot reach the requested number of episodes."""


class ScriptedPolicy(Protocol):
    """What the collector needs from a scripted expert."""

    def reset(self, seed: int) -> None:
        """Prepare for a new episode started with ``env.reset(seed=seed)``."""

    def act(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """One step-level action."""

    def act_chunk(self, observation: dict[str, np.ndarray], horizon: int) -> np.ndarray:
        """A ``(k, action_dim)`` chunk of actions, ``1 <= k <= horizon``."""


@dataclass
class _EpisodeBuffer:
    seed: int | None
    instruction: str
    observations: list[dict[str, np.ndarray]]
    actions: list[np.ndarray] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    is_success: list[bool] = field(default_factory=list)
    terminated: bool = False
    truncated: bool = False


def _copy_observation(observation: Any) -> dict[str, np.ndarray]:
    if not isinstance(observation, dict):
        raise TypeError(f"EpisodeRecorder needs dict observations, got {type(observation).__name__}")
    return {key: np.array(value, copy=True) for key, value in observation.items()}


class EpisodeRecorder(gym.Wrapper):
    """Buffers the current episode's step-level transitions.

    After the episode ends (terminated or truncated), :meth:`episode` returns
    it as :class:`~corft_envs.episode_store.EpisodeData`: the reset
    observation plus one observation, action, reward and ``info["is_success"]``
    per step, with the reset seed and ``info["instruction"]``. The action kept
    is ``info["applied_action"]`` when the env reports one (the real env: the
    action after the safety layer's clipping), else the one given. A new
    :meth:`reset` starts a new buffer.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._buffer: _EpisodeBuffer | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        observation, info = self.env.reset(seed=seed, options=options)
        self._buffer = _EpisodeBuffer(
            seed=seed,
            instruction=str(info.get("instruction", "")),
            observations=[_copy_observation(observation)],
        )
        return observation, info

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], SupportsFloat, bool, bool, dict[str, Any]]:
        if self._buffer is None:
            raise RuntimeError("EpisodeRecorder.step() called before reset()")
        observation, reward, terminated, truncated, info = self.env.step(action)
        buffer = self._buffer
        executed = info.get("applied_action", action)  # what the real arm's safety layer let through
        buffer.actions.append(np.array(executed, dtype=self.action_space.dtype, copy=True))
        buffer.rewards.append(float(reward))
        buffer.is_success.append(bool(info.get("is_success", False)))
        buffer.observations.append(_copy_observation(observation))
        buffer.terminated, buffer.truncated = bool(terminated), bool(truncated)
        return observation, reward, terminated, truncated, info

    def episode(self) -> EpisodeData:
        """The finished episode.

        :raises RuntimeError: if no episode has ended since the last reset.
        """
        buffer = self._buffer
        if buffer is None or not (buffer.terminated or buffer.truncated):
            raise RuntimeError("EpisodeRecorder.episode() needs a finished episode (terminated or truncated)")
        return EpisodeData(
            observations={key: np.stack([o[key] for o in buffer.observations]) for key in buffer.observations[0]},
            actions=np.stack(buffer.actions),
            rewards=np.asarray(buffer.rewards, dtype=np.float32),
            is_success=np.asarray(buffer.is_success, dtype=bool),
            instruction=buffer.instruction,
            seed=buffer.seed,
            terminated=buffer.terminated,
            truncated=buffer.truncated,
        )


@dataclass(frozen=True)
class CollectConfig:
    """Settings of one collection run (the arguments of ``corft collect``).

    :param env_id: Gymnasium id, e.g. ``"corft/PickPlace-v0"``.
    :param episodes: number of episodes the store must hold at the end.
    :param out: store directory.
    :param positions: object position set, ``"train"``, ``"unseen"`` or ``"all"``.
    :param seed: base seed; attempt ``k`` uses ``seed + k``.
    :param keep_failures: keep unsuccessful attempts as episodes too.
    :param chunk_size: let the expert act in chunks of this many steps.
    :param image_size: camera image side in pixels (env default when ``None``).
    :param max_attempts: stop with an error after this many attempts in total
        (default ``10 * episodes``).
    :param robot_host: for a real env (``corft/FR3Real-<Task>-v0``): the robot's
        address, or ``"twin"`` to rehearse on the simulated twin.
    :param env_options: further ``gym.make`` arguments (JSON values), e.g.
        ``{"cameras": {"front": "<serial>", "wrist": "<serial>"}}``.
    :param workers: sim envs only: run this many attempts at once, each in its own
        process (see :class:`ExpertEpisodes`); the store is the one a single worker writes.
    """

    env_id: str
    episodes: int
    out: Path
    positions: str = "train"
    seed: int = 0
    keep_failures: bool = False
    chunk_size: int | None = None
    image_size: int | None = None
    max_attempts: int | None = None
    robot_host: str | None = None
    env_options: Mapping[str, Any] = field(default_factory=dict)
    workers: int = 1

    @property
    def env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``gym.make`` of the step-level env.

        :raises ValueError: if ``env_options`` contradicts ``positions``, ``image_size`` or ``robot_host``, or
            sets the chunking, which collection applies itself.
        """
        settings: dict[str, tuple[Any, str]] = {"positions": (self.positions, "--positions")}
        if self.image_size is not None:
            settings["image_size"] = (self.image_size, "--image-size")
        if self.robot_host is not None:
            settings["robot_host"] = (self.robot_host, "--robot-host")
        reserved = {name: "corft collect records single steps and chunks the actions itself (--chunk-size K)"
                    for name in CHUNK_KWARGS}
        return combine_env_kwargs(self.env_options, settings, reserved)

    @property
    def attempt_limit(self) -> int:
        """Attempts allowed in total."""
        return self.max_attempts if self.max_attempts is not None else DEFAULT_ATTEMPTS_PER_EPISODE * self.episodes


@dataclass(frozen=True)
class CollectSummary:
    """Outcome of :func:`collect`, counted over the store's whole life.

    :param out: store directory.
    :param episodes: episodes saved.
    :param attempts: attempts made, kept or not.
    :param successes: successful attempts.
    :param mean_length: mean length of the saved episodes, in steps.
    """

    out: Path
    episodes: int
    attempts: int
    successes: int
    mean_length: float

    def line(self) -> str:
        """One-line report for the terminal."""
        rate = 100.0 * self.successes / self.attempts if self.attempts else 0.0
        return (
            f"saved {self.episodes} episodes | success rate {self.successes}/{self.attempts} attempts "
            f"({rate:.1f}%) | mean length {self.mean_length:.1f} steps | {self.out}"
        )


def make_recording_env(
    env_id: str, env_kwargs: dict[str, Any], chunk_size: int | None
) -> tuple[gym.Env, EpisodeRecorder]:
    """Make ``env_id`` with an :class:`EpisodeRecorder` under the chunk wrapper, if any.

    :returns: the env to act in, and the recorder inside it.
    """
    recorder = EpisodeRecorder(gym.make(env_id, **env_kwargs))
    env = recorder if chunk_size is None else ActionChunk(recorder, chunk_size)
    return env, recorder


def scripted_actions(policy: ScriptedPolicy, seed: int, chunk_size: int | None) -> ActionSource:
    """``policy`` as the action source of the episode of ``seed``: reset on the first call, then one action per
    call, or a chunk of up to ``chunk_size``."""

    def act(observation: dict[str, np.ndarray], first: bool) -> np.ndarray:
        if first:
            policy.reset(seed=seed)
        return policy.act(observation) if chunk_size is None else policy.act_chunk(observation, chunk_size)

    return act


def record_episode(
    env: gym.Env, recorder: EpisodeRecorder, policy: ScriptedPolicy, seed: int, chunk_size: int | None
) -> EpisodeData:
    """Run one episode from ``env.reset(seed=seed)`` to its end (:func:`~corft_envs.rollout.run_episode`) and
    return what ``recorder`` saw."""
    run_episode(env, scripted_actions(policy, seed, chunk_size), seed)
    return recorder.episode()


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold a Ctrl-C until the block is done, then raise it, so a commit is never cut short.

    Only where Ctrl-C would raise ``KeyboardInterrupt`` anyway: in the main
    thread, with Python's default SIGINT handler.
    """
    in_main_thread = threading.current_thread() is threading.main_thread()
    if not in_main_thread or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _summarize(writer: EpisodeWriter) -> CollectSummary:
    attempts = writer.episodes + writer.discarded
    lengths = [r.length for r in writer.episodes]
    return CollectSummary(
        out=writer.root,
        episodes=len(writer.episodes),
        attempts=len(attempts),
        successes=sum(r.success for r in attempts),
        mean_length=float(np.mean(lengths)) if lengths else math.nan,
    )


class ExpertEpisodes(gym.Wrapper):
    """A worker of a gymnasium ``AsyncVectorEnv`` that records whole scripted-expert episodes.

    The collector sets each worker's ``assigned_seed`` (``set_attr``) and
    calls :meth:`run_assigned` on all of them (``call``): every worker runs
    its attempt in its own process, as :func:`record_episode` runs it in one.

    :param env_id: the sim env id.
    :param env_kwargs: its ``gym.make`` arguments.
    :param chunk_size: let the expert act in chunks of this many steps.
    """

    def __init__(self, env_id: str, env_kwargs: dict[str, Any], chunk_size: int | None) -> None:
        env, self.recorder = make_recording_env(env_id, env_kwargs, chunk_size)
        super().__init__(env)
        self.expert = make_expert(env)
        self.chunk_size = chunk_size
        self.assigned_seed: int | None = None

    def run_assigned(self) -> EpisodeData | None:
        """The episode of ``assigned_seed``, or ``None`` if no attempt was assigned."""
        if self.assigned_seed is None:
            return None
        return record_episode(self.env, self.recorder, self.expert, self.assigned_seed, self.chunk_size)


def _expert_worker(env_id: str, env_kwargs: dict[str, Any], chunk_size: int | None) -> ExpertEpisodes:
    import corft_envs  # noqa: F401  (registers the ids in a freshly spawned worker)

    return ExpertEpisodes(env_id, env_kwargs, chunk_size)


def _attempts(config: CollectConfig, writer: EpisodeWriter, run_batch: Callable[[list[int]], list[EpisodeData]],
              batch: int, progress: bool) -> None:
    """Run attempts ``batch`` at a time and add them in order until the store is full.

    Attempts computed beyond the last one needed are dropped unseen, so the
    store is the one one attempt at a time would write.
    """
    done = min(len(writer.episodes), config.episodes)
    with tqdm(total=config.episodes, initial=done, unit="episode", desc=config.env_id, disable=not progress) as bar:
        while len(writer.episodes) < config.episodes:
            if writer.next_attempt >= config.attempt_limit:
                raise CollectionError(
                    f"stopped after {writer.next_attempt} attempts with {len(writer.episodes)} of "
                    f"{config.episodes} episodes in {writer.root}: the expert rarely succeeds here. "
                    "Raise --max-attempts, or pass --keep-failures to keep unsuccessful episodes"
                )
            first = writer.next_attempt
            seeds = [config.seed + k for k in range(first, min(first + batch, config.attempt_limit))]
            for episode in run_batch(seeds):
                if len(writer.episodes) >= config.episodes:
                    break
                with _sigint_deferred():
                    record = writer.add(episode, keep=episode.success or config.keep_failures)
                summary = _summarize(writer)
                bar.set_postfix(attempts=summary.attempts, successes=summary.successes, refresh=False)
                bar.update(record.file is not None)


def _fill(writer: EpisodeWriter, env: gym.Env, recorder: EpisodeRecorder, policy: ScriptedPolicy,
          config: CollectConfig, progress: bool) -> None:
    def one(seeds: list[int]) -> list[EpisodeData]:
        return [record_episode(env, recorder, policy, seeds[0], config.chunk_size)]

    _attempts(config, writer, one, 1, progress)


def _fill_in_parallel(writer: EpisodeWriter, config: CollectConfig, progress: bool) -> None:
    make = functools.partial(_expert_worker, config.env_id, config.env_kwargs, config.chunk_size)
    # spawn, not fork: a forked child inherits locks held by this process's threads and can hang
    envs = AsyncVectorEnv([make] * config.workers, shared_memory=False, context="spawn")

    def batch(seeds: list[int]) -> list[EpisodeData]:
        envs.set_attr("assigned_seed", seeds + [None] * (config.workers - len(seeds)))
        return [episode for episode in envs.call("run_assigned") if episode is not None]

    try:
        _attempts(config, writer, batch, config.workers, progress)
    finally:
        envs.close()


def collect(
    config: CollectConfig,
    *,
    progress: bool = True,
    make_policy: Callable[[gym.Env], ScriptedPolicy] = make_expert,
) -> CollectSummary:
    """Collect episodes into ``config.out`` until it holds ``config.episodes``.

    Resumes whatever the directory already holds. Ctrl-C (``KeyboardInterrupt``)
    never cuts the saving of an episode short: finished episodes stay saved
    and indexed, an unfinished one is dropped, and the exception propagates.

    :param config: what to collect and where.
    :param progress: show a progress bar on stderr.
    :param make_policy: builds the acting policy from the env to act in;
        the task's scripted expert by default.
    :raises DatasetError: if ``config.out`` holds data collected with other settings.
    :raises CollectionError: if ``config.attempt_limit`` is reached first.
    """
    if config.workers > 1 and (make_policy is not make_expert or config.robot_host is not None):
        raise ValueError("workers > 1 runs the scripted expert in sim envs only: use one worker for teleoperation, "
                         "a trained policy, and the real arm or its twin")
    env, recorder = make_recording_env(config.env_id, config.env_kwargs, config.chunk_size)
    try:
        policy = make_policy(env) if config.workers == 1 else None  # refuses before anything is written
        meta = DatasetMeta(
            env_id=config.env_id,
            env_kwargs=config.env_kwargs,
            observation_space=recorder.observation_space,
            action_space=recorder.action_space,
            chunk_size=config.chunk_size,
            seed=config.seed,
            keep_failures=config.keep_failures,
        )
        with EpisodeWriter(config.out, meta) as writer:
            if policy is None:
                env.close()
                _fill_in_parallel(writer, config, progress)
            else:
                _fill(writer, env, recorder, policy, config, progress)
            return _summarize(writer)
    finally:
        env.close()
