"""The arm interface every driver implements, and what it reports back.

An :class:`Arm` takes the 7-D actions of the contract in
:mod:`corft_robots.contract` (the same as the simulator's), one per 10 Hz
control step. The base class owns what all drivers share: the safety check of
a whole chunk before anything is sent, pacing at the control rate, the
gripper's binary state, stopping the arm on any exception or Ctrl-C
(:meth:`Arm.stopping_on_error`, which code driving the arm uses too), and
reporting and logging what was really sent. A driver supplies the hardware
calls (measured TCP pose, start a Cartesian motion, command the gripper, stop,
go home), and counts each command the hardware accepted (:attr:`Arm.commands_sent`),
so tests and fault reports can say how many commands went out, e.g. none after a
rejected chunk.

Each action's target is relative to the TCP pose *measured* when the action is
sent, as in the simulator: position ``p + Δp`` clipped to the workspace (the
whole-chunk check has already rejected chunks whose targets lie further outside
than ``workspace_clip_margin``) and orientation ``exp([Δr]×) · R`` (a base-frame rotation,
left-multiplied).
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import numpy as np

from corft_robots.contract import CONTROL_PERIOD, STATE_LAYOUT, CartesianCommand, compose_target
from corft_robots.errors import RobotConnectionError
from corft_robots.safety import CheckedChunk, SafetyChecker, SafetyLimits

logger = logging.getLogger(__name__)

GripperCommand = Literal["grasp", "open"]
#: The kinds of command a driver sends: a Cartesian target, a grasp or an opening, a stop, a move home.
CommandKind = Literal["move", "gripper", "stop", "home"]
COMMAND_KINDS: tuple[CommandKind, ...] = ("move", "gripper", "stop", "home")


@dataclass(frozen=True)
class ArmState:
    """A measurement of the arm, with the fields of the simulator's ``state`` observation.

    :param tcp_position: TCP position in the base frame (m).
    :param tcp_quaternion: TCP orientation, unit quaternion w x y z (sign: :func:`corft_robots.contract.canonical_quaternion`).
    :param gripper_width: opening between the fingers (m).
    :param joint_positions: the seven joint angles (rad).
    """

    tcp_position: np.ndarray
    tcp_quaternion: np.ndarray
    gripper_width: float
    joint_positions: np.ndarray

    def as_vector(self) -> np.ndarray:
        """The 15-D ``float32`` vector in the order of :data:`corft_robots.contract.STATE_LAYOUT`."""
        parts = [np.atleast_1d(np.asarray(getattr(self, name), dtype=np.float64)) for name, _ in STATE_LAYOUT]
        for (name, size), part in zip(STATE_LAYOUT, parts):
            if part.shape != (size,):
                raise ValueError(f"ArmState.{name} must have {size} value(s), got shape {part.shape}")
        return np.concatenate(parts).astype(np.float32)


@dataclass(frozen=True)
class SentAction:
    """What was really sent for one action.

    :param action: the 7-D action after the safety layer's clip policy.
    :param command: the command decoded from it, after the per-step limits.
    :param start_position: measured TCP position the target is relative to (m).
    :param start_quaternion: measured TCP orientation (w x y z).
    :param target_position: commanded TCP position (m).
    :param target_quaternion: commanded TCP orientation (w x y z).
    :param gripper_command: ``"grasp"`` or ``"open"`` if this action changed the
        gripper's commanded state (the driver starts the command at once, or when
        the hand finishes the one it is running), ``None`` otherwise.
    :param timestamp: wall-clock time the action went out (``time.time()``, s): the
        moment its control period began.
    """

    action: np.ndarray
    command: CartesianCommand
    start_position: np.ndarray
    start_quaternion: np.ndarray
    target_position: np.ndarray
    target_quaternion: np.ndarray
    gripper_command: GripperCommand | None
    timestamp: float


class Arm(ABC):
    """A robot arm with a gripper, driven by the 7-D action contract at 10 Hz.

    Use it as a context manager: ``with FrankaArm(host) as arm: ...`` connects,
    and on leaving (normally or by an exception) stops the arm and disconnects.

    :param safety: limits every chunk is checked against before it is sent.
    """

    def __init__(self, safety: SafetyLimits | None = None) -> None:
        self.limits = SafetyLimits() if safety is None else safety
        self.checker = SafetyChecker(self.limits)
        self._previous_action: np.ndarray | None = None
        self._gripper_closed: bool | None = None
        self._commands_sent = dict.fromkeys(COMMAND_KINDS, 0)
        #: Called with the kind of every command right after the hardware accepted it (telemetry, and fault
        #: rehearsals that act at an exact point of a chunk); what it raises propagates as from the send.
        self.on_command: Callable[[CommandKind], None] | None = None

    # -- what a driver implements -------------------------------------------------------------

    @abstractmethod
    def connect(self) -> None:
        """Connect to the arm and its gripper; does nothing if already connected.

        :raises RobotConnectionError: if the arm cannot be reached.
        """

    @abstractmethod
    def disconnect(self) -> None:
        """Stop the arm if it is moving and release the connection; does nothing if not connected."""

    @property
    @abstractmethod
    def is_connected(self) -> bool:
        """Whether the arm is connected and usable."""

    @abstractmethod
    def state(self) -> ArmState:
        """Measure the arm: TCP pose, gripper width, joint positions."""

    @abstractmethod
    def _stop(self) -> None:
        """Halt any motion and hold the current pose (the arm is connected)."""

    @abstractmethod
    def _tcp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Measured TCP position (m) and orientation (w x y z), quickly (called every step)."""

    @abstractmethod
    def _move_to(self, position: np.ndarray, quaternion: np.ndarray) -> None:
        """Start a Cartesian motion to the target and return at once; it may preempt the previous one."""

    @abstractmethod
    def _command_gripper(self, close: bool, wait: bool) -> None:
        """Grasp (``close``) or open without blocking the control loop; with ``wait``, return once done."""

    @abstractmethod
    def _move_home(self) -> None:
        """Move to the home posture and return once there."""

    # -- shared behaviour ---------------------------------------------------------------------

    @property
    def commands_sent(self) -> dict[CommandKind, int]:
        """How many commands of each kind the hardware accepted since this object was made: ``move`` (a
        Cartesian target), ``gripper`` (a grasp or an opening), ``stop`` and ``home``. A copy."""
        return dict(self._commands_sent)

    def _count_command(self, kind: CommandKind) -> None:
        """Drivers call this right after the hardware accepted a command of ``kind``; then :attr:`on_command`."""
        self._commands_sent[kind] += 1
        if self.on_command is not None:
            self.on_command(kind)

    def __enter__(self) -> Arm:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        finally:
            self.disconnect()

    def stop(self) -> None:
        """Halt any motion and hold the current pose; the gripper keeps its state.

        The next chunk's jump check starts afresh, and its first action sends
        its gripper command whatever the gripper's last one was. Does nothing
        but log a warning when the arm is not connected.
        """
        self._previous_action = None
        self._gripper_closed = None
        if not self.is_connected:
            logger.warning("stop(): %s is not connected, nothing to stop from here", type(self).__name__)
            return
        self._stop()

    def send_action(self, action: np.ndarray, wait: bool = True) -> SentAction:
        """Check and send one action; with ``wait``, then wait out its control period (0.1 s).

        The same as ``send_chunk([action], wait)[0]``.
        """
        return self.send_chunk(np.asarray(action)[None], wait)[0]

    def check_chunk(self, chunk: np.ndarray) -> CheckedChunk:
        """Run the safety checks on ``chunk`` from the arm's measured TCP position; send nothing.

        The jump check includes the last action sent, as :meth:`send_chunk`'s does.
        On any exception the arm is stopped and the exception propagates.

        :raises SafetyViolation: if the chunk would be rejected.
        :raises RobotConnectionError: if the arm is not connected or the connection was lost.
        """
        self._require_connected()
        with self.stopping_on_error():
            position, _ = self._tcp_pose()
            return self.checker.check_chunk(chunk, position, self._previous_action)

    def send_chunk(self, chunk: np.ndarray, wait: bool = True) -> list[SentAction]:
        """Check a whole chunk, then send it one action per control period.

        Nothing is sent unless every action passes the safety checks (see
        :mod:`corft_robots.safety`); the jump check includes the last action sent
        before, unless the arm was stopped or sent home since. The first action
        goes out at once, each next one a whole control period after the one
        before (never faster than 10 Hz: a late action delays the rest rather
        than being caught up on). With ``wait`` the call returns at the end of the last
        action's control period, otherwise as soon as the last action is sent
        (the caller then keeps the pace, as the real env does). On any
        exception, Ctrl-C included, the arm is stopped and the exception
        propagates.

        :param chunk: ``(k, 7)`` actions of the contract.
        :param wait: wait out the last action's control period before returning.
        :return: what was sent for each action, in order.
        :raises SafetyViolation: if the chunk was rejected (nothing was sent).
        :raises RobotConnectionError: if the arm is not connected or the connection was lost.
        :raises RobotControlError: if the arm refused or aborted a motion.
        """
        checked = self.check_chunk(chunk)
        with self.stopping_on_error():
            sent: list[SentAction] = []
            next_send = time.monotonic()
            for step, (action, command) in enumerate(zip(checked.actions, checked.commands)):
                late = _sleep_until(next_send)
                if late > CONTROL_PERIOD / 2:
                    logger.warning("step %d of the chunk goes out %.0f ms late", step, late * 1e3)
                timestamp = time.time()
                # The next action waits a whole period from now: a late one is not caught up on.
                next_send = time.monotonic() + CONTROL_PERIOD
                sent.append(self._send(action, command, timestamp))
            if wait:
                _sleep_until(next_send)
        return sent

    def move_home(self) -> None:
        """Move to the home posture (joint space) and wait until there; stops the arm on any error."""
        self._require_connected()
        with self.stopping_on_error():
            self._previous_action = None
            logger.info("moving home")
            self._move_home()

    def open(self) -> None:
        """Open the gripper to the safety limits' ``gripper_max_width`` and wait until done."""
        self._run_gripper(close=False)

    def grasp(self) -> None:
        """Close the gripper towards ``gripper_min_width`` with the configured force; wait until done."""
        self._run_gripper(close=True)

    def _run_gripper(self, close: bool) -> None:
        self._require_connected()
        with self.stopping_on_error():
            self._gripper_closed = None
            self._command_gripper(close, wait=True)
            self._gripper_closed = close

    def _send(self, action: np.ndarray, command: CartesianCommand, timestamp: float) -> SentAction:
        """Send one checked action now: a Cartesian motion, and a gripper command if its state changes."""
        position, quaternion = self._tcp_pose()
        target_position, target_quaternion = compose_target(position, quaternion, command, self.limits.workspace)
        self._move_to(target_position, target_quaternion)
        gripper_command: GripperCommand | None = None
        if command.close_gripper != self._gripper_closed:
            self._gripper_closed = None  # unknown until the command went out
            self._command_gripper(command.close_gripper, wait=False)
            self._gripper_closed = command.close_gripper
            gripper_command = "grasp" if command.close_gripper else "open"
        self._previous_action = action
        sent = SentAction(
            action=action,
            command=command,
            start_position=position,
            start_quaternion=quaternion,
            target_position=target_position,
            target_quaternion=target_quaternion,
            gripper_command=gripper_command,
            timestamp=timestamp,
        )
        logger.info(
            "sent action %s: TCP %s -> %s, quaternion %s -> %s%s",
            np.round(action, 3).tolist(),
            np.round(position, 4).tolist(),
            np.round(target_position, 4).tolist(),
            np.round(quaternion, 4).tolist(),
            np.round(target_quaternion, 4).tolist(),
            f", gripper {gripper_command}" if gripper_command else "",
        )
        return sent

    def _require_connected(self) -> None:
        if not self.is_connected:
            raise RobotConnectionError(f"{type(self).__name__} is not connected: call connect() (or use it in a with block)")

    @contextmanager
    def stopping_on_error(self) -> Iterator[None]:
        """Stop the arm on any exception (Ctrl-C included), then let the exception propagate.

        The one stop-on-error path: the arm's own commands run in it, and so does
        whatever drives the arm around them (the real env's reset and steps, whose
        camera reads may fail too). A failed stop is logged and noted on the exception.
        Nested uses stop once: the innermost marks the exception, the outer ones let it pass.
        """
        try:
            yield
        except BaseException as error:
            if getattr(error, _ARM_STOPPED_MARK, False):
                raise
            setattr(error, _ARM_STOPPED_MARK, True)
            logger.error("stopping the arm after %s: %s", type(error).__name__, error)
            try:
                self.stop()
            except Exception as stop_error:
                logger.error("stopping the arm failed too: %s", stop_error)
                error.add_note(f"stopping the arm afterwards failed too: {stop_error}")
            raise


#: Attribute set on an exception once :meth:`Arm.stopping_on_error` has stopped the arm for it.
_ARM_STOPPED_MARK = "_corft_arm_stopped"


def _sleep_until(deadline: float) -> float:
    """Sleep until ``time.monotonic()`` reaches ``deadline``; return how late it already was (s), else 0."""
    remaining = deadline - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
        return 0.0
    return -remaining
