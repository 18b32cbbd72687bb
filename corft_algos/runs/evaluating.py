"""Evaluate a saved model (:class:`EvalRequest`, the fields of ``corft eval``): in simulation, over several
processes, on the twin or on the real arm, where the operator labels each episode."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from corft_algos.common.base import OfflineAlgorithm
from corft_algos.evaluation import (
    DEFAULT_EVAL_SEED,
    EvalResult,
    evaluate_vectorized,
    load_model,
    make_eval_env,
    rollout_execute,
    run_episodes,
    trained_env_id,
    trained_scene,
)
from corft_algos.runs.folder import UsageError, check_model_file
from corft_algos.selection import DEFAULT_CANDIDATE_NOISE, ChunkSelector
from corft_envs.keyboard import TerminalKeys


DEFAULT_EVAL_THREADS = 1
"""torch threads of an evaluation unless told: the same on every machine, so that evaluations pair."""


@dataclass(frozen=True)
class EvalRequest:
    """An evaluation as ``corft eval`` describes it: each field is the flag of the same name, with its default.

    :param model: the model zip (or a save_pretrained folder).
    :param env_id: Gymnasium id (default: the env the training data came from).
    :param positions: object position set: ``train``, ``unseen`` or ``all``.
    :param episodes: episodes; episode k is reset with seed ``seed + k``.
    :param seed: seed of the first episode.
    :param execute: actions run per chunk (default: the model's own).
    :param candidates: best-of-N candidate chunks for CO-RFT models (1: the expert's chunk).
    :param selection: ``critic`` or ``random`` choice among the candidates.
    :param candidate_noise: σ of the candidates' offsets (normalised action units).
    :param candidate_models: other models whose chunks are the candidates too (replaces ``candidates``).
    :param video: a folder for one labelled mp4 of the cameras per episode.
    :param json: where to write the result as JSON.
    :param device: ``cpu``, ``cuda`` or ``auto``.
    :param workers: sim envs: processes running the episodes (the same result as one).
    :param threads: torch's CPU threads while the policy runs (``None``: leave torch's setting). The count
        changes the rollouts (floating-point sums in another order move the actions), so two evaluations pair
        only at the same count; 1 costs about 10% on an idle 2-core machine and is far faster on a busy one.
    :param env_kwargs: further ``gym.make`` arguments (``robot_host``, ``cameras``, ``instruction``, ...).
    :param quiet: no progress bar.
    """

    model: Path
    env_id: str | None = None
    positions: str = "train"
    episodes: int = 50
    seed: int = DEFAULT_EVAL_SEED
    execute: int | None = None
    candidates: int = 1
    selection: str = "critic"
    candidate_noise: float = DEFAULT_CANDIDATE_NOISE
    candidate_models: tuple[Path, ...] = ()
    video: Path | None = None
    json: Path | None = None
    device: str = "auto"
    workers: int = 1
    threads: int | None = DEFAULT_EVAL_THREADS
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"threads must be at least 1 or None (torch's own setting), got {self.threads}")
        object.__setattr__(self, "model", Path(self.model))
        object.__setattr__(self, "candidate_models", tuple(Path(path) for path in self.candidate_models))
        for name in ("video", "json"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))


@dataclass(frozen=True)
class Evaluation:
    """What an evaluation ran and found.

    :param request: the request.
    :param model: the model evaluated (a :class:`~corft_algos.selection.ChunkSelector` with candidates).
    :param env_kwargs: the env's arguments: the training data's scene, overridden by the request's.
    :param execute: the actions run per chunk (``None``: whole chunks).
    :param torch_threads: torch's CPU threads while the policy ran.
    :param result: the episodes and their statistics.
    """

    request: EvalRequest
    model: OfflineAlgorithm
    env_kwargs: dict[str, Any]
    execute: int | None
    torch_threads: int
    result: EvalResult

    def to_json(self) -> dict[str, Any]:
        """The report (``corft eval --json``): the result, and the two settings besides the seeds that decide
        whether two evaluations pair (the actions executed per chunk and torch's thread count)."""
        return {**self.result.to_json(), "execute": self.execute, "torch_threads": self.torch_threads}

    def report_lines(self) -> list[str]:
        """The lines ``corft eval`` prints: settings, one line per episode, success rate and cycle time."""
        result, model = self.result, self.model
        executed = "whole chunks" if self.execute is None else f"{self.execute} actions per chunk"
        if isinstance(model, ChunkSelector) and model.members:
            executed += (f", {model.selection} choice of {model.n_candidates} candidates (the model's chunk and "
                         f"{len(model.members)} other models')")
        elif isinstance(model, ChunkSelector):
            executed += f", {model.selection} choice of {model.n_candidates} candidates (σ {model.noise})"
        scene = {key: value for key, value in self.env_kwargs.items() if key != "operator_keys"}
        lines = [f"{self.request.model} ({model.algorithm_name}, {model.num_timesteps} gradient steps, "
                 f"H={model.chunk_size}) in {result.env_id}, {result.positions} positions, {result.num_episodes} "
                 f"episodes, seeds {result.seed}..{result.seed + result.num_episodes - 1}, {executed}, "
                 f"env kwargs {scene}"]
        for k, record in enumerate(result.episodes):
            outcome = ("success" if record.success else "failure" if record.rejected is None
                       else "failure (chunk rejected)")
            lines.append(f"  episode {k:3d}  seed {record.seed}  {outcome}  {record.steps:4d} steps  "
                         f"{record.cycle_time_s:5.1f} s  {record.instruction!r}")
        low, high = result.success_ci95
        lines.append(f"success rate {result.success_rate:.3f} ({result.successes}/{result.num_episodes}), "
                     f"95% CI [{low:.3f}, {high:.3f}]")
        if result.named_object_first_rate is not None:
            lines.append(f"first object lifted is the named one: {result.named_object_first_rate:.3f}")
        if result.cycle_time_steps is None:
            lines.append("cycle time: none (no successful episode)")
        else:
            lines.append(f"cycle time {result.cycle_time_steps:.1f} steps = {result.cycle_time_s:.2f} s "
                         "(mean of the successful episodes)")
        return lines


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def evaluate(request: EvalRequest, notify: Callable[[str], None] = _to_stderr) -> Evaluation:
    """Run the episodes ``request`` asks for and write ``request.json`` if set. On the real arm (a
    ``robot_host`` other than ``twin``) the operator labels each episode on the terminal; ``notify`` tells
    them which keys.

    :raises UsageError: for a damaged model file or settings that do not fit together.
    :raises corft_robots.errors.RobotError: for a fault of the arm (which was stopped).
    """
    check_model_file(request.model, "--model")
    for path in request.candidate_models:
        check_model_file(path, "--candidate-models")
    model = load_model(request.model, device=request.device)
    if request.candidate_models and request.candidates > 1:
        raise UsageError("--candidate-models sets the candidates (the model's chunk and theirs): drop --candidates")
    if request.candidate_models:
        members = [load_model(path, device=request.device) for path in request.candidate_models]
        model = ChunkSelector(model, selection=request.selection, seed=request.seed, members=members)
    elif request.candidates > 1:
        model = ChunkSelector(model, request.candidates, request.candidate_noise, request.selection,
                              seed=request.seed)
    env_id = request.env_id or trained_env_id(model)
    env_kwargs = {**trained_scene(model), **request.env_kwargs}
    execute = rollout_execute(model, request.execute)
    if request.workers > 1 and (request.video is not None or "robot_host" in env_kwargs):
        raise UsageError("--workers runs sim envs only, without --video: drop --workers for these")
    operator_keys = None
    try:
        if env_kwargs.get("robot_host", "twin") != "twin":  # on hardware the operator labels the episodes
            operator_keys = TerminalKeys()
            env_kwargs["operator_keys"] = operator_keys
            notify("Enter = success, Backspace = failure, Ctrl-C stops the arm")
        with torch_threads(request.threads) as threads:
            result = run_evaluation(request, model, env_id, env_kwargs, execute)
    finally:
        if operator_keys is not None:
            operator_keys.close()
    evaluation = Evaluation(request, model, env_kwargs, execute, threads, result)
    if request.json is not None:
        request.json.parent.mkdir(parents=True, exist_ok=True)
        request.json.write_text(json.dumps(evaluation.to_json(), indent=2) + "\n", encoding="utf-8")
    return evaluation


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run the block with torch's intra-op thread count set to ``threads`` (``None``: unchanged), restored
    afterwards; yields the count in effect."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def run_evaluation(request: EvalRequest, model: OfflineAlgorithm, env_id: str, env_kwargs: dict[str, Any],
                   execute: int | None) -> EvalResult:
    """The episodes: in one env, or over ``request.workers`` processes (the same result)."""
    if request.workers > 1:
        return evaluate_vectorized(model, env_id, request.workers, positions=request.positions,
                                   episodes=request.episodes, seed=request.seed, execute=execute,
                                   progress=not request.quiet, env_kwargs=env_kwargs)
    env = make_eval_env(model, env_id, positions=request.positions, execute=execute,
                        record_video=request.video is not None, env_kwargs=env_kwargs)
    try:
        return run_episodes(model, env, env_id, request.positions, episodes=request.episodes, seed=request.seed,
                            video_dir=request.video, progress=not request.quiet)
    finally:
        env.close()
