"""Evaluation in simulation: Wilson interval, rollouts with known outcomes, videos, space checks, model loading."""

import json
import zipfile

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np
import pytest
from gymnasium import spaces

from corft_algos.evaluation import (
    EpisodeOutcome,
    EvalResult,
    evaluate_model,
    load_model,
    make_eval_env,
    run_episodes,
    saved_algorithm_name,
    wilson_interval,
    write_video,
)
from corft_algos.labelled_video import FrameLayout
from corft_envs.experts import make_expert
from tests.helpers import success_pixels

pytestmark = pytest.mark.integration

ENV_ID = "corft/PickPlace-v0"
IMAGE_SIZE = 32
STEP_LIMIT = 150
RESULT_KEYS = {"success_rate", "success_ci95", "cycle_time_steps", "cycle_time_s", "episodes",
               "env_id", "positions", "num_episodes", "seed", "named_object_first_rate"}


class HoldStill:
    """Sends zero chunks (the arm holds its pose, gripper open): never succeeds. Counts its calls."""

    def __init__(self, chunk_size: int = 10, image_size: int = IMAGE_SIZE, action_dim: int = 7) -> None:
        env = gym.make(ENV_ID, image_size=image_size)
        self.observation_space = env.observation_space
        env.close()
        self.chunk_size = chunk_size
        self.action_space = spaces.Box(-1.0, 1.0, (chunk_size, action_dim), np.float32)
        self.calls = 0

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        assert isinstance(observation["instruction"], str) and observation["instruction"]
        self.calls += 1
        return np.zeros(self.action_space.shape, np.float32), state


class ExpertPolicy(HoldStill):
    """The scripted teleoperator acting in chunks; bound to the eval env because it reads the sim state."""

    def bind(self, env: gym.Env) -> None:
        self.expert = make_expert(env)
        self.episodes = 0

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        if episode_start[0]:
            self.expert.reset(self.episodes)
            self.episodes += 1
        return self.expert.act_chunk(observation, self.chunk_size), state


@pytest.mark.parametrize(
    "successes, n, expected",
    [
        # p = .8, z²/n = .38416: centre (.8 + .19208) / 1.38416 = .71674,
        # half 1.96 * sqrt(.016 + .009604) / 1.38416 = .22658
        (8, 10, (0.4902, 0.9433)),
        (0, 10, (0.0, 0.2775)),  # centre = half = .19208/1.38416
        (10, 10, (0.7225, 1.0)),
        (5, 10, (0.2366, 0.7634)),
        (1, 1, (0.2065, 1.0)),  # centre (1+1.9208)/4.8416=.60327, half 1.96*sqrt(.9604)/4.8416=.39673
    ],
)
def test_wilson_interval_matches_hand_computed_values(successes, n, expected):
    low, high = wilson_interval(successes, n)
    assert low == pytest.approx(expected[0], abs=1e-4)
    assert high == pytest.approx(expected[1], abs=1e-4)


@pytest.mark.parametrize("successes, n", [(1, 0), (-1, 5), (6, 5)])
def test_wilson_interval_rejects_impossible_counts(successes, n):
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(successes, n)


def test_expert_policy_succeeds_with_videos_and_exact_json(tmp_path):
    policy = ExpertPolicy()
    env = make_eval_env(policy, ENV_ID, record_video=True)
    policy.bind(env)
    try:
        result = run_episodes(policy, env, ENV_ID, "train", episodes=3, seed=5, video_dir=tmp_path / "videos")
    finally:
        env.close()

    assert result.success_rate == 1.0
    assert result.success_ci95 == wilson_interval(3, 3)
    steps = [record.steps for record in result.episodes]
    assert all(0 < s < STEP_LIMIT for s in steps)
    assert result.cycle_time_steps == pytest.approx(np.mean(steps))
    assert result.cycle_time_s == pytest.approx(np.mean(steps) * 0.1)
    assert [record.seed for record in result.episodes] == [5, 6, 7]
    assert all(record.episode_return == 1.0 and record.instruction for record in result.episodes)
    assert [record.first_lifted for record in result.episodes] == [0, 0, 0]  # the expert lifts the named cube
    assert result.named_object_first_rate == 1.0

    data = json.loads(json.dumps(result.to_json()))
    assert set(data) == RESULT_KEYS
    assert data["num_episodes"] == 3 and data["seed"] == 5 and data["env_id"] == ENV_ID
    assert data["episodes"][0]["return"] == 1.0

    layout = FrameLayout(cameras=("front", "wrist"), side=IMAGE_SIZE)  # labelled, as `corft view` draws them
    for record in result.episodes:
        assert record.video is not None
        with imageio.get_reader(record.video) as reader:
            frames = reader.count_frames()
            first, before_last, last = (reader.get_data(k) for k in (0, frames - 2, frames - 1))
        assert frames == record.steps + 1  # the reset frame, then one per control step
        assert first.shape == (layout.height, layout.width, 3)
        assert all(first[layout.camera_box(k)].std() > 0 for k in range(2))
        assert success_pixels(last, layout) > 0 and success_pixels(before_last, layout) == 0


