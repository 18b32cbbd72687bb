"""The simulated FR3 tabletop environment (MuJoCo), one class for every task.

Observation (a flat ``Dict``, accepted by stable-baselines3):

- ``image_front``, ``image_wrist``: ``uint8`` RGB, ``(image_size, image_size, 3)``;
- ``state``: ``float32`` ``(15,)`` = TCP position (3, m), TCP orientation
  quaternion (4, w x y z, sign by :func:`~corft_robots.contract.canonical_quaternion`), gripper opening (1, m), the seven joint
  positions (rad) — see :data:`corft_robots.contract.STATE_LAYOUT`;
- ``instruction``: a ``Text`` key, only with ``include_instruction=True``
  (stable-baselines3 rejects ``Text`` spaces). The instruction is always
  ``env.unwrapped.instruction`` and ``info["instruction"]`` at reset.

Action: ``Box(-1, 1, (7,))``, the contract in :mod:`corft_robots.contract`, run by :mod:`corft_envs.controller`.
Reward: 1 on the step where the task's success first holds, which terminates;
``info["is_success"]`` on every step. The step limit comes from registration.
"""

from __future__ import annotations

import string
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from corft_envs.controller import CartesianController
from corft_envs.layouts import check_positions_mode, sample_layout
from corft_envs.robot_model import FINGER_JOINT_NAMES, joint_limits
from corft_envs.scene import RENDER_GEOM_GROUPS, apply_layout, build_scene_xml
from corft_envs.tasks import N_OBJECTS, SceneState, get_task
from corft_robots.contract import ACTION_DIM, canonical_quaternion, decode_action
from corft_robots.fr3 import GRIPPER_MAX_WIDTH, HOME_JOINT_POSITIONS

CAMERAS = ("front", "wrist")
#: Bound on every TCP coordinate in the base frame (m); the FR3 reaches 0.855 m.
REACH = 1.5
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 1024
#: Default camera image side (px): at 128 px a 4 cm cube is about 5 px wide in the front camera, enough for the
#: pretrained tower's 8 x 8 feature map (64 px gave less success, benchmarks/RESULTS.md).
DEFAULT_IMAGE_SIZE = 128
#: Physics substeps run after placing objects at reset so they settle on the table.
SETTLE_STEPS = 20
#: Rise above its resting height (m) at which an object counts as lifted (``info["first_lifted"]``).
LIFTED_RISE = 0.03
INSTRUCTION_CHARSET = string.ascii_letters + string.digits + " ,.'-"


def check_image_size(image_size: Any) -> int:
    """Return ``image_size`` if the renderer can give it, else raise a ``ValueError`` saying what it accepts."""
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
        raise ValueError(f"image_size must be an int in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}], got {image_size!r}")
    if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise ValueError(f"image_size must be in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}] pixels, got {image_size}")
    return int(image_size)


