"""The protocol-level twin: franky drives it over loopback, its cameras and resets match the sim env."""

import subprocess
import sys
import threading
import time
from pathlib import Path

import franky
import gymnasium as gym
import mujoco
import numpy as np
import pytest

from corft_envs.layouts import SPOT_JITTER, TRAIN_SPOTS
from corft_envs.tasks import COLOURS, PickPlace
from corft_envs.twin import TwinWorld
from corft_robots.fr3 import HOME_JOINT_POSITIONS

pytestmark = [pytest.mark.integration, pytest.mark.twin]

IMAGE_SIZE = 64
#: A relative Cartesian motion in franky's end-effector frame (m); its z axis points down at home.
EE_OFFSET = np.array([0.0, 0.0, -0.05])


@pytest.fixture
def world(request):
    """A running twin of PickPlace; its server is stopped even if the test or the start fails."""
    twin = TwinWorld("PickPlace", image_size=IMAGE_SIZE)
    request.addfinalizer(twin.stop)
    return twin.start()


def connect(world: TwinWorld) -> franky.Robot:
    robot = franky.Robot(world.hostname, realtime_config=franky.RealtimeConfig.Ignore)
    robot.relative_dynamics_factor = 0.2
    return robot


def settled_tcp_position(world: TwinWorld, timeout: float = 2.0) -> np.ndarray:
    """The TCP position once it moves less than 0.05 mm in 50 ms (franky-sim's servo lags the motion)."""
    previous = world.tcp_pose()[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.05)
        current = world.tcp_pose()[0]
        if np.linalg.norm(current - previous) < 5e-5:
            return current
        previous = current
    raise AssertionError("the TCP did not settle")


def move_relative(world: TwinWorld, robot: franky.Robot) -> tuple[np.ndarray, np.ndarray]:
    """Run the relative motion EE_OFFSET through franky; the TCP's start and settled end positions."""
    start, quaternion = world.tcp_pose()
    rotation = np.empty(9)
    mujoco.mju_quat2Mat(rotation, quaternion)
    robot.move(franky.CartesianMotion(franky.Affine(EE_OFFSET), franky.ReferenceType.Relative))
    end = settled_tcp_position(world)
    np.testing.assert_allclose(end - start, rotation.reshape(3, 3) @ EE_OFFSET, atol=2e-3)
    return start, end


def test_franky_connects_reads_state_and_moves_the_twin(world):
    robot = connect(world)
    state = robot.state
    np.testing.assert_allclose(state.q, HOME_JOINT_POSITIONS, atol=1e-3)
    position, _ = world.tcp_pose()
    # franky's end-effector frame is the twin's tcp site
    np.testing.assert_allclose(state.O_T_EE.translation, position, atol=1e-3)
    assert position[2] > 0.4

    start, end = move_relative(world, robot)
    assert end[2] - start[2] == pytest.approx(0.05, abs=2e-3)  # -5 cm along the downward gripper axis
    np.testing.assert_allclose(robot.current_pose.end_effector_pose.translation, end, atol=2e-3)


def test_cameras_see_the_scene_and_the_motion(world):
    world.reset(seed=0)
    front, wrist = world.render("front"), world.render("wrist")
    for image in (front, wrist):
        assert image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and image.dtype == np.uint8
        assert image.std() > 10
    assert not np.array_equal(front, wrist)

    move_relative(world, connect(world))  # 5 cm up: the arm moves in the front view, the table recedes in the wrist's
    for camera, before in (("front", front), ("wrist", wrist)):
        changed = np.abs(world.render(camera).astype(int) - before).max(axis=2) > 20
        assert changed.mean() > 0.01


def test_renders_from_another_thread_and_time_advances_meanwhile(world):
    with world.physics() as (_, data):
        sim_start = data.time
    wall_start = time.monotonic()
    images = []
    worker = threading.Thread(target=lambda: images.extend(world.render("wrist") for _ in range(20)))
    worker.start()
    worker.join()
    images.append(world.render("wrist"))
    time.sleep(0.2)
    with world.physics() as (_, data):
        real_time_factor = (data.time - sim_start) / (time.monotonic() - wall_start)
    assert len(images) == 21 and all(image.std() > 10 for image in images)
    assert real_time_factor > 0.2


