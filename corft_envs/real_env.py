"""The physical FR3 behind the sim env's API: ``gym.make("corft/FR3Real-<Task>-v0", robot_host=...)``.

:class:`FR3RealEnv` has the observation and action spaces of the sim task
``corft/<Task>-v0`` (:func:`~corft_envs.sim_env.make_observation_space`, the
action contract of :mod:`corft_robots.contract`), so a policy trained on sim or
real data runs on it unchanged, behind the same
:class:`~corft_envs.chunking.ActionChunk` wrapper.

The env takes its arm and cameras already built; :mod:`corft_envs.real_factory`
builds them from the ``gym.make`` arguments, for the robot or for the twin.

- **Arm**: an :class:`~corft_robots.base.Arm` (a :class:`~corft_robots.franka.FrankaArm`). Every
  chunk passes the safety layer as a whole before any of it is sent
  (:meth:`FR3RealEnv.validate_chunk`, called by ``ActionChunk``); any exception
  in ``reset`` or ``step``, Ctrl-C included, stops the arm before it propagates
  (:meth:`~corft_robots.base.Arm.stopping_on_error`).
  A rejected chunk or action (:class:`~corft_robots.safety.SafetyViolation`) sent
  nothing and the episode may go on; any other error ends it.
- **Cameras**: ``front`` and ``wrist``, each a :class:`~corft_robots.camera.Camera`;
  frames are centre-cropped to a square and resized to ``image_size``.
- **Pace**: one action per 10 Hz control period, counted between observations
  as a real-robot loop does: ``step`` sends the action, waits for the end of
  the period that began when the previous observation was read, then reads
  the next one. Camera reads, policy inference and sending share the period;
  the time each took is in ``info["timing"]``. On the twin the period also
  lasts 0.1 s of *simulated* time (``sim_period_s``): franky-sim's physics
  falls behind the wall clock on a busy CPU, and the twin's arm must see the
  pace a real arm would.
- **Reset** moves the arm home (joint space) and opens the gripper.
- **Success**: the operator's label ends an episode (:meth:`FR3RealEnv.label_episode`,
  or the Enter / Backspace keys of ``operator_keys``; a failure label
  truncates); otherwise ``success_fn(env)`` if given; otherwise, on the twin,
  the task's check on the twin's state.

On the twin (a :class:`~corft_envs.twin.Twin`: franky-sim's server speaking the
libfranka protocol on loopback, with the task's scene, and one
:class:`~corft_robots.virtual_realsense.VirtualRealSense` per camera streaming its
renders) the arm and cameras are the same classes as on hardware, pointed at
it. Each reset places the objects as the sim env does for the same seed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from corft_envs.keyboard import SUCCESS_KEYS, EpisodeLabel, KeySource, episode_label
from corft_envs.sim_env import (CAMERAS, DEFAULT_IMAGE_SIZE, check_flag, check_image_size,
                                make_observation_space)
from corft_envs.tasks import get_task
from corft_envs.twin import Twin, TwinWorld
from corft_envs.twin_process import TwinWorldProcess
from corft_robots.base import Arm
from corft_robots.camera import Camera, CameraFrame
from corft_robots.contract import ACTION_DIM, CONTROL_HZ, CONTROL_PERIOD
from corft_robots.extras import import_optional
from corft_robots.safety import CheckedChunk, SafetyViolation

Image = import_optional("PIL.Image", "real", "the real env's camera images (corft_envs.real_env)")

#: On the twin, how often a step polls the simulator's clock while waiting out its period (s),
#: and how long past the wall-clock period it waits for that clock at most (s).
SIM_CLOCK_POLL = 0.001
SIM_CLOCK_TIMEOUT = 2.0

SuccessFn = Callable[["FR3RealEnv"], bool]


def square_image(color: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop an RGB image to a square and resize it to ``size x size`` (area-averaged when shrinking)."""
    height, width = color.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = color[top:top + side, left:left + side]
    if side == size:
        return np.ascontiguousarray(square)
    return np.asarray(Image.fromarray(square).resize((size, size), Image.Resampling.BOX if side > size
                                                      else Image.Resampling.BILINEAR))


def check_camera_names(cameras: Mapping[str, object] | None) -> None:
    """Raise a :class:`ValueError` saying what to pass unless ``cameras`` names exactly the env's cameras."""
    if cameras is None or set(cameras) != set(CAMERAS):
        given = "none" if cameras is None else sorted(cameras)
        raise ValueError(
            f"cameras must name exactly {list(CAMERAS)} (got {given}), e.g. "
            "cameras={'front': '<RealSense serial>', 'wrist': '<RealSense serial>'}; "
            "`rs-enumerate-devices -s` lists the serial numbers"
        )


