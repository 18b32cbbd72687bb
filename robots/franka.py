"""The Franka FR3 and its hand through ``franky-control`` (import ``franky``).

Works unchanged against the real robot and against ``franky-sim``'s server
(``realtime=False`` there). How the action contract maps onto franky:

- **Targets are absolute.** franky's ``ReferenceType.Relative`` targets are
  expressed in the *end-effector* frame (with the gripper pointing down, a
  relative ``+z`` moves the TCP down), while the contract's translation is in
  the base frame and its rotation a base-frame, left-multiplied rotation
  vector. So each action becomes ``CartesianMotion(Affine(p, q),
  ReferenceType.Absolute)`` with ``(p, q)`` computed from the TCP pose measured
  when the action is sent (:func:`corft_robots.contract.compose_target`), which is the
  contract's "relative to the measured pose".
- **Asynchronous, preempting.** Each motion is started with
  ``move(..., asynchronous=True)``; the next action's motion takes over the
  running one seamlessly (franky replans from the current state), so the
  10 Hz loop never blocks on the arm. Starting a motion takes 0.4 ms (2 ms at
  most), so steps go out at 10 Hz, across chunk boundaries too (measured on
  franky-sim). Each action waits a whole period after the one before, so a
  late step delays the next rather than being caught up on.
- **Dynamics.** ``dynamics_factor`` scales the velocity, acceleration and
  jerk limits of every motion (it is franky's global relative dynamics
  factor). The contract asks for up to 5 cm per step (0.5 m/s); with a low
  factor the arm covers less per step and each next target, taken from the
  measured pose, simply starts from where the arm is (franky-sim, 10 steps of
  2 cm: 13 cm covered with the default 0.1, 15 cm with 0.3).
- **Contact.** Every motion carries a franky reaction: when the estimated
  external force at the end effector exceeds ``contact_force_threshold``, the
  motion is replaced by a stop motion, and the next step raises
  :class:`~corft_robots.errors.RobotContactError`. The robot's own collision
  reflexes (franky's defaults, 30 N / 20 Nm) remain as a backstop and surface
  as :class:`~corft_robots.errors.RobotControlError`. franky-sim reports no external
  force, so the reaction never fires there.
- **Stale state.** While a motion runs, franky answers state queries from the
  control loop's last sample; when the robot goes silent, libfranka notices
  only after about 2 s. So every read checks that the robot's clock advanced
  within ``state_timeout`` and raises :class:`~corft_robots.errors.RobotConnectionError`
  otherwise.
- **Gripper.** A grasp is ``grasp(gripper_min_width, speed, force,
  epsilon_outer=gripper_max_width)`` (any object counts as grasped and is
  held with the force); opening moves to ``gripper_max_width``. Both run
  asynchronously during a chunk and errors surface on a later step. The hand
  runs one command at a time (a second one would block the loop), so a
  change requested while it is busy starts when the running command ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from corft_robots.base import Arm, ArmState
from corft_robots.contract import canonical_quaternion
from corft_robots.errors import RobotConnectionError, RobotContactError, RobotControlError, RobotError
from corft_robots.extras import import_optional
from corft_robots.fr3 import HOME_JOINT_POSITIONS
from corft_robots.safety import SafetyLimits

franky = import_optional("franky", "real", "the real arm (corft_robots.franka)")

logger = logging.getLogger(__name__)

#: Fastest finger speed the Franka Hand accepts (m/s).
MAX_GRIPPER_SPEED = 0.1
#: How long a blocking gripper command (``open()``/``grasp()``) may take (s).
GRIPPER_TIMEOUT = 10.0
#: How long ``move_home()`` may take (s).
HOME_TIMEOUT = 60.0
#: Tolerance below the grasp width that still counts as grasped (m).
GRASP_EPSILON_INNER = 0.005
#: Poll interval while waiting on the robot, so Ctrl-C is handled promptly (s).
_POLL_INTERVAL = 0.05

_CONNECTION_HINT = (
    "check that the robot is powered on and reachable from this computer, that FCI is activated in Desk "
    "and that no other program holds control; the robot stops by itself when the connection drops"
)
_CONTROL_HINT = (
    "the robot stopped: check for a collision, a joint or Cartesian limit or a pressed user stop (release it), "
    "then call recover() before moving again"
)
_REALTIME_HINT = "the control loop needs a realtime (PREEMPT_RT) kernel; pass realtime=False only for simulators"

#: Grippers whose command never finished, kept alive because destroying them would crash the process.
_UNRELEASED_GRIPPERS: list[tuple[franky.Gripper, franky.BoolFuture]] = []

#: franky exceptions that mean the robot cannot be talked to.
_CONNECTION_ERRORS = (franky.NetworkException, franky.ProtocolException, franky.IncompatibleVersionException)
#: franky exceptions that mean the robot refused or aborted a command.
_CONTROL_ERRORS = (
    franky.ControlException,
    franky.CommandException,
    franky.InvalidOperationException,
    franky.GripperException,
    franky.ReactionRecursionException,
    franky.InvalidMotionTypeException,
    franky.MotionReuseException,
    franky.TorqueSignalTimeoutException,
    franky.ModelException,
    franky.Exception,
)


class FrankaArm(Arm):
    """A Franka FR3 with the Franka Hand, driven by the 7-D action contract (see the module docstring).

    :param host: hostname or IP address of the robot's FCI (franky-sim: the
        simulated robot's ``hostname``).
    :param safety: limits every chunk is checked against.
    :param dynamics_factor: fraction of the robot's velocity, acceleration and
        jerk limits motions may use, in (0, 1]. The default is cautious, for
        first runs; rehearse on the twin before raising it.
    :param contact_force_threshold: external force at the end effector (N) that
        stops the arm, above what the task's contacts produce and below the
        robot's own 30 N collision reflex.
    :param grasp_force: grasping force (N), at most ``safety.max_grasp_force``.
    :param gripper_speed: finger speed (m/s), at most 0.1.
    :param realtime: require a realtime kernel for the control loop, as the
        real robot needs; ``False`` for franky-sim.
    :param state_timeout: longest the robot's state may stay unchanged before
        the connection counts as lost (s).
    """

    def __init__(
        self,
        host: str,
        safety: SafetyLimits | None = None,
        dynamics_factor: float = 0.1,
        contact_force_threshold: float = 15.0,
        grasp_force: float = 20.0,
        gripper_speed: float = 0.05,
        realtime: bool = True,
        state_timeout: float = 0.3,
    ) -> None:
        super().__init__(safety)
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be a non-empty hostname or IP address, got {host!r}")
        _check_positive("dynamics_factor", dynamics_factor, 1.0)
        _check_positive("contact_force_threshold", contact_force_threshold, float("inf"))
        _check_positive("grasp_force", grasp_force, self.limits.max_grasp_force)
        _check_positive("gripper_speed", gripper_speed, MAX_GRIPPER_SPEED)
        _check_positive("state_timeout", state_timeout, float("inf"))
        self.host = host
        self.dynamics_factor = float(dynamics_factor)
        self.contact_force_threshold = float(contact_force_threshold)
        self.grasp_force = float(grasp_force)
        self.gripper_speed = float(gripper_speed)
        self.realtime = bool(realtime)
        self.state_timeout = float(state_timeout)
        self._robot: franky.Robot | None = None
        self._gripper: franky.Gripper | None = None
        self._gripper_future: tuple[franky.BoolFuture, str] | None = None
        self._gripper_pending: bool | None = None
        self._contact = threading.Event()
        self._contact_force = np.zeros(3)
        self._last_robot_time: float | None = None
        self._last_fresh = 0.0

    # -- connection ---------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        """Whether the robot and its gripper are connected."""
        return self._robot is not None

    def connect(self) -> None:
        """Connect to the robot and its gripper (a few ms on loopback); does nothing if connected.

        :raises RobotConnectionError: naming the host, if either cannot be reached.
        """
        if self.is_connected:
            return
        logger.info("connecting to the Franka robot at %s", self.host)
        realtime = franky.RealtimeConfig.Enforce if self.realtime else franky.RealtimeConfig.Ignore
        with self._franky_errors("connecting"):
            robot = franky.Robot(self.host, relative_dynamics_factor=self.dynamics_factor, realtime_config=realtime)
            gripper = franky.Gripper(self.host)
            has_errors = robot.has_errors
        self._robot, self._gripper = robot, gripper
        self._gripper_future = None
        self._gripper_pending = None
        self._gripper_closed = None
        self._previous_action = None
        self._contact.clear()
        self._last_robot_time = None
        if has_errors:
            logger.warning("the robot at %s reports errors; motions will fail until recover() is called", self.host)

    def disconnect(self) -> None:
        """Stop the arm, then release the robot and the gripper; does nothing if not connected."""
        if not self.is_connected:
            return
        try:
            self.stop()
        finally:
            self._drop_connection()
            logger.info("disconnected from the Franka robot at %s", self.host)

    def recover(self) -> None:
        """Clear the robot's errors after a reflex or a user stop (franky's automatic error recovery).

        :raises RobotControlError: if the robot could not recover (e.g. the user stop is still pressed).
        """
        self._require_connected()
        with self._franky_errors("recovering from errors"):
            recovered = self._robot.recover_from_errors()
        if not recovered:
            raise RobotControlError(f"Franka robot at {self.host}: error recovery failed; {_CONTROL_HINT}")
        self._contact.clear()

    @property
    def is_moving(self) -> bool:
        """Whether a motion is running on the robot (``False`` when not connected)."""
        if not self.is_connected:
            return False
        with self._franky_errors("reading the control state"):
            return self._robot.current_control_signal_type is not None

    # -- measurement --------------------------------------------------------------------------

    def state(self) -> ArmState:
        """Measure TCP pose, gripper width and joint positions.

        :raises RobotConnectionError: if the robot's state is stale or the connection was lost.
        """
        self._require_connected()
        robot_state = self._read_state()
        with self._franky_errors("reading the gripper width"):
            width = float(self._gripper.width)
        position, quaternion = _pose_of(robot_state.O_T_EE)
        return ArmState(
            tcp_position=position,
            tcp_quaternion=quaternion,
            gripper_width=width,
            joint_positions=np.array(robot_state.q, dtype=np.float64),
        )

    def _tcp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        return _pose_of(self._read_state().O_T_EE)

    def _read_state(self) -> franky.RobotState:
        """The robot's state, checked to be fresh (the robot's clock advanced within ``state_timeout``)."""
        with self._franky_errors("reading the robot state"):
            robot_state = self._robot.state
            robot_time = robot_state.time.to_sec()
        now = time.monotonic()
        if robot_time != self._last_robot_time:
            self._last_robot_time, self._last_fresh = robot_time, now
        elif now - self._last_fresh > self.state_timeout:
            silent = now - self._last_fresh
            self._drop_connection()
            raise RobotConnectionError(
                f"Franka robot at {self.host}: no new robot state for {silent:.2f} s (state_timeout "
                f"{self.state_timeout} s), the connection is lost; {_CONNECTION_HINT}"
            )
        return robot_state

    # -- motion -------------------------------------------------------------------------------

    def _move_to(self, position: np.ndarray, quaternion: np.ndarray) -> None:
        self._check_gripper()
        with self._franky_errors("moving"):
            self._robot.poll_motion()  # raises what went wrong with the running motion
        if self._contact.is_set():
            force = np.round(self._contact_force, 1).tolist()
            raise RobotContactError(
                f"Franka robot at {self.host}: unexpected contact, external force {force} N exceeded "
                f"{self.contact_force_threshold} N and the arm was stopped; clear the obstacle before moving again"
            )
        motion = franky.CartesianMotion(franky.Affine(position, _xyzw(quaternion)), franky.ReferenceType.Absolute)
        motion.add_reaction(self._contact_reaction())
        with self._franky_errors("moving"):
            self._robot.move(motion, asynchronous=True)
        self._count_command("move")

    def _contact_reaction(self) -> franky.Reaction:
        """A reaction that replaces the motion by a stop motion when the external force is too large."""
        force_squared = franky.Measure.FORCE_X**2 + franky.Measure.FORCE_Y**2 + franky.Measure.FORCE_Z**2
        reaction = franky.Reaction(force_squared > self.contact_force_threshold**2, franky.CartesianStopMotion())
        reaction.register_callback(self._on_contact)
        return reaction

    def _on_contact(self, robot_state: franky.RobotState, rel_time: franky.Duration, abs_time: franky.Duration) -> None:
        """Called by franky's control loop when the contact reaction fires; the next step raises."""
        self._contact_force = np.array(robot_state.O_F_ext_hat_K[:3], dtype=np.float64)
        self._contact.set()

    def _stop(self) -> None:
        """Decelerate smoothly with a stop motion; fall back to franky's hard stop if that fails.

        A gripper command waiting for the hand is dropped; one running goes on.
        """
        self._contact.clear()
        self._gripper_pending = None
        try:
            with self._franky_errors("stopping"):
                self._robot.poll_motion()  # raises what went wrong with the last motion: then stop hard
                signal_type = self._robot.current_control_signal_type  # None when no motion runs
                if signal_type is not None:
                    joint_motion = signal_type == franky.ControlSignalType.JointPositions
                    stop_motion = franky.JointStopMotion() if joint_motion else franky.CartesianStopMotion()
                    self._robot.move(stop_motion, asynchronous=False)
                    self._count_command("stop")
        except RobotConnectionError:
            raise
        except RobotError as error:
            logger.warning("smooth stop failed (%s); sending a hard stop", error)
            with self._franky_errors("stopping"):
                self._robot.stop()
                self._count_command("stop")
                try:
                    self._robot.join_motion(_POLL_INTERVAL)
                except franky.ControlException:
                    pass  # the motion we just preempted reports its preemption
        logger.info("arm stopped")

    def _move_home(self) -> None:
        self._stop()
        with self._franky_errors("moving home"):
            self._robot.move(franky.JointMotion(HOME_JOINT_POSITIONS.tolist()), asynchronous=True)
            self._count_command("home")
            deadline = time.monotonic() + HOME_TIMEOUT
            while not self._robot.join_motion(_POLL_INTERVAL):
                if time.monotonic() > deadline:
                    raise RobotControlError(f"Franka robot at {self.host}: not home after {HOME_TIMEOUT} s")

    # -- gripper ------------------------------------------------------------------------------

    def _command_gripper(self, close: bool, wait: bool) -> None:
        """Start a grasp or an opening; one already running is never interrupted.

        franky's gripper runs one command at a time: a second one blocks the
        caller until the first ends (and deadlocks with a franky-sim server in
        the same process). So while a command runs, a new one waits in
        ``_gripper_pending`` (the latest wins) and :meth:`_check_gripper`
        starts it once the hand is free; with ``wait``, the running command is
        waited for instead.
        """
        if wait:
            self._gripper_pending = None
            self._wait_gripper()
            self._start_gripper(close)
            self._wait_gripper()
        elif self._gripper_future is None:
            self._start_gripper(close)
        else:
            self._gripper_pending = close

    def _start_gripper(self, close: bool) -> None:
        with self._franky_errors("commanding the gripper"):
            if close:
                future = self._gripper.grasp_async(
                    self.limits.gripper_min_width,
                    self.gripper_speed,
                    self.grasp_force,
                    epsilon_inner=GRASP_EPSILON_INNER,
                    epsilon_outer=self.limits.gripper_max_width,
                )
            else:
                future = self._gripper.move_async(self.limits.gripper_max_width, self.gripper_speed)
        self._gripper_future = (future, "grasp" if close else "open")
        self._count_command("gripper")

    def _wait_gripper(self) -> None:
        """Wait for the running gripper command (if any) to end, and collect it."""
        if self._gripper_future is None:
            return
        future, name = self._gripper_future
        deadline = time.monotonic() + GRIPPER_TIMEOUT
        while not future.wait(_POLL_INTERVAL):
            if time.monotonic() > deadline:
                raise RobotControlError(f"Franka robot at {self.host}: the gripper's {name} did not end within {GRIPPER_TIMEOUT} s")
        self._check_gripper()

    def _check_gripper(self) -> None:
        """Collect a finished gripper command (raise its error, warn if it failed), then start a pending one."""
        if self._gripper_future is None:
            return
        future, name = self._gripper_future
        if not future.wait(0):
            return
        self._gripper_future = None
        with self._franky_errors(f"the gripper's {name}"):
            succeeded = future.get()
        if not succeeded:
            logger.warning("the gripper's %s did not succeed", name)
        if self._gripper_pending is not None:
            close, self._gripper_pending = self._gripper_pending, None
            self._start_gripper(close)

    # -- errors -------------------------------------------------------------------------------

    def _drop_connection(self) -> None:
        """Release the robot and the gripper, once no gripper command is in flight.

        franky crashes the process when a ``Gripper`` is destroyed while one of
        its asynchronous commands runs, so a running command is waited for; if
        it never ends, the gripper is kept alive (and leaked) rather than crash.
        """
        if self._gripper_future is not None:
            future, name = self._gripper_future
            if not future.wait(GRIPPER_TIMEOUT):
                logger.error("the gripper's %s is still running after %s s; not releasing the gripper", name, GRIPPER_TIMEOUT)
                _UNRELEASED_GRIPPERS.append((self._gripper, future))
        self._robot = None
        self._gripper = None
        self._gripper_future = None
        self._gripper_pending = None

    @contextmanager
    def _franky_errors(self, doing: str) -> Iterator[None]:
        """Turn franky's exceptions into ours, naming the host and what to do."""
        try:
            yield
        except RobotError:
            raise
        except _CONNECTION_ERRORS as error:
            self._drop_connection()
            raise RobotConnectionError(
                f"Franka robot at {self.host}: connection failed while {doing}: {error}; {_CONNECTION_HINT}"
            ) from error
        except franky.RealtimeException as error:
            raise RobotConnectionError(f"Franka robot at {self.host}: {error}; {_REALTIME_HINT}") from error
        except _CONTROL_ERRORS as error:
            raise RobotControlError(f"Franka robot at {self.host}: failed while {doing}: {error}; {_CONTROL_HINT}") from error
        except RuntimeError as error:
            if "Net Exception" not in str(error):  # Poco's socket error, which franky passes on untyped
                raise RobotControlError(f"Franka robot at {self.host}: failed while {doing}: {error}") from error
            self._drop_connection()
            raise RobotConnectionError(
                f"Franka robot at {self.host}: connection lost while {doing} ({error}); {_CONNECTION_HINT}"
            ) from error


def _check_positive(name: str, value: float, high: float) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number in ``(0, high]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not 0.0 < value <= high:
        raise ValueError(f"{name} must be in (0, {high}], got {value}")


def _pose_of(affine: franky.Affine) -> tuple[np.ndarray, np.ndarray]:
    """Position (m) and unit quaternion (w x y z, :func:`canonical_quaternion`'s sign) of a franky pose."""
    x, y, z, w = np.asarray(affine.quaternion, dtype=np.float64)
    return np.array(affine.translation, dtype=np.float64), canonical_quaternion(np.array([w, x, y, z]))


def _xyzw(quaternion: np.ndarray) -> np.ndarray:
    """A w x y z quaternion in franky's x y z w order."""
    w, x, y, z = quaternion
    return np.array([x, y, z, w])
