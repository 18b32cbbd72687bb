"""Execute a chunk of actions as one step: the interface chunked policies act through."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import TimeLimit

from corft_envs.tasks import get_task


def check_chunk_settings(chunk_size: int, gamma: float) -> None:
    """Raise a ``ValueError`` unless ``chunk_size`` is an integer >= 1 and ``gamma`` a discount in (0, 1].

    The one check of the two settings every chunked piece takes: :class:`ActionChunk`, the algorithms
    (:class:`corft_algos.common.base.OfflineAlgorithm`) and their dataset.

    :param chunk_size: H, the number of actions per chunk (a bool is refused, though Python counts it an int).
    :param gamma: the per-step discount.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1 (the number of actions per chunk), got {chunk_size!r}")
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must satisfy 0 < gamma <= 1 (the per-step discount), got {gamma!r}")


@runtime_checkable
class ChunkValidator(Protocol):
    """An env that checks a whole chunk of actions before any of it runs (the real arm's safety layer).

    :class:`ActionChunk` checks its base env (``env.unwrapped``) against this protocol and, when it
    conforms, calls ``validate_chunk`` with the ``(count, d)`` actions it is about to execute, before the
    first of them is sent. The contract: validate the whole chunk, send nothing, and reject it by raising
    an exception whose message names what is wrong (e.g. :class:`corft_robots.safety.SafetyViolation`).
    Returning accepts the chunk; ``ActionChunk`` ignores the returned value. Envs that do not conform get
    ``ActionChunk``'s own check (every action finite) instead.
    """

    def validate_chunk(self, actions: np.ndarray) -> object:
        """Raise if any action of ``actions`` may not be sent; send nothing."""


