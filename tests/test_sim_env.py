"""The simulated FR3 tabletop envs: API, spaces, determinism, errors, controller contract."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from corft_envs import SIM_ENV_IDS, make_sim_env
from corft_envs.layouts import (FIXTURE_CLEARANCE, FIXTURE_REGION, FIXTURE_SPOT, MIN_SEPARATION, SPOT_JITTER,
                                TRAIN_SPOTS, UNSEEN_CLEARANCE)
from corft_envs.tasks import COLOURS, SceneState, get_task
from corft_robots.contract import (MAX_ROTATION, MAX_TRANSLATION, STATE_DIM, WORKSPACE, decode_action, quat_from_rotvec,
                             quat_multiply)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("env_id", SIM_ENV_IDS)
def test_both_env_checkers_pass(env_id, make_env):
    env = make_env(env_id, image_size=48)
    gym_check_env(env.unwrapped)
    sb3_check_env(env.unwrapped, warn=False)


def test_spaces_and_observation_layout(make_env):
    env = make_env(image_size=64)
    assert env.action_space == gym.spaces.Box(-1, 1, (7,), np.float32)
    obs, info = env.reset(seed=0)
    assert set(obs) == {"image_front", "image_wrist", "state"}
    assert obs["image_front"].shape == obs["image_wrist"].shape == (64, 64, 3)
    assert obs["image_front"].dtype == np.uint8
    assert obs["state"].shape == (STATE_DIM,) and obs["state"].dtype == np.float32
    assert env.observation_space.contains(obs)
    sim = env.unwrapped
    tcp, quat = sim.controller.tcp_pose()
    np.testing.assert_allclose(obs["state"][:3], tcp, atol=1e-6)
    assert obs["state"][3] >= 0 and abs(np.linalg.norm(obs["state"][3:7]) - 1) < 1e-5
    assert obs["state"][7] == pytest.approx(0.08, abs=2e-3)  # gripper open at reset
    assert info["instruction"] == sim.instruction and info["is_success"] is False
    # both cameras see something, and not the same thing
    assert obs["image_front"].std() > 10 and obs["image_wrist"].std() > 10
    assert not np.array_equal(obs["image_front"], obs["image_wrist"])


def test_instruction_names_the_target_colour_and_distractors_differ(make_env):
    env = make_env("corft/Stack-v0", image_size=32)
    for seed in range(5):
        env.reset(seed=seed)
        sim = env.unwrapped
        assert len(set(sim.colours)) == 3 and set(sim.colours) <= set(COLOURS)
        words = sim.instruction.split()
        assert sim.colours[0] in words and sim.colours[1] in words and sim.colours[2] not in words
        assert words.index(sim.colours[0]) < words.index(sim.colours[1])
        for index, colour in enumerate(sim.colours):
            np.testing.assert_allclose(sim.model.geom(f"obj{index}_geom").rgba, COLOURS[colour])


def test_text_instruction_key_only_behind_flag(make_env):
    env = make_env(image_size=32, include_instruction=True)
    assert isinstance(env.observation_space["instruction"], gym.spaces.Text)
    obs, info = env.reset(seed=1)
    assert obs["instruction"] == info["instruction"]
    assert env.observation_space["instruction"].contains(obs["instruction"])


def test_reset_with_seed_is_deterministic(make_env):
    first, second = make_env(image_size=32), make_env(image_size=32)
    actions = np.random.default_rng(0).uniform(-1, 1, (5, 7)).astype(np.float32)
    obs_a, info_a = first.reset(seed=7)
    obs_b, info_b = second.reset(seed=7)
    assert info_a == info_b
    for action in actions:
        for key in obs_a:
            np.testing.assert_array_equal(obs_a[key], obs_b[key])
        obs_a = first.step(action)[0]
        obs_b = second.step(action)[0]
    other, _ = second.reset(seed=8)
    assert not np.array_equal(other["image_front"], first.reset(seed=7)[0]["image_front"])


def test_train_and_unseen_positions(make_env):
    train, unseen = make_env(image_size=16), make_env(image_size=16, positions="unseen")
    for seed in range(20):
        train.reset(seed=seed)
        unseen.reset(seed=seed)
        for xy in train.unwrapped.scene_state().object_positions[:, :2]:
            assert np.min(np.abs(TRAIN_SPOTS - xy).max(axis=1)) <= SPOT_JITTER + 1e-3
        objects = unseen.unwrapped.scene_state().object_positions[:, :2]
        for xy in objects:
            assert np.min(np.linalg.norm(TRAIN_SPOTS - xy, axis=1)) >= UNSEEN_CLEARANCE - 1e-3
        distances = np.linalg.norm(objects[:, None] - objects[None], axis=-1)[np.triu_indices(3, 1)]
        assert distances.min() >= MIN_SEPARATION - 1e-3


def test_env_spec_serialises_and_remakes_the_same_env():
    from gymnasium.envs.registration import EnvSpec

    env = gym.make("corft/Stack-v0", image_size=16, chunk_size=5, distractors=False)
    remade = gym.make(EnvSpec.from_json(env.spec.to_json()))  # what Minari stores and recovers
    try:
        assert remade.spec.kwargs == {"task": "Stack", "image_size": 16, "chunk_size": 5, "distractors": False}
        assert str(remade) == str(env)  # the same wrappers, ActionChunk once
        first, _ = env.reset(seed=3)
        second, _ = remade.reset(seed=3)
        np.testing.assert_array_equal(first["image_front"], second["image_front"])
    finally:
        env.close()
        remade.close()


def test_place_draws_its_pad_anywhere_clear_of_the_cubes_and_the_bowl_stays_put(make_env):
    place, pick_place = make_env("corft/Place-v0", image_size=16), make_env(image_size=16)
    pads = []
    for seed in range(20):
        place.reset(seed=seed)
        state = place.unwrapped.scene_state()
        pad = state.fixture_position[:2]
        assert FIXTURE_REGION[0][0] <= pad[0] <= FIXTURE_REGION[0][1]
        assert FIXTURE_REGION[1][0] <= pad[1] <= FIXTURE_REGION[1][1]
        assert np.linalg.norm(state.object_positions[:, :2] - pad, axis=1).min() >= FIXTURE_CLEARANCE - 1e-9
        pads.append(pad)
        pick_place.reset(seed=seed)
        bowl = pick_place.unwrapped.scene_state().fixture_position[:2]
        assert np.abs(bowl - FIXTURE_SPOT).max() <= SPOT_JITTER + 1e-9
    assert np.ptp(np.array(pads), axis=0).min() > 0.15  # spread over the table, not jittered about one spot


@pytest.mark.parametrize(
    "cube, width, success",
    [
        ((0.52, 0.03, 0.02), 0.08, True),  # on the pad, resting, let go
        ((0.52, 0.03, 0.02), 0.04, False),  # still held
        ((0.50, 0.05, 0.02), 0.08, False),  # 0.04 m from the pad's centre: off it (limit 0.035)
        ((0.50, 0.00, 0.05), 0.08, False),  # above the pad, not resting on the table
    ],
)
def test_place_success_by_hand(cube, width, success):
    objects = np.array([cube, (0.4, -0.2, 0.02), (0.6, -0.2, 0.02)])
    state = SceneState(objects, fixture_position=np.array([0.50, 0.01, 0.0]), gripper_width=width)
    assert get_task("Place").is_success(state) is success


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"positions": "nowhere"}, "positions='nowhere' is not supported; use one of 'train', 'unseen', 'all'"),
        ({"image_size": 8}, "image_size must be in [16, 1024]"),
        ({"image_size": 96.0}, "image_size must be an int"),
        ({"render_mode": "human"}, "render_mode='human' is not supported"),
        ({"distractors": "no"}, "distractors must be true or false, got 'no' (str)"),
        ({"include_instruction": 1}, "include_instruction must be true or false, got 1 (int)"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message, make_env):
    with pytest.raises(ValueError) as error:
        make_env("corft/Push-v0", **kwargs)
    assert message in str(error.value)


def test_unknown_task_lists_known_ones():
    with pytest.raises(ValueError, match="task='Juggle' is unknown; use one of Lift, PickPlace, Place, Push, Stack"):
        make_sim_env(task="Juggle")


@pytest.mark.parametrize(
    "action, message",
    [
        (np.zeros(6), r"action must have shape \(7,\)"),
        (np.zeros((2, 7)), r"action must have shape \(7,\)"),
        (np.array([0, 0, np.nan, 0, 0, 0, 0]), "action must be finite"),
    ],
)
def test_malformed_action_is_rejected(action, message, make_env):
    env = make_env(image_size=16)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.unwrapped.step(action)


def test_decode_action_scales_clips_and_thresholds():
    command = decode_action(np.array([0.5, -1.0, 2.0, 0.2, 0.0, -3.0, 0.01]))
    np.testing.assert_allclose(command.translation, [0.025, -0.05, 0.05])
    np.testing.assert_allclose(command.rotation, [0.05, 0.0, -0.25])
    assert command.close_gripper is True
    assert decode_action(np.zeros(7)).close_gripper is False
    assert MAX_TRANSLATION == 0.05 and MAX_ROTATION == 0.25


def test_the_contracts_quaternion_arithmetic_is_mujocos():
    import mujoco

    rng = np.random.default_rng(0)
    for _ in range(200):
        rotvec = rng.uniform(-MAX_ROTATION, MAX_ROTATION, 3)
        first, second = rng.normal(size=4), rng.normal(size=4)
        expected_rotation, expected_product = np.empty(4), np.empty(4)
        mujoco.mju_axisAngle2Quat(expected_rotation, rotvec / np.linalg.norm(rotvec), np.linalg.norm(rotvec))
        mujoco.mju_mulQuat(expected_product, first, second)
        np.testing.assert_array_equal(quat_from_rotvec(rotvec), expected_rotation)
        np.testing.assert_allclose(quat_multiply(first, second), expected_product, rtol=0, atol=1e-14)
    np.testing.assert_array_equal(quat_from_rotvec(np.zeros(3)), [1.0, 0.0, 0.0, 0.0])


def test_controller_moves_the_tcp_by_the_commanded_delta(make_env):
    env = make_env(image_size=16)
    obs, _ = env.reset(seed=0)
    for axis, value in ((0, 0.5), (1, -0.6), (2, -0.4)):
        start = obs["state"][:3].copy()
        action = np.zeros(7, np.float32)
        action[axis] = value
        for _ in range(3):
            obs = env.step(action)[0]
        moved = obs["state"][:3] - start
        expected = np.zeros(3)
        expected[axis] = 3 * value * MAX_TRANSLATION
        np.testing.assert_allclose(moved, expected, atol=0.01)  # within 1 cm over 7.5-9 cm


def test_controller_rotates_about_world_z(make_env):
    env = make_env(image_size=16)
    obs, _ = env.reset(seed=0)
    before = obs["state"][3:7].astype(np.float64)
    obs = env.step(np.array([0, 0, 0, 0, 0, 0.8, -1], np.float32))[0]
    after = obs["state"][3:7].astype(np.float64)
    angle = 2 * np.arccos(min(1.0, abs(before @ after)))
    assert angle == pytest.approx(0.8 * MAX_ROTATION, abs=0.03)


def test_tcp_target_is_clipped_to_the_workspace(make_env):
    env = make_env(image_size=16)
    env.reset(seed=0)
    for _ in range(12):
        obs = env.step(np.array([1, 0, 0, 0, 0, 0, -1], np.float32))[0]
    assert obs["state"][0] <= WORKSPACE[1][0] + 0.01


def test_rgb_array_render_is_the_front_camera(make_env):
    env = make_env(image_size=32, render_mode="rgb_array")
    obs, _ = env.reset(seed=2)
    np.testing.assert_array_equal(env.render(), obs["image_front"])


@pytest.mark.parametrize("env_id, in_play", [("corft/PickPlace-v0", 1), ("corft/Stack-v0", 2)])
def test_distractors_can_be_hidden(env_id, in_play, make_env):
    from corft_envs.experts import make_expert
    from corft_envs.scene import PARKED_XY

    shown, hidden = make_env(env_id, image_size=32), make_env(env_id, image_size=32, distractors=False)
    shown_obs, shown_info = shown.reset(seed=4)
    hidden_obs, hidden_info = hidden.reset(seed=4)
    assert shown_info["instruction"] == hidden_info["instruction"]
    shown_state, hidden_state = shown.unwrapped.scene_state(), hidden.unwrapped.scene_state()
    np.testing.assert_allclose(hidden_state.object_positions[:in_play], shown_state.object_positions[:in_play])
    np.testing.assert_allclose(hidden_state.object_positions[in_play:, :2], np.full((3 - in_play, 2), PARKED_XY))
    assert not np.array_equal(hidden_obs["image_wrist"], shown_obs["image_wrist"])  # the distractors are gone
    expert = make_expert(hidden)
    expert.reset(4)
    observation, done, info = hidden_obs, False, {}
    while not done:
        observation, _, terminated, truncated, info = hidden.step(expert.act(observation))
        done = terminated or truncated
    assert info["is_success"]


@pytest.mark.parametrize("env_id, reported", [("corft/PickPlace-v0", True), ("corft/Stack-v0", True),
                                              ("corft/Push-v0", False)])
def test_first_lifted_object_is_reported_only_where_the_task_lifts_one(env_id, reported, make_env):
    env = make_env(env_id, image_size=16)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
    assert ("first_lifted" in info) is reported  # a pushed block is not meant to be lifted: no such diagnostic
    if reported:
        assert info["first_lifted"] == -1  # nothing lifted after one still step
