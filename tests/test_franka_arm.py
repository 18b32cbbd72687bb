"""FrankaArm against franky-sim's libfranka server on loopback, with fault injection.

Every test starts its own simulated FR3 (about 1 s) at the home posture, so
none depends on another's leftovers; the fixture shuts the server down even
when a test fails. Nothing is mocked: franky talks to the simulator over the
libfranka network protocol, as it would to the real robot.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pytest
from franky_sim import SimulationServer
from franky_sim.mujoco_simulator import MujocoSimulator

from corft_envs.controller import rotvec_between
from corft_robots import (
    ArmState,
    FrankaArm,
    RobotConnectionError,
    SafetyLimits,
    SafetyViolation,
)
from corft_robots.contract import CONTROL_PERIOD, STATE_DIM, CartesianCommand, compose_target
from corft_robots.fr3 import GRIPPER_MAX_WIDTH, HOME_JOINT_POSITIONS
from tests.helpers import sent_since

pytestmark = [pytest.mark.integration, pytest.mark.twin]

#: Motions in these tests use 30% of the FR3's dynamics, so they finish quickly.
DYNAMICS = 0.3


@dataclass
class SimRobot:
    """A running franky-sim server with one FR3."""

    simulator: MujocoSimulator
    server: SimulationServer
    hostname: str

    def kill(self) -> None:
        """Stop the server as if its process died: no more state, client connections closed."""
        self.server.running = False
        if self.server.async_thread is not None:
            self.server.async_thread.join()
        for robot_server in self.server.robot_servers:
            robot_server.reset_state()
            if robot_server.gripper_server is not None:
                robot_server.gripper_server.reset_state()
        self.server.cleanup()


@pytest.fixture
def start_sim() -> Iterator[Callable[..., SimRobot]]:
    """Factory: start a franky-sim server; every one started is shut down at the end."""
    started: list[SimRobot] = []

    def start(initial_q: np.ndarray = HOME_JOINT_POSITIONS) -> SimRobot:
        simulator = MujocoSimulator()
        simulator.init()
        robot = simulator.add_robot(initial_q=list(initial_q), initial_hand_width=GRIPPER_MAX_WIDTH)
        server = SimulationServer(simulator)
        sim_robot = SimRobot(simulator, server, hostname="")
        started.append(sim_robot)
        server.init()
        server.run_async()
        sim_robot.hostname = robot.hostname
        return sim_robot

    yield start
    for sim_robot in started:
        sim_robot.kill()
        if not sim_robot.simulator.is_cleaned_up:
            sim_robot.simulator.cleanup()


@pytest.fixture
def sim(start_sim) -> SimRobot:
    return start_sim()


@pytest.fixture
def arm(sim) -> Iterator[FrankaArm]:
    franka = FrankaArm(sim.hostname, realtime=False, dynamics_factor=DYNAMICS)
    franka.connect()
    yield franka
    franka.disconnect()


def moving_chunk(steps: int, dy: float = 0.4) -> np.ndarray:
    """``steps`` actions moving along base y with the gripper open."""
    actions = np.zeros((steps, 7))
    actions[:, 1] = dy
    actions[:, 6] = -1.0
    return actions


def wait_until(condition: Callable[[], bool], timeout: float = 1.0) -> bool:
    """Poll ``condition`` every 50 ms until it holds (True) or ``timeout`` s pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def assert_still(arm: FrankaArm, seconds: float = 0.3, tolerance: float = 1e-3) -> np.ndarray:
    """Assert the TCP does not move over ``seconds``; return its position."""
    before = arm.state().tcp_position
    time.sleep(seconds)
    after = arm.state().tcp_position
    assert np.max(np.abs(after - before)) < tolerance, f"the arm moved from {before} to {after}"
    return after


# -- pure parts of the interface --------------------------------------------------------------


