"""Run a chunked policy in an env: the evaluation env made for the model, its episodes through the one loop.

:func:`evaluate_model` runs ``episodes`` episodes of a sim env, episode ``k`` reset
with seed ``seed + k`` (by default from :data:`DEFAULT_EVAL_SEED`), the policy acting through the
:class:`~corft_envs.chunking.ActionChunk` wrapper (whole chunks, or the first
``execute`` actions of each), each episode run by :func:`corft_envs.rollout.run_episode`. It returns
one :class:`~corft_envs.rollout.EpisodeOutcome` per episode in an
:class:`~corft_algos.evaluation.statistics.EvalResult`, and optionally writes a labelled mp4 of the
cameras per episode, one frame per control step.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from tqdm import tqdm

import corft_envs  # noqa: F401  (registers the env ids)
from corft_algos.evaluation.statistics import EvalResult
from corft_algos.evaluation.video import FrameRecorder, find_frame_recorder
from corft_algos.policies import INSTRUCTION_KEY
from corft_envs.chunking import ActionChunk
from corft_envs.env_arguments import CHUNK_KWARGS, combine_env_kwargs
from corft_envs.episode_store import space_differences
from corft_envs.rollout import ActionSource, EpisodeOutcome, run_episode
from corft_robots.safety import SafetyViolation

IMAGE_KEY = "image_front"
#: Seed of the first evaluation episode by default: far from the seeds ``corft collect`` uses
#: (0, 1, 2, ... by default), so evaluation scenes are not the demonstrations' scenes.
DEFAULT_EVAL_SEED = 10_000

_log = logging.getLogger(__name__)


class ChunkPolicy(Protocol):
    """What :func:`evaluate_model` needs from a model (every corft algorithm has it)."""

    chunk_size: int
    observation_space: spaces.Dict
    action_space: spaces.Box

    def predict(
        self,
        observation: dict[str, Any],
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, Any]:
        """A chunk of actions ``(k, A)``, ``1 <= k <= chunk_size``, for one observation (with ``"instruction"``)."""


def model_image_size(model: ChunkPolicy) -> int | None:
    """Side of the model's front camera images, or ``None`` if it takes none."""
    space = model.observation_space.spaces.get(IMAGE_KEY)
    return None if space is None else int(space.shape[0])


def observation_differences(model: ChunkPolicy, env: gym.Env) -> list[str]:
    """How the model's observation space differs from the env's, less the instruction (empty: none)."""
    env_observation = spaces.Dict({key: space for key, space in env.observation_space.spaces.items()
                                   if key != INSTRUCTION_KEY})
    return space_differences(model.observation_space, env_observation, "observation space")


def check_model_fits_env(model: ChunkPolicy, env: gym.Env, env_id: str) -> None:
    """Raise a ``ValueError`` naming both sides if ``model`` cannot act in ``env``.

    Compares the model's observation space with the env's (less the
    instruction) and the model's chunk action space with the env's.
    """
    problems = observation_differences(model, env)
    problems += space_differences(model.action_space, env.action_space, "action space")
    if problems:
        trained_on = getattr(model, "dataset_env_id", None)
        source = "the model" if trained_on is None else f"the model (trained on {trained_on})"
        raise ValueError(
            f"{source} does not fit {env_id}: " + "; ".join(problems)
            + " ('recorded' is the model's, 'now' the env's). Evaluate on the env and image size "
            "the model was trained with"
        )


def trained_env_id(model: ChunkPolicy) -> str:
    """The env id the model's training data came from, checked before anything is made from it.

    The id is read from the model file, so it is refused unless it is registered already and plain:
    ``gym.make("module:Env-v0")`` imports ``module``, and a crafted file would run code that way.

    :raises ValueError: if the model names no env, or one that is not registered.
    """
    env_id = getattr(model, "dataset_env_id", None)
    if not isinstance(env_id, str) or ":" in env_id or env_id not in gym.registry:
        raise ValueError(f"the model names the env {env_id!r}, which is not a registered env id; pass the env "
                         f"to evaluate in (--env ID, e.g. corft/PickPlace-v0)")
    return env_id


#: Env arguments that set the scene, taken from the model's training data unless given.
SCENE_KWARGS = ("distractors",)


def trained_scene(model: ChunkPolicy) -> dict[str, Any]:
    """The scene arguments (:data:`SCENE_KWARGS`) of the env the model's training data came from."""
    recorded = getattr(model, "dataset_env_kwargs", None) or {}
    return {key: recorded[key] for key in SCENE_KWARGS if key in recorded}


def rollout_execute(model: ChunkPolicy, execute: int | None = None) -> int | None:
    """Actions run per chunk: ``execute`` if given, else the model's own (``None``: whole chunks), at most H."""
    chosen = execute if execute is not None else getattr(model, "execute", None)
    return None if chosen is None or chosen >= model.chunk_size else int(chosen)


