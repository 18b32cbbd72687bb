"""The real env's whole code path on the twin: franky over loopback, pyrealsense2 software devices.

No hardware and no mocks: the arm is franky-sim's server speaking the libfranka
protocol, the cameras are virtual RealSense devices fed with the twin's renders.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from corft_algos.cli import main
from corft_envs import REAL_ENV_IDS, SIM_ENV_IDS, ActionChunk
from corft_envs.collection import CollectConfig, collect
from corft_envs.episode_store import EpisodeDataset
from corft_envs.experts import make_expert
from corft_envs.keyboard import ScriptedKeys
from corft_envs.real_env import FR3RealEnv, square_image
from corft_envs.real_factory import build_twin
from corft_envs.twin import TwinWorld
from corft_robots import CameraConnectionError, CameraTimeoutError, RealSenseCamera, RobotConnectionError, SafetyViolation
from corft_robots.contract import CONTROL_PERIOD
from corft_robots.virtual_realsense import VirtualRealSense
from tests.helpers import sent_since

pytestmark = [pytest.mark.integration, pytest.mark.twin]

ENV_ID = "corft/FR3Real-PickPlace-v0"
IMAGE_SIZE = 32
#: Motions use 30% of the FR3's dynamics so that episodes are short.
ARM_OPTIONS = {"dynamics_factor": 0.3}


def make_twin_env(chunk_size: int | None = None, **kwargs) -> gym.Env:
    return gym.make(ENV_ID, robot_host="twin", image_size=IMAGE_SIZE, arm_options=ARM_OPTIONS,
                    chunk_size=chunk_size, **kwargs)


@pytest.fixture
def twin_env():
    env = make_twin_env(chunk_size=10)
    yield env
    env.close()


def assert_arm_stopped(env: gym.Env) -> np.ndarray:
    """No motion runs, and the twin's arm comes to rest (it lags franky's stop by ~0.3 s); its TCP position."""
    real = env.unwrapped
    assert not real.arm.is_moving
    settle(env)
    before = real.world.tcp_pose()[0]
    time.sleep(0.3)
    after = real.world.tcp_pose()[0]
    assert np.abs(after - before).max() < 1e-3
    return after


def settle(env: gym.Env) -> np.ndarray:
    """Wait for the last motion to end and the twin's arm to come to rest (it lags franky's command by ~0.3 s)."""
    real = env.unwrapped
    deadline = time.monotonic() + 3.0
    previous = real.world.tcp_pose()[0]
    while time.monotonic() < deadline:
        time.sleep(0.05)
        current = real.world.tcp_pose()[0]
        if not real.arm.is_moving and np.abs(current - previous).max() < 5e-5:
            break
        previous = current
    return real.arm.state().as_vector()


def chunk_along_x(steps: int, dx: float = 0.2) -> np.ndarray:
    actions = np.zeros((steps, 7), dtype=np.float32)
    actions[:, 0] = dx
    actions[:, 6] = -1.0
    return actions


# -- the env's contract ---------------------------------------------------------------------


@pytest.mark.parametrize("real_id, sim_id", list(zip(REAL_ENV_IDS, SIM_ENV_IDS)))
def test_real_envs_have_the_sim_envs_spaces_and_are_nondeterministic(real_id, sim_id):
    real = gym.make(real_id, robot_host="twin", image_size=IMAGE_SIZE, include_instruction=True, chunk_size=10)
    sim = gym.make(sim_id, image_size=IMAGE_SIZE, include_instruction=True, chunk_size=10)
    try:
        assert real.observation_space == sim.observation_space
        assert real.action_space == sim.action_space
        assert gym.spec(real_id).nondeterministic and not gym.spec(sim_id).nondeterministic
        assert gym.spec(real_id).max_episode_steps == gym.spec(sim_id).max_episode_steps
    finally:
        real.close()
        sim.close()


@pytest.mark.parametrize("kwargs, message", [
    ({}, "robot_host is required"),
    ({"robot_host": "172.16.0.2"}, r"cameras must name exactly \['front', 'wrist'\]"),
    ({"robot_host": "172.16.0.2", "cameras": {"front": "1"}}, "cameras must name exactly"),
    ({"robot_host": "twin", "cameras": {"front": "1", "wrist": "2"}}, "makes its own virtual cameras"),
    ({"robot_host": "twin", "distractors": "no"}, "distractors must be true or false, got 'no'"),
])
def test_bad_arguments_say_what_to_pass(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gym.make(ENV_ID, **kwargs)


def test_missing_camera_is_a_clear_error_at_reset():
    env = gym.make(ENV_ID, robot_host="127.0.0.1", cameras={"front": "000000000001", "wrist": "000000000002"})
    with pytest.raises(CameraConnectionError, match="no RealSense camera with serial number '000000000001'"):
        env.reset()
    env.close()


def test_the_env_drives_the_arm_and_cameras_it_is_given_and_closes_them():
    """FR3RealEnv made by hand from the factory's twin parts: they connect on reset, a chunk moves the arm
    given, and close() releases all it owns."""
    twin, arm, cameras = build_twin("PickPlace", image_size=IMAGE_SIZE, arm_options=ARM_OPTIONS)
    env = ActionChunk(FR3RealEnv(arm, cameras, "PickPlace", twin=twin, image_size=IMAGE_SIZE), chunk_size=10)
    try:
        assert env.unwrapped.arm is arm and env.unwrapped.world is twin.world and env.unwrapped.on_twin
        assert not arm.is_connected and not any(camera.is_connected for camera in cameras.values())
        observation, _ = env.reset(seed=0)
        assert arm.is_connected and all(camera.is_connected for camera in cameras.values())
        start = observation["state"][:3].copy()
        observation, _, _, _, info = env.step(chunk_along_x(5))
        assert info["chunk_len"] == 5 and arm.commands_sent["move"] == 5
        assert observation["image_wrist"].std() > 10
        moved = settle(env)[:3] - start
        assert moved[0] > 0.02 and abs(moved[1]) < 5e-3
    finally:
        env.close()
    assert not arm.is_connected and not any(camera.is_connected for camera in cameras.values())
    assert not any(virtual.is_streaming for virtual in twin.virtual_cameras.values())
    with pytest.raises(RuntimeError, match="not running"):
        twin.world.hostname


def test_square_image_crops_the_centre_and_resizes():
    image = np.zeros((480, 640, 3), dtype=np.uint8)
    image[:, 80:560] = 200  # the centred 480x480 square
    out = square_image(image, 96)
    assert out.shape == (96, 96, 3) and out.dtype == np.uint8
    assert np.all(out == 200)
    assert square_image(out, 96) is not out and np.array_equal(square_image(out, 96), out)


def test_twin_reset_places_the_objects_as_the_sim_env_does(twin_env, make_env):
    sim = make_env("corft/PickPlace-v0", image_size=IMAGE_SIZE)
    for seed in (0, 5):
        _, real_info = twin_env.reset(seed=seed)
        _, sim_info = sim.reset(seed=seed)
        assert real_info["instruction"] == sim_info["instruction"]
        real_scene, sim_scene = twin_env.unwrapped.world.scene_state(), sim.unwrapped.scene_state()
        np.testing.assert_allclose(real_scene.object_positions[:, :2], sim_scene.object_positions[:, :2], atol=2e-3)


def test_twin_hides_the_distractors_as_the_sim_env_does(make_env):
    """``distractors=False`` on the twin gives the sim env's scene without distractors: a policy trained on it fits."""
    from corft_envs.scene import PARKED_XY

    env = make_twin_env(distractors=False)
    try:
        sim = make_env("corft/PickPlace-v0", image_size=IMAGE_SIZE, distractors=False)
        env.reset(seed=3)
        sim_observation, _ = sim.reset(seed=3)
        world = env.unwrapped.world
        real_scene, sim_scene = world.scene_state(), sim.unwrapped.scene_state()
        np.testing.assert_allclose(real_scene.object_positions[1:, :2], np.full((2, 2), PARKED_XY), atol=1e-6)
        np.testing.assert_allclose(real_scene.object_positions[:, :2], sim_scene.object_positions[:, :2], atol=2e-3)
        # the front camera sees the same scene (the arm is at home in both)
        assert np.abs(world.render("front").astype(int) - sim_observation["image_front"]).mean() < 1.0
    finally:
        env.close()