def test_target_pose_is_base_frame_translation_and_left_multiplied_rotation():
    command = CartesianCommand(translation=np.array([0.0, 0.0, 0.05]), rotation=np.array([0, 0, 0.2]), close_gripper=False)
    gripper_down = np.array([0.0, 1.0, 0.0, 0.0])  # 180 degrees about x
    position, quaternion = compose_target(np.array([0.5, 0.0, 0.3]), gripper_down, command, SafetyLimits().workspace)
    np.testing.assert_allclose(position, [0.5, 0.0, 0.35])
    # (cos 0.1, 0, 0, sin 0.1) * (0, 1, 0, 0) = (0, cos 0.1, sin 0.1, 0)
    np.testing.assert_allclose(quaternion, [0.0, math.cos(0.1), math.sin(0.1), 0.0], atol=1e-12)
    # the last guard: a target beyond the workspace (x <= 0.80) is clipped to it
    outward = CartesianCommand(np.array([0.05, 0.0, 0.0]), np.zeros(3), False)
    clipped, _ = compose_target(np.array([0.79, 0.0, 0.3]), gripper_down, outward, SafetyLimits().workspace)
    np.testing.assert_allclose(clipped, [0.80, 0.0, 0.3])


def test_arm_state_vector_has_the_sim_layout():
    state = ArmState(np.array([1.0, 2, 3]), np.array([1.0, 0, 0, 0]), 0.04, np.arange(7.0))
    vector = state.as_vector()
    assert vector.shape == (STATE_DIM,) and vector.dtype == np.float32
    np.testing.assert_array_equal(vector, np.array([1, 2, 3, 1, 0, 0, 0, 0.04, 0, 1, 2, 3, 4, 5, 6], dtype=np.float32))
    with pytest.raises(ValueError, match="joint_positions"):
        ArmState(np.zeros(3), np.array([1.0, 0, 0, 0]), 0.0, np.zeros(6)).as_vector()


@pytest.mark.parametrize(
    "kwargs",
    [{"host": ""}, {"dynamics_factor": 0.0}, {"dynamics_factor": 1.5}, {"grasp_force": 50.0},
     {"gripper_speed": 0.2}, {"contact_force_threshold": float("inf")}, {"state_timeout": -1.0}],
)
def test_invalid_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        FrankaArm(**{"host": "127.0.0.1", **kwargs})


def test_unreachable_robot_gives_a_connection_error_naming_the_host():
    arm = FrankaArm("127.1.2.3", realtime=False)
    with pytest.raises(RobotConnectionError, match=r"127\.1\.2\.3.*FCI"):
        arm.connect()
    assert not arm.is_connected
    with pytest.raises(RobotConnectionError, match="not connected"):
        arm.send_action(np.zeros(7))


# -- on franky-sim -----------------------------------------------------------------------------


def test_state_matches_the_sim_env_at_home(arm):
    env = gym.make("corft/PickPlace-v0", image_size=16)
    try:
        observation, _ = env.reset(seed=0)
    finally:
        env.close()
    real = arm.state().as_vector()
    sim = observation["state"]
    np.testing.assert_allclose(real[0:3], sim[0:3], atol=2e-3)  # TCP position (m)
    np.testing.assert_allclose(real[3:7], sim[3:7], atol=2e-3)  # quaternion, same sign rule
    np.testing.assert_allclose(real[7], sim[7], atol=2e-3)  # gripper width (m)
    np.testing.assert_allclose(real[8:], sim[8:], atol=2e-3)  # joints (rad)


def test_chunk_moves_in_the_base_frame_never_faster_than_10_hz(arm):
    start = arm.state()
    actions = moving_chunk(5, dy=0.0)
    actions[:, 2] = -0.6  # down: in franky's end-effector frame (gripper down) -z would go up
    before = arm.commands_sent
    begin = time.monotonic()
    sent = arm.send_chunk(actions)
    elapsed = time.monotonic() - begin
    assert len(sent) == 5
    assert sent_since(arm, before) == {"move": 5, "gripper": 1, "stop": 0, "home": 0}  # the first action opens it
    # never faster than 10 Hz; the achieved rate is measured by benchmarks/twin_loop.py, not asserted here
    assert elapsed >= 5 * CONTROL_PERIOD - 1e-3
    periods = np.diff([s.timestamp for s in sent])
    assert np.all(periods >= CONTROL_PERIOD - 2e-3)
    for s in sent:
        np.testing.assert_allclose(s.target_position, s.start_position + [0, 0, -0.03], atol=1e-9)
        np.testing.assert_allclose(s.target_quaternion, s.start_quaternion, atol=1e-9)
    time.sleep(0.5)
    moved = arm.state().tcp_position - start.tcp_position
    assert moved[2] < -0.05, moved
    assert np.max(np.abs(moved[:2])) < 3e-3, moved


