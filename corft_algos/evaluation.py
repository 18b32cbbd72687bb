"""Evaluate a chunked policy in simulation: success rate with a 95% interval, cycle time, videos.

:func:`evaluate` runs ``episodes`` episodes of a sim env, episode ``k`` reset
with seed ``seed + k`` (by default from :data:`DEFAULT_EVAL_SEED`), the policy acting through the
:class:`~corft_envs.chunking.ActionChunk` wrapper (whole chunks, or the first
``execute`` actions of each). It reports

- the success rate and its Wilson 95% interval (:func:`wilson_interval`);
- the cycle time: the mean number of control steps of the *successful*
  episodes, and the same in seconds (steps x the 10 Hz control period);
- one :class:`EpisodeRecord` per episode, and optionally an mp4 of the front
  camera per episode, one frame per control step.

:func:`load_model` loads a saved model of any registered algorithm, reading
the algorithm's name from the model file's JSON.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np
from gymnasium import spaces
from tqdm import tqdm

import corft_envs  # noqa: F401  (registers the env ids)
from corft_algos.model_format import read_model_config
from corft_algos.policies import INSTRUCTION_KEY
from corft_algos.registry import get_algorithm
from corft_envs.chunking import ActionChunk
from corft_envs.env_arguments import CHUNK_KWARGS, combine_env_kwargs
from corft_envs.episode_store import space_differences
from robots.contract import CONTROL_HZ, CONTROL_PERIOD
from robots.safety import SafetyViolation

IMAGE_KEY = "image_front"
#: Seed of the first evaluation episode by default: far from the seeds ``corft collect`` uses
#: (0, 1, 2, ... by default), so evaluation scenes are not the demonstrations' scenes.
DEFAULT_EVAL_SEED = 10_000

_log = logging.getLogger(__name__)


class ChunkPolicy(Protocol):
    """What :func:`evaluate` needs from a model (every corft algorithm has it)."""

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


# ----------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial success rate (``z=1.96``: 95%).

    ``center = (p + z²/2n) / (1 + z²/n)``, ``half = z √(p(1-p)/n + z²/4n²) / (1 + z²/n)``.

    :param successes: number of successes, ``0 <= successes <= n``.
    :param n: number of trials, at least 1.
    :param z: the normal quantile of the two-sided confidence level.
    :raises ValueError: if the counts are impossible.
    """
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got successes={successes}, n={n}")
    p = successes / n
    denominator = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


