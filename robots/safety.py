"""The safety layer: every chunk of actions is checked as a whole before any of it is sent.

Pure logic, no hardware: :class:`SafetyChecker` turns a chunk of 7-D actions of
the contract in :mod:`corft_robots.contract` into :class:`CheckedChunk` (the
actions and decoded Cartesian commands that may be sent) or raises
:class:`SafetyViolation` naming the step and the value at fault. Nothing of a
rejected chunk is sent.

Checks, in order:

1. shape ``(k, 7)`` with ``1 <= k <= max_chunk_length``;
2. every value finite (NaN and inf are rejected);
3. range, with an explicit clip policy: values in
   ``[-1 - clip_margin, 1 + clip_margin]`` are clipped to ``[-1, 1]`` (as the
   simulator does; policies trained there overshoot 1 slightly) and logged;
   anything further out means a broken policy and rejects the chunk;
4. jumps: on the six motion dimensions, two consecutive actions (and the
   chunk's first action and the last action sent before it, when given) may
   differ by at most ``max_action_jump``; the gripper dimension is exempt,
   since it flips from open to closed by design;
5. per-step limits: the decoded translation and rotation vectors are scaled
   down, keeping their direction, so no component exceeds ``max_translation``
   (m) or ``max_rotation`` (rad); scaled steps are logged;
6. workspace, with the same kind of clip policy: each step's target (the
   predicted TCP position plus its translation) is clipped to the workspace
   box, as the simulator's controller and :meth:`~corft_robots.base.Arm.send_chunk`
   do, if it lies at most ``workspace_clip_margin`` outside the box; further
   out rejects the chunk. Policies trained in simulation press a little past
   the floor when they grasp, and an arm braking from speed can end a few
   millimetres past a bound; a measured TCP further outside than the margin
   rejects every chunk until the arm is brought back (e.g. ``move_home()``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from corft_robots.contract import (
    ACTION_DIM,
    MAX_ROTATION,
    MAX_TRANSLATION,
    WORKSPACE,
    CartesianCommand,
    decode_action,
)
from corft_robots.errors import RobotError
from corft_robots.fr3 import FRANKA_HAND_MAX_FORCE, GRIPPER_MAX_WIDTH

logger = logging.getLogger(__name__)

#: Names of the action's dimensions, used in error messages.
ACTION_NAMES = ("dx", "dy", "dz", "rx", "ry", "rz", "gripper")
AXES = ("x", "y", "z")
#: Dimensions the jump check applies to (translation and rotation; not the gripper).
MOTION_DIMS = 6
#: Slack on float comparisons against the workspace bounds (m).
_WORKSPACE_TOLERANCE = 1e-9


class SafetyViolation(RobotError):
    """A command was rejected by the safety layer; nothing of it was sent."""


@dataclass(frozen=True)
class SafetyLimits:
    """Limits every command to the arm must respect.

    :param workspace_low: lowest TCP position allowed, x y z in the base frame (m);
        defaults to the simulator's :data:`~corft_robots.contract.WORKSPACE`.
    :param workspace_high: highest TCP position allowed (m).
    :param max_translation: largest TCP translation per step and axis (m), at
        most the contract's ``MAX_TRANSLATION``.
    :param max_rotation: largest rotation-vector component per step (rad), at
        most the contract's ``MAX_ROTATION``.
    :param max_action_jump: largest change of any motion dimension between
        consecutive actions, in action units (the range is ``[0, 2]``). The
        scripted demonstrators reach 1.04 (starting and stopping at full speed
        with jitter); a sign flip at full speed (2.0) is rejected.
    :param clip_margin: values within ``1 + clip_margin`` of zero are clipped to
        ``[-1, 1]``; larger ones reject the chunk.
    :param gripper_min_width: width the gripper closes to when grasping (m).
    :param gripper_max_width: width the gripper opens to (m), at most the
        Franka Hand's 0.08 m.
    :param max_grasp_force: largest grasping force a driver may be configured with (N).
    :param max_chunk_length: most actions one chunk may hold (10 Hz steps run open loop).
    :param workspace_clip_margin: how far outside the workspace (m) a step's target may
        be and still be clipped to it; ``0`` rejects every chunk predicted to leave it.
    """

    workspace_low: tuple[float, float, float] = tuple(float(v) for v in WORKSPACE[0])
    workspace_high: tuple[float, float, float] = tuple(float(v) for v in WORKSPACE[1])
    max_translation: float = MAX_TRANSLATION
    max_rotation: float = MAX_ROTATION
    max_action_jump: float = 1.25
    clip_margin: float = 0.05
    gripper_min_width: float = 0.0
    gripper_max_width: float = GRIPPER_MAX_WIDTH
    max_grasp_force: float = 40.0
    max_chunk_length: int = 20
    workspace_clip_margin: float = 0.02

    def __post_init__(self) -> None:
        low = np.asarray(self.workspace_low, dtype=np.float64)
        high = np.asarray(self.workspace_high, dtype=np.float64)
        if low.shape != (3,) or high.shape != (3,) or not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise ValueError(f"workspace bounds must be 3 finite numbers each, got {self.workspace_low}, {self.workspace_high}")
        if not np.all(low < high):
            raise ValueError(f"workspace_low must be below workspace_high on every axis, got {low} and {high}")
        object.__setattr__(self, "workspace_low", tuple(low.tolist()))
        object.__setattr__(self, "workspace_high", tuple(high.tolist()))
        _check_range("max_translation", self.max_translation, 0.0, MAX_TRANSLATION)
        _check_range("max_rotation", self.max_rotation, 0.0, MAX_ROTATION)
        _check_range("max_action_jump", self.max_action_jump, 0.0, 2.0)
        _check_range("clip_margin", self.clip_margin, 0.0, 1.0, low_inclusive=True)
        _check_range("gripper_max_width", self.gripper_max_width, 0.0, GRIPPER_MAX_WIDTH)
        _check_range("gripper_min_width", self.gripper_min_width, 0.0, self.gripper_max_width, low_inclusive=True)
        if self.gripper_min_width == self.gripper_max_width:
            raise ValueError(f"gripper_min_width must be below gripper_max_width, both are {self.gripper_max_width}")
        _check_range("max_grasp_force", self.max_grasp_force, 0.0, FRANKA_HAND_MAX_FORCE)
        _check_range("workspace_clip_margin", self.workspace_clip_margin, 0.0, MAX_TRANSLATION, low_inclusive=True)
        if isinstance(self.max_chunk_length, bool) or not isinstance(self.max_chunk_length, (int, np.integer)):
            raise ValueError(f"max_chunk_length must be an int, got {self.max_chunk_length!r}")
        if self.max_chunk_length < 1:
            raise ValueError(f"max_chunk_length must be at least 1, got {self.max_chunk_length}")

    @property
    def workspace(self) -> tuple[np.ndarray, np.ndarray]:
        """The workspace box as two arrays, (low xyz, high xyz) in metres."""
        return np.array(self.workspace_low), np.array(self.workspace_high)


def _check_range(name: str, value: float, low: float, high: float, low_inclusive: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number in ``(low, high]`` (``[low, high]``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    above_low = value >= low if low_inclusive else value > low
    if not (above_low and value <= high):
        bracket = "[" if low_inclusive else "("
        raise ValueError(f"{name} must be in {bracket}{low}, {high}], got {value}")


@dataclass(frozen=True)
class CheckedChunk:
    """A chunk that passed every check: what may be sent, step by step.

    :param actions: ``(k, 7)`` actions after the clip policy.
    :param commands: the decoded command of each action, after the per-step limits.
    :param predicted_positions: ``(k, 3)`` TCP positions after each step if the
        arm tracked every target exactly (clipped to the workspace), from the
        position the chunk was checked at.
    :param clipped_steps: steps with a value clipped to ``[-1, 1]``.
    :param scaled_steps: steps whose translation or rotation was scaled down to the limits.
    """

    actions: np.ndarray
    commands: tuple[CartesianCommand, ...]
    predicted_positions: np.ndarray
    clipped_steps: tuple[int, ...]
    scaled_steps: tuple[int, ...]


class SafetyChecker:
    """Checks whole chunks of actions against :class:`SafetyLimits` (see the module docstring).

    :param limits: the limits to enforce.
    """

    def __init__(self, limits: SafetyLimits) -> None:
        self.limits = limits

    def check_chunk(
        self,
        chunk: np.ndarray,
        current_tcp_position: np.ndarray,
        previous_action: np.ndarray | None = None,
    ) -> CheckedChunk:
        """Check a whole chunk before any of it is sent.

        :param chunk: ``(k, 7)`` actions of the contract.
        :param current_tcp_position: measured TCP position (m, base frame) the
            chunk starts from.
        :param previous_action: the last action sent just before this chunk, for
            the jump check across chunks; ``None`` when the arm was at rest.
        :return: the actions and commands that may be sent.
        :raises SafetyViolation: naming the step, the dimension and the value at fault.
        """
        actions = self._as_chunk(chunk)
        self._check_finite(actions)
        actions, clipped_steps = self._clip(actions)
        self._check_jumps(actions, previous_action)
        commands, scaled_steps = self._limit_steps(actions)
        predicted = self._check_workspace(commands, current_tcp_position)
        return CheckedChunk(
            actions=actions,
            commands=commands,
            predicted_positions=predicted,
            clipped_steps=clipped_steps,
            scaled_steps=scaled_steps,
        )

    def _as_chunk(self, chunk: np.ndarray) -> np.ndarray:
        try:
            actions = np.array(chunk, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise SafetyViolation(f"chunk rejected, nothing was sent: not an array of numbers ({error})") from error
        limit = self.limits.max_chunk_length
        if actions.ndim != 2 or actions.shape[1] != ACTION_DIM or not 1 <= len(actions) <= limit:
            raise SafetyViolation(
                f"chunk rejected, nothing was sent: a chunk must have shape (k, {ACTION_DIM}) with "
                f"1 <= k <= max_chunk_length={limit}, got {actions.shape}"
            )
        return actions

    @staticmethod
    def _check_finite(actions: np.ndarray) -> None:
        bad = np.argwhere(~np.isfinite(actions))
        if len(bad):
            step, dim = bad[0]
            raise SafetyViolation(
                f"chunk rejected, nothing was sent: step {step}, {ACTION_NAMES[dim]} (action[{dim}]) is "
                f"{actions[step, dim]}; actions must be finite ({len(bad)} non-finite value(s) in the chunk)"
            )

    def _clip(self, actions: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
        bound = 1.0 + self.limits.clip_margin
        too_large = np.argwhere(np.abs(actions) > bound)
        if len(too_large):
            step, dim = too_large[0]
            raise SafetyViolation(
                f"chunk rejected, nothing was sent: step {step}, {ACTION_NAMES[dim]} (action[{dim}]) is "
                f"{actions[step, dim]:.4g}, outside [-{bound:g}, {bound:g}] (values up to clip_margin "
                f"beyond [-1, 1] are clipped, larger ones mean a broken policy)"
            )
        clipped = np.clip(actions, -1.0, 1.0)
        clipped_steps = tuple(int(s) for s in np.flatnonzero(np.any(clipped != actions, axis=1)))
        if clipped_steps:
            logger.warning("clipped actions to [-1, 1] at steps %s", list(clipped_steps))
        return clipped, clipped_steps

    def _check_jumps(self, actions: np.ndarray, previous_action: np.ndarray | None) -> None:
        sequence = actions[:, :MOTION_DIMS]
        offset = 0
        if previous_action is not None:
            previous = np.asarray(previous_action, dtype=np.float64)
            if previous.shape != (ACTION_DIM,) or not np.all(np.isfinite(previous)):
                raise ValueError(f"previous_action must be {ACTION_DIM} finite numbers, got {previous_action!r}")
            sequence = np.vstack([previous[:MOTION_DIMS], sequence])
            offset = 1
        jumps = np.abs(np.diff(sequence, axis=0))
        bad = np.argwhere(jumps > self.limits.max_action_jump)
        if len(bad):
            row, dim = bad[0]
            step = int(row) + 1 - offset
            before = "the last action sent" if step == 0 else f"step {step - 1}"
            raise SafetyViolation(
                f"chunk rejected, nothing was sent: step {step}, {ACTION_NAMES[dim]} jumps by "
                f"{jumps[row, dim]:.3f} from {before} ({sequence[row, dim]:.3f} -> {sequence[row + 1, dim]:.3f}); "
                f"max_action_jump is {self.limits.max_action_jump}"
            )

    def _limit_steps(self, actions: np.ndarray) -> tuple[tuple[CartesianCommand, ...], tuple[int, ...]]:
        commands, scaled_steps = [], []
        for step, action in enumerate(actions):
            command = decode_action(action)
            translation = _scale_to(command.translation, self.limits.max_translation)
            rotation = _scale_to(command.rotation, self.limits.max_rotation)
            if translation is not command.translation or rotation is not command.rotation:
                scaled_steps.append(step)
                command = replace(command, translation=translation, rotation=rotation)
            commands.append(command)
        if scaled_steps:
            logger.info("scaled translation/rotation down to the per-step limits at steps %s", scaled_steps)
        return tuple(commands), tuple(scaled_steps)

    def _check_workspace(self, commands: tuple[CartesianCommand, ...], current_tcp_position: np.ndarray) -> np.ndarray:
        low, high = self.limits.workspace
        start = np.asarray(current_tcp_position, dtype=np.float64)
        if start.shape != (3,) or not np.all(np.isfinite(start)):
            raise SafetyViolation(
                f"chunk rejected, nothing was sent: the current TCP position must be 3 finite numbers, "
                f"got {current_tcp_position!r}"
            )
        margin = self.limits.workspace_clip_margin + _WORKSPACE_TOLERANCE
        outside = np.maximum(low - start, start - high) > margin
        if np.any(outside):
            raise SafetyViolation(
                f"chunk rejected, nothing was sent: the TCP is at {np.round(start, 4).tolist()} m, outside the "
                f"workspace {low.tolist()} .. {high.tolist()} m on {', '.join(np.array(AXES)[outside])} by more "
                f"than workspace_clip_margin={self.limits.workspace_clip_margin} m; bring it back inside "
                f"(e.g. move_home()) before sending actions"
            )
        predicted = np.empty((len(commands), 3))
        position, clipped_steps = start, []
        for step, command in enumerate(commands):
            target = position + command.translation
            below, above = target < low - margin, target > high + margin
            if np.any(below | above):
                axis = int(np.flatnonzero(below | above)[0])
                side, bound = ("below the lower", low[axis]) if below[axis] else ("above the upper", high[axis])
                raise SafetyViolation(
                    f"chunk rejected, nothing was sent: step {step} would take the TCP to "
                    f"{AXES[axis]} = {target[axis]:.4f} m, {side} workspace bound {bound:.4f} m by more than "
                    f"workspace_clip_margin={self.limits.workspace_clip_margin} m "
                    f"(predicted from the current TCP position {np.round(start, 4).tolist()} m)"
                )
            position = np.clip(target, low, high)
            if np.any(position != target):
                clipped_steps.append(step)
            predicted[step] = position
        if clipped_steps:
            logger.info("clipped the TCP target to the workspace at steps %s", clipped_steps)
        return predicted


def _scale_to(vector: np.ndarray, limit: float) -> np.ndarray:
    """``vector`` scaled so no component exceeds ``limit`` in magnitude; the same object if none does."""
    largest = float(np.max(np.abs(vector)))
    if largest <= limit:
        return vector
    return vector * (limit / largest)