def test_chunk_moves_in_the_base_frame_and_reports_its_timing(twin_env):
    observation, _ = twin_env.reset(seed=0)
    start = observation["state"][:3].copy()
    observation, reward, terminated, truncated, info = twin_env.step(chunk_along_x(10))
    assert info["chunk_len"] == 10 and not (terminated or truncated)
    # the rate itself is measured by benchmarks/twin_loop.py, not asserted on a shared machine
    assert set(info["timing"]) == {"command_s", "period_s", "sim_period_s", "state_s", "camera_front_s",
                                   "camera_wrist_s"}
    assert info["timing"]["period_s"] >= 0.1  # a period never ends early
    moved = settle(twin_env)[:3] - start
    assert moved[0] > 0.05 and abs(moved[1]) < 5e-3 and abs(moved[2]) < 5e-3
    assert observation["image_front"].shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and observation["image_front"].std() > 10


def test_on_a_slowed_twin_a_step_still_lasts_a_period_of_simulated_time(twin_env):
    """The twin's process losing the CPU (paused here, again and again) slows its physics; steps wait for
    its clock, not only the wall's."""
    twin_env.reset(seed=0)
    child = twin_env.unwrapped.world.pid
    stop = threading.Event()

    def starve() -> None:
        while not stop.is_set():
            os.kill(child, signal.SIGSTOP)
            time.sleep(0.03)
            os.kill(child, signal.SIGCONT)
            time.sleep(0.01)

    starver = threading.Thread(target=starve, daemon=True)
    starver.start()
    try:
        timings = [twin_env.step(chunk_along_x(1))[4]["timing"] for _ in range(3)]
    finally:
        stop.set()
        starver.join()
        os.kill(child, signal.SIGCONT)
    for timing in timings:
        assert timing["sim_period_s"] >= 0.1 - 1e-6, timing
    # the simulator did fall behind the wall clock: without the wait the arm would see faster commands
    assert sum(t["period_s"] for t in timings) > sum(t["sim_period_s"] for t in timings) + 0.05, timings