def eval_env_kwargs(
    model: ChunkPolicy,
    positions: str = "train",
    image_size: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``gym.make`` arguments of an evaluation env: positions, the instruction key, the model's image size.

    :raises ValueError: if ``env_kwargs`` contradicts one of them (``--env-kwargs`` against ``--positions``),
        or sets the chunking, which the evaluation applies itself (the model's chunk size).
    """
    settings: dict[str, tuple[Any, str]] = {"positions": (positions, "--positions"),
                                            "include_instruction": (True, "the evaluation")}
    size = image_size if image_size is not None else model_image_size(model)
    if size is not None:
        settings["image_size"] = (size, "the model's image size" if image_size is None else "image_size")
    reserved = {name: "the evaluation runs the model's chunks itself (--execute K runs the first K actions of "
                "each)" for name in CHUNK_KWARGS}
    return combine_env_kwargs(env_kwargs or {}, settings, reserved)


def make_eval_env(
    model: ChunkPolicy,
    env_id: str,
    positions: str = "train",
    execute: int | None = None,
    image_size: int | None = None,
    record_video: bool = False,
    env_kwargs: dict[str, Any] | None = None,
) -> ActionChunk:
    """The step-level env ``env_id`` (with the instruction observation) under ``ActionChunk(H = model.chunk_size)``.

    :param model: the policy; its chunk size and front image size are used.
    :param env_id: a registered Gymnasium id of a step-level env.
    :param positions: object position set.
    :param execute: run only the first ``execute`` actions of each chunk.
    :param image_size: camera image side; default: the model's.
    :param record_video: keep the cameras' images after every step for a video (see :class:`FrameRecorder`).
    :param env_kwargs: further ``gym.make`` keyword arguments.
    :raises ValueError: if the model does not fit the env (see :func:`check_model_fits_env`).
    """
    kwargs = eval_env_kwargs(model, positions, image_size, env_kwargs)
    try:
        env = gym.make(env_id, **kwargs)
    except TypeError as exc:  # an argument the env does not take, e.g. a misspelt --env-kwargs key
        raise ValueError(f"{env_id} cannot be made with {sorted(env_kwargs or {})} from --env-kwargs: "
                         f"{str(exc).split(' was raised')[0]}") from None
    if record_video:
        env = FrameRecorder(env)
    chunked = ActionChunk(env, chunk_size=model.chunk_size, execute=execute)
    try:
        check_model_fits_env(model, chunked, env_id)
    except ValueError:
        chunked.close()
        raise
    trained_on = getattr(model, "dataset_env_id", None)
    if trained_on is not None and trained_on != env_id:
        _log.warning("evaluating a model trained on %s in %s", trained_on, env_id)
    return chunked


def model_actions(model: ChunkPolicy) -> ActionSource:
    """The model as an action source: its deterministic chunk for each observation, the episode started on
    the first."""

    def act(observation: dict[str, Any], first: bool) -> np.ndarray:
        chunk, _ = model.predict(observation, episode_start=np.array([first]), deterministic=True)
        return chunk

    return act


def evaluate_episode(model: ChunkPolicy, env: gym.Env, seed: int) -> EpisodeOutcome:
    """One episode from ``env.reset(seed=seed)``: predict a chunk, step it, until the episode ends.

    On the real arm a chunk the safety layer rejects (nothing of it is sent, the
    arm holds) ends the episode as a failure, with the reason in ``rejected``.
    """
    return run_episode(env, model_actions(model), seed, ends_episode=(SafetyViolation,))


def run_episodes(
    model: ChunkPolicy,
    env: gym.Env,
    env_id: str,
    positions: str,
    episodes: int = 50,
    seed: int = DEFAULT_EVAL_SEED,
    video_dir: str | Path | None = None,
    progress: bool = False,
) -> EvalResult:
    """Run ``episodes`` episodes in an env from :func:`make_eval_env`; episode ``k`` uses seed ``seed + k``.

    :param video_dir: write ``episode_<k>_seed_<s>.mp4`` here, labelled (the env must record frames).
    :param progress: show a tqdm bar with the running success rate.
    :raises ValueError: if ``video_dir`` is given and the env records no frames.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    recorder = find_frame_recorder(env) if video_dir is not None else None
    if video_dir is not None and recorder is None:
        raise ValueError("video_dir needs an env made with make_eval_env(..., record_video=True)")
    records: list[EpisodeOutcome] = []
    bar = tqdm(range(episodes), desc=f"eval {env_id}", unit="episode", disable=not progress, dynamic_ncols=True)
    for k in bar:
        record = evaluate_episode(model, env, seed + k)
        if recorder is not None:
            path = Path(video_dir) / f"episode_{k:03d}_seed_{seed + k}.mp4"
            recorder.write(path, title=f"{env_id} {positions}: episode {k}, seed {seed + k}")
            record = replace(record, video=str(path))
        records.append(record)
        bar.set_postfix(success=f"{sum(r.success for r in records)}/{len(records)}")
    return EvalResult(env_id=env_id, positions=positions, seed=seed, episodes=records)


def evaluate_model(
    model: ChunkPolicy,
    env_id: str,
    positions: str = "train",
    episodes: int = 50,
    seed: int = DEFAULT_EVAL_SEED,
    execute: int | None = None,
    video_dir: str | Path | None = None,
    image_size: int | None = None,
    progress: bool = False,
    env_kwargs: dict[str, Any] | None = None,
) -> EvalResult:
    """Evaluate ``model`` for ``episodes`` episodes of ``env_id``.

    :param model: a corft algorithm (or anything with ``predict``, ``chunk_size`` and the spaces).
    :param env_id: a registered step-level env id, e.g. ``"corft/PickPlace-v0"``.
    :param positions: ``"train"``, ``"unseen"`` or ``"all"`` object positions.
    :param episodes: number of episodes; episode ``k`` is reset with seed ``seed + k``.
    :param seed: seed of the first episode.
    :param execute: run only the first ``execute`` actions of each chunk (receding horizon).
    :param video_dir: write one labelled mp4 of the cameras per episode here.
    :param image_size: camera image side; default: the model's.
    :param progress: show a progress bar.
    :param env_kwargs: further ``gym.make`` keyword arguments.
    :raises ValueError: if the model's spaces do not fit the env's.
    """
    env = make_eval_env(model, env_id, positions=positions, execute=execute, image_size=image_size,
                        record_video=video_dir is not None, env_kwargs=env_kwargs)
    try:
        return run_episodes(model, env, env_id, positions, episodes=episodes, seed=seed, video_dir=video_dir,
                            progress=progress)
    finally:
        env.close()