class ActionChunk(gym.Wrapper):
    """Run up to ``chunk_size`` single-step actions per ``step`` call.

    ``step(actions)`` takes an array of shape ``(k, d)`` with ``1 <= k <= chunk_size``
    and executes its first ``min(k, execute)`` actions in order, stopping at the
    first terminated or truncated step (whose observation it returns). The
    reward is the discounted sum ``Σ_i γ^i r_i`` over executed steps (``gamma=1``:
    the plain sum). ``info`` is the last step's, plus ``chunk_len`` (steps
    executed), ``chunk_rewards`` (their rewards, zero-padded to the ``min(k, execute)``
    actions the chunk offered, so the infos of vectorized envs stack when an
    episode ends inside a chunk) and ``is_success`` (true if any executed step
    succeeded).

    If the base env is a :class:`ChunkValidator` (the real arm's whole-chunk
    safety check), its ``validate_chunk`` is called with the actions to execute
    before the first of them is sent, and may raise to reject the chunk.

    Wrap it around the step-level :class:`~gymnasium.wrappers.TimeLimit` so the
    episode limit still counts single steps; ``gym.make(env_id, chunk_size=H)``
    does so.

    :param env: a step-level env with a 1-D ``Box`` action space.
    :param chunk_size: H, the most actions one chunk may hold.
    :param gamma: per-step discount of the chunk reward, in (0, 1].
    :param execute: run only the first ``execute`` actions of each chunk
        (receding horizon); ``None`` runs them all.
    """

    def __init__(self, env: gym.Env, chunk_size: int, gamma: float = 1.0, execute: int | None = None) -> None:
        super().__init__(env)
        base = env.action_space
        if not isinstance(base, spaces.Box) or len(base.shape) != 1:
            raise ValueError(f"ActionChunk needs a 1-D Box action space, got {base}")
        check_chunk_settings(chunk_size, gamma)
        if execute is not None and not 1 <= execute <= chunk_size:
            raise ValueError(f"execute must be in [1, chunk_size={chunk_size}] or None, got {execute}")
        self.chunk_size, self.gamma, self.execute = int(chunk_size), float(gamma), execute
        self.action_space = spaces.Box(
            np.broadcast_to(base.low, (self.chunk_size, *base.shape)),
            np.broadcast_to(base.high, (self.chunk_size, *base.shape)),
            dtype=base.dtype,
        )

    def step(self, actions: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        actions = np.asarray(actions)
        action_dim = self.env.action_space.shape[0]
        if actions.ndim != 2 or actions.shape[1] != action_dim or not 1 <= len(actions) <= self.chunk_size:
            raise ValueError(
                f"a chunk must have shape (k, {action_dim}) with 1 <= k <= chunk_size={self.chunk_size}, "
                f"got {actions.shape}"
            )
        count = len(actions) if self.execute is None else min(len(actions), self.execute)
        base_env = self.env.unwrapped
        if isinstance(base_env, ChunkValidator):  # e.g. the real arm's safety check, before any action is sent
            base_env.validate_chunk(actions[:count])
        elif not np.all(np.isfinite(actions[:count])):  # the whole chunk, before any of it runs
            rows = sorted({int(row) for row in np.argwhere(~np.isfinite(actions[:count]))[:, 0]})
            raise ValueError(f"the chunk's actions {rows} are not finite (NaN or inf); nothing of it was run")
        rewards: list[float] = []
        success = False
        for action in actions[:count]:
            observation, reward, terminated, truncated, info = self.env.step(action)
            rewards.append(float(reward))
            success = success or bool(info.get("is_success", False))
            if terminated or truncated:
                break
        discounts = self.gamma ** np.arange(len(rewards))
        info = {
            **info,
            "chunk_len": len(rewards),
            "chunk_rewards": np.pad(np.asarray(rewards), (0, count - len(rewards))),
            "is_success": success,
        }
        return observation, float(discounts @ np.asarray(rewards)), terminated, truncated, info


def make_task_env(
    env_class: Callable[..., gym.Env],
    task: str,
    chunk_size: int | None = None,
    gamma: float = 1.0,
    execute: int | None = None,
    **env_kwargs: Any,
) -> gym.Env:
    """What the registered ids' entry points return: ``env_class(task=task, **env_kwargs)``, chunked if asked.

    Without ``chunk_size`` it returns the step-level env, and ``gym.make`` adds
    the step limit. With ``chunk_size=H`` the step limit goes *inside* the
    chunk wrapper, ``ActionChunk(TimeLimit(env, max_episode_steps), H)``, so it
    keeps counting single steps (``gym.make``'s own ``TimeLimit`` then counts
    chunks and never fires first).

    :param env_class: the env class (sim or real) taking ``task`` and ``env_kwargs``.
    :param task: the task name, set by the registration.
    :param chunk_size: H for the :class:`ActionChunk` wrapper, or ``None``.
    :param gamma: the chunk reward's per-step discount.
    :param execute: run only the first ``execute`` actions of a chunk.
    """
    if chunk_size is None and (gamma != 1.0 or execute is not None):
        raise ValueError(f"gamma={gamma} and execute={execute} set how chunks run and are rewarded: "
                         "pass chunk_size=H too, or leave them out for the step-level env")
    env = env_class(task=task, **env_kwargs)
    if chunk_size is None:
        return env
    limited = TimeLimit(env, get_task(task).max_episode_steps)
    return ActionChunk(limited, chunk_size=chunk_size, gamma=gamma, execute=execute)


def make_chunked_env(env_id: str, env_kwargs: dict[str, Any], chunk_size: int, execute: int | None = None) -> ActionChunk:
    """``ActionChunk(gym.make(env_id, **env_kwargs), chunk_size, execute=execute)``: an evaluation env.

    A module-level function of ``corft_envs``, so a worker process started
    with ``spawn`` can build it after importing only this package.
    """
    import corft_envs  # noqa: F401  (registers the ids in a fresh worker process)

    return ActionChunk(gym.make(env_id, **env_kwargs), chunk_size=chunk_size, execute=execute)