@dataclass(frozen=True)
class EpisodeRecord:
    """One evaluation episode.

    :param seed: the ``reset`` seed.
    :param success: whether the task succeeded.
    :param steps: control steps executed (the sum of the chunks' ``chunk_len``).
    :param cycle_time_s: ``steps`` in seconds (10 Hz control).
    :param instruction: the episode's language instruction.
    :param episode_return: undiscounted sum of rewards (1 for a success, sparse reward).
    :param video: path of the episode's mp4, if recorded.
    :param rejected: on the real arm, why the safety layer rejected a chunk, which
        ended the episode as a failure (nothing of that chunk was sent).
    :param first_lifted: sim envs: the index of the first object the episode lifted (0: the one the
        instruction names; -1: none), ``None`` where the env does not report it.
    """

    seed: int
    success: bool
    steps: int
    cycle_time_s: float
    instruction: str
    episode_return: float
    video: str | None = None
    rejected: str | None = None
    first_lifted: int | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the return under the key ``"return"``)."""
        return {"seed": self.seed, "success": self.success, "steps": self.steps,
                "cycle_time_s": self.cycle_time_s, "instruction": self.instruction,
                "return": self.episode_return, "video": self.video, "rejected": self.rejected,
                "first_lifted": self.first_lifted}


@dataclass(frozen=True)
class EvalResult:
    """The outcome of :func:`evaluate`; the summary statistics are computed from ``episodes``.

    :param env_id: the Gymnasium id evaluated on.
    :param positions: the object position set (``"train"``, ``"unseen"``, ``"all"``).
    :param seed: seed of the first episode (episode ``k`` used ``seed + k``).
    :param episodes: one record per episode, in order (at least one).
    """

    env_id: str
    positions: str
    seed: int
    episodes: list[EpisodeRecord]

    def __post_init__(self) -> None:
        if not self.episodes:
            raise ValueError("an EvalResult needs at least one episode")

    @property
    def num_episodes(self) -> int:
        """Number of episodes run."""
        return len(self.episodes)

    @property
    def successes(self) -> int:
        """Number of successful episodes."""
        return sum(record.success for record in self.episodes)

    @property
    def success_rate(self) -> float:
        """Fraction of successful episodes."""
        return self.successes / self.num_episodes

    @property
    def success_ci95(self) -> tuple[float, float]:
        """Wilson 95% interval of the success rate."""
        return wilson_interval(self.successes, self.num_episodes)

    @property
    def cycle_time_steps(self) -> float | None:
        """Mean control steps of the successful episodes; ``None`` if none succeeded."""
        steps = [record.steps for record in self.episodes if record.success]
        return float(np.mean(steps)) if steps else None

    @property
    def cycle_time_s(self) -> float | None:
        """:attr:`cycle_time_steps` in seconds (x the control period); ``None`` if none succeeded."""
        steps = self.cycle_time_steps
        return None if steps is None else steps * CONTROL_PERIOD

    @property
    def named_object_first_rate(self) -> float | None:
        """Fraction of the episodes whose first lifted object was the one the instruction names (an episode
        that lifted nothing counts against it); ``None`` where the env does not report lifts."""
        lifted = [record.first_lifted for record in self.episodes]
        if any(value is None for value in lifted):
            return None
        return sum(value == 0 for value in lifted) / len(lifted)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: the summary statistics, the settings and every episode."""
        return {
            "env_id": self.env_id,
            "positions": self.positions,
            "num_episodes": self.num_episodes,
            "seed": self.seed,
            "success_rate": self.success_rate,
            "success_ci95": list(self.success_ci95),
            "cycle_time_steps": self.cycle_time_steps,
            "cycle_time_s": self.cycle_time_s,
            "named_object_first_rate": self.named_object_first_rate,
            "episodes": [record.to_json() for record in self.episodes],
        }


# ----------------------------------------------------------------------------
# Envs
# ----------------------------------------------------------------------------


class FrameRecorder(gym.Wrapper):
    """Keeps ``env.render()`` after ``reset`` and after every step: one video frame per control step.

    Placed beneath :class:`ActionChunk`, so a chunk executed in one call still
    gives one frame per action. :attr:`frames` holds the current episode.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        if env.render_mode != "rgb_array":
            raise ValueError(f"FrameRecorder needs render_mode='rgb_array', the env has {env.render_mode!r}")
        self.frames: list[np.ndarray] = []

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        observation, info = self.env.reset(**kwargs)
        self.frames = [self.env.render()]
        return observation, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        result = self.env.step(action)
        self.frames.append(self.env.render())
        return result


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
    record_video: bool = False,
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
    if record_video:
        settings["render_mode"] = ("rgb_array", "--video")
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
    :param record_video: render the front camera after every step (see :class:`FrameRecorder`).
    :param env_kwargs: further ``gym.make`` keyword arguments.
    :raises ValueError: if the model does not fit the env (see :func:`check_model_fits_env`).
    """
    kwargs = eval_env_kwargs(model, positions, image_size, record_video, env_kwargs)
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


def _frame_recorder(env: gym.Env) -> FrameRecorder | None:
    """The :class:`FrameRecorder` in ``env``'s wrapper chain, if any."""
    while isinstance(env, gym.Wrapper):
        if isinstance(env, FrameRecorder):
            return env
        env = env.env
    return None


