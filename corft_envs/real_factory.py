"""What the real env drives, built from ``gym.make("corft/FR3Real-<Task>-v0", ...)``'s arguments.

:class:`~corft_envs.real_env.FR3RealEnv` takes an arm and cameras already built;
this module builds them, for the robot or for its twin, and hands them to it:

- **hardware** (``robot_host`` the robot's FCI address): a
  :class:`~corft_robots.franka.FrankaArm` at ``robot_host`` (``realtime=True`` unless
  ``arm_options`` says otherwise) and, per camera, a
  :class:`~corft_robots.realsense.RealSenseCamera` for a serial number or the
  :class:`~corft_robots.camera.Camera` given (:func:`build_hardware`);
- **the twin** (``robot_host="twin"``): :func:`~corft_envs.twin.start_twin`'s
  running world and virtual RealSense cameras, a ``FrankaArm`` at the twin's
  loopback address (``realtime=False``) and a ``RealSenseCamera`` reading each
  virtual camera through the same pyrealsense2 pipeline (:func:`build_twin`).

Ownership: the env owns what it is given (its ``close()`` disconnects the arm and
the cameras and stops the twin); if building fails, what had started is stopped.
Nothing connects before the env's first ``reset``; the twin runs from the start.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym

from corft_envs.chunking import make_task_env
from corft_envs.layouts import check_positions_mode
from corft_envs.real_env import FR3RealEnv, check_camera_names
from corft_envs.sim_env import CAMERAS, DEFAULT_IMAGE_SIZE, check_flag
from corft_envs.twin import TWIN_CAMERA_FPS, TWIN_CAMERA_READ_TIMEOUT_S, TWIN_STATE_TIMEOUT_S, Twin, start_twin
from corft_robots.camera import Camera
from corft_robots.franka import FrankaArm
from corft_robots.realsense import RealSenseCamera
from corft_robots.safety import SafetyLimits

#: ``robot_host`` value that rehearses on the twin instead of a robot.
TWIN_HOST = "twin"


def _camera_from(name: str, source: str | Camera) -> Camera:
    if isinstance(source, Camera):
        return source
    if isinstance(source, str) and source:
        return RealSenseCamera(serial_number=source)
    raise TypeError(f"cameras[{name!r}] must be a RealSense serial number or a corft_robots.Camera, got {source!r}")


def build_hardware(robot_host: str, cameras: Mapping[str, str | Camera] | None, safety: SafetyLimits | None = None,
                   arm_options: Mapping[str, Any] | None = None) -> tuple[FrankaArm, dict[str, Camera]]:
    """The robot's arm and cameras, not connected.

    :param robot_host: the robot's FCI address.
    :param cameras: ``{"front": ..., "wrist": ...}``, each a RealSense serial number or a
        :class:`~corft_robots.camera.Camera`.
    :param safety: the arm's safety limits (the defaults of :class:`~corft_robots.safety.SafetyLimits`).
    :param arm_options: further :class:`~corft_robots.franka.FrankaArm` arguments (``dynamics_factor``, ...).
    :raises ValueError: if ``cameras`` does not name exactly ``front`` and ``wrist``.
    """
    check_camera_names(cameras)
    arm = FrankaArm(robot_host, **{"realtime": True, **(arm_options or {}), "safety": safety})
    return arm, {name: _camera_from(name, cameras[name]) for name in CAMERAS}


def build_twin(task: str, positions: str = "train", image_size: int = DEFAULT_IMAGE_SIZE, distractors: bool = True,
               safety: SafetyLimits | None = None, arm_options: Mapping[str, Any] | None = None,
               ) -> tuple[Twin, FrankaArm, dict[str, Camera]]:
    """A running twin of ``task``'s setup, and the arm and cameras pointed at it, not connected.

    :param task: ``"PickPlace"``, ``"Push"`` or ``"Stack"``; with ``positions``, ``image_size`` and
        ``distractors``, :func:`~corft_envs.twin.start_twin`'s arguments.
    :param safety: the arm's safety limits.
    :param arm_options: further :class:`~corft_robots.franka.FrankaArm` arguments.
    :return: the twin (the caller owns it: ``twin.close()`` stops it), the arm and the cameras.
    """
    twin = start_twin(task, positions, image_size, distractors)
    try:
        arm = FrankaArm(twin.world.hostname, **{"realtime": False, "state_timeout": TWIN_STATE_TIMEOUT_S,
                                               **(arm_options or {}), "safety": safety})
        cameras: dict[str, Camera] = {
            name: RealSenseCamera(device=virtual.device, width=image_size, height=image_size, fps=TWIN_CAMERA_FPS,
                                  warmup_frames=1, read_timeout_s=TWIN_CAMERA_READ_TIMEOUT_S)
            for name, virtual in twin.virtual_cameras.items()}
    except BaseException:
        twin.close()
        raise
    return twin, arm, cameras


def build_real_env(
    task: str = "PickPlace",
    robot_host: str | None = None,
    cameras: Mapping[str, str | Camera] | None = None,
    positions: str = "train",
    distractors: bool = True,
    image_size: int = DEFAULT_IMAGE_SIZE,
    safety: SafetyLimits | None = None,
    arm_options: Mapping[str, Any] | None = None,
    **env_options: Any,
) -> FR3RealEnv:
    """:class:`~corft_envs.real_env.FR3RealEnv` on the robot at ``robot_host``, or on a new twin; it owns both.

    :param task: ``"PickPlace"``, ``"Push"`` or ``"Stack"``.
    :param robot_host: the robot's FCI address, or ``"twin"`` to rehearse on franky-sim.
    :param cameras: on hardware, ``{"front": ..., "wrist": ...}``, each a RealSense serial number or a
        :class:`~corft_robots.camera.Camera`; not given on the twin, which makes virtual ones.
    :param positions: on the twin, where the objects go (``"train"``, ``"unseen"``, ``"all"``);
        on hardware the operator places them.
    :param distractors: on the twin, ``False`` parks the objects the task does not use out of
        view (as the sim env's ``distractors=False``); on hardware the operator sets the scene.
    :param image_size: side of the observation images (px), and of the twin's renders.
    :param safety: the arm's safety limits (the defaults of :class:`~corft_robots.safety.SafetyLimits`).
    :param arm_options: further :class:`~corft_robots.franka.FrankaArm` arguments (``dynamics_factor``, ...).
    :param env_options: the other :class:`~corft_envs.real_env.FR3RealEnv` arguments
        (``instruction``, ``success_fn``, ``operator_keys``, ...).
    :raises ValueError: naming what to pass, for a missing ``robot_host``, cameras that do not fit it,
        or a bad ``positions`` or ``distractors``.
    """
    if not isinstance(robot_host, str) or not robot_host:
        raise ValueError(
            f"robot_host is required, got {robot_host!r}: pass the robot's FCI address "
            f"(e.g. robot_host='172.16.0.2') or robot_host='{TWIN_HOST}' to rehearse on the simulated twin"
        )
    check_positions_mode(positions)
    check_flag("distractors", distractors)
    if robot_host != TWIN_HOST:
        arm, built = build_hardware(robot_host, cameras, safety, arm_options)
        return FR3RealEnv(arm, built, task, image_size=image_size, **env_options)
    if cameras is not None:
        raise ValueError(f"the twin makes its own virtual cameras: do not pass cameras with robot_host='{TWIN_HOST}'")
    twin, arm, built = build_twin(task, positions, image_size, distractors, safety, arm_options)
    try:
        return FR3RealEnv(arm, built, task, twin=twin, image_size=image_size, **env_options)
    except BaseException:
        twin.close()
        raise


def make_real_env(task: str, **kwargs: Any) -> gym.Env:
    """Entry point of ``corft/FR3Real-<Task>-v0``: :func:`build_real_env`, chunked with ``chunk_size=H`` as the sim
    envs are.

    :param kwargs: ``chunk_size``, ``gamma``, ``execute`` (see :func:`~corft_envs.chunking.make_task_env`)
        and :func:`build_real_env`'s arguments (``robot_host``, ``cameras``, ...).
    """
    return make_task_env(build_real_env, task, **kwargs)