# -- success: the twin's state, a success function, the operator ------------------------------


def test_scripted_expert_solves_the_task_on_the_twin_and_collect_records_it(tmp_path):
    config = CollectConfig(env_id=ENV_ID, episodes=1, out=tmp_path / "store", image_size=IMAGE_SIZE, seed=0,
                           robot_host="twin", env_options={"arm_options": ARM_OPTIONS})
    summary = collect(config, progress=False)
    assert summary.episodes == 1 and summary.successes == 1
    episode = next(iter(EpisodeDataset(tmp_path / "store"))).load()
    assert episode.success and episode.terminated and episode.is_success[-1] and not episode.is_success[:-1].any()
    assert 20 < len(episode.actions) < 150
    assert episode.observations["image_wrist"].std() > 10
    assert np.abs(episode.actions).max() <= 1.0


def test_success_fn_and_operator_labels_end_the_episode(make_env):
    env = make_twin_env(success_fn=lambda real: real.arm.state().tcp_position[0] > 0.58)
    try:
        env.reset(seed=0)
        steps = 0
        terminated = False
        while not terminated:
            _, reward, terminated, truncated, info = env.step(chunk_along_x(1)[0])
            steps += 1
            assert not truncated and steps < 30
        assert reward == 1.0 and info["is_success"]

        env.reset(seed=1)
        env.unwrapped.label_episode("failure")
        _, reward, terminated, truncated, info = env.step(chunk_along_x(1)[0])
        assert (reward, terminated, truncated, info["operator_label"]) == (0.0, False, True, "failure")
        with pytest.raises(ValueError, match="'success' or 'failure'"):
            env.unwrapped.label_episode("done")
    finally:
        env.close()


def test_hardware_path_with_operator_keys_against_a_franky_server():
    """robot_host is a plain address and the cameras are given, as on hardware; only the operator judges."""
    with TwinWorld("PickPlace", image_size=IMAGE_SIZE) as world:
        virtual = {name: VirtualRealSense(64, 48, 30, serial_number=f"v-{name}") for name in ("front", "wrist")}
        for name, device in virtual.items():
            device.start_streaming(lambda name=name: (np.full((48, 64, 3), 100, np.uint8), None))
        cameras = {name: RealSenseCamera(device=device.device, width=64, height=48, warmup_frames=1)
                   for name, device in virtual.items()}
        keys = ScriptedKeys(["", "\n", "", "", "\x7f"])  # reset waits for Enter; Backspace on the 3rd step
        env = gym.make(ENV_ID, robot_host=world.hostname, cameras=cameras, image_size=IMAGE_SIZE,
                       operator_keys=keys, arm_options={"realtime": False, **ARM_OPTIONS})
        try:
            with pytest.raises(ValueError, match="pass instruction="):
                env.unwrapped.reset()  # (gymnasium's reset checker cannot take a first reset that raised)
            observation, info = env.reset(options={"instruction": "put the red cube in the bowl"})
            assert keys.position == 2  # the reset waited for Enter
            assert info["instruction"] == "put the red cube in the bowl"
            assert observation["image_front"].shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
            assert np.all(observation["image_front"] == 100)  # 64x48 cropped to 48x48, resized
            env.step(chunk_along_x(1)[0])
            _, _, terminated, truncated, info = env.step(chunk_along_x(1)[0])
            assert not terminated and not truncated and not info["is_success"]  # no twin judging here
            _, reward, terminated, truncated, info = env.step(chunk_along_x(1)[0])  # Backspace
            assert (terminated, truncated, info["operator_label"]) == (False, True, "failure")
        finally:
            env.close()
            for device in virtual.values():
                device.stop_streaming()


