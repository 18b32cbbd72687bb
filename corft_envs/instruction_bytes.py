"""The instruction as bytes, for stable-baselines3's vectorized envs: :class:`InstructionBytes`.

SB3's ``VecEnv``s (and so ``evaluate_policy``, which wraps a plain env in a ``DummyVecEnv``) keep each
observation key in a numpy buffer of the key's shape, which a ``Text`` space does not have. The wrapper
replaces the ``instruction`` key (an env made with ``include_instruction=True``) by a ``uint8`` Box of its
UTF-8 bytes, zero-padded to the Text space's ``max_length``; corft's policies read that form back
(:func:`decode_instructions`), one observation or a batch, so
``evaluate_policy(model, InstructionBytes(env))`` runs a corft model on a corft env.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

#: The observation key of the language instruction.
INSTRUCTION_KEY = "instruction"


def encode_instruction(text: str, length: int) -> np.ndarray:
    """``text``'s UTF-8 bytes as ``uint8``, zero-padded to ``length``.

    :raises ValueError: if they are longer than ``length`` or hold a zero byte.
    """
    data = text.encode("utf-8")
    if len(data) > length or b"\0" in data:
        raise ValueError(f"instruction {text!r} does not fit {length} non-zero bytes")
    return np.frombuffer(data.ljust(length, b"\0"), dtype=np.uint8).copy()


def decode_instructions(encoded: np.ndarray) -> str | list[str]:
    """The inverse of :func:`encode_instruction`: ``(N,)`` bytes give a str, a batch ``(B, N)`` a list of B str.

    :raises ValueError: for another number of dimensions, or bytes that are not UTF-8.
    """
    array = np.asarray(encoded, dtype=np.uint8)
    if array.ndim not in (1, 2):
        raise ValueError(f"encoded instructions are (N,) or (batch, N) bytes, got shape {array.shape}")
    texts = [bytes(row).rstrip(b"\0").decode("utf-8") for row in array.reshape(-1, array.shape[-1])]
    return texts[0] if array.ndim == 1 else texts


class InstructionBytes(gym.ObservationWrapper):
    """``env``'s ``Text`` instruction key as a ``uint8`` Box of its zero-padded UTF-8 bytes (see the module).

    :raises ValueError: if ``env``'s observations have no ``Text`` instruction key (make it with
        ``include_instruction=True``).
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        text = space.spaces.get(INSTRUCTION_KEY) if isinstance(space, spaces.Dict) else None
        if not isinstance(text, spaces.Text):
            raise ValueError(f"InstructionBytes needs a Dict observation space with a Text {INSTRUCTION_KEY!r} key: "
                             "make the env with include_instruction=True")
        self.observation_space = spaces.Dict(
            {**space.spaces, INSTRUCTION_KEY: spaces.Box(0, 255, (text.max_length,), np.uint8)})

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        length = self.observation_space[INSTRUCTION_KEY].shape[0]
        return {**observation, INSTRUCTION_KEY: encode_instruction(observation[INSTRUCTION_KEY], length)}
