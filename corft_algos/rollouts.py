"""A trained model as the acting policy of ``corft collect --policy``.

Offline RL learns only from what the data show. Demonstrations show successes
only, so a critic trained on them never sees what a failed grasp costs. Recording
a trained policy's own rollouts, failures kept (``--keep-failures``), gives the
next training those outcomes, with their sparse rewards, in the same store
format as the demonstrations (``corft train --data demos rollouts`` reads both).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from corft_algos.evaluation import ChunkPolicy, model_image_size, observation_differences, rollout_execute
from corft_algos.policies import INSTRUCTION_KEY
from corft_algos.selection import perturbed_chunk
from corft_envs.chunking import ActionChunk
from corft_envs.collection import CollectConfig


class PolicyActor:
    """The scripted-policy interface of :func:`corft_envs.collection.collect` over a trained model.

    Each :meth:`act_chunk` predicts a chunk from the observation and the
    episode's instruction (``env.unwrapped.instruction``) and returns its first
    ``horizon`` actions: collecting with ``chunk_size`` K below the model's H
    replans every K actions, as ``corft eval --execute K`` does.

    With ``noise`` σ > 0 every chunk is moved by one Gaussian offset (:func:`~corft_algos.selection.perturbed_chunk`),
    drawn from a generator seeded with the episode's seed at :meth:`reset`: an episode's actions depend on its
    seed alone, so a resumed collection equals an uninterrupted one.

    :param model: a trained corft model.
    :param env: the env the collector acts in (its observations must be the model's).
    :param noise: σ of the chunks' offsets, normalised action units (0: the model's own chunks).
    :raises ValueError: if the env's observations differ from the model's, or ``noise`` is negative.
    """

    def __init__(self, model: ChunkPolicy, env: gym.Env, noise: float = 0.0) -> None:
        if not noise >= 0:
            raise ValueError(f"the policy's noise must be >= 0, got {noise}")
        problems = observation_differences(model, env)
        if problems:
            raise ValueError("the policy does not fit the env: " + "; ".join(problems)
                             + " ('recorded' is the model's, 'now' the env's). Collect with the model's image size")
        horizon = env.chunk_size if isinstance(env, ActionChunk) else 1
        if horizon > model.chunk_size:
            raise ValueError(f"the policy predicts {model.chunk_size} actions per chunk, the collector asks for "
                             f"{horizon}: pass --chunk-size {model.chunk_size} or less")
        self.model, self.env, self.noise = model, env, float(noise)
        self._generator = torch.Generator(device=model.policy.device)
        self._episode_start = True

    def reset(self, seed: int) -> None:
        """A new episode: the next prediction starts it (the model's state, if any, is reset), and its
        offsets are drawn from ``seed``."""
        self._generator.manual_seed(seed)
        self._episode_start = True

    def act_chunk(self, observation: dict[str, np.ndarray], horizon: int) -> np.ndarray:
        """The first ``horizon`` actions of the model's chunk for ``observation``, ``(horizon, A)``."""
        with_instruction: dict[str, Any] = {**observation, INSTRUCTION_KEY: self.env.unwrapped.instruction}
        if self.noise > 0:
            chunk = perturbed_chunk(self.model, with_instruction, self.noise, self._generator)
        else:
            chunk, _ = self.model.predict(with_instruction, episode_start=np.array([self._episode_start]),
                                          deterministic=True)
        self._episode_start = False
        return np.asarray(chunk)[:horizon]

    def act(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """The first action of the model's chunk (a step-level collector replans every step)."""
        return self.act_chunk(observation, 1)[0]


def policy_collection(model: ChunkPolicy, config: CollectConfig,
                      noise: float = 0.0) -> tuple[CollectConfig, Callable[[gym.Env], PolicyActor]]:
    """What ``corft collect --policy`` runs: ``config`` with the model's executed actions per chunk and image
    size where it names none, and a factory of :class:`PolicyActor` over ``model`` (for
    :func:`~corft_envs.collection.collect`'s ``make_policy``).

    :param noise: σ of the chunks' offsets (``--policy-noise``).
    """
    config = dataclasses.replace(config, chunk_size=config.chunk_size or rollout_execute(model) or model.chunk_size,
                                 image_size=config.image_size or model_image_size(model))
    return config, lambda env: PolicyActor(model, env, noise=noise)
