"""Train a :class:`~corft_algos.runs.request.TrainRequest` in its run folder: a new model or one resumed from the
folder's newest intact saved state, up to the requested gradient steps (also as one of torchrun's processes)."""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
from stable_baselines3.common.logger import Logger

from corft_algos.callbacks import BEST_MODEL_NAME, LastMetrics, SimEvalCallback, save_atomically
from corft_algos.common.base import OfflineAlgorithm, TrainingDivergedError
from corft_algos.distributed import Rank, barrier, distributed_session, resolve_device, shard_of
from corft_algos.evaluation import make_eval_env
from corft_algos.model_format import read_model_config
from corft_algos.registry import get_algorithm
from corft_algos.runs.folder import RunFolder, UsageError, check_model_file
from corft_algos.runs.request import TrainRequest, algorithm_kwargs, resolve, total_steps
from corft_envs.episode_store import DatasetError, EpisodeSource, open_episodes, store_signatures
from corft_envs.tasks import PRETRAIN_TASKS


def train(request: TrainRequest, log: Callable[[str], None] = print) -> Path:
    """Build or resume the model of ``request.out``, train it to the requested steps and save model.zip; the
    model's path. Holds the run folder's lock throughout; under torchrun every process calls this, and rank 0
    alone logs (``log`` gets the progress lines), evaluates and writes the folder.

    :raises UsageError: for a request that cannot work (unknown algorithm or preset, missing or other data,
        a saved state that does not fit, a busy folder, ...).
    :raises TrainingDivergedError: "training diverged at gradient step N: ..." (the folder's checkpoints are kept).
    """
    try:
        device = resolve_device(request.device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    with distributed_session(device) as rank:
        say = log if rank.is_main else _silent
        with RunFolder(request.out).lock(rank, say):
            return _train(request, str(device), rank, say)


def _silent(_: str) -> None:
    """``log`` of the ranks other than 0."""


def _train(request: TrainRequest, device: str, rank: Rank, say: Callable[[str], None]) -> Path:
    request, config = resolve(request)
    folder = RunFolder(request.out)
    try:
        model, resumed_from = build_model(request, device, folder, say)
        start, target = model.num_timesteps, total_steps(model, request)
        shard_of(model.batch_size, rank)  # the global batch must split evenly across the processes
        callbacks, metrics, evaluation = make_callbacks(request, folder, model, rank)
    except (DatasetError, FileNotFoundError, ValueError, gym.error.Error) as exc:
        raise UsageError(str(exc)) from None
    final = folder.model_path
    try:
        if start > target:
            raise UsageError(f"{resumed_from} is at gradient step {start}, past the requested {target}; "
                             "ask for at least that many steps or choose a new --out")
        if resumed_from == final and start == target:
            say(f"already trained: {final} is at gradient step {start}")
            return final
        if resumed_from is not None:
            say(f"resumed from {resumed_from} at gradient step {start}")
        processes = f" in {rank.world_size} processes" if rank.world_size > 1 else ""
        say(f"training {request.algo} on {', '.join(map(str, request.data))} to gradient step {target}{processes}; "
            f"logs and checkpoints in {request.out}")
        if rank.is_main:
            folder.write_config(config)
            folder.write_data_record(request.data)
        model.set_logger(folder.logger(start, stdout=not request.quiet, tensorboard=request.tensorboard)
                         if rank.is_main else Logger(folder=None, output_formats=[]))
        began = time.perf_counter()
        model.learn(target - start, callback=callbacks, log_interval=request.log_interval,
                    reset_num_timesteps=start == 0, progress_bar=not request.quiet)
    except TrainingDivergedError as exc:
        raise TrainingDivergedError(f"training diverged at gradient step {model.num_timesteps + 1}: {exc}") from exc
    finally:
        if evaluation is not None:
            evaluation.close()
    if model.num_timesteps % request.log_interval:
        model.dump_training_logs()
    if rank.is_main:
        save_atomically(model, final)
    barrier()
    for line in train_summary(model, start, time.perf_counter() - began, metrics, evaluation, final):
        say(line)
    return final


def load_for_resume(path: Path, request: TrainRequest, algorithm: type[OfflineAlgorithm], dataset: EpisodeSource,
                    device: str, kwargs: dict[str, Any]) -> OfflineAlgorithm:
    """Load a saved run state to continue it, after checking that the request fits it.

    :raises UsageError: if the algorithm, the chunk size, the data or another given argument differs from the
        saved one.
    """
    config = read_model_config(path)
    saved = config["algorithm_name"]
    if saved != algorithm.algorithm_name:
        raise UsageError(f"{path} holds a {saved!r} model and this run would resume it; "
                         f"rerun with --algo {saved} or choose a new --out")
    chunk_size = config["arguments"].get("chunk_size")
    if request.chunk_size is not None and request.chunk_size != chunk_size:
        raise UsageError(f"--chunk-size {request.chunk_size} differs from chunk size {chunk_size} of {path}, "
                         f"which this run would resume; rerun with --chunk-size {chunk_size} "
                         "or choose a new --out")
    trained_on = config["dataset"].get("signatures")  # None in models converted from files that predate them
    if trained_on is not None and trained_on != store_signatures(dataset):
        stores = RunFolder(request.out).recorded_data()
        was = ", ".join(stores) if stores else f"{len(trained_on)} store(s) with other episodes"
        own = f"--data {shlex.join(stores)}" if stores else "the run's own --data"
        raise UsageError(f"--data {' '.join(map(str, request.data))} is not the data {path} was trained on "
                         f"({was}); resuming on it would keep the old normalisation, instructions and env id: "
                         f"rerun with {own} or choose a new --out")
    try:
        model = algorithm.load(path, dataset=dataset, device=device, **kwargs)
    except ValueError as exc:
        raise UsageError(f"cannot resume from {path}: {exc}; rerun with the saved values or choose a new --out") \
            from None
    if request.rl_steps is not None:
        model.rl_steps = request.rl_steps
    if request.precision is not None:  # a run may resume on other hardware
        model.precision = request.precision
    return model


def build_model(request: TrainRequest, device: str, folder: RunFolder,
                say: Callable[[str], None]) -> tuple[OfflineAlgorithm, Path | None]:
    """The model to train: resumed from the folder if it holds a saved state, else new.

    Returns the model and the path it was resumed from (``None`` for a new one).
    """
    algorithm = get_algorithm(request.algo)
    kwargs = algorithm_kwargs(request, algorithm)
    dataset = open_episodes(request.data)
    saved = folder.resume_point(report=say)
    if saved is not None:
        return load_for_resume(saved[1], request, algorithm, dataset, device, kwargs), saved[1]
    if request.rl_steps is not None:
        kwargs["rl_steps"] = request.rl_steps
    if request.precision is not None:
        kwargs["precision"] = request.precision
    model = algorithm(dataset=dataset, device=device, **kwargs)
    if request.init_from is not None:
        if not request.init_from.is_file():
            raise FileNotFoundError(f"--init-from {request.init_from} does not exist")
        check_model_file(request.init_from, "--init-from")
        copied = model.init_from(request.init_from)
        say(f"initialised {len(copied)} tensors from {request.init_from}")
        if len(request.data) == 1:
            say(f"tip: co-train with the base's own data to keep what it knows: {cotraining_flags()} "
                "--algo-kwargs '{\"feature_cache_views\": 1}' (one view reuses the feature "
                "cache its pretraining built; `corft pretrain --collect-only` collects the data; "
                "benchmarks/RESULTS.md)")
    return model, None


def cotraining_store_mix(base_stores: int, target_stores: int = 1) -> list[float]:
    """``store_mix`` of co-training: the target task's ``target_stores`` stores (first: the demos, then e.g.
    the policy's own rollouts) half of every batch in equal shares, the base's ``base_stores`` stores equal
    shares of the other half."""
    return [1.0] * target_stores + [target_stores / base_stores] * base_stores


def cotraining_flags(base: str | Path = "BASE", tasks: tuple[str, ...] = PRETRAIN_TASKS) -> str:
    """The ``corft train`` flags that fine-tune a base co-trained with its own data: ``--data`` continues
    after the demos with the base's stores, ``--store-mix`` is :func:`cotraining_store_mix`."""
    stores = " ".join(f"{Path(base) / 'data' / task}" for task in tasks)
    shares = " ".join(f"{share:g}" for share in cotraining_store_mix(len(tasks)))
    return f"--data DEMOS {stores} --store-mix {shares}"


def make_callbacks(request: TrainRequest, folder: RunFolder, model: OfflineAlgorithm,
                   rank: Rank) -> tuple[list[Any], LastMetrics, SimEvalCallback | None]:
    """Checkpoints, last metrics and, with ``eval_env``, evaluation (its env is made now, so a bad id fails early).

    Under torchrun only rank 0 writes checkpoints and evaluates; the others keep the last metrics alone.
    """
    metrics = LastMetrics()
    if not rank.is_main:
        return [metrics], metrics, None
    callbacks: list[Any] = [folder.checkpoint_callback(request.checkpoint_every, request.keep_checkpoints), metrics]
    evaluation = None
    if request.eval_env is not None:
        env = make_eval_env(model, request.eval_env, positions=request.eval_positions)
        evaluation = SimEvalCallback(request.eval_env, request.eval_every, request.eval_episodes,
                                     positions=request.eval_positions, best_model_save_path=folder.path, env=env,
                                     verbose=0 if request.quiet else 1)
        callbacks.append(evaluation)
    return callbacks, metrics, evaluation


def train_summary(model: OfflineAlgorithm, start: int, seconds: float, metrics: LastMetrics,
                  evaluation: SimEvalCallback | None, path: Path) -> list[str]:
    """The lines a training logs at the end."""
    done = model.num_timesteps - start
    resumed = f", resumed at step {start}" if start else ""
    lines = [f"{model.algorithm_name}: {done} gradient steps in {seconds:.1f} s "
             f"({done / max(seconds, 1e-9):.2f} steps/s), now at step {model.num_timesteps}{resumed}"]
    if metrics.metrics:
        lines.append("last step: " + ", ".join(f"{name} {value:.4g}" for name, value in metrics.metrics.items()))
    if evaluation is not None and evaluation.best_result is not None:
        best = evaluation.best_result
        lines.append(f"best eval in {evaluation.env_id}: success rate {best.success_rate:.3f} at step "
                     f"{evaluation.best_step} ({path.parent / BEST_MODEL_NAME})")
    lines.append(f"model: {path}")
    return lines