def check_flag(name: str, value: Any) -> bool:
    """Return ``value`` as a bool if it is one, else raise a ``ValueError`` naming the argument: a string such
    as ``"no"`` would otherwise count as True (``--env-kwargs '{"distractors": false}'`` is the JSON form)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be true or false, got {value!r} ({type(value).__name__}); "
                         f"in --env-kwargs JSON write {{\"{name}\": false}}")
    return bool(value)


def make_observation_space(image_size: int, include_instruction: bool = False) -> spaces.Dict:
    """The observation space of every FR3 env, simulated or real (see the module docstring).

    ``state`` is bounded by the arm's reach (TCP), a unit quaternion, the gripper's
    opening and the joint ranges of the FR3 model.
    """
    image = spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
    joint_low, joint_high = joint_limits()
    low = np.concatenate([[-REACH] * 3, -np.ones(4), [0.0], joint_low])
    high = np.concatenate([[REACH] * 3, np.ones(4), [GRIPPER_MAX_WIDTH + 0.01], joint_high])
    observation: dict[str, spaces.Space] = {
        "image_front": image,
        "image_wrist": image,
        "state": spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32),
    }
    if include_instruction:
        observation["instruction"] = spaces.Text(max_length=128, charset=INSTRUCTION_CHARSET)
    return spaces.Dict(observation)


class FR3TabletopEnv(gym.Env):
    """Franka FR3 with its gripper on a table, a language-specified manipulation task.

    :param task: ``"PickPlace"``, ``"Push"`` or ``"Stack"`` (see :mod:`corft_envs.tasks`).
    :param positions: ``"train"``, ``"unseen"`` or ``"all"`` object positions
        (see :mod:`corft_envs.layouts`).
    :param image_size: side of both camera images in pixels, 16 to 1024.
    :param include_instruction: add the instruction as a ``Text`` observation key.
    :param render_mode: ``None`` or ``"rgb_array"`` (the front camera).
    :param distractors: ``False`` hides the objects the task does not use (a diagnostic:
        the instruction's colour then no longer has to be told apart from others).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        task: str = "PickPlace",
        positions: str = "train",
        image_size: int = DEFAULT_IMAGE_SIZE,
        include_instruction: bool = False,
        render_mode: str | None = None,
        distractors: bool = True,
    ) -> None:
        self.task = get_task(task)
        self.distractors = check_flag("distractors", distractors)
        self.positions = check_positions_mode(positions)
        self.image_size = check_image_size(image_size)
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode={render_mode!r} is not supported; use None or 'rgb_array'")
        self.render_mode = render_mode
        self.include_instruction = check_flag("include_instruction", include_instruction)

        self.model = mujoco.MjModel.from_xml_string(build_scene_xml(self.task, self.image_size))
        self.data = mujoco.MjData(self.model)
        self.controller = CartesianController(self.model, self.data, HOME_JOINT_POSITIONS)
        self._renderer: mujoco.Renderer | None = None
        self._scene_option = mujoco.MjvOption()
        self._scene_option.geomgroup[:] = RENDER_GEOM_GROUPS
        self._object_bodies = [self.model.body(f"obj{i}").id for i in range(N_OBJECTS)]
        self._fixture_body = self.model.body("fixture").id
        self._finger_qpos = np.array([self.model.joint(n).qposadr[0] for n in FINGER_JOINT_NAMES])

        self.observation_space = make_observation_space(self.image_size, include_instruction)
        self.action_space = spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)

        self.colours: list[str] = []
        self.instruction = ""
        self._rest_heights = np.zeros(N_OBJECTS)
        self._first_lifted = -1

    # ------------------------------------------------------------------ gym API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        rng = self.np_random
        model, data = self.model, self.data
        mujoco.mj_resetData(model, data)
        data.qpos[self.controller.qpos_index] = HOME_JOINT_POSITIONS
        data.qpos[self._finger_qpos] = GRIPPER_MAX_WIDTH / 2
        self.controller.hold()
        data.ctrl[self.controller.gripper_actuator] = 255.0

        layout = sample_layout(rng, self.task, self.positions)
        self.colours, self.instruction = layout.colours, layout.instruction
        apply_layout(model, data, self.task, layout, self.distractors)
        mujoco.mj_step(model, data, nstep=SETTLE_STEPS)
        self._rest_heights = self.scene_state().object_positions[:, 2].copy()
        self._first_lifted = -1
        return self._observation(), {"instruction": self.instruction, "is_success": False}

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """One control step; ``info`` holds ``is_success`` and, in a task that lifts its object
        (:attr:`~corft_envs.tasks.Task.lifts`), ``first_lifted``: the index of the first object this episode
        lifted :data:`LIFTED_RISE` above where it rested (0 is the one the instruction names), or -1 while none
        has been (a diagnostic of whether the policy went for the named object)."""
        self.controller.apply(decode_action(action))
        state = self.scene_state()
        success = self.task.is_success(state)
        info: dict[str, Any] = {"is_success": success}
        if self.task.lifts:
            if self._first_lifted < 0:
                rise = state.object_positions[:, 2] - self._rest_heights
                if rise.max() > LIFTED_RISE:
                    self._first_lifted = int(rise.argmax())
            info["first_lifted"] = self._first_lifted
        return self._observation(), float(success), success, False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array":
            return self.render_camera("front")
        return None

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # ------------------------------------------------------- privileged state
    def scene_state(self) -> SceneState:
        """Object and fixture positions and the gripper opening (for success checks and experts)."""
        return SceneState(
            object_positions=self.data.xpos[self._object_bodies].copy(),
            fixture_position=self.data.xpos[self._fixture_body].copy(),
            gripper_width=self.gripper_width(),
        )

    def tcp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """TCP position (m) and orientation quaternion (w x y z) in the base frame."""
        return self.controller.tcp_pose()

    def gripper_width(self) -> float:
        """Opening between the fingers (m)."""
        return float(self.data.qpos[self._finger_qpos].sum())

    def render_camera(self, camera: str) -> np.ndarray:
        """An RGB ``uint8`` image from camera ``"front"`` or ``"wrist"``."""
        if camera not in CAMERAS:
            raise ValueError(f"camera={camera!r} is unknown; use one of {CAMERAS}")
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, self.image_size, self.image_size)
        self._renderer.update_scene(self.data, camera=camera, scene_option=self._scene_option)
        return self._renderer.render()

    def _state_vector(self) -> np.ndarray:
        position, quat = self.controller.tcp_pose()
        quat = canonical_quaternion(quat)
        joints = self.data.qpos[self.controller.qpos_index]
        return np.concatenate([position, quat, [self.gripper_width()], joints]).astype(np.float32)

    def _observation(self) -> dict[str, Any]:
        observation: dict[str, Any] = {
            "image_front": self.render_camera("front"),
            "image_wrist": self.render_camera("wrist"),
            "state": self._state_vector(),
        }
        if self.include_instruction:
            observation["instruction"] = self.instruction
        return observation