# -- teleoperation ------------------------------------------------------------------------------


def test_keyboard_teleop_collects_labelled_episodes_on_the_twin(tmp_path, capsys):
    script = tmp_path / "keys.txt"
    # episode 1: forward, down twice (two presses in one step), grasp, then Enter = success
    # episode 2: left, then Backspace = failure
    script.write_text("w\nw\nff\n \n\n<enter>\na\n<backspace>\n", encoding="utf-8")
    out = tmp_path / "teleop"
    status = main(["collect", "--env", ENV_ID, "--robot-host", "twin", "--teleop", "keyboard",
                   "--teleop-script", str(script), "--episodes", "2", "--keep-failures", "--out", str(out),
                   "--image-size", str(IMAGE_SIZE), "--quiet"])
    assert status == 0, capsys.readouterr().err
    first, second = (record.load() for record in EpisodeDataset(out))
    np.testing.assert_allclose(first.actions[:, :3], [[0.2, 0, 0], [0.2, 0, 0], [0, 0, -0.4], [0, 0, 0], [0, 0, 0],
                                                      [0, 0, 0]])
    np.testing.assert_array_equal(first.actions[:, 6], [-1, -1, -1, 1, 1, 1])
    assert first.success and first.terminated and first.rewards[-1] == 1.0
    assert second.instruction != "" and not second.success and second.truncated
    np.testing.assert_allclose(second.actions[:, :3], [[0, 0.2, 0], [0, 0, 0]])


def test_teleop_needs_an_env_that_takes_labels(tmp_path, capsys):
    script = tmp_path / "keys.txt"
    script.write_text("w\n", encoding="utf-8")
    status = main(["collect", "--env", "corft/PickPlace-v0", "--teleop", "keyboard", "--teleop-script", str(script),
                   "--episodes", "1", "--out", str(tmp_path / "x"), "--image-size", str(IMAGE_SIZE), "--quiet"])
    assert status == 1
    assert "use a real env" in capsys.readouterr().err


# -- faults: each ends with the arm stopped, a clear error, and every finished episode intact -----


def stop_front_camera(env: gym.Env) -> None:
    env.unwrapped.twin.virtual_cameras["front"].stop_streaming()


def kill_robot_server(env: gym.Env) -> None:
    env.unwrapped.world.kill_server()


#: Ctrl-C lands right after this many targets of the faulty chunk have gone out.
CTRL_C_AFTER = 2


def ctrl_c_after_targets(env: gym.Env) -> None:
    """A real SIGINT right after the arm's next :data:`CTRL_C_AFTER`-th target, at that exact point (not timed)."""
    arm = env.unwrapped.arm
    start = arm.commands_sent["move"]

    def interrupt(kind: str) -> None:
        if kind == "move" and arm.commands_sent["move"] - start == CTRL_C_AFTER:
            os.kill(os.getpid(), signal.SIGINT)

    arm.on_command = interrupt


#: name -> (what happens before the faulty chunk, the chunk to send, expected error, message pattern)
FAULTS = {
    "camera_timeout": (stop_front_camera, chunk_along_x(5), CameraTimeoutError, "delivered no frame within"),
    "server_dies": (kill_robot_server, chunk_along_x(5), RobotConnectionError, "connection"),
    "nan_action": (None, np.where(np.arange(5)[:, None] == 3, np.nan, chunk_along_x(5)), SafetyViolation,
                   r"nothing was sent: step 3, dx \(action\[0\]\) is nan"),
    "leaves_workspace": (None, chunk_along_x(10, dx=1.0), SafetyViolation, "nothing was sent: step .* workspace"),
    "ctrl_c": (ctrl_c_after_targets, chunk_along_x(5), KeyboardInterrupt, None),
}
#: How many targets of the faulty chunk may go out before its fault stops it: none of a rejected chunk; Ctrl-C
#: lands after CTRL_C_AFTER; a stopped camera is noticed at the first step's read, or the second's if a frame
#: it delivered before stopping was still queued. (A lost server is noticed within the arm's state timeout.)
TARGETS_BEFORE_THE_FAULT = {"camera_timeout": (1, 2), "nan_action": (0,), "leaves_workspace": (0,),
                            "ctrl_c": (CTRL_C_AFTER,)}


