"""On a toy task whose demonstrations often take a detour, CO-RFT takes the shorter path where SFT copies the detour.

A point starts at (0, 0) and must reach (1, 0); each step moves it by at most
0.1 per axis. Half the demonstrations go straight (about 10 steps), half via
(0.5, 1.0) (about 23 steps), so which one a demonstrator takes is invisible
in the state. Imitation reproduces the mixture; CO-RFT's critic sees that the
straight path reaches the sparse reward sooner (γ < 1) and its actor follows it.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from corft_algos import CORFT, SFT
from corft_envs.collection import CollectConfig, collect
from tests.helpers import TINY_POLICY

pytestmark = pytest.mark.integration

GOAL = np.array([1.0, 0.0])
WAYPOINT = np.array([0.5, 1.0])
STEP = 0.1
ENV_ID = "corft-test/PointDetour-v0"


class PointDetourEnv(gym.Env):
    """2-D point mass with a sparse goal reward; ``positions`` is accepted for the collector and ignored."""

    observation_space = spaces.Dict({"state": spaces.Box(-3.0, 3.0, (2,), np.float32)})
    action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)

    def __init__(self, positions: str = "train") -> None:
        self.position = np.zeros(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = np.zeros(2)
        return self._observation(), {"instruction": "go to the goal", "is_success": False}

    def step(self, action):
        self.position = np.clip(self.position + np.clip(action, -1, 1) * STEP, -3, 3)
        success = bool(np.linalg.norm(self.position - GOAL) < 0.1)
        return self._observation(), float(success), success, False, {"is_success": success}

    def _observation(self):
        return {"state": self.position.astype(np.float32)}


class DetourDemonstrator:
    """Straight to the goal, or through the waypoint, chosen per episode by its seed."""

    def __init__(self, env):
        self.env = env.unwrapped

    def reset(self, seed):
        self.rng = np.random.default_rng(seed)
        self.targets = [GOAL] if self.rng.random() < 0.5 else [WAYPOINT, GOAL]

    def act(self, observation):
        position = observation["state"]
        if len(self.targets) > 1 and np.linalg.norm(self.targets[0] - position) < 0.05:
            self.targets.pop(0)
        error = self.targets[0] - position
        action = error / max(np.abs(error).max(), STEP) * min(1.0, np.abs(error).max() / STEP)
        return np.clip(action + self.rng.normal(0, 0.05, 2), -1, 1).astype(np.float32)

    def act_chunk(self, observation, horizon):
        return self.act(observation)[None]


def rollout_lengths(model, episodes=5, limit=60):
    env = PointDetourEnv()
    lengths = []
    for seed in range(episodes):
        obs, info = env.reset(seed=seed)
        steps, done = 0, False
        while not done and steps < limit:
            chunk, _ = model.predict({**obs, "instruction": info["instruction"]})
            for action in chunk:
                obs, _, done, _, _ = env.step(action)
                steps += 1
                if done:
                    break
        lengths.append(steps if done else np.inf)
    return np.array(lengths)


@pytest.fixture(scope="module")
def detour_demos(tmp_path_factory):
    if ENV_ID not in gym.registry:
        gym.register(ENV_ID, entry_point=PointDetourEnv, max_episode_steps=60)
    out = tmp_path_factory.mktemp("detour") / "demos"
    collect(CollectConfig(env_id=ENV_ID, episodes=40, out=out, seed=0), progress=False, make_policy=DetourDemonstrator)
    return out


#: The toy's own schedule, and below TD3+BC's λ = 2.5 (the library's 0.25 is tuned for the sim tasks): the test
#: asks whether a strong Q term finds the short path.
SCHEDULE = {"lr_schedule_kind": "constant", "lr_warmup_steps": 0}


@pytest.mark.slow
def test_corft_takes_the_short_path_where_sft_copies_the_detour(detour_demos):
    torch.manual_seed(0)
    sft = SFT(dataset=detour_demos, chunk_size=5, batch_size=64, learning_rate=1e-3, seed=0, policy_kwargs=TINY_POLICY,
              **SCHEDULE)
    sft.learn(2500)  # the same total gradient steps as CO-RFT
    torch.manual_seed(0)
    corft = CORFT(dataset=detour_demos, chunk_size=5, batch_size=64, learning_rate=1e-3, seed=0, gamma=0.95,
                  il_steps=1500, critic_warmup_steps=300, actor_lr=3e-4, policy_kwargs=TINY_POLICY, **SCHEDULE,
                  actor_q_weight=2.5, value_bounds=None)
    corft.learn(2500)
    sft_lengths, corft_lengths = rollout_lengths(sft), rollout_lengths(corft)
    print(f"steps to the goal: SFT {sft_lengths}, CO-RFT {corft_lengths}")
    assert np.all(np.isfinite(corft_lengths))
    assert corft_lengths.mean() <= 12  # the straight path takes about 10 steps, the detour about 23
    assert corft_lengths.mean() < sft_lengths.mean() - 3
