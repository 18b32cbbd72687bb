"""The sim's Cartesian controller: runs the action contract of :mod:`corft_robots.contract` on the MuJoCo FR3.

:class:`CartesianController` reaches each action's target (:func:`corft_robots.contract.compose_target`)
with damped least-squares differential IK (a few iterations on the kinematics) to a joint
target, which the arm's position actuators track over ``CONTROL_PERIOD /
PHYSICS_TIMESTEP`` physics substeps, with the joint target ramped in over the
first :data:`RAMP_FRACTION` of them.
"""

from __future__ import annotations

import mujoco
import numpy as np

from corft_envs.robot_model import ARM_JOINT_NAMES
from corft_robots.contract import CONTROL_PERIOD, CartesianCommand, compose_target

#: Fraction of the control period over which the joint target is ramped in.
RAMP_FRACTION = 0.6
#: Gripper actuator commands of the FR3 model: fully closed and fully open.
GRIPPER_CLOSED_CTRL = 0.0
GRIPPER_OPEN_CTRL = 255.0


def rotvec_between(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World-frame rotation vector ``r`` with ``exp(r) · source = target`` (quaternions w, x, y, z)."""
    inverse, delta, rotvec = np.empty(4), np.empty(4), np.empty(3)
    mujoco.mju_negQuat(inverse, source)
    mujoco.mju_mulQuat(delta, target, inverse)
    if delta[0] < 0:  # q and -q are the same rotation: take the short way round
        delta = -delta
    mujoco.mju_quat2Vel(rotvec, delta, 1.0)
    return rotvec


class CartesianController:
    """Runs one action on the simulated FR3: differential IK, then physics substeps.

    :param model: the compiled scene.
    :param data: its simulation state, advanced in place.
    :param home_joint_positions: posture the IK's null space is pulled towards.
    :param ik_iterations: damped least-squares iterations per action.
    :param damping: damping λ of ``J^T (J J^T + λ² I)^-1``.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        data: mujoco.MjData,
        home_joint_positions: np.ndarray,
        ik_iterations: int = 3,
        damping: float = 0.05,
    ) -> None:
        self.model, self.data = model, data
        self.home = np.asarray(home_joint_positions, dtype=np.float64)
        self.ik_iterations, self.damping = ik_iterations, damping
        self.tcp_site = model.site("tcp").id
        joints = [model.joint(name) for name in ARM_JOINT_NAMES]
        self.qpos_index = np.array([joint.qposadr[0] for joint in joints])
        self.dof_index = np.array([joint.dofadr[0] for joint in joints])
        self.joint_low = np.array([joint.range[0] for joint in joints])
        self.joint_high = np.array([joint.range[1] for joint in joints])
        self.arm_actuators = np.array([model.actuator(name).id for name in ARM_JOINT_NAMES])
        self.gripper_actuator = model.actuator("hand").id
        self.substeps = int(round(CONTROL_PERIOD / model.opt.timestep))
        self.ramp_segments = 6
        self._scratch = mujoco.MjData(model)
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def tcp_pose(self, data: mujoco.MjData | None = None) -> tuple[np.ndarray, np.ndarray]:
        """TCP position (m) and orientation quaternion (w, x, y, z) in the base frame."""
        data = self.data if data is None else data
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, data.site_xmat[self.tcp_site])
        return data.site_xpos[self.tcp_site].copy(), quat

    def hold(self) -> None:
        """Set the arm's joint targets to its current posture (used after a reset)."""
        self.data.ctrl[self.arm_actuators] = self.data.qpos[self.qpos_index]

    def target_pose(self, command: CartesianCommand) -> tuple[np.ndarray, np.ndarray]:
        """The TCP target of ``command``, relative to the measured pose, clipped to the workspace."""
        return compose_target(*self.tcp_pose(), command)

    def solve_ik(self, target_position: np.ndarray, target_quat: np.ndarray) -> np.ndarray:
        """Joint positions that bring the TCP to the target (damped least squares, null-space posture)."""
        scratch = self._scratch
        scratch.qpos[:] = self.data.qpos
        q = scratch.qpos[self.qpos_index].copy()
        eye6 = np.eye(6)
        for _ in range(self.ik_iterations):
            scratch.qpos[self.qpos_index] = q
            mujoco.mj_kinematics(self.model, scratch)
            mujoco.mj_comPos(self.model, scratch)
            position, quat = self.tcp_pose(scratch)
            error = np.concatenate([target_position - position, rotvec_between(quat, target_quat)])
            mujoco.mj_jacSite(self.model, scratch, self._jacp, self._jacr, self.tcp_site)
            jac = np.vstack([self._jacp[:, self.dof_index], self._jacr[:, self.dof_index]])
            jac_pinv = jac.T @ np.linalg.inv(jac @ jac.T + self.damping**2 * eye6)
            null_space = np.eye(len(q)) - jac_pinv @ jac
            q = q + jac_pinv @ error + null_space @ (0.1 * (self.home - q))
            q = np.clip(q, self.joint_low, self.joint_high)
        return q

    def apply(self, command: CartesianCommand) -> None:
        """Run ``command`` for one control period (advances ``data`` by ``CONTROL_PERIOD``)."""
        q_start = self.data.qpos[self.qpos_index].copy()
        q_target = self.solve_ik(*self.target_pose(command))
        self.data.ctrl[self.gripper_actuator] = (
            GRIPPER_CLOSED_CTRL if command.close_gripper else GRIPPER_OPEN_CTRL
        )
        ramp_steps = int(self.substeps * RAMP_FRACTION) // self.ramp_segments
        for segment in range(1, self.ramp_segments + 1):
            alpha = segment / self.ramp_segments
            self.data.ctrl[self.arm_actuators] = q_start + alpha * (q_target - q_start)
            mujoco.mj_step(self.model, self.data, nstep=ramp_steps)
        mujoco.mj_step(self.model, self.data, nstep=self.substeps - ramp_steps * self.ramp_segments)