def write_video(path: Path, frames: list[np.ndarray], fps: float = CONTROL_HZ) -> None:
    """Write RGB ``uint8`` frames as an H.264 mp4; odd sides are padded by one pixel (the codec needs even ones)."""
    height, width = frames[0].shape[:2]
    padding = ((0, height % 2), (0, width % 2), (0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=1) as writer:
        for frame in frames:
            writer.append_data(np.pad(frame, padding, mode="edge"))


# ----------------------------------------------------------------------------
# Rollouts
# ----------------------------------------------------------------------------


def run_episode(model: ChunkPolicy, env: gym.Env, seed: int) -> EpisodeRecord:
    """One episode from ``env.reset(seed=seed)``: predict a chunk, step it, until the episode ends.

    On the real arm a chunk the safety layer rejects (nothing of it is sent, the
    arm holds) ends the episode as a failure, with the reason in ``rejected``.
    """
    observation, _ = env.reset(seed=seed)
    instruction = str(observation[INSTRUCTION_KEY])
    steps, total, success, first = 0, 0.0, False, True
    terminated = truncated = False
    rejected = first_lifted = None
    while not (terminated or truncated):
        chunk, _ = model.predict(observation, episode_start=np.array([first]), deterministic=True)
        try:
            observation, reward, terminated, truncated, info = env.step(chunk)
        except SafetyViolation as violation:
            rejected = str(violation)
            _log.warning("episode with seed %d ends as a failure: %s", seed, violation)
            break
        steps += int(info["chunk_len"])
        total += float(reward)
        success = success or bool(info.get("is_success", False))
        first_lifted = info.get("first_lifted", first_lifted)
        first = False
    return EpisodeRecord(seed=seed, success=success, steps=steps, cycle_time_s=steps * CONTROL_PERIOD,
                         instruction=instruction, episode_return=total, rejected=rejected,
                         first_lifted=None if first_lifted is None else int(first_lifted))


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

    :param video_dir: write ``episode_<k>_seed_<s>.mp4`` here (the env must record frames).
    :param progress: show a tqdm bar with the running success rate.
    :raises ValueError: if ``video_dir`` is given and the env records no frames.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    recorder = _frame_recorder(env) if video_dir is not None else None
    if video_dir is not None and recorder is None:
        raise ValueError("video_dir needs an env made with make_eval_env(..., record_video=True)")
    records: list[EpisodeRecord] = []
    bar = tqdm(range(episodes), desc=f"eval {env_id}", unit="episode", disable=not progress, dynamic_ncols=True)
    for k in bar:
        record = run_episode(model, env, seed + k)
        if recorder is not None:
            path = Path(video_dir) / f"episode_{k:03d}_seed_{seed + k}.mp4"
            write_video(path, recorder.frames)
            record = replace(record, video=str(path))
        records.append(record)
        bar.set_postfix(success=f"{sum(r.success for r in records)}/{len(records)}")
    return EvalResult(env_id=env_id, positions=positions, seed=seed, episodes=records)


def evaluate(
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
    :param video_dir: write one mp4 of the front camera per episode here.
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


# ----------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------


def saved_algorithm_name(path: str | Path) -> str:
    """The name of the algorithm that saved a model file (read from its JSON; nothing is built).

    :raises FileNotFoundError: if ``path`` does not exist.
    :raises ValueError: if it is not a corft model file, is damaged, or is in the old pickle-based format.
    """
    return read_model_config(path)["algorithm_name"]


def load_model(path: str | Path, device: str = "auto", **kwargs: Any) -> Any:
    """Load a saved model (a zip, or a ``save_pretrained`` folder) with the class registered under the
    algorithm name stored in it. Nothing in the file runs as code.

    :param path: the model zip or folder.
    :param device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
    :param kwargs: passed to the class's ``load`` (e.g. ``dataset=...``).
    :raises FileNotFoundError: if ``path`` does not exist.
    :raises ValueError: if the file cannot be loaded (see :func:`corft_algos.model_format.read_model`), or names
        an algorithm that is not registered.
    """
    return get_algorithm(saved_algorithm_name(path)).load(path, device=device, **kwargs)
