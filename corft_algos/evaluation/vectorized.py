"""Evaluation episodes in several sim envs at once, on gymnasium's :class:`~gymnasium.vector.AsyncVectorEnv`.

Each worker process (started with ``spawn``; it imports only ``corft_envs``)
steps one chunked env; the model stays in this process
and predicts one observation at a time, exactly as the serial loop of
:func:`corft_algos.evaluation.evaluate_episode` does, so episode ``k`` (reset with
seed ``seed + k``) gives the same record whichever worker runs it: the results
equal the serial run's. Autoreset is off: a worker whose episode ended is
reset with the next episode's seed (``reset_mask``); once no episode is left
it idles (it is still stepped, with a zero chunk, and its results ignored).

Only sim envs run here; the real arm stays a single env.

The envs step in lockstep, each episode starting when a worker frees up, so the one episode loop
(:func:`corft_envs.rollout.run_episode`, one env) cannot drive them; each episode's totals are kept in
its :class:`~corft_envs.rollout.EpisodeTally`, as that loop keeps them, and the model acts through the same
:func:`~corft_algos.evaluation.rollout.model_actions`.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode
from tqdm import tqdm

from corft_algos.evaluation.rollout import (
    DEFAULT_EVAL_SEED,
    INSTRUCTION_KEY,
    ChunkPolicy,
    eval_env_kwargs,
    make_eval_env,
    model_actions,
)
from corft_algos.evaluation.statistics import EvalResult
from corft_envs.chunking import ChunkValidator, make_chunked_env
from corft_envs.rollout import EpisodeOutcome, EpisodeTally


def _slot_info(infos: dict[str, Any], slot: int) -> dict[str, Any]:
    """One worker's ``info`` out of the batched ``infos`` (the keys it reported)."""
    return {key: value[slot] for key, value in infos.items() if not key.startswith("_") and infos[f"_{key}"][slot]}


def evaluate_vectorized(
    model: ChunkPolicy,
    env_id: str,
    workers: int,
    positions: str = "train",
    episodes: int = 50,
    seed: int = DEFAULT_EVAL_SEED,
    execute: int | None = None,
    progress: bool = False,
    env_kwargs: dict[str, Any] | None = None,
) -> EvalResult:
    """:func:`corft_algos.evaluation.evaluate_model` over ``workers`` processes: the same episodes, the same result.

    :raises ValueError: if the model does not fit the env, or the env is not a sim env.
    """
    kwargs = eval_env_kwargs(model, positions, env_kwargs=env_kwargs)
    probe = make_eval_env(model, env_id, positions=positions, env_kwargs=env_kwargs)  # checks the fit here
    is_sim = not isinstance(probe.unwrapped, ChunkValidator)  # hardware envs check whole chunks
    probe.close()
    if not is_sim:
        raise ValueError(f"{env_id} drives hardware (or its twin): evaluate it with one worker")
    records = run_episodes_vectorized(model, env_id, kwargs, workers, episodes, seed, execute, progress)
    return EvalResult(env_id=env_id, positions=positions, seed=seed, episodes=records)


def run_episodes_vectorized(
    model: ChunkPolicy,
    env_id: str,
    env_kwargs: dict[str, Any],
    workers: int,
    episodes: int,
    seed: int,
    execute: int | None = None,
    progress: bool = False,
) -> list[EpisodeOutcome]:
    """Episodes ``seed .. seed + episodes - 1`` over ``workers`` processes; one
    :class:`~corft_envs.rollout.EpisodeOutcome` each, in order.

    :param model: the policy (``predict``, ``chunk_size``).
    :param env_id: a registered sim env id.
    :param env_kwargs: ``gym.make`` arguments of every worker's env (with ``include_instruction=True``).
    :param workers: processes, at least 2 (fewer if there are fewer episodes).
    :param episodes: number of episodes.
    :param seed: seed of the first episode.
    :param execute: run only the first ``execute`` actions of each chunk.
    :param progress: show a progress bar.
    """
    count = min(workers, episodes)
    make = functools.partial(make_chunked_env, env_id, env_kwargs, model.chunk_size, execute)
    # spawn, not fork: a forked child inherits locks held by this process's threads (torch, EGL) and can hang
    envs = AsyncVectorEnv([make] * count, shared_memory=False, autoreset_mode=AutoresetMode.DISABLED,
                          context="spawn")
    act = model_actions(model)
    records: dict[int, EpisodeOutcome] = {}
    running: list[tuple[int, EpisodeTally] | None] = [None] * count
    next_episode = 0
    idle_chunk = np.zeros(envs.single_action_space.shape, dtype=envs.single_action_space.dtype)
    bar = tqdm(total=episodes, desc=f"eval {env_id} ({count} workers)", unit="episode", disable=not progress,
               dynamic_ncols=True)

    def start(slots: list[int], observations: dict[str, Any] | None) -> dict[str, Any]:
        """Reset ``slots`` with the next episodes' seeds; the batched observations with theirs in place."""
        nonlocal next_episode
        mask = np.zeros(count, dtype=bool)
        seeds: list[int | None] = [None] * count
        for slot in slots:
            mask[slot], seeds[slot] = True, seed + next_episode
            running[slot] = (next_episode, EpisodeTally(seed + next_episode, ""))
            next_episode += 1
        fresh, _ = envs.reset(seed=seeds, options={"reset_mask": mask})
        if observations is None:
            observations = {key: list(value) for key, value in fresh.items()}
        for slot in slots:
            for key in observations:
                observations[key][slot] = fresh[key][slot]
            running[slot][1].instruction = str(fresh[INSTRUCTION_KEY][slot])
        return observations

    try:
        observations = start(list(range(count)), None)
        while any(episode is not None for episode in running):
            chunks = []
            for slot, episode in enumerate(running):
                if episode is None:
                    chunks.append(idle_chunk)
                    continue
                observation = {key: value[slot] for key, value in observations.items()}
                chunks.append(act(observation, episode[1].first))
            stepped, rewards, terminated, truncated, infos = envs.step(np.stack(chunks))
            ended = []
            for slot, episode in enumerate(running):
                for key in observations:
                    observations[key][slot] = stepped[key][slot]
                if episode is None:
                    continue
                number, tally = episode
                tally.add(rewards[slot], _slot_info(infos, slot))
                if terminated[slot] or truncated[slot]:
                    records[number] = tally.outcome()
                    running[slot] = None
                    ended.append(slot)
                    bar.update()
            if ended:
                bar.set_postfix(success=f"{sum(r.success for r in records.values())}/{len(records)}")
                waiting = ended[:max(0, episodes - next_episode)]
                if waiting:
                    observations = start(waiting, observations)
    except BaseException:
        bar.close()
        envs.close(terminate=True)  # a worker may be mid-step: waiting for it could hang
        raise
    bar.close()
    envs.close()
    return [records[k] for k in range(episodes)]
