"""Test configuration: headless MuJoCo rendering, one torch thread, small shared fixtures."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import corft_envs  # noqa: E402,F401  (registers the env ids)

# Tests run small models; on a 2-core machine shared with other work, torch's
# intra-op threads cost far more than they give (measured: 3 tiny CO-RFT steps
# 10.2 s with 2 threads under load, 0.2 s with 1).
torch.set_num_threads(1)


@pytest.fixture
def make_env():
    """Factory for sim envs that closes every env it made at the end of the test."""
    made: list[gym.Env] = []

    def factory(env_id: str = "corft/PickPlace-v0", **kwargs) -> gym.Env:
        env = gym.make(env_id, **kwargs)
        made.append(env)
        return env

    yield factory
    for env in made:
        env.close()
