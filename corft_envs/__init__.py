"""Gymnasium environments of corft: the FR3 tabletop tasks, simulated and real.

Importing this package registers the sim envs ``corft/PickPlace-v0``,
``corft/Push-v0``, ``corft/Stack-v0`` and the real-arm envs
``corft/FR3Real-PickPlace-v0``, ... with the same spaces (``robot_host="twin"``
rehearses them on the simulated twin). ``gym.make(env_id, chunk_size=H)``
returns the env behind an :class:`~corft_envs.chunking.ActionChunk` wrapper.
"""

from __future__ import annotations

import os

# Headless by default: without a display, MuJoCo renders through EGL (set before mujoco is imported).
if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
    os.environ["MUJOCO_GL"] = "egl"

import gymnasium as gym  # noqa: E402

from corft_envs.chunking import ActionChunk, make_task_env  # noqa: E402
from corft_envs.instruction_bytes import InstructionBytes  # noqa: E402
from corft_envs.sim_env import FR3TabletopEnv  # noqa: E402
from corft_envs.tasks import TASKS  # noqa: E402

__all__ = ["ActionChunk", "FR3TabletopEnv", "InstructionBytes", "REAL_ENV_IDS", "SIM_ENV_IDS", "make_sim_env"]


def make_sim_env(task: str, **kwargs) -> gym.Env:
    """Entry point of ``corft/<Task>-v0``: :class:`FR3TabletopEnv`, chunked with ``chunk_size=H``.

    :param kwargs: ``chunk_size``, ``gamma``, ``execute`` (see
        :func:`~corft_envs.chunking.make_task_env`) and :class:`FR3TabletopEnv`
        arguments (``positions``, ``image_size``, ...).
    """
    return make_task_env(FR3TabletopEnv, task, **kwargs)


SIM_ENV_IDS = tuple(f"corft/{name}-v0" for name in TASKS)

for _name, _task in TASKS.items():
    gym.register(
        id=f"corft/{_name}-v0",
        entry_point="corft_envs:make_sim_env",  # a string, so that env.spec.to_json() works (Minari)
        kwargs={"task": _name},
        max_episode_steps=_task.max_episode_steps,
    )

REAL_ENV_IDS = tuple(f"corft/FR3Real-{name}-v0" for name in TASKS)

# The real envs import the drivers (franky, pyrealsense2), which a training node lacks: load them lazily, by name.
for _name, _task in TASKS.items():
    gym.register(
        id=f"corft/FR3Real-{_name}-v0",
        entry_point="corft_envs.real_factory:make_real_env",
        kwargs={"task": _name},
        max_episode_steps=_task.max_episode_steps,
        nondeterministic=True,
    )