@pytest.mark.parametrize("fault", FAULTS)
def test_fault_stops_the_arm_with_a_clear_error(twin_env, fault):
    inject, chunk, error, message = FAULTS[fault]
    twin_env.reset(seed=0)
    twin_env.step(chunk_along_x(2))
    before = settle(twin_env)
    real = twin_env.unwrapped
    sent_before = real.arm.commands_sent
    if inject is not None:
        inject(twin_env)
    try:
        with pytest.raises(error, match=message):
            twin_env.step(chunk)
    finally:
        real.arm.on_command = None
    sent = sent_since(twin_env.unwrapped.arm, sent_before)
    assert sent["gripper"] == 0 and sent["home"] == 0, sent  # the gripper was open and stays so
    if fault == "server_dies":
        assert sent["move"] <= math.ceil(real.arm.state_timeout / CONTROL_PERIOD), sent
        assert not real.arm.is_connected  # the robot stops by itself when its connection drops
        with pytest.raises(RuntimeError, match="call reset"):
            twin_env.step(chunk_along_x(1))
        assert sent_since(twin_env.unwrapped.arm, sent_before) == sent  # nothing after the fault
        return
    assert sent["move"] in TARGETS_BEFORE_THE_FAULT[fault], sent
    stopped_at = assert_arm_stopped(twin_env)
    assert stopped_at[0] - before[0] < 0.04  # well short of the chunk's 5 cm
    if error is SafetyViolation:  # rejected before any motion, and the episode may go on
        after = real.arm.state().as_vector()
        np.testing.assert_allclose(after[:8], before[:8], atol=1e-4)  # TCP pose and gripper
        np.testing.assert_allclose(after[8:], before[8:], atol=2e-3)  # joints (franky-sim's servo trembles)
        twin_env.step(chunk_along_x(1))
        assert sent_since(twin_env.unwrapped.arm, sent_before)["move"] == 1  # the next chunk runs
    else:
        if fault == "ctrl_c":  # interrupted mid-motion: stopped (a motion that had ended needs no stop)
            assert sent["stop"] >= 1, sent
        with pytest.raises(RuntimeError, match="call reset"):
            twin_env.step(chunk_along_x(1))
        assert sent_since(twin_env.unwrapped.arm, sent_before) == sent  # nothing after the fault


class FaultAfter:
    """The scripted expert, until step ``at`` of its first episode injects a fault and sends the fault's action."""

    def __init__(self, env: gym.Env, fault: str, at: int = 3) -> None:
        self.env, self.expert = env, make_expert(env)
        self.fault, self.at = fault, at
        self.episode, self.step = -1, 0

    def reset(self, seed: int) -> None:
        self.expert.reset(seed)
        self.episode, self.step = self.episode + 1, 0

    def act(self, observation):
        self.step += 1
        if self.episode == 0 and self.step == self.at:
            inject, chunk, _, _ = FAULTS[self.fault]
            if inject is not None:
                inject(self.env)
            return chunk[3] if self.fault == "nan_action" else chunk[0]
        return self.expert.act(observation)


@pytest.fixture(scope="module")
def one_episode_store(tmp_path_factory) -> tuple[Path, CollectConfig]:
    out = tmp_path_factory.mktemp("faults") / "store"
    config = CollectConfig(env_id=ENV_ID, episodes=1, out=out, image_size=IMAGE_SIZE, seed=0, robot_host="twin",
                           env_options={"arm_options": ARM_OPTIONS})
    collect(config, progress=False)
    return out, config


def file_digests(root: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(root.glob("episode_*.h5"))}


@pytest.mark.parametrize("fault", ["camera_timeout", "server_dies", "nan_action", "ctrl_c"])
def test_fault_during_collection_keeps_every_finished_episode(one_episode_store, tmp_path, fault):
    source, config = one_episode_store
    out = tmp_path / "store"
    shutil.copytree(source, out)
    digests = file_digests(out)
    resumed = CollectConfig(**{**config.__dict__, "out": out, "episodes": 2})
    with pytest.raises(FAULTS[fault][2]):
        collect(resumed, progress=False, make_policy=lambda env: FaultAfter(env, fault))
    assert file_digests(out) == digests
    dataset = EpisodeDataset(out)
    assert len(dataset) == 1 and next(iter(dataset)).load().success