def test_hold_still_policy_fails_without_cycle_time(tmp_path):
    policy = HoldStill()
    result = evaluate_model(policy, ENV_ID, episodes=2, seed=0, video_dir=tmp_path)
    assert result.success_rate == 0.0
    assert result.success_ci95 == wilson_interval(0, 2)
    assert result.cycle_time_steps is None and result.cycle_time_s is None
    assert [record.steps for record in result.episodes] == [STEP_LIMIT, STEP_LIMIT]
    assert policy.calls == 2 * STEP_LIMIT // policy.chunk_size
    assert [record.first_lifted for record in result.episodes] == [-1, -1] and result.named_object_first_rate == 0.0
    data = result.to_json()
    assert data["cycle_time_steps"] is None and data["cycle_time_s"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["episode_000_seed_0.mp4", "episode_001_seed_1.mp4"]


def test_execute_runs_only_the_first_actions_of_each_chunk():
    policy = HoldStill(chunk_size=10)
    result = evaluate_model(policy, ENV_ID, episodes=1, execute=7)
    assert result.episodes[0].steps == STEP_LIMIT
    assert policy.calls == 22  # 21 chunks run 7 steps each, the 22nd runs 3 and hits the step limit


def test_unseen_positions_and_seeds_reach_the_env():
    result = evaluate_model(HoldStill(chunk_size=50), ENV_ID, positions="unseen", episodes=2, seed=3)
    env = gym.make(ENV_ID, positions="unseen", image_size=IMAGE_SIZE)
    instructions = [env.reset(seed=seed)[1]["instruction"] for seed in (3, 4)]
    env.close()
    assert result.positions == "unseen"
    assert [record.instruction for record in result.episodes] == instructions


def test_model_for_other_spaces_is_refused_naming_both():
    with pytest.raises(ValueError, match=r"does not fit corft/PickPlace-v0.*image_front.*\(32, 32, 3\).*\(48, 48, 3\)"):
        evaluate_model(HoldStill(image_size=32), ENV_ID, episodes=1, image_size=48)
    with pytest.raises(ValueError, match=r"action space: shape \(10, 6\) recorded, \(10, 7\) now"):
        evaluate_model(HoldStill(action_dim=6), ENV_ID, episodes=1)


def test_bad_arguments_are_refused():
    policy = HoldStill()
    env = make_eval_env(policy, ENV_ID)
    try:
        with pytest.raises(ValueError, match="episodes must be at least 1"):
            run_episodes(policy, env, ENV_ID, "train", episodes=0)
        with pytest.raises(ValueError, match="record_video=True"):
            run_episodes(policy, env, ENV_ID, "train", episodes=1, video_dir="videos")
    finally:
        env.close()
    with pytest.raises(ValueError, match="at least one episode"):
        EvalResult(ENV_ID, "train", 0, [])


def test_video_of_odd_sized_frames_is_padded_to_even(tmp_path):
    frames = [np.full((17, 17, 3), 40 * k, np.uint8) for k in range(4)]
    write_video(tmp_path / "odd" / "clip.mp4", frames)
    with imageio.get_reader(tmp_path / "odd" / "clip.mp4") as reader:
        assert reader.count_frames() == 4
        assert reader.get_data(3).shape == (18, 18, 3)


def test_load_model_reports_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "missing.zip")
    (tmp_path / "text.zip").write_text("not a zip")
    with pytest.raises(ValueError, match="text.zip: not a readable model zip"):
        load_model(tmp_path / "text.zip")
    with zipfile.ZipFile(tmp_path / "sb3.zip", "w") as archive:
        archive.writestr("data", json.dumps({"gamma": 0.99}))
    with pytest.raises(ValueError, match="old pickle-based format"):
        saved_algorithm_name(tmp_path / "sb3.zip")
    with zipfile.ZipFile(tmp_path / "foreign.zip", "w") as archive:
        archive.writestr("weights.bin", b"")
    with pytest.raises(ValueError, match="not a corft model file"):
        saved_algorithm_name(tmp_path / "foreign.zip")
    config = {"format_version": 2, "algorithm_name": "no_such_algo", "policy_class": "VLAPolicy", "arguments": {},
              "progress": {}, "observation_space": {}, "action_space": {}, "normalization": {}, "instructions": [],
              "dataset": {}}
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("corft_model.json", json.dumps(config))
    with pytest.raises(ValueError, match="unknown algorithm 'no_such_algo'; registered: .*sft"):
        load_model(tmp_path / "other.zip")
    with zipfile.ZipFile(tmp_path / "nameless.zip", "w") as archive:
        archive.writestr("corft_model.json", json.dumps({**config, "algorithm_name": None}))
    with pytest.raises(ValueError, match="'algorithm_name' is missing or not a JSON str"):
        saved_algorithm_name(tmp_path / "nameless.zip")


def test_named_object_first_rate_counts_lifts_of_the_named_object_over_all_episodes():
    def record(lifted):
        return EpisodeOutcome(seed=0, success=False, steps=1, cycle_time_s=0.1, instruction="x", episode_return=0.0,
                             first_lifted=lifted)

    result = EvalResult(ENV_ID, "train", 0, [record(0), record(2), record(-1), record(0)])
    assert result.named_object_first_rate == 0.5  # 2 of 4: a wrong cube and no lift both count against it
    assert EvalResult(ENV_ID, "train", 0, [record(0), record(None)]).named_object_first_rate is None
