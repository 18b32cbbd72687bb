"""stable-baselines3 callbacks for offline training: checkpoints, evaluation in simulation, last metrics.

Every callback here counts *gradient steps* (``model.num_timesteps``), which
is what :meth:`~corft_algos.common.base.OfflineAlgorithm.learn` advances, so a
resumed run keeps the same schedule as an uninterrupted one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
import gymnasium as gym
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from corft_algos.evaluation import DEFAULT_EVAL_SEED, EvalResult, make_eval_env, run_episodes

CHECKPOINT_PREFIX = "rl_model"
#: The file :class:`SimEvalCallback` keeps the best evaluated model in.
BEST_MODEL_NAME = "best_model.zip"
_CHECKPOINT_NAME = re.compile(rf"{CHECKPOINT_PREFIX}_(\d+)_steps\.zip")


def save_atomically(model: BaseAlgorithm, path: str | Path) -> Path:
    """Save ``model`` to ``path`` through a temporary file, so ``path`` is never a half-written zip."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    model.save(partial)
    os.replace(partial, path)
    return path


def checkpoint_path(directory: str | Path, steps: int) -> Path:
    """Where the checkpoint at gradient step ``steps`` goes (stable-baselines3's naming)."""
    return Path(directory) / f"{CHECKPOINT_PREFIX}_{steps}_steps.zip"


def list_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """``(steps, path)`` of every checkpoint in ``directory``, fewest steps first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted((int(match.group(1)), path) for path in directory.iterdir()
                  if (match := _CHECKPOINT_NAME.fullmatch(path.name)))


def is_better(result: EvalResult, best: EvalResult | None) -> bool:
    """Whether ``result`` beats ``best``: a higher success rate, or the same one with a shorter cycle time."""
    if best is None or result.success_rate > best.success_rate:
        return True
    if result.success_rate < best.success_rate or result.cycle_time_steps is None:
        return False
    return best.cycle_time_steps is None or result.cycle_time_steps < best.cycle_time_steps


class GradientStepCheckpoint(BaseCallback):
    """Save ``rl_model_<N>_steps.zip`` whenever the gradient step count N is a multiple of ``save_freq``.

    Unlike SB3's ``CheckpointCallback`` (which counts its own calls) the
    schedule follows the model's step counter, so it survives a resume; and
    each file is written atomically, so a run killed while saving leaves the
    previous checkpoints intact.

    :param save_freq: gradient steps between checkpoints.
    :param save_path: the checkpoint directory.
    :param keep_last: after each save, delete all but the newest ``keep_last``
        checkpoints in ``save_path`` (``None``: keep every one).
    :param verbose: 1 prints each saved path.
    """

    def __init__(self, save_freq: int, save_path: str | Path, keep_last: int | None = None, verbose: int = 0) -> None:
        super().__init__(verbose)
        if save_freq < 1:
            raise ValueError(f"save_freq must be at least 1, got {save_freq}")
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be at least 1 or None, got {keep_last}")
        self.save_freq, self.save_path, self.keep_last = save_freq, Path(save_path), keep_last
        self.last_path: Path | None = None

    def _on_step(self) -> bool:
        if self.num_timesteps % self.save_freq == 0:
            self.last_path = save_atomically(self.model, checkpoint_path(self.save_path, self.num_timesteps))
            if self.verbose:
                print(f"saved checkpoint {self.last_path}")
            if self.keep_last is not None:
                for _, path in list_checkpoints(self.save_path)[:-self.keep_last]:
                    path.unlink()
        return True


class LastMetrics(BaseCallback):
    """Keeps the training metrics of the latest gradient step (``metrics`` of ``OfflineAlgorithm.learn``)."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: dict[str, float] = {}

    def _on_step(self) -> bool:
        self.metrics = dict(self.locals.get("metrics") or {})
        return True


class SimEvalCallback(BaseCallback):
    """Evaluate the policy in a sim env every ``eval_freq`` gradient steps.

    Records ``eval/success_rate`` and ``eval/cycle_time_steps`` (when an
    episode succeeded) to the model's logger and dumps it. Keeps the best
    result — the highest success rate, ties broken by the shorter cycle time —
    and saves that model as ``best_model.zip`` in ``best_model_save_path``.
    The env is made once, at the start of training, with the model's chunk
    size and image size.

    :param env_id: the sim env id, e.g. ``"corft/PickPlace-v0"``.
    :param eval_freq: gradient steps between evaluations.
    :param n_eval_episodes: episodes per evaluation (episode k uses seed ``seed + k``, every time).
    :param positions: object position set.
    :param seed: seed of the first episode.
    :param execute: run only the first ``execute`` actions of each chunk.
    :param best_model_save_path: directory for ``best_model.zip`` (``None``: not saved).
    :param env: an env from :func:`~corft_algos.evaluation.make_eval_env` to use (and close at the end);
        ``None`` makes one when training starts.
    :param verbose: 1 prints each evaluation's result.
    """

    def __init__(
        self,
        env_id: str,
        eval_freq: int,
        n_eval_episodes: int = 10,
        positions: str = "train",
        seed: int = DEFAULT_EVAL_SEED,
        execute: int | None = None,
        best_model_save_path: str | Path | None = None,
        env: gym.Env | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        if eval_freq < 1 or n_eval_episodes < 1:
            raise ValueError(f"eval_freq and n_eval_episodes must be at least 1, got {eval_freq}, {n_eval_episodes}")
        self.env_id, self.eval_freq, self.n_eval_episodes = env_id, eval_freq, n_eval_episodes
        self.positions, self.seed, self.execute = positions, seed, execute
        self.best_model_save_path = None if best_model_save_path is None else Path(best_model_save_path)
        self.best_result: EvalResult | None = None
        self.best_step: int | None = None
        self.evaluations: list[tuple[int, EvalResult]] = []
        self._env = env

    @property
    def best_success_rate(self) -> float | None:
        """The best success rate so far; ``None`` before the first evaluation."""
        return None if self.best_result is None else self.best_result.success_rate

    def _on_training_start(self) -> None:
        if self._env is None:
            self._env = make_eval_env(self.model, self.env_id, positions=self.positions, execute=self.execute)

    def _on_training_end(self) -> None:
        self.close()

    def close(self) -> None:
        """Close the eval env (also done when training ends normally)."""
        if self._env is not None:
            self._env.close()
            self._env = None

    def _on_step(self) -> bool:
        if self.num_timesteps % self.eval_freq == 0:
            self.evaluate_now()
        return True

    def evaluate_now(self) -> EvalResult:
        """Run one evaluation, log it, update the best; training mode is restored afterwards."""
        result = run_episodes(self.model, self._env, self.env_id, self.positions,
                              episodes=self.n_eval_episodes, seed=self.seed)
        self.model.policy.set_training_mode(True)
        self.evaluations.append((self.num_timesteps, result))
        self.logger.record("eval/success_rate", result.success_rate)
        if result.cycle_time_steps is not None:
            self.logger.record("eval/cycle_time_steps", result.cycle_time_steps)
        self.logger.dump(self.num_timesteps)
        if is_better(result, self.best_result):
            self.best_result, self.best_step = result, self.num_timesteps
            if self.best_model_save_path is not None:
                save_atomically(self.model, self.best_model_save_path / BEST_MODEL_NAME)
        if self.verbose:
            cycle = "-" if result.cycle_time_steps is None else f"{result.cycle_time_steps:.1f} steps"
            print(f"step {self.num_timesteps}: eval success rate {result.success_rate:.3f} "
                  f"({result.successes}/{result.num_episodes}), cycle time {cycle}")
        return result