def test_rotation_is_a_base_frame_rotation_vector(arm):
    start = arm.state().tcp_quaternion
    actions = moving_chunk(3, dy=0.0)
    actions[:, 5] = 0.8  # 0.2 rad per step about base +z
    sent = arm.send_chunk(actions)
    np.testing.assert_allclose(rotvec_between(sent[0].start_quaternion, sent[0].target_quaternion), [0, 0, 0.2], atol=1e-9)
    time.sleep(0.5)
    turned = rotvec_between(start, arm.state().tcp_quaternion)
    assert turned[2] > 0.2, turned  # about +z of the base (in the end-effector frame it would be -z)
    assert np.max(np.abs(turned[:2])) < 0.02, turned


def test_gripper_commands_are_sent_only_when_its_state_changes(arm):
    actions = moving_chunk(6, dy=0.0)
    actions[:, 6] = [-1, -1, 1, 1, 1, -0.5]
    before = arm.commands_sent
    sent = arm.send_chunk(actions)
    assert [s.gripper_command for s in sent] == ["open", None, "grasp", None, None, "open"]
    assert arm.send_action([0, 0, 0, 0, 0, 0, -1]).gripper_command is None  # a one-action chunk
    sent = sent_since(arm, before)
    # the hand runs one command at a time: the last opening starts once the grasp has ended, maybe not yet
    assert sent["move"] == 7 and sent["gripper"] in (2, 3) and sent["stop"] == 0, sent
    arm.grasp()
    assert arm.state().gripper_width < 0.005
    arm.open()
    assert sent_since(arm, before)["gripper"] == sent["gripper"] + 2
    assert arm.state().gripper_width == pytest.approx(GRIPPER_MAX_WIDTH, abs=3e-3)


def test_move_home_from_another_posture(start_sim):
    away = HOME_JOINT_POSITIONS + np.array([0.3, -0.2, 0.1, 0.2, -0.1, 0.2, 0.3])
    sim = start_sim(initial_q=away)
    with FrankaArm(sim.hostname, realtime=False, dynamics_factor=0.6) as arm:
        np.testing.assert_allclose(arm.state().joint_positions, away, atol=1e-2)
        arm.move_home()  # returns when the motion generator is home; franky-sim's joints lag ~0.3 s
        assert arm.commands_sent["home"] == 1 and arm.commands_sent["move"] == 0
        assert wait_until(lambda: np.allclose(arm.state().joint_positions, HOME_JOINT_POSITIONS, atol=5e-3))
        arm.send_chunk(moving_chunk(2))  # Cartesian motions work after the joint motion
    assert not arm.is_connected


# -- fault injection: each ends with a clear error and the arm stopped -------------------------


def test_nan_action_is_rejected_before_any_motion(arm):
    before = arm.state().tcp_position
    sent_before = arm.commands_sent
    actions = moving_chunk(6)
    actions[3, 0] = np.nan
    with pytest.raises(SafetyViolation, match=r"step 3, dx \(action\[0\]\) is nan"):
        arm.send_chunk(actions)
    assert sent_since(arm, sent_before) == {"move": 0, "gripper": 0, "stop": 0, "home": 0}  # at rest: no stop
    np.testing.assert_allclose(assert_still(arm), before, atol=1e-3)
    assert arm.is_connected


def test_chunk_leaving_the_workspace_is_rejected_before_any_motion(arm):
    before = arm.state().tcp_position  # z = 0.52 at home
    actions = moving_chunk(12, dy=0.0)
    actions[:, 2] = -1.0  # 5 cm down per step: below z = 0.005 at step 10
    sent_before = arm.commands_sent
    with pytest.raises(SafetyViolation, match=r"step 10 would take the TCP to z = -0\.0\d+ m, below"):
        arm.send_chunk(actions)
    assert sent_since(arm, sent_before) == {"move": 0, "gripper": 0, "stop": 0, "home": 0}
    np.testing.assert_allclose(assert_still(arm), before, atol=1e-3)


