"""The ActionChunk wrapper against hand-computed cases and on the real sim env."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from corft_envs import ActionChunk
from corft_envs.chunking import ChunkValidator
from corft_envs.experts import make_expert


class RewardIsStepIndex(gym.Env):
    """A one-dimensional env whose reward at step i is i + 1 and which terminates after ``end`` steps.

    Small enough that every chunk outcome can be computed by hand.
    """

    observation_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = spaces.Box(-1, 1, (2,), np.float32)

    def __init__(self, end: int) -> None:
        self.end = end
        self.executed: list[np.ndarray] = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.executed.append(np.asarray(action))
        self.t += 1
        done = self.t >= self.end
        return np.array([self.t], np.float32), float(self.t), done, False, {"is_success": done}


def test_discounted_sum_and_chunk_len():
    env = ActionChunk(RewardIsStepIndex(end=100), chunk_size=4, gamma=0.5)
    env.reset()
    obs, reward, terminated, truncated, info = env.step(np.zeros((4, 2)))
    assert reward == pytest.approx(1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 4)  # 3.5
    assert info["chunk_len"] == 4 and list(info["chunk_rewards"]) == [1, 2, 3, 4]
    assert obs[0] == 4 and not terminated and info["is_success"] is False


def test_early_termination_inside_a_chunk():
    env = ActionChunk(RewardIsStepIndex(end=6), chunk_size=4, gamma=0.9)
    env.reset()
    env.step(np.zeros((4, 2)))
    obs, reward, terminated, truncated, info = env.step(np.zeros((4, 2)))
    assert terminated and obs[0] == 6
    assert info["chunk_len"] == 2 and reward == pytest.approx(5 + 0.9 * 6)
    assert list(info["chunk_rewards"]) == [5, 6, 0, 0]  # zero-padded to the chunk's 4 actions
    assert info["is_success"] is True


def test_vectorized_infos_stack_when_one_episode_ends_inside_a_chunk():
    envs = gym.vector.SyncVectorEnv([lambda: ActionChunk(RewardIsStepIndex(end=6), chunk_size=4),
                                     lambda: ActionChunk(RewardIsStepIndex(end=100), chunk_size=4)],
                                    autoreset_mode=gym.vector.AutoresetMode.DISABLED)
    envs.reset()
    envs.step(np.zeros((2, 4, 2)))
    _, _, terminated, _, info = envs.step(np.zeros((2, 4, 2)))
    assert list(terminated) == [True, False] and list(info["chunk_len"]) == [2, 4]
    assert info["chunk_rewards"].tolist() == [[5, 6, 0, 0], [5, 6, 7, 8]]


def test_short_chunks_and_execute_prefix():
    base = RewardIsStepIndex(end=100)
    env = ActionChunk(base, chunk_size=5, execute=2)
    env.reset()
    chunk = np.arange(6, dtype=np.float32).reshape(3, 2)  # k = 3 <= H
    _, reward, *_, info = env.step(chunk)
    assert info["chunk_len"] == 2 and reward == 1 + 2
    np.testing.assert_array_equal(np.array(base.executed), chunk[:2])
    assert env.action_space.shape == (5, 2)


class RejectsLargeActions(RewardIsStepIndex):
    """Has a whole-chunk check, as the real arm env does."""

    def validate_chunk(self, actions):
        if np.abs(actions).max() > 0.5:
            raise ValueError("chunk rejected")


def test_whole_chunk_is_validated_before_any_action_runs():
    base = RejectsLargeActions(end=100)
    env = ActionChunk(base, chunk_size=3, execute=2)
    env.reset()
    with pytest.raises(ValueError, match="chunk rejected"):
        env.step(np.array([[0.0, 0.0], [0.9, 0.0], [0.0, 0.0]]))
    assert base.executed == []
    env.step(np.array([[0.0, 0.0], [0.1, 0.0], [0.9, 0.0]]))  # the third is not executed, so not checked
    assert len(base.executed) == 2


def test_an_env_with_validate_chunk_is_a_chunk_validator():
    assert isinstance(RejectsLargeActions(end=100), ChunkValidator)
    assert not isinstance(RewardIsStepIndex(end=100), ChunkValidator)


@pytest.mark.integration
def test_a_chunk_with_a_nan_part_way_runs_none_of_it(make_env):
    base = RewardIsStepIndex(end=100)
    env = ActionChunk(base, chunk_size=3)
    env.reset()
    with pytest.raises(ValueError, match=r"the chunk's actions \[2\] are not finite \(NaN or inf\); nothing of it"):
        env.step(np.array([[0.0, 0.0], [0.1, 0.0], [np.nan, 0.0]]))
    assert base.executed == []
    sim = make_env("corft/Push-v0", image_size=16, chunk_size=3)
    sim.reset(seed=0)
    before = sim.unwrapped.tcp_pose()[0].copy()
    with pytest.raises(ValueError, match="not finite"):
        sim.step(np.array([[1.0, 0, 0, 0, 0, 0, -1], [1.0, 0, 0, 0, 0, 0, -1], [np.inf, 0, 0, 0, 0, 0, -1]]))
    np.testing.assert_array_equal(sim.unwrapped.tcp_pose()[0], before)


@pytest.mark.integration
def test_chunk_settings_without_a_chunk_size_are_refused(make_env):
    with pytest.raises(ValueError, match="set how chunks run and are rewarded: pass chunk_size=H too"):
        make_env("corft/Push-v0", image_size=16, gamma=0.9)
    with pytest.raises(ValueError, match="pass chunk_size=H too"):
        make_env("corft/Push-v0", image_size=16, execute=2)


@pytest.mark.parametrize("shape", [(6, 2), (0, 2), (3, 3), (2,)])
def test_malformed_chunk_is_rejected(shape):
    env = ActionChunk(RewardIsStepIndex(end=100), chunk_size=5)
    env.reset()
    with pytest.raises(ValueError, match=r"a chunk must have shape \(k, 2\) with 1 <= k <= chunk_size=5"):
        env.step(np.zeros(shape))


def test_bad_wrapper_arguments():
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1"):
        ActionChunk(RewardIsStepIndex(end=3), chunk_size=0)
    with pytest.raises(ValueError, match="gamma must satisfy 0 < gamma <= 1"):
        ActionChunk(RewardIsStepIndex(end=3), chunk_size=2, gamma=1.5)
    with pytest.raises(ValueError, match="execute must be in"):
        ActionChunk(RewardIsStepIndex(end=3), chunk_size=2, execute=3)


@pytest.mark.integration
def test_time_limit_counts_single_steps(make_env):
    env = make_env("corft/Push-v0", image_size=16, chunk_size=10)
    assert env.action_space.shape == (10, 7)
    limit = env.spec.max_episode_steps
    env.reset(seed=0)
    steps, truncated = 0, False
    hold = np.tile(np.array([0, 0, 0, 0, 0, 0, -1], np.float32), (10, 1))
    while not truncated:
        *_, terminated, truncated, info = env.step(hold)
        steps += info["chunk_len"]
        assert not terminated
    assert steps == limit


@pytest.mark.integration
def test_success_inside_a_chunk_replays_a_step_level_episode(make_env):
    """Replay an expert's step-level episode in chunks: the success step ends its chunk, discounted."""
    step_env = make_env("corft/PickPlace-v0", image_size=16)
    expert = make_expert(step_env)
    obs, _ = step_env.reset(seed=3)
    expert.reset(3)
    actions, rewards = [], []
    while True:
        actions.append(expert.act(obs))
        obs, reward, terminated, truncated, _ = step_env.step(actions[-1])
        rewards.append(reward)
        if terminated or truncated:
            break
    assert terminated and rewards[-1] == 1.0 and sum(rewards) == 1.0
    success_step = len(actions) - 1

    gamma, size = 0.9, 8
    chunk_env = make_env("corft/PickPlace-v0", image_size=16, chunk_size=size, gamma=gamma)
    chunk_env.reset(seed=3)
    padded = actions + [actions[-1]] * size
    for start in range(0, len(padded), size):
        _, reward, terminated, _, info = chunk_env.step(np.array(padded[start : start + size]))
        if terminated:
            break
    assert start == success_step // size * size
    assert info["chunk_len"] == success_step - start + 1
    assert reward == pytest.approx(gamma ** (success_step - start))
    assert info["is_success"] is True
