"""stable-baselines3's `evaluate_policy` runs a corft model on a corft env wrapped in `InstructionBytes` (SB3's
vectorized envs cannot hold the `Text` instruction key)."""

from __future__ import annotations

import numpy as np
import pytest
from stable_baselines3.common.evaluation import evaluate_policy

from corft_envs import InstructionBytes
from corft_envs.instruction_bytes import decode_instructions, encode_instruction
from tests.helpers import make_algorithm


def test_instructions_encode_to_bytes_and_back():
    encoded = encode_instruction("put the red cube in the bowl", 32)
    assert encoded.dtype == np.uint8 and encoded.shape == (32,)
    assert decode_instructions(encoded) == "put the red cube in the bowl"
    batch = np.stack([encoded, encode_instruction("", 32)])
    assert decode_instructions(batch) == ["put the red cube in the bowl", ""]
    with pytest.raises(ValueError, match="does not fit 4 non-zero bytes"):
        encode_instruction("too long", 4)
    with pytest.raises(ValueError, match=r"\(N,\) or \(batch, N\)"):
        decode_instructions(batch[None])


def test_the_wrapper_needs_the_instruction_key(make_env):
    with pytest.raises(ValueError, match="include_instruction=True"):
        InstructionBytes(make_env("corft/PickPlace-v0", image_size=32))


@pytest.mark.integration
def test_evaluate_policy_runs_a_corft_model_on_a_corft_env(tiny_dataset, make_env):
    model = make_algorithm("sft", tiny_dataset)
    model.learn(2)
    env = InstructionBytes(make_env("corft/PickPlace-v0", image_size=32, include_instruction=True,
                                    chunk_size=model.chunk_size, max_episode_steps=2))
    observation, _ = env.reset(seed=3)
    as_text = {**observation, "instruction": env.unwrapped.instruction}
    np.testing.assert_array_equal(model.predict(observation)[0], model.predict(as_text)[0])

    rewards, lengths = evaluate_policy(model, env, n_eval_episodes=1, return_episode_rewards=True, warn=False)
    assert lengths == [2] and rewards[0] in (0.0, 1.0)  # two chunks (the limit), a sparse reward
    mean, std = evaluate_policy(model, env, n_eval_episodes=1, warn=False)
    assert 0.0 <= mean <= 1.0 and std == 0.0
