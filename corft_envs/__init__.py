"""Gymnasium environments of corft: the simulated FR3 tabletop tasks.

Importing this package registers ``corft/PickPlace-v0``, ``corft/Push-v0`` and
``corft/Stack-v0``. ``gym.make(env_id, chunk_size=H)`` returns the env behind
an :class:`~corft_envs.chunking.ActionChunk` wrapper.
"""

from __future__ import annotations

import os

# Headless by default: without a display, MuJoCo renders through EGL (set before mujoco is imported).
if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
    os.environ["MUJOCO_GL"] = "egl"

import gymnasium as gym  # noqa: E402
from gymnasium.wrappers import TimeLimit  # noqa: E402

from corft_envs.chunking import ActionChunk  # noqa: E402
from corft_envs.sim_env import FR3TabletopEnv  # noqa: E402
from corft_envs.tasks import TASKS, get_task  # noqa: E402

__all__ = ["ActionChunk", "FR3TabletopEnv", "SIM_ENV_IDS", "make_sim_env"]


def make_sim_env(
    task: str,
    chunk_size: int | None = None,
    gamma: float = 1.0,
    execute: int | None = None,
    **env_kwargs,
) -> gym.Env:
    """Entry point of the registered sim envs.

    Without ``chunk_size`` it returns :class:`FR3TabletopEnv`, and ``gym.make``
    adds the step limit. With ``chunk_size=H`` the step limit goes *inside* the
    chunk wrapper, ``ActionChunk(TimeLimit(env, max_episode_steps), H)``, so
    it keeps counting single steps (``gym.make``'s own ``TimeLimit`` then
    counts chunks and never fires first).

    :param task: the task name, set by the registration.
    :param chunk_size: H for the :class:`ActionChunk` wrapper, or ``None``.
    :param gamma: the chunk reward's per-step discount.
    :param execute: run only the first ``execute`` actions of a chunk.
    :param env_kwargs: :class:`FR3TabletopEnv` arguments (``positions``, ``image_size``, ...).
    """
    env = FR3TabletopEnv(task=task, **env_kwargs)
    if chunk_size is None:
        return env
    env = TimeLimit(env, get_task(task).max_episode_steps)
    return ActionChunk(env, chunk_size=chunk_size, gamma=gamma, execute=execute)


SIM_ENV_IDS = tuple(f"corft/{name}-v0" for name in TASKS)

for _name, _task in TASKS.items():
    gym.register(
        id=f"corft/{_name}-v0",
        entry_point=make_sim_env,
        kwargs={"task": _name},
        max_episode_steps=_task.max_episode_steps,
    )