def test_too_large_jump_is_rejected_within_and_across_chunks(arm):
    before = arm.state().tcp_position
    sent_before = arm.commands_sent
    with pytest.raises(SafetyViolation, match="step 4, dy jumps by 1.600 from step 3"):
        arm.send_chunk(np.vstack([moving_chunk(4, dy=0.8), moving_chunk(1, dy=-0.8)]))
    assert sent_since(arm, sent_before) == {"move": 0, "gripper": 0, "stop": 0, "home": 0}
    np.testing.assert_allclose(assert_still(arm), before, atol=1e-3)

    arm.send_chunk(moving_chunk(2, dy=0.8))
    sent_before = arm.commands_sent
    with pytest.raises(SafetyViolation, match="step 0, dy jumps by 1.600 from the last action sent"):
        arm.send_chunk(moving_chunk(2, dy=-0.8))
    sent = sent_since(arm, sent_before)
    assert sent["move"] == 0 and sent["gripper"] == 0 and sent["stop"] <= 1  # stopped if still moving
    assert_still(arm)
    # the arm was stopped, so the next chunk starts afresh
    assert len(arm.send_chunk(moving_chunk(1, dy=-0.8))) == 1
    assert sent_since(arm, sent_before)["move"] == 1


def test_ctrl_c_during_a_chunk_stops_the_arm_and_sends_nothing_after_it(arm):
    sent_before = arm.commands_sent

    def ctrl_c_after_the_third_target(kind: str) -> None:  # a real SIGINT, at an exact point of the chunk
        if kind == "move" and sent_since(arm, sent_before)["move"] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    arm.on_command = ctrl_c_after_the_third_target
    try:
        with pytest.raises(KeyboardInterrupt):
            arm.send_chunk(moving_chunk(15))
    finally:
        arm.on_command = None
    # three of the chunk's 15 targets went out (and the first action's gripper opening), then only the stop
    assert sent_since(arm, sent_before) == {"move": 3, "gripper": 1, "stop": 1, "home": 0}
    assert_still(arm)
    assert arm.is_connected


def test_nested_stop_on_error_stops_the_arm_once(arm, caplog):
    """The env wraps the arm's own commands in its stop-on-error too: one stop and one log line, not two."""
    sent_before = arm.commands_sent

    def fail_on_the_second_target(kind: str) -> None:
        if kind == "move" and sent_since(arm, sent_before)["move"] == 2:
            raise RuntimeError("camera read failed")

    arm.on_command = fail_on_the_second_target
    try:
        with pytest.raises(RuntimeError, match="camera read failed"), arm.stopping_on_error():
            arm.send_chunk(moving_chunk(5))
    finally:
        arm.on_command = None
    assert sent_since(arm, sent_before) == {"move": 2, "gripper": 1, "stop": 1, "home": 0}
    assert [r.message for r in caplog.records].count("stopping the arm after RuntimeError: camera read failed") == 1


def test_server_dying_mid_chunk_raises_a_connection_error_and_nothing_is_sent_after_it(sim, arm):
    sent_before = arm.commands_sent

    def kill_after_the_third_target(kind: str) -> None:
        if kind == "move" and sent_since(arm, sent_before)["move"] == 3:
            sim.kill()

    arm.on_command = kill_after_the_third_target
    try:
        with pytest.raises(RobotConnectionError, match=rf"robot at {sim.hostname}: .*connection is lost"):
            arm.send_chunk(moving_chunk(15))
    finally:
        arm.on_command = None
    # the silence is noticed within state_timeout of the last new state read: the first read after the kill
    # may still get a state the server sent before it died (one more target), then at most state_timeout's
    # control periods of targets (actions are never closer than a period), and none once the error was raised
    sent = sent_since(arm, sent_before)["move"]
    assert 3 <= sent <= 3 + 1 + math.ceil(arm.state_timeout / CONTROL_PERIOD), sent
    assert not arm.is_connected
    arm.stop()  # nothing left to stop from here: logs, does not raise
    with pytest.raises(RobotConnectionError, match="not connected"):
        arm.send_chunk(moving_chunk(1))
    with pytest.raises(RobotConnectionError, match="not connected"):
        arm.state()
    assert sent_since(arm, sent_before)["move"] == sent