class FR3RealEnv(gym.Env):
    """A Franka FR3 with RealSense cameras, as the sim task's env (see the module docstring).

    ``gym.make`` builds it through :func:`corft_envs.real_factory.build_real_env`. The env
    owns the arm, the cameras and the twin it is given: the cameras and then the arm connect
    on the first :meth:`reset` (if that fails, the env closes), and :meth:`close` disconnects
    them and stops the twin.

    :param arm: the arm, not yet connected; its safety limits check every chunk.
    :param cameras: ``{"front": ..., "wrist": ...}``, each a :class:`~corft_robots.camera.Camera`, not yet connected.
    :param task: ``"PickPlace"``, ``"Push"`` or ``"Stack"``: spaces, instruction family, step limit.
    :param twin: the running twin ``arm`` and ``cameras`` are pointed at, or ``None`` on hardware.
        On the twin each reset places the objects and draws the instruction, the twin's state
        judges success (without ``success_fn`` or a label), and steps keep its clock's pace.
    :param image_size: side of the observation images (px); the model's.
    :param include_instruction: add the instruction as a ``Text`` observation key.
    :param instruction: on hardware, the instruction of every episode, unless a
        reset's ``options={"instruction": ...}`` gives one; the twin draws it as the sim env does.
    :param success_fn: judges success after every step, e.g. from a scale or a
        detector; ``None``: the operator on hardware, the twin's state on the twin.
    :param operator_keys: the operator's keys (e.g. :class:`~corft_envs.keyboard.TerminalKeys`):
        polled every step for a label, and on hardware each reset waits for Enter
        once the operator has set the scene up.
    :param render_mode: ``None`` or ``"rgb_array"`` (the last front image).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}

    def __init__(
        self,
        arm: Arm,
        cameras: Mapping[str, Camera],
        task: str = "PickPlace",
        *,
        twin: Twin | None = None,
        image_size: int = DEFAULT_IMAGE_SIZE,
        include_instruction: bool = False,
        instruction: str | None = None,
        success_fn: SuccessFn | None = None,
        operator_keys: KeySource | None = None,
        render_mode: str | None = None,
    ) -> None:
        self.task = get_task(task)
        if not isinstance(arm, Arm):
            raise TypeError(f"arm must be a corft_robots.Arm (e.g. a FrankaArm), got {type(arm).__name__}")
        check_camera_names(cameras)
        for name, camera in cameras.items():
            if not isinstance(camera, Camera):
                raise TypeError(f"cameras[{name!r}] must be a corft_robots.Camera (e.g. a RealSenseCamera), "
                                f"got {type(camera).__name__}")
        self.image_size = check_image_size(image_size)
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode={render_mode!r} is not supported; use None or 'rgb_array'")
        self.render_mode = render_mode
        self.include_instruction = check_flag("include_instruction", include_instruction)
        self.instruction = instruction or ""
        self.success_fn = success_fn
        self.operator_keys = operator_keys
        self.observation_space = make_observation_space(self.image_size, include_instruction)
        self.action_space = spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)

        self.arm = arm
        self.cameras: dict[str, Camera] = {name: cameras[name] for name in CAMERAS}
        self.twin = twin
        self._connected = False
        self._closed = False
        self._cycle_start: float | None = None
        self._cycle_start_sim: float | None = None
        self._label: EpisodeLabel | None = None
        self._episode_over = True
        self._last_images: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ gym API
    @property
    def on_twin(self) -> bool:
        """Whether this env rehearses on the simulated twin."""
        return self.twin is not None

    @property
    def world(self) -> TwinWorld | TwinWorldProcess | None:
        """The twin's world (its true state, for scripted experts and tests), or ``None`` on hardware."""
        return None if self.twin is None else self.twin.world

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        self._connect()
        with self._ending_episode_on_error():
            self.arm.stop()
            self.arm.move_home()
            self.arm.open()
            if self.world is not None:
                instruction = self.world.reset(seed)["instruction"]
            else:
                instruction = self._instruction_for(options)
                if self.operator_keys is not None:
                    self.operator_keys.wait_for(
                        SUCCESS_KEYS, f"set the scene up for '{instruction}', then press Enter to start")
            self.instruction = instruction
            self._label = None
            observation, _ = self._observe()
        self._cycle_start = time.monotonic()
        self._cycle_start_sim = self._sim_clock()
        self._episode_over = False
        return observation, {"instruction": self.instruction, "is_success": False}

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        self._require_episode()
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"an action must have shape ({ACTION_DIM},), got {action.shape}")
        with self._ending_episode_on_error():
            began = time.monotonic()
            sent = self.arm.send_action(action, wait=False)
            sent_at = time.monotonic()
            if self.operator_keys is not None:
                self._label = episode_label(self.operator_keys.poll()) or self._label
            self._wait_out_the_period()
            period = time.monotonic() - self._cycle_start
            self._cycle_start = time.monotonic()
            timing = {"command_s": sent_at - began, "period_s": period}
            if self.world is not None:
                now = self._sim_clock()
                timing["sim_period_s"] = now - self._cycle_start_sim
                self._cycle_start_sim = now
            observation, read_times = self._observe()
            success = self._judge_success()
        failure = self._label == "failure"
        self._episode_over = success or failure
        info = {
            "is_success": success,
            "applied_action": sent.action,
            "timing": {**timing, **read_times},
        }
        if self._label is not None:
            info["operator_label"] = self._label
        return observation, float(success), success, failure, info

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array" and "front" in self._last_images:
            return self._last_images["front"]
        return None

    def close(self) -> None:
        """Stop and release what the env owns: the arm, the cameras and the twin; safe to call twice."""
        try:
            self.arm.disconnect()
        finally:
            for camera in self.cameras.values():
                camera.disconnect()
            if self.twin is not None:
                self.twin.close()
            self._connected = False
            self._closed = True
            self._episode_over = True

    # ------------------------------------------------------------ the rest
    def validate_chunk(self, actions: np.ndarray) -> CheckedChunk:
        """The safety layer's whole-chunk check from the arm's current pose; nothing is sent.

        :class:`~corft_envs.chunking.ActionChunk` calls it before the chunk's first action (this env is a
        :class:`~corft_envs.chunking.ChunkValidator`).

        :raises SafetyViolation: if any action of the chunk is unsafe (the arm is stopped).
        """
        self._require_episode()
        with self._ending_episode_on_error():
            return self.arm.check_chunk(actions)

    def label_episode(self, label: EpisodeLabel) -> None:
        """The operator's verdict: the next step ends the episode as a success or a failure."""
        if label not in ("success", "failure"):
            raise ValueError(f"label must be 'success' or 'failure', got {label!r}")
        self._label = label

    # ------------------------------------------------------------- helpers
    def _connect(self) -> None:
        """Connect the cameras and the arm, once; on failure close the env."""
        if self._connected:
            return
        if self._closed:
            raise RuntimeError("this env was closed: make a new one with gym.make")
        try:
            for camera in self.cameras.values():
                camera.connect()
            self.arm.connect()
        except BaseException:
            self.close()
            raise
        self._connected = True

    def _instruction_for(self, options: dict[str, Any] | None) -> str:
        instruction = (options or {}).get("instruction") or self.instruction
        if not instruction:
            example = self.task.templates[0].format(a="red", b="blue")
            raise ValueError(
                "on the real robot the env cannot see what the scene asks for: pass instruction=... to gym.make "
                f"or reset(options={{'instruction': ...}}), e.g. {example!r}, worded as in the training data"
            )
        return str(instruction)

    def _observe(self) -> tuple[dict[str, Any], dict[str, float]]:
        """Read the arm's state and every camera; also return how long each read took (s)."""
        began = time.monotonic()
        state = self.arm.state().as_vector()
        times = {"state_s": time.monotonic() - began}
        observation: dict[str, Any] = {}
        for name, camera in self.cameras.items():
            began = time.monotonic()
            frame: CameraFrame = camera.read()
            observation[f"image_{name}"] = square_image(frame.color, self.image_size)
            times[f"camera_{name}_s"] = time.monotonic() - began
        self._last_images = {name: observation[f"image_{name}"] for name in self.cameras}
        observation["state"] = state
        if self.include_instruction:
            observation["instruction"] = self.instruction
        return observation, times

    def _sim_clock(self) -> float | None:
        """The twin's simulated time (s), or ``None`` on hardware."""
        return self.world.sim_time() if self.world is not None else None

    def _wait_out_the_period(self) -> None:
        """Wait until :data:`CONTROL_PERIOD` has passed since the cycle began.

        On hardware that is wall-clock time. On the twin it is also simulated
        time: a busy CPU slows franky-sim's physics below real time, and
        commands paced by the wall clock alone would then come faster than the
        arm moves (the scripted expert overshot its grasp by centimetres).
        """
        time.sleep(max(0.0, self._cycle_start + CONTROL_PERIOD - time.monotonic()))
        if self._cycle_start_sim is None:
            return
        give_up = time.monotonic() + SIM_CLOCK_TIMEOUT  # a stopped simulator: the next read reports it
        while self.world.sim_time() < self._cycle_start_sim + CONTROL_PERIOD and time.monotonic() < give_up:
            time.sleep(SIM_CLOCK_POLL)

    def _judge_success(self) -> bool:
        if self._label is not None:
            return self._label == "success"
        if self.success_fn is not None:
            return bool(self.success_fn(self))
        return self.world is not None and self.world.is_success()

    def _require_episode(self) -> None:
        if self._episode_over:
            raise RuntimeError("call reset() before step(): the episode has not started or has ended")

    @contextlib.contextmanager
    def _ending_episode_on_error(self) -> Iterator[None]:
        """The arm's :meth:`~corft_robots.base.Arm.stopping_on_error` (any exception, Ctrl-C included, stops the arm
        and propagates); any but a :class:`SafetyViolation` also ends the episode."""
        try:
            with self.arm.stopping_on_error():
                yield
        except SafetyViolation:  # a rejected command sent nothing: the episode goes on
            raise
        except BaseException:
            self._episode_over = True
            raise