def test_reset_places_objects_as_the_sim_env_does(world):
    env = gym.make("corft/PickPlace-v0", image_size=IMAGE_SIZE)
    try:
        for seed in (0, 1, 2):
            info = world.reset(seed=seed)
            twin_state = world.scene_state()
            observation, env_info = env.reset(seed=seed)
            sim = env.unwrapped
            sim_state = sim.scene_state()
            assert info == {"instruction": env_info["instruction"], "colours": sim.colours}
            np.testing.assert_allclose(twin_state.object_positions[:, :2], sim_state.object_positions[:, :2],
                                       atol=1e-3)
            np.testing.assert_allclose(twin_state.fixture_position, sim_state.fixture_position, atol=1e-9)
            spots = [np.argmin(np.linalg.norm(TRAIN_SPOTS - xy, axis=1)) for xy in twin_state.object_positions[:, :2]]
            assert len(set(spots)) == 3
            assert np.all(np.abs(twin_state.object_positions[:, :2] - TRAIN_SPOTS[spots]) <= SPOT_JITTER + 1e-3)
            with world.physics() as (model, _):
                for index, colour in enumerate(info["colours"]):
                    np.testing.assert_allclose(model.geom(f"obj{index}_geom").rgba, COLOURS[colour])
            # same scene, same look: the twin's cameras show what the sim env's show
            for camera in ("front", "wrist"):
                difference = np.abs(world.render(camera).astype(int) - observation[f"image_{camera}"])
                assert difference.mean() < 1.0

        # deterministic: seed 2 again gives the same layout as the loop's last reset
        assert world.reset(seed=2) == info
        np.testing.assert_allclose(world.scene_state().object_positions, twin_state.object_positions, atol=1e-3)
        # seed=None continues the generator, as Gymnasium envs do
        world.reset(seed=5)
        env.reset(seed=5)
        assert world.reset()["instruction"] == env.reset()[1]["instruction"]
        np.testing.assert_allclose(world.scene_state().object_positions[:, :2],
                                   env.unwrapped.scene_state().object_positions[:, :2], atol=1e-3)
    finally:
        env.close()


def test_cube_written_into_the_bowl_is_a_success(world):
    world.reset(seed=3)
    assert not world.is_success()
    fixture = world.scene_state().fixture_position
    height = PickPlace.bowl_floor + PickPlace.object_half_size[2] + 0.005
    with world.physics() as (model, data):
        joint = model.joint("obj0_joint")
        data.qpos[joint.qposadr[0] : joint.qposadr[0] + 7] = (*fixture[:2], height, 1.0, 0.0, 0.0, 0.0)
        data.qvel[joint.dofadr[0] : joint.dofadr[0] + 6] = 0.0
        mujoco.mj_forward(model, data)
    time.sleep(0.3)  # the cube drops onto the bowl's floor and rests
    cube = world.scene_state().object_positions[0]
    assert cube[2] == pytest.approx(PickPlace.bowl_floor + PickPlace.object_half_size[2], abs=2e-3)
    assert world.is_success()


def test_a_missed_grasp_returns_false_as_on_the_franka_hand(world):
    gripper = franky.Gripper(world.hostname)
    assert gripper.move(0.08, 0.1)
    # nothing between the fingers: they settle near 0.05, outside the 1 mm tolerance -> unsuccessful, not an error
    assert gripper.grasp(0.05, 0.1, 20.0, epsilon_inner=0.001, epsilon_outer=0.001) is False
    assert not gripper.is_grasped
    # within a tolerance that holds the settled width, the same grasp succeeds
    assert gripper.grasp(0.05, 0.1, 20.0, epsilon_inner=0.005, epsilon_outer=0.005) is True


def test_reset_robot_state_homes_the_arm_and_franky_reconnects(world):
    home = world.tcp_pose()[0]
    move_relative(world, connect(world))
    world.reset_robot_state()
    np.testing.assert_allclose(world.tcp_pose()[0], home, atol=1e-3)
    robot = connect(world)
    np.testing.assert_allclose(robot.state.q, HOME_JOINT_POSITIONS, atol=1e-3)
    move_relative(world, robot)


def test_lifecycle_errors():
    twin = TwinWorld("Push", image_size=32)
    try:
        with pytest.raises(RuntimeError, match="not running"):
            twin.render("front")
        with pytest.raises(RuntimeError, match="not running"):
            twin.reset(seed=0)
        twin.start()
        with pytest.raises(ValueError, match="camera"):
            twin.render("top")
        with pytest.raises(RuntimeError, match="starts once"):
            twin.start()
    finally:
        twin.stop()
    twin.stop()
    with pytest.raises(RuntimeError, match="not running"):
        twin.scene_state()
    with pytest.raises(ValueError, match="task"):
        TwinWorld("Juggle")


def test_importing_the_twin_leaves_franky_sim_as_it_is_and_starting_one_sets_its_gripper():
    """No side effect at import: franky-sim's gripper answers as the Franka Hand only once a twin starts."""
    code = ("from franky_sim import franka_gripper_server as server; "
            "from franky_sim.franka_gripper_protocol import GripperCommandStatus as original; "
            "import corft_envs.twin as twin; "
            "print(server.GripperCommandStatus is original); "
            "world = twin.TwinWorld('Push', image_size=16).start(); world.stop(); "
            "print(server.GripperCommandStatus.kFail == original.kUnsuccessful)")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                            capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "True"]
