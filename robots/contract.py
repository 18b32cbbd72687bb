"""The action and state contract shared by the simulated and the real arm (numpy only).

Action (``Box(-1, 1, (7,), float32)``, one action per 10 Hz control step):

- ``a[0:3]``: TCP translation in the robot base frame, ``Δp = a[0:3] · MAX_TRANSLATION``
  metres (at most 5 cm per step, i.e. 0.5 m/s per axis).
- ``a[3:6]``: TCP rotation as a rotation vector (axis · angle) in the base frame,
  ``Δr = a[3:6] · MAX_ROTATION`` radians; the target orientation is
  ``R_target = exp([Δr]×) · R_current`` (a world-frame, left-multiplied rotation).
- ``a[6]``: gripper; ``> 0`` closes (grasp), ``<= 0`` opens. Binary by design:
  the real Franka Hand grasps or opens, it does not track a width at 10 Hz.

The target pose is relative to the *measured* TCP pose at the start of the
step (as franky's relative Cartesian motions are on the real arm), and its
position is clipped to :data:`WORKSPACE` (:func:`compose_target`). Values
outside ``[-1, 1]`` are clipped; a wrong shape or a non-finite value is an
error (:func:`decode_action`).

State: the ``float32`` vector of :data:`STATE_LAYOUT`, with quaternions w x y z
signed by :func:`canonical_quaternion`.

The simulator runs this contract with :class:`corft_envs.controller.CartesianController`,
the real arm with :class:`corft_robots.base.Arm`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from corft_robots.fr3 import HOME_TCP_QUATERNION

#: Control rate (Hz) and period (s) of one action.
CONTROL_HZ = 10
CONTROL_PERIOD = 1.0 / CONTROL_HZ
#: Largest TCP translation per step and axis (m) and rotation per step and axis (rad).
MAX_TRANSLATION = 0.05
MAX_ROTATION = 0.25
#: Box the TCP target is clipped to, (low xyz, high xyz) in the base frame (m).
WORKSPACE = (np.array([0.25, -0.40, 0.005]), np.array([0.80, 0.40, 0.60]))

ACTION_DIM = 7

#: Name and size of each block of the ``state`` vector, in order.
STATE_LAYOUT: tuple[tuple[str, int], ...] = (
    ("tcp_position", 3),
    ("tcp_quaternion", 4),
    ("gripper_width", 1),
    ("joint_positions", 7),
)
STATE_DIM = sum(size for _, size in STATE_LAYOUT)


@dataclass(frozen=True)
class CartesianCommand:
    """A decoded action: translation (m), rotation vector (rad), gripper closed or not."""

    translation: np.ndarray
    rotation: np.ndarray
    close_gripper: bool


def decode_action(action: np.ndarray) -> CartesianCommand:
    """Turn a raw 7-D action into a :class:`CartesianCommand` (see the module docstring).

    :raises ValueError: if the action is not 7 finite numbers.
    """
    array = np.asarray(action, dtype=np.float64)
    if array.shape != (ACTION_DIM,):
        raise ValueError(
            f"action must have shape ({ACTION_DIM},) [dx, dy, dz, rx, ry, rz, gripper], got {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"action must be finite, got {array.tolist()}")
    array = np.clip(array, -1.0, 1.0)
    return CartesianCommand(
        translation=array[0:3] * MAX_TRANSLATION,
        rotation=array[3:6] * MAX_ROTATION,
        close_gripper=bool(array[6] > 0.0),
    )


def quat_multiply(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The Hamilton product ``first · second`` of two quaternions (w, x, y, z): ``second``'s rotation, then ``first``'s."""
    w1, x1, y1, z1 = (float(value) for value in first)
    w2, x2, y2, z2 = (float(value) for value in second)
    return np.array([
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    ])


def quat_from_rotvec(rotvec: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a rotation vector."""
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.array([1.0, 0.0, 0.0, 0.0])
    axis = np.asarray(rotvec, dtype=np.float64) / angle
    return np.concatenate([[math.cos(angle * 0.5)], axis * math.sin(angle * 0.5)])


def canonical_quaternion(quaternion: np.ndarray) -> np.ndarray:
    """The unit quaternion of the same rotation in :data:`~corft_robots.fr3.HOME_TCP_QUATERNION`'s hemisphere.

    ``q`` and ``-q`` are one rotation. Choosing ``w >= 0`` would flip the sign
    near the home pose, where ``w`` is about 0; choosing ``q · q_home >= 0`` keeps
    observed orientations, which stay near home, continuous.
    """
    quaternion = np.asarray(quaternion, dtype=np.float64)
    quaternion = quaternion / np.linalg.norm(quaternion)
    return -quaternion if quaternion @ HOME_TCP_QUATERNION < 0 else quaternion


def compose_target(
    position: np.ndarray,
    quaternion: np.ndarray,
    command: CartesianCommand,
    workspace: tuple[np.ndarray, np.ndarray] = WORKSPACE,
) -> tuple[np.ndarray, np.ndarray]:
    """The TCP target of ``command`` from a measured pose, shared by the sim and the real arm.

    ``p_target = clip(p + Δp, workspace)`` and ``q_target = exp(Δr) · q`` (see :func:`canonical_quaternion`).
    """
    target_position = np.clip(np.asarray(position, dtype=np.float64) + command.translation, *workspace)
    target_quat = quat_multiply(quat_from_rotvec(command.rotation), np.asarray(quaternion, dtype=np.float64))
    return target_position, canonical_quaternion(target_quat)
