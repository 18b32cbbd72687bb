"""Test configuration: headless MuJoCo rendering, one torch thread, small shared fixtures."""

import os
import signal

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import corft_envs  # noqa: E402,F401  (registers the env ids)
from corft_envs.collection import CollectConfig, collect  # noqa: E402

# Tests run small models; on a 2-core machine shared with other work, torch's
# intra-op threads cost far more than they give (measured: 3 tiny CO-RFT steps
# 10.2 s with 2 threads under load, 0.2 s with 1).
torch.set_num_threads(1)

# The Ctrl-C tests need Python's SIGINT handler. A process started with SIGINT ignored (a background job
# of a script, nohup) does not install it, and its children inherit the ignoring; restore both.
signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test not marked ``integration`` as ``unit`` (the groups are listed in setup.cfg), and skip the
    ``gpu`` tests without a CUDA device."""
    cuda = torch.cuda.is_available()
    for item in items:
        if item.get_closest_marker("integration") is None:
            item.add_marker(pytest.mark.unit)
        if item.get_closest_marker("gpu") is not None and not cuda:
            item.add_marker(pytest.mark.skip(reason="the GPU path needs a CUDA device"))


@pytest.fixture(scope="module")
def torch_threads_restored():
    """For modules whose commands pass `--threads`, which sets torch's process-wide thread count: the other
    test modules get theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


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


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """Two scripted PickPlace demos at 32 px, for the algorithm tests."""
    out = tmp_path_factory.mktemp("data") / "pickplace"
    collect(CollectConfig(env_id="corft/PickPlace-v0", episodes=2, out=out, image_size=32, seed=0), progress=False)
    return out


@pytest.fixture(scope="session")
def observation(tiny_dataset):
    """One PickPlace observation at 32 px, with the instruction."""
    env = gym.make("corft/PickPlace-v0", image_size=32, include_instruction=True)
    obs, _ = env.reset(seed=123)
    env.close()
    return obs
