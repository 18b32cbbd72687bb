"""The paper's claims in simulation: CO-RFT against BC baselines, from 30-60 demonstrations.

CO-RFT (arXiv 2508.02219) reports, on a real arm against supervised
fine-tuning (SFT): +57% success rate (relative), 22.3% shorter cycle time and
44.3% success at object positions never seen in the demonstrations. This
study asks the same questions of the sim tasks, top to bottom:

1. collect ``demos`` scripted teleop-like demonstrations per task on ``train``
   positions (seed 0: attempt k uses seed k);
2. train every method from the same initialisation with the same total
   gradient-step budget (``steps``; the staged methods split it into
   ``il_fraction`` imitation and the rest offline RL), for every training seed;
3. evaluate each model on ``eval_episodes`` episodes on ``train`` and on
   ``unseen`` positions (seeds from 10000, away from the demonstrations');
4. write ``results.json`` (one record per task, method, demos, positions,
   seed), ``results.md`` (mean over seeds, pooled Wilson 95% intervals, the
   change relative to SFT), ``success.png``, ``cycle_time.png`` and a few
   rollout videos.

Every step calls the library function behind a ``corft`` command (collection,
:func:`corft_algos.pretrain.pretrain`, :func:`corft_algos.runs.train` and
:func:`corft_algos.runs.evaluate`), so each is a command a user can run, and the
study resumes: collections, trainings and evaluations already done are kept.
Methods: ``bc`` (H = 1), ``sft`` (chunked BC),
``offline_rl_h1`` (CO-RFT's losses with H = 1) and ``corft``, plus the
ablations ``corft_h5`` (H = 5), ``corft_boundary`` (boundary-only targets) and
``corft_no_calql`` (no conservatism term) and ``corft_no_q`` (λ = 0: stage 2 fits
the action expert to the demonstrations on the frozen backbone's features, no
critic in its loss), and the paper's setting of fine-tuning a pretrained VLA:
``sft_base`` and ``corft_base`` start from a base policy (``corft pretrain``: the
Lift task, "pick up the <colour> cube", and Place, "put the <colour> cube on the
white square" with the square anywhere; every colour, objects anywhere,
distractors on; no episode of a target task), ``sft_cotrain`` and
``corft_cotrain`` start from it and keep its pretraining data in half of every
batch (co-training), and ``base`` evaluates that base alone, zero-shot. Ablations run on the preset's first task and demonstration
count. The critic's own share is measured by pairs that differ only in λ: ``corft_cotrain`` and
``corft_no_q_cotrain``, and ``corft_rollouts_cotrain`` and ``corft_no_q_rollouts_cotrain``, whose stage 2
starts from the ``sft_cotrain`` model of the same seed and trains on the demos plus that model's own
rollouts, failures kept (collected by the study after the trainings they start from); the co-trained
ablations (``corft_h5_cotrain``, ``offline_rl_h1_cotrain``, ``corft_boundary_cotrain``,
``corft_no_calql_cotrain``) change one thing of ``corft_cotrain`` each. Records carry ``distractors``,
``init`` (``"base"`` or ``"scratch"``), ``stage2_data`` (``"demos"``, ``"demos+rollouts"`` or none) and how
often the first object lifted was the named one. ``--plan`` counts what a preset would do without running it.

Independent trainings run ``--jobs`` at a time, each in its own process.
``--report`` summarises a study still running (or interrupted) from the
trainings evaluated so far.

Run from the repository root: ``python -m benchmarks.paper --preset quick --out results/paper_quick``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from corft_algos import runs
from corft_algos.cli.common import positive_int
from corft_algos.evaluation import DEFAULT_EVAL_SEED, load_model, video_writer, wilson_interval
from corft_algos.presets import FROM_BASE_PRESET, PRESETS
from corft_algos.pretrain import PretrainConfig, PretrainTraining, collect_pretraining_data, pretrain
from corft_algos.rollouts import policy_collection
from corft_algos.runs.training import cotraining_store_mix
from corft_envs.collection import CollectConfig, CollectionError, CollectSummary, collect
from corft_envs.episode_store import DatasetError
from corft_envs.tasks import TASKS
from corft_robots.contract import CONTROL_PERIOD
from corft_robots.extras import MissingExtraError, import_optional

#: The paper's targets (CO-RFT against SFT, on a real arm).
PAPER_SUCCESS_GAIN = 0.57
PAPER_CYCLE_TIME_CUT = 0.223
PAPER_UNSEEN_SUCCESS = 0.443
#: The position sets every run is evaluated on (of :data:`corft_envs.layouts.POSITION_MODES`).
POSITIONS = ("train", "unseen")
#: The study's command, as its messages name it.
PROG = "python -m benchmarks.paper"


@dataclass(frozen=True)
class Method:
    """How one row of the table is trained.

    :param algo: the registered algorithm.
    :param chunk_size: H.
    :param algo_kwargs: further algorithm arguments (the ablations).
    :param from_base: start from the study's base policy (``corft pretrain``: Lift and Place, every colour,
        objects anywhere, distractors on; it never saw a target task).
    :param zero_shot: no training: evaluate the base policy itself on the task's instruction.
    :param cotrain: also train on the base's pretraining data, which gets half of every batch, its tasks
        equal shares of it (``--data DEMOS LIFT PLACE --store-mix 1 0.5 0.5``; :func:`base_data`).
    :param stage2_from: the key of the method whose trained model (same task, demos and seed) this row's
        offline RL stage starts from, with :attr:`Preset.rollouts` of that model's own rollouts, failures kept
        (``corft collect --policy MODEL --keep-failures``), added to the demos: stage 2 alone, no imitation
        stage. Co-trained, the demos and the rollouts share half of every batch and the base's data the other.
    """

    algo: str
    chunk_size: int
    algo_kwargs: dict[str, Any] = field(default_factory=dict)
    from_base: bool = False
    zero_shot: bool = False
    cotrain: bool = False
    stage2_from: str | None = None

    @property
    def init(self) -> str:
        """``"base"`` for the rows whose weights come from the base policy, else ``"scratch"``."""
        return "base" if self.from_base or self.zero_shot else "scratch"

    @property
    def staged(self) -> bool:
        return self.algo in ("corft", "offline_rl_h1")

    @property
    def stage2_data(self) -> str | None:
        """What the offline RL stage trains on: ``"demos"``, ``"demos+rollouts"`` (:attr:`stage2_from`), or
        ``None`` for a row without that stage."""
        if not self.staged:
            return None
        return "demos+rollouts" if self.stage2_from else "demos"


CHUNK = 10
METHODS: dict[str, Method] = {
    "bc": Method("bc", 1),
    "sft": Method("sft", CHUNK),
    "offline_rl_h1": Method("offline_rl_h1", 1),
    "corft": Method("corft", CHUNK),
    "corft_h5": Method("corft", 5),
    "corft_boundary": Method("corft", CHUNK, {"boundary_only": True}),
    "corft_no_calql": Method("corft", CHUNK, {"calql_alpha": 0.0}),
    "corft_no_q": Method("corft", CHUNK, {"actor_q_weight": 0.0}),
    "sft_base": Method("sft", CHUNK, from_base=True),
    "corft_base": Method("corft", CHUNK, from_base=True),
    "base": Method("sft", CHUNK, zero_shot=True),
    # One cached view per frame, as the base's own training: its data's feature cache is then reused.
    "sft_cotrain": Method("sft", CHUNK, {"feature_cache_views": 1}, from_base=True, cotrain=True),
    "corft_cotrain": Method("corft", CHUNK, {"feature_cache_views": 1}, from_base=True, cotrain=True),
    # The co-trained CO-RFT with one change each: the critic's share (λ = 0), H, the targets, Cal-QL.
    "corft_no_q_cotrain": Method("corft", CHUNK, {"feature_cache_views": 1, "actor_q_weight": 0.0},
                                 from_base=True, cotrain=True),
    "corft_h5_cotrain": Method("corft", 5, {"feature_cache_views": 1}, from_base=True, cotrain=True),
    "offline_rl_h1_cotrain": Method("offline_rl_h1", 1, {"feature_cache_views": 1}, from_base=True, cotrain=True),
    "corft_boundary_cotrain": Method("corft", CHUNK, {"feature_cache_views": 1, "boundary_only": True},
                                     from_base=True, cotrain=True),
    "corft_no_calql_cotrain": Method("corft", CHUNK, {"feature_cache_views": 1, "calql_alpha": 0.0},
                                     from_base=True, cotrain=True),
    # Stage 2 from the co-trained SFT on the demos and its own rollouts, failures kept (data that shows failure).
    "corft_rollouts_cotrain": Method("corft", CHUNK, {"feature_cache_views": 1}, from_base=True, cotrain=True,
                                     stage2_from="sft_cotrain"),
    "corft_no_q_rollouts_cotrain": Method("corft", CHUNK, {"feature_cache_views": 1, "actor_q_weight": 0.0},
                                          from_base=True, cotrain=True, stage2_from="sft_cotrain"),
}
BASELINES = ("bc", "sft", "offline_rl_h1", "corft")
ABLATIONS = ("corft_h5", "corft_boundary", "corft_no_calql", "corft_no_q")
FROM_BASE = ("sft_base", "corft_base", "sft_cotrain", "corft_cotrain")
#: The rows of the full study on every task and demonstration count: the co-trained SFT (the best measured
#: recipe), CO-RFT on the demos and on the demos with the SFT's own rollouts, each with and without the critic
#: in the actor's loss (the critic's own share).
CRITIC_STUDY = ("sft_cotrain", "corft_cotrain", "corft_no_q_cotrain", "corft_rollouts_cotrain",
                "corft_no_q_rollouts_cotrain")
#: ... and on the first task and count: from scratch, H = 5 and 1, boundary-only targets, no Cal-QL.
CRITIC_ABLATIONS = ("sft", "corft", "corft_no_q", "corft_h5_cotrain", "offline_rl_h1_cotrain",
                    "corft_boundary_cotrain", "corft_no_calql_cotrain")
#: The first seed of the rows' own rollouts (attempt k uses ROLLOUT_SEED + k): away from the demonstrations'
#: seeds (from 0) and the evaluations' (from 10000).
ROLLOUT_SEED = 20000


#: The library's recipe for fine-tuning a base (what ``corft train --init-from`` uses).
FROM_BASE_RECIPE = PRESETS[FROM_BASE_PRESET]


#: The critic's term in the actor's loss of the staged rows (CO-RFT, offline RL H = 1): the paper's TD3+BC
#: extraction, λ = 0.25 (2.5 collapsed the policy). The presets name it rather than take the library's default, so
#: that those rows measure the paper's method whatever that default is; ``corft_no_q`` is the same with λ = 0.
CRITIC_TERM = {"actor_q_weight": 0.25}


@dataclass(frozen=True)
class Preset:
    """What a study runs.

    :param tasks: sim task names.
    :param demos: demonstration counts.
    :param methods: keys of :data:`METHODS`, run on every task and demonstration count.
    :param seeds: training seeds.
    :param eval_episodes: episodes per evaluation and position set.
    :param steps: gradient steps of every training.
    :param il_fraction: share of ``steps`` the staged methods spend imitating.
    :param batch_size: samples per gradient step.
    :param learning_rate: imitation learning rate.
    :param image_size: camera image side (px).
    :param policy_kwargs: VLAPolicy arguments.
    :param algo_kwargs: algorithm arguments of every method (a method's own win).
    :param rl_kwargs: further algorithm arguments of the staged methods (their offline RL stage); default
        :data:`CRITIC_TERM`, the paper's critic term in the actor's loss (a method's own arguments win:
        ``corft_no_q`` sets λ = 0).
    :param execute: actions run per chunk at evaluation (receding horizon; default 3, the models' own;
        ``None``: whole chunks; methods with shorter chunks run theirs whole).
    :param videos: rollout videos per (method in ``sft``, ``corft``), first task and seed.
    :param eval_workers: evaluation processes (``corft eval --workers``; the same results as one).
    :param env_kwargs: further ``gym.make`` arguments of collection and evaluation (``--env-kwargs``).
    :param ablations: keys of :data:`METHODS` run on the first task and demonstration count only.
    :param base_model: the base policy of the ``*_base`` rows: a model zip (default: the one committed in
        ``benchmarks/base/``); ``None`` builds one in the study's ``base/`` with ``corft pretrain``.
    :param base_episodes: pretraining episodes per task when the study builds its base, and of the base data
        the co-training rows collect for a preset's base (1000: as many as the committed base saw).
    :param base_steps: pretraining gradient steps when the study builds its base.
    :param finetune_steps: gradient steps of the rows fine-tuned from the base (imitation steps of the staged
        ones), instead of ``steps``; default: the library's ``from_base`` recipe (corft_algos/presets.py).
    :param finetune_rl_steps: offline RL steps of the staged rows fine-tuned from the base.
    :param finetune_learning_rate: imitation learning rate of the rows fine-tuned from the base.
    :param rollouts: own rollouts of each model a ``stage2_from`` row starts from (train positions, seeds from
        :data:`ROLLOUT_SEED`, failures kept, the preset's executed actions per chunk).
    """

    tasks: tuple[str, ...]
    demos: tuple[int, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    eval_episodes: int
    steps: int
    il_fraction: float = 0.75
    batch_size: int = 64
    learning_rate: float = 1e-3
    image_size: int = 128
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    algo_kwargs: dict[str, Any] = field(default_factory=dict)
    rl_kwargs: dict[str, Any] = field(default_factory=lambda: dict(CRITIC_TERM))
    execute: int | None = 3
    videos: int = 2
    eval_workers: int = 2
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    ablations: tuple[str, ...] = ()
    base_model: str | None = None
    base_episodes: int = 1000
    base_steps: int = 8000
    finetune_steps: int = FROM_BASE_RECIPE.steps
    finetune_rl_steps: int = FROM_BASE_RECIPE.rl_steps
    finetune_learning_rate: float = FROM_BASE_RECIPE.algo_kwargs["learning_rate"]
    rollouts: int = 100


#: The base policy this project trained with ``corft pretrain`` (manifest beside it): what the ``*_base`` rows
#: of the presets fine-tune.
COMMITTED_BASE = Path(__file__).resolve().parent / "base" / "model.zip"
#: Only the object the task names (and in Stack the one to stack on) on the table: a diagnostic setting
#: without colours to tell apart (the earlier studies' setting).
ONE_OBJECT = {"distractors": False}
#: The few-shot rows of the pretrained-representation study: the base alone, SFT from the base co-trained with
#: its data, from the base alone, and from scratch (the most telling first: a study cut short has those).
FEW_SHOT = ("base", "sft_cotrain", "sft_base", "sft")

# Every preset trains with the library's defaults (the best measured recipe, corft_algos/presets.py): the
# frozen ImageNet MobileNetV2 with cached features, spatial-softmax keypoints, the TCP height and gripper
# opening of the state, 1e-3 with a warm-up and a cosine decay, 3 actions of each chunk executed, CO-RFT's
# values clipped to [0, 1] (its λ is the presets', CRITIC_TERM). Distractor cubes are on unless a preset says
# otherwise.
PRESETS: dict[str, Preset] = {
    # The base's data for co-training: its first 100 episodes of each task (collecting and caching all 1000
    # takes longer than the whole demo). A smaller budget than the library's recipe (2000 steps, CO-RFT 2000 + 500) and
    # the longest training first, so that two jobs keep both cores busy: the demo fits 15 min on 2 cores.
    "quick": Preset(tasks=("PickPlace",), demos=(30,), methods=("corft_cotrain", "sft_cotrain", "sft"), seeds=(0,),
                    eval_episodes=20, steps=2000, finetune_steps=2000, finetune_rl_steps=500,
                    base_model=str(COMMITTED_BASE), base_episodes=100),
    "fewshot": Preset(tasks=("PickPlace",), demos=(30, 60), methods=FEW_SHOT, seeds=(0, 1, 2), eval_episodes=50,
                      steps=6000, videos=0, base_model=str(COMMITTED_BASE)),
    # Does the critic earn success (benchmarks/RESULTS.md, "The full study with distractors")? Every task and
    # count from the committed base, co-trained; the ablations and from scratch on PickPlace, 30 demos.
    "full": Preset(tasks=("PickPlace", "Push", "Stack"), demos=(30, 60), methods=CRITIC_STUDY,
                   ablations=CRITIC_ABLATIONS, seeds=(0, 1, 2, 3, 4), eval_episodes=50, steps=6000,
                   base_model=str(COMMITTED_BASE)),
    "single_object": Preset(tasks=("PickPlace",), demos=(30,), methods=BASELINES, seeds=(0,), eval_episodes=20,
                            steps=3000, env_kwargs=ONE_OBJECT),
}


@dataclass(frozen=True)
class Run:
    """One training: a method on a task's demos with a seed."""

    task: str
    demos: int
    method: str
    seed: int

    def directory(self, out: Path) -> Path:
        return out / "runs" / self.task / f"demos_{self.demos}" / self.method / f"seed_{self.seed}"

    @property
    def stage2_source(self) -> Run | None:
        """The run whose model (and its rollouts) this run's stage 2 starts from (:attr:`Method.stage2_from`)."""
        source = METHODS[self.method].stage2_from
        return None if source is None else Run(self.task, self.demos, source, self.seed)


# ------------------------------------------------------------------------------ steps of the study


#: What a step that cannot run as asked raises (what ``corft`` reports in one line with exit status 1).
STEP_ERRORS = (runs.UsageError, RuntimeError, DatasetError, CollectionError, FileNotFoundError, ValueError,
               gym.error.Error)


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    """Run a step of the study; its errors (:data:`STEP_ERRORS`) become a ``RuntimeError`` naming the step."""
    try:
        yield
    except STEP_ERRORS as exc:
        raise RuntimeError(f"{what} failed: {exc}") from exc


def quiet(_: str) -> None:
    """The steps' ``log``: the study logs its own lines."""


def dataset_dir(out: Path, task: str, demos: int) -> Path:
    return out / "data" / f"{task}_{demos}"


def collect_demos(out: Path, preset: Preset, task: str, demos: int) -> Path:
    data = dataset_dir(out, task, demos)
    config = CollectConfig(env_id=f"corft/{task}-v0", episodes=demos, out=data, positions="train", seed=0,
                           image_size=preset.image_size, env_options=dict(preset.env_kwargs))
    with step(f"collecting {demos} {task} demos into {data}"):
        collect(config, progress=False)
    return data


def rollouts_dir(out: Path, source: Run) -> Path:
    """Where the own rollouts of ``source``'s model are recorded."""
    return out / "rollouts" / source.directory(out).relative_to(out / "runs")


def collect_rollouts(out: Path, preset: Preset, source: Run) -> CollectSummary:
    """Record :attr:`Preset.rollouts` episodes of ``source``'s model acting, failures kept, as ``corft collect
    --policy MODEL --keep-failures`` does (resumed unless already complete) in :func:`rollouts_dir`."""
    folder, path = rollouts_dir(out, source), model_path(out, preset, source)
    model = load_model(path, device="cpu")
    config = CollectConfig(env_id=f"corft/{source.task}-v0", episodes=preset.rollouts, out=folder, positions="train",
                           seed=ROLLOUT_SEED, keep_failures=True, chunk_size=executed_actions(preset, source),
                           env_options=dict(preset.env_kwargs))
    config, make_policy = policy_collection(model, config)
    with step(f"collecting {preset.rollouts} rollouts of {path} into {folder}"):
        return collect(config, progress=False, make_policy=make_policy)


def train_request(out: Path, preset: Preset, run: Run) -> runs.TrainRequest:
    """The training of ``run``."""
    method, source = METHODS[run.method], run.stage2_source
    targets = [dataset_dir(out, run.task, run.demos), *([rollouts_dir(out, source)] if source else [])]
    data = [*targets, *(base_data_stores(out, preset) if method.cotrain else [])]
    learning_rate = preset.finetune_learning_rate if method.from_base else preset.learning_rate
    steps = preset.finetune_steps if method.from_base else preset.steps
    # A staged row from the base imitates for the recipe's steps, then adds its RL steps; from scratch,
    # it splits the budget. A row whose stage 2 starts from another row's model only adds the RL steps.
    imitation = steps if method.from_base else round(steps * preset.il_fraction)
    rl_steps = preset.finetune_rl_steps if method.from_base else steps - imitation
    il_steps = 0 if source else imitation
    total = il_steps + rl_steps if method.staged else steps
    init_from = (model_path(out, preset, source) if source
                 else base_model(out, preset) if method.from_base else None)
    return runs.TrainRequest(
        data=tuple(data), out=run.directory(out), algo=method.algo, chunk_size=method.chunk_size,
        batch_size=preset.batch_size, learning_rate=learning_rate, seed=run.seed,
        checkpoint_every=max(1, total // 4), quiet=True,
        **({"il_steps": il_steps, "rl_steps": rl_steps} if method.staged else {"steps": total}),
        policy_kwargs=dict(preset.policy_kwargs) or None,
        algo_kwargs={**preset.algo_kwargs, **(preset.rl_kwargs if method.staged else {}), **method.algo_kwargs},
        init_from=init_from,
        store_mix=cotraining_store_mix(len(data) - len(targets), len(targets)) if method.cotrain else None)


def base_model(out: Path, preset: Preset) -> Path:
    """The base policy's model zip: the preset's, or the one the study builds in ``out/base``."""
    return Path(preset.base_model) if preset.base_model else out / "base" / "model.zip"


def pretrain_base(out: Path, preset: Preset) -> Path:
    """Build the base policy as ``corft pretrain`` does unless the preset names one (which must exist)."""
    path = base_model(out, preset)
    if preset.base_model:
        if not path.is_file():
            raise RuntimeError(f"the preset's base policy {path} does not exist: build it with `corft pretrain "
                               f"--out {path.parent}` or set base_model=None to build one in the study")
        return path
    config = out / "base_config.json"
    config.write_text(json.dumps({"algo_kwargs": {**preset.algo_kwargs, "batch_size": preset.batch_size,
                                                  "learning_rate": preset.learning_rate},
                                  "policy_kwargs": preset.policy_kwargs}), encoding="utf-8")
    data = PretrainConfig(out=path.parent, episodes=preset.base_episodes, image_size=preset.image_size,
                          workers=preset.eval_workers)
    with step(f"pretraining the base policy in {path.parent}"):
        return pretrain(data, PretrainTraining(steps=preset.base_steps, config=config), progress=False, log=quiet)


def base_data_config(out: Path, preset: Preset) -> PretrainConfig:
    """Where the base's pretraining data is: the study's own base's (``out/base``), or, for a preset's base,
    ``out/base_data`` collected as ``corft pretrain`` collects (the committed base's episodes and seeds)."""
    folder = out / "base_data" if preset.base_model else out / "base"
    return PretrainConfig(out=folder, episodes=preset.base_episodes, image_size=preset.image_size,
                          workers=preset.eval_workers)


def base_data_stores(out: Path, preset: Preset) -> list[Path]:
    """The folders of the base's pretraining data (the co-training rows' second store); :func:`base_data`
    fills them once, before the trainings, which only read them (several at a time)."""
    config = base_data_config(out, preset)
    return [config.data_dir(task) for task in config.tasks]


def base_data(out: Path, preset: Preset) -> list[Path]:
    """The stores of the base's pretraining data, collected unless there already."""
    return collect_pretraining_data(base_data_config(out, preset), progress=False)


def model_path(out: Path, preset: Preset, run: Run) -> Path:
    """The model a run evaluates: the base itself for a zero-shot row, else the run's own."""
    return base_model(out, preset) if METHODS[run.method].zero_shot else run.directory(out) / "model.zip"


def evaluation_report(out: Path, preset: Preset, run: Run, positions: str) -> dict[str, Any]:
    """The evaluation's JSON (computed once, then read back)."""
    report = run.directory(out) / f"eval_{positions}.json"
    if not report.is_file():
        request = runs.EvalRequest(model_path(out, preset, run), env_id=f"corft/{run.task}-v0", positions=positions,
                                   episodes=preset.eval_episodes, seed=DEFAULT_EVAL_SEED, json=report,
                                   workers=preset.eval_workers, device="cpu", quiet=True,
                                   execute=executed_actions(preset, run), env_kwargs=dict(preset.env_kwargs))
        with step(f"evaluating {request.model} on {positions} positions"):
            runs.evaluate(request)
    return json.loads(report.read_text(encoding="utf-8"))


def executed_actions(preset: Preset, run: Run) -> int | None:
    """The actions run per chunk when the preset executes fewer than the method's chunk holds (``corft eval
    --execute``), else ``None`` (the model's own)."""
    if preset.execute is not None and preset.execute < METHODS[run.method].chunk_size:
        return preset.execute
    return None


def record_videos(out: Path, preset: Preset, run: Run) -> None:
    videos = out / "videos" / f"{run.task}_{run.method}"
    if preset.videos < 1 or videos.is_dir():
        return
    request = runs.EvalRequest(model_path(out, preset, run), env_id=f"corft/{run.task}-v0", positions="unseen",
                               episodes=preset.videos, video=videos, device="cpu", quiet=True,
                               execute=executed_actions(preset, run), env_kwargs=dict(preset.env_kwargs))
    with step(f"recording videos of {request.model}"):
        runs.evaluate(request)


def record(preset: Preset, run: Run, positions: str, result: dict[str, Any]) -> dict[str, Any]:
    """One row of ``results.json``."""
    return {"task": run.task, "method": run.method, "demos": run.demos, "positions": positions, "seed": run.seed,
            "success_rate": result["success_rate"], "success_ci95": result["success_ci95"],
            "cycle_time_steps": result["cycle_time_steps"], "cycle_time_s": result["cycle_time_s"],
            "episodes": result["num_episodes"],
            "successes": sum(episode["success"] for episode in result["episodes"]),
            "distractors": bool(preset.env_kwargs.get("distractors", True)), "init": METHODS[run.method].init,
            "stage2_data": METHODS[run.method].stage2_data,
            "named_object_first_rate": result.get("named_object_first_rate"),
            "outcomes": [int(episode["success"]) for episode in result["episodes"]]}


# ------------------------------------------------------------------------------ summaries


@dataclass(frozen=True)
class Row:
    """A method's results pooled over training seeds."""

    task: str
    demos: int
    method: str
    positions: str
    success_rate: float
    success_ci95: tuple[float, float]
    cycle_time_steps: float | None
    seeds: int
    episodes: int
    named_object_first_rate: float | None = None


def pooled_rows(records: list[dict[str, Any]]) -> list[Row]:
    """Success pooled over seeds (mean rate, Wilson interval of all episodes); cycle time weighted by successes."""
    groups: dict[tuple[str, int, str, str], list[dict[str, Any]]] = {}
    for item in records:
        groups.setdefault((item["task"], item["demos"], item["method"], item["positions"]), []).append(item)
    rows = []
    for (task, demos, method, positions), items in groups.items():
        episodes = sum(item["episodes"] for item in items)
        successes = sum(item["successes"] for item in items)
        timed = [(item["cycle_time_steps"], item["successes"]) for item in items if item["cycle_time_steps"] is not None]
        cycle = sum(steps * count for steps, count in timed) / sum(count for _, count in timed) if timed else None
        named = [(item.get("named_object_first_rate"), item["episodes"]) for item in items]
        named_rate = (sum(rate * count for rate, count in named) / episodes
                      if all(rate is not None for rate, _ in named) else None)
        rows.append(Row(task, demos, method, positions, successes / episodes, wilson_interval(successes, episodes),
                        cycle, len(items), episodes, named_rate))
    return rows


def relative_change(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference == 0:
        return None
    return (value - reference) / reference


def sft_reference(method: str) -> str:
    """The SFT row a method is compared with: the co-trained SFT for the other co-trained rows, else SFT from
    scratch (also for the co-trained SFT itself: its change is what the base and co-training bring)."""
    return "sft_cotrain" if METHODS[method].cotrain and method != "sft_cotrain" else "sft"


def markdown_table(rows: list[Row]) -> str:
    """The headline table: success (95% CI), cycle time, and the change relative to the row's SFT
    (:func:`sft_reference`)."""
    index = {(r.task, r.demos, r.positions, r.method): r for r in rows}
    lines = ["| task | demos | method | positions | success (95% CI) | cycle time, steps (s) | "
             "success vs SFT | cycle time vs SFT | named object lifted first | seeds × episodes |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r.task, r.demos, r.positions, list(METHODS).index(r.method))):
        reference = index.get((r.task, r.demos, r.positions, sft_reference(r.method)))
        gain = relative_change(r.success_rate, reference.success_rate if reference else None)
        cut = relative_change(r.cycle_time_steps, reference.cycle_time_steps if reference else None)
        cycle = "–" if r.cycle_time_steps is None else f"{r.cycle_time_steps:.1f} ({r.cycle_time_steps * CONTROL_PERIOD:.1f})"
        lines.append(f"| {r.task} | {r.demos} | {r.method} | {r.positions} | {r.success_rate:.0%} "
                     f"[{r.success_ci95[0]:.0%}, {r.success_ci95[1]:.0%}] | {cycle} | "
                     f"{'–' if gain is None or r.method == 'sft' else f'{gain:+.0%}'} | "
                     f"{'–' if cut is None or r.method == 'sft' else f'{cut:+.0%}'} | "
                     f"{'–' if r.named_object_first_rate is None else f'{r.named_object_first_rate:.0%}'} | "
                     f"{r.seeds} × {r.episodes // r.seeds} |")
    return "\n".join(lines)


#: The CO-RFT rows whose claims are checked against their SFT (:func:`sft_reference`).
CLAIMED = ("corft", "corft_cotrain", "corft_rollouts_cotrain")


def claims(rows: list[Row]) -> list[str]:
    """The paper's three claims checked on each (task, demos) for each of :data:`CLAIMED` the study has: met
    or missed, with the numbers."""
    index = {(r.task, r.demos, r.method, r.positions): r for r in rows}
    lines = []
    groups = sorted({(r.task, r.demos) for r in rows})
    for (task, demos), method in [(group, method) for group in groups for method in CLAIMED]:
        reference = sft_reference(method)
        corft_train, sft_train = index.get((task, demos, method, "train")), index.get((task, demos, reference, "train"))
        corft_unseen, sft_unseen = (index.get((task, demos, method, "unseen")),
                                    index.get((task, demos, reference, "unseen")))
        if not (corft_train and sft_train and corft_unseen and sft_unseen):
            continue
        gain = relative_change(corft_train.success_rate, sft_train.success_rate)
        cut = relative_change(corft_train.cycle_time_steps, sft_train.cycle_time_steps)
        lines.append(f"{task}, {demos} demos, {method} vs {reference}: success vs SFT "
                     f"{'n/a (SFT 0%)' if gain is None else f'{gain:+.0%}'} (paper +{PAPER_SUCCESS_GAIN:.0%}); "
                     f"cycle time vs SFT {'n/a' if cut is None else f'{cut:+.0%}'} (paper -{PAPER_CYCLE_TIME_CUT:.1%}); "
                     f"unseen positions {corft_unseen.success_rate:.0%} vs SFT {sft_unseen.success_rate:.0%} "
                     f"(paper {PAPER_UNSEEN_SUCCESS:.1%}, above SFT)")
    return lines


#: ``(CO-RFT, the same with λ = 0)``: the critic's own share of CO-RFT's success (the issue's attribution).
CRITIC_SHARES = (("corft", "corft_no_q"), ("corft_cotrain", "corft_no_q_cotrain"),
                 ("corft_rollouts_cotrain", "corft_no_q_rollouts_cotrain"))
#: Pairs ``(method, reference)`` compared episode by episode where a study has both.
COMPARISONS = (("sft_base", "sft"), ("sft_cotrain", "sft"), ("sft_cotrain", "sft_base"), ("corft", "sft"),
               ("corft_no_q", "sft"), ("corft_base", "sft_base"), ("corft_cotrain", "sft_cotrain"),
               ("corft_no_q_cotrain", "sft_cotrain"), ("corft_rollouts_cotrain", "sft_cotrain"),
               ("corft_no_q_rollouts_cotrain", "sft_cotrain"), *CRITIC_SHARES,
               ("corft_rollouts_cotrain", "corft_cotrain"), ("corft_h5_cotrain", "corft_cotrain"),
               ("offline_rl_h1_cotrain", "corft_cotrain"), ("corft_boundary_cotrain", "corft_cotrain"),
               ("corft_no_calql_cotrain", "corft_cotrain"))


def paired_difference(pairs: list[tuple[list[int], list[int]]], resamples: int = 10_000,
                      seed: int = 0) -> tuple[float, tuple[float, float]]:
    """Mean success difference of a method over a reference on paired episodes, with a bootstrap 95% CI.

    ``pairs[k]`` holds both methods' outcomes (1 success, 0 failure) for training seed ``k`` on the same
    evaluation seeds, in the same order. The estimate is ``Σ_k Σ_i (a_ki - b_ki) / Σ_k n_k``; the
    interval is the 2.5th and 97.5th percentiles of that mean over ``resamples`` draws of the episodes
    with replacement within each training seed (the evaluation seeds are the paired unit; a few
    training seeds are too few to resample).

    :raises ValueError: if a pair's outcome lists differ in length, or there are none.
    """
    differences = []
    for a, b in pairs:
        if len(a) != len(b) or not a:
            raise ValueError(f"paired outcomes need equal, non-empty lengths, got {len(a)} and {len(b)}")
        differences.append(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))
    if not differences:
        raise ValueError("no paired outcomes")
    rng = np.random.default_rng(seed)
    total = sum(len(d) for d in differences)
    sums = np.zeros(resamples)
    for d in differences:
        sums += d[rng.integers(0, len(d), size=(resamples, len(d)))].sum(axis=1)
    low, high = np.percentile(sums / total, [2.5, 97.5])
    return float(sum(d.sum() for d in differences) / total), (float(low), float(high))


@dataclass(frozen=True)
class Paired:
    """A method against a reference on one (task, demos, positions), over the training seeds both finished."""

    task: str
    demos: int
    positions: str
    method: str
    reference: str
    difference: float
    ci95: tuple[float, float]
    seeds: tuple[int, ...]


def paired_comparisons(records: list[dict[str, Any]], comparisons: tuple[tuple[str, str], ...] = COMPARISONS
                       ) -> list[Paired]:
    """Every ``(method, reference)`` of ``comparisons`` a study holds, per task, demos and positions: the paired
    difference in success (:func:`paired_difference`) over the training seeds both methods finished."""
    outcomes = {(r["task"], r["demos"], r["positions"], r["method"], r["seed"]): r.get("outcomes") for r in records}
    found = []
    for task, demos, positions in sorted({(r["task"], r["demos"], r["positions"]) for r in records}):
        for method, reference in comparisons:
            seeds = tuple(sorted(seed for (t, d, p, m, seed), value in outcomes.items()
                                 if (t, d, p, m) == (task, demos, positions, method) and value
                                 and outcomes.get((task, demos, positions, reference, seed))))
            if not seeds:
                continue
            pairs = [(outcomes[(task, demos, positions, method, seed)],
                      outcomes[(task, demos, positions, reference, seed)]) for seed in seeds]
            difference, ci95 = paired_difference(pairs)
            found.append(Paired(task, demos, positions, method, reference, difference, ci95, seeds))
    return found


def paired_lines(records: list[dict[str, Any]]) -> list[str]:
    """One line per :func:`paired_comparisons` result, with its bootstrap 95% CI."""
    return [f"- {c.task}, {c.demos} demos, {c.positions}: {c.method} − {c.reference} = "
            f"{c.difference * 100:+.1f} points, 95% CI [{c.ci95[0] * 100:+.1f}, {c.ci95[1] * 100:+.1f}] "
            f"(training seeds {', '.join(map(str, c.seeds))}; the same evaluation seeds)"
            for c in paired_comparisons(records)]


#: Task and demonstration-count groups in which the critic's share must be above zero (the issue's target).
CRITIC_SHARE_GROUPS = 3


def critic_share_lines(records: list[dict[str, Any]]) -> list[str]:
    """For each :data:`CRITIC_SHARES` pair a study holds: in how many (task, demos) groups the critic's share
    is above zero with its 95% interval, per position set, against the target of :data:`CRITIC_SHARE_GROUPS`."""
    found = paired_comparisons(records, CRITIC_SHARES)
    lines = []
    for method, reference in CRITIC_SHARES:
        counts = []
        for positions in POSITIONS:
            results = [c for c in found if (c.method, c.reference, c.positions) == (method, reference, positions)]
            if results:
                above = sum(c.ci95[0] > 0 for c in results)
                counts.append(f"{positions} positions in {above} of {len(results)} task/demos groups")
        if counts:
            lines.append(f"the critic's share, {method} − {reference}, above zero (95% CI): {'; '.join(counts)} "
                         f"(target: at least {CRITIC_SHARE_GROUPS} groups)")
    return lines


def plot(rows: list[Row], out: Path) -> list[Path]:
    """``success.png`` (with 95% CIs) and ``cycle_time.png``: one panel per task, one group of bars per (demos,
    positions), holding only the methods that group has (the ablations run on one group), one colour per method."""
    matplotlib = import_optional("matplotlib", "bench", "the study's plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r.task for r in rows})
    methods = [m for m in METHODS if any(r.method == m for r in rows)]
    palette = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    colours = {m: palette(k % palette.N) for k, m in enumerate(methods)}
    index = {(r.task, r.demos, r.positions, r.method): r for r in rows}
    panels = {task: sorted({(r.demos, r.positions) for r in rows if r.task == task}) for task in tasks}
    present = {(task, group): [m for m in methods if (task, *group, m) in index]
               for task, groups in panels.items() for group in groups}
    slots = max(sum(len(present[task, group]) + 1 for group in groups) for task, groups in panels.items())
    paths = []
    for name, ylabel in (("success", "success rate"), ("cycle_time", "cycle time of successes (steps)")):
        figure, all_axes = plt.subplots(len(tasks), 1, figsize=(max(6.0, 0.3 * slots + 1.5), 2.6 * len(tasks) + 0.8),
                                        squeeze=False)
        for axes, task in zip(all_axes[:, 0], tasks):
            x, centres = 0.0, []
            for group in panels[task]:
                centres.append(x + (len(present[task, group]) - 1) / 2)
                for method in present[task, group]:
                    row = index[(task, *group, method)]
                    value = row.success_rate if name == "success" else row.cycle_time_steps
                    if value is not None:
                        errors = ([[value - row.success_ci95[0]], [row.success_ci95[1] - value]]
                                  if name == "success" else None)
                        axes.bar(x, value, 0.9, yerr=errors, capsize=2, color=colours[method])
                    x += 1
                x += 1
            axes.set_xticks(centres, [f"{demos} demos, {positions}" for demos, positions in panels[task]])
            axes.set_xlim(-1, slots - 1)
            axes.set_title(task, fontsize=10)
            axes.set_ylabel(ylabel, fontsize=8)
            if name == "success":
                axes.set_ylim(0, 1.05)
        handles = [plt.Rectangle((0, 0), 1, 1, color=colours[m]) for m in methods]
        figure.legend(handles, methods, loc="upper center", ncols=min(5, len(methods)), fontsize=8)
        figure.tight_layout(rect=(0, 0, 1, 1 - 0.5 / figure.get_figheight()))
        path = out / f"{name}.png"
        figure.savefig(path, dpi=120)
        plt.close(figure)
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------ the study


def planned_runs(preset: Preset) -> list[Run]:
    """Every method on every task, demonstration count and seed (a zero-shot row on the first seed only); the
    ablations on the first task and count; and, before a row whose stage 2 starts from another row's model,
    that row if the preset does not plan it already."""
    planned = [Run(task, demos, method, seed) for task in preset.tasks for demos in preset.demos
               for seed in preset.seeds for method in preset.methods]
    planned += [Run(preset.tasks[0], preset.demos[0], method, seed) for seed in preset.seeds
                for method in preset.ablations if method not in preset.methods]
    # A zero-shot row trains nothing: its evaluations are the same for every seed, so it runs once.
    planned = [run for run in planned if not METHODS[run.method].zero_shot or run.seed == preset.seeds[0]]
    with_sources: list[Run] = []
    for run in planned:
        if run.stage2_source is not None and run.stage2_source not in with_sources:
            with_sources.append(run.stage2_source)
        if run not in with_sources:
            with_sources.append(run)
    return with_sources


def needed_datasets(runs: list[Run]) -> list[tuple[str, int]]:
    """``(task, demos)`` stores the runs train on."""
    needed = {(run.task, run.demos) for run in runs}
    return sorted(needed, key=lambda item: (list(TASKS).index(item[0]), item[1]))


def plan_lines(preset: Preset) -> list[str]:
    """What a study of ``preset`` does, counted (``--plan``): the demonstrations to collect, the trainings per
    method with their gradient steps, the rollouts and the evaluation episodes."""
    planned = planned_runs(preset)
    lines = [f"demonstrations: {', '.join(f'{demos} {task}' for task, demos in needed_datasets(planned))}"]
    for method in dict.fromkeys(run.method for run in planned):
        count = sum(run.method == method for run in planned)
        if METHODS[method].zero_shot:
            lines.append(f"{method}: evaluated once, no training")
            continue
        request = train_request(Path("."), preset, next(run for run in planned if run.method == method))
        budget = (f"{request.il_steps} imitation + {request.rl_steps} offline RL" if request.steps is None
                  else f"{request.steps}")
        lines.append(f"{method}: {count} training{'s' if count > 1 else ''} of {budget} steps")
    sources = {run.stage2_source for run in planned if run.stage2_source is not None}
    if sources:
        lines.append(f"rollouts: {len(sources)} models × {preset.rollouts} episodes = "
                     f"{len(sources) * preset.rollouts} episodes")
    evaluations = len(planned) * len(POSITIONS)
    lines.append(f"evaluations: {evaluations} × {preset.eval_episodes} episodes = "
                 f"{evaluations * preset.eval_episodes} episodes")
    return lines


def train_and_evaluate(out: Path, preset: Preset, run: Run) -> list[dict[str, Any]]:
    """Train ``run`` (or resume it; a zero-shot row trains nothing) and evaluate it on every position set: its
    records."""
    if not METHODS[run.method].zero_shot:
        with step(f"training {run.method} on {run.task}, {run.demos} demos, seed {run.seed}"):
            runs.train(train_request(out, preset, run), log=quiet)
    return [record(preset, run, positions, evaluation_report(out, preset, run, positions)) for positions in POSITIONS]


def in_parallel(work: Callable[..., Any], calls: list[tuple[Any, ...]], jobs: int) -> Iterator[tuple[tuple, Any]]:
    """``(arguments, work(*arguments))`` for every call, in the order they finish, ``jobs`` processes at a time.

    ``jobs=1`` runs the calls here, in order. Otherwise each runs in a fresh (spawned) process with this
    process's torch thread count; the first error cancels the calls not yet started and is raised once
    the running ones have finished (their work is kept, so the study resumes with it).
    """
    if jobs == 1:
        for arguments in calls:
            yield arguments, work(*arguments)
        return
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=torch.set_num_threads, initargs=(torch.get_num_threads(),))
    try:
        futures = {pool.submit(work, *arguments): arguments for arguments in calls}
        for future in as_completed(futures):
            yield futures[future], future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def require_extras(preset: Preset) -> None:
    """Fail before any work, not after hours of it, without an extra the study's outputs need: ``bench`` for the
    plots and, when the preset records rollout videos, ``video``.

    :raises MissingExtraError: naming the missing extra."""
    import_optional("matplotlib", "bench", "the study's plots")
    if preset.videos > 0:
        video_writer()


def run_study(preset: Preset, out: Path, log: Callable[[str], None] = print, jobs: int = 1) -> list[dict[str, Any]]:
    """Collect, train, evaluate and summarise into ``out``; resumes whatever ``out`` already holds.

    :param jobs: trainings (each with its evaluations) run at a time, in separate processes.
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / "preset.json").write_text(json.dumps(asdict(preset), indent=2) + "\n", encoding="utf-8")
    began = time.perf_counter()

    def stamp() -> str:
        return f"[{time.perf_counter() - began:6.0f} s]"

    runs = planned_runs(preset)
    for task, demos in needed_datasets(runs):
        log(f"{stamp()} collecting {demos} {task} demos")
        collect_demos(out, preset, task, demos)
    if any(METHODS[run.method].init == "base" for run in runs):
        log(f"{stamp()} base policy: {pretrain_base(out, preset)}")
    if any(METHODS[run.method].cotrain for run in runs):
        log(f"{stamp()} the base's data, for co-training: {', '.join(map(str, base_data(out, preset)))}")
    log(f"{stamp()} {len(runs)} training{'s' if len(runs) > 1 else ''}, {jobs} at a time")
    finished: dict[Run, list[dict[str, Any]]] = {}

    def train_all(batch: list[Run]) -> None:
        for (_, _, run), run_records in in_parallel(train_and_evaluate, [(out, preset, run) for run in batch], jobs):
            finished[run] = run_records
            scores = ", ".join(f"{item['positions']} {item['successes']}/{item['episodes']}" for item in run_records)
            log(f"{stamp()} {len(finished)}/{len(runs)} {run.method} on {run.task}, {run.demos} demos, "
                f"seed {run.seed}: {scores}")

    # Rows whose stage 2 starts from another row's model wait for that model and its rollouts.
    train_all([run for run in runs if run.stage2_source is None])
    sources = list(dict.fromkeys(run.stage2_source for run in runs if run.stage2_source is not None))
    for (_, _, source), summary in in_parallel(collect_rollouts, [(out, preset, source) for source in sources], jobs):
        log(f"{stamp()} {summary.episodes} rollouts of {source.method} on {source.task}, {source.demos} demos, "
            f"seed {source.seed}: {summary.successes} successes")
    train_all([run for run in runs if run.stage2_source is not None])
    for run in runs:
        if run.method in ("sft", "corft") and run.task == preset.tasks[0] and run.seed == preset.seeds[0]:
            record_videos(out, preset, run)
    records = [item for run in runs for item in finished[run]]
    wall = time.perf_counter() - began
    summarise(records, out, f"# CO-RFT study, preset written to {out / 'preset.json'}",
              f"wall time {wall:.0f} s with {jobs} job(s) (this run; steps already done in {out} were reused)", log)
    return records


def same_preset(saved: dict[str, Any], preset: Preset) -> bool:
    """Whether a study's saved ``preset.json`` is ``preset``; its base policy counts as the same where the
    two paths hold the same bytes (the committed base, seen from another checkout)."""
    current = json.loads(json.dumps(asdict(preset)))
    paths = saved.get("base_model"), current.get("base_model")
    if paths[0] != paths[1] and all(paths) and all(Path(path).is_file() for path in paths):
        if Path(paths[0]).read_bytes() == Path(paths[1]).read_bytes():
            saved = {**saved, "base_model": current["base_model"]}
    return saved == current


def report_study(preset: Preset, out: Path, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Summarise the trainings of ``out`` already evaluated on every position set, training nothing.

    For a study still running or interrupted: the same files as :func:`run_study`, from the finished runs
    only, the summary's header saying how many of the planned trainings that is (or that all are).
    """
    saved = out / "preset.json"
    if saved.is_file() and not same_preset(json.loads(saved.read_text(encoding="utf-8")), preset):
        raise RuntimeError(f"{out} holds a study of another preset (see {saved}): pass the --preset "
                           "(and --steps, --eval-episodes, --demos, --methods, --seeds) it was run with")
    runs = planned_runs(preset)
    finished = [run for run in runs
                if all((run.directory(out) / f"eval_{positions}.json").is_file() for positions in POSITIONS)]
    if not finished:
        raise RuntimeError(f"no training in {out} has been evaluated yet: run the study first "
                           f"(`{PROG} --out {out}` without --report)")
    records = [record(preset, run, positions, evaluation_report(out, preset, run, positions))
               for run in finished for positions in POSITIONS]
    if len(finished) == len(runs):
        header, footer = f"# CO-RFT study, complete: all {len(runs)} trainings evaluated", "rows pool every seed"
    else:
        header = f"# CO-RFT study, partial: {len(finished)} of {len(runs)} trainings evaluated"
        footer = "rows pool the seeds finished so far"
    summarise(records, out, f"{header} (preset {out / 'preset.json'})", footer, log)
    return records


def summarise(records: list[dict[str, Any]], out: Path, header: str, footer: str,
              log: Callable[[str], None]) -> None:
    """Write ``results.json``, ``results.md`` (``header``, table, claims, ``footer``) and the plots; log the table."""
    rows = pooled_rows(records)
    (out / "results.json").write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
    paired = paired_lines(records)
    summary = [header, "", markdown_table(rows), "",
               "vs SFT: each co-trained row against sft_cotrain, the others against sft.", "",
               *claims(rows), *critic_share_lines(records), "",
               *(["Paired differences in success (episode by episode on the same evaluation seeds):", *paired, ""]
                 if paired else []), footer]
    (out / "results.md").write_text("\n".join(summary) + "\n", encoding="utf-8")
    plot(rows, out)
    log("\n".join(summary))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The study's flags."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick", help="what to run (default: quick)")
    parser.add_argument("--out", type=Path, required=True, help="study directory (created, or resumed)")
    parser.add_argument("--steps", type=int, help="override the preset's gradient steps per training")
    parser.add_argument("--eval-episodes", type=int, help="override the preset's episodes per evaluation")
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), metavar="TASK",
                        help="override the preset's tasks (run part of a study; the ablations run on the first)")
    parser.add_argument("--demos", type=positive_int, nargs="+", metavar="N",
                        help="override the preset's demonstration counts (run part of a study)")
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), metavar="METHOD",
                        help=f"run these methods on every task and demonstration count instead of the preset's "
                             f"methods and ablations, from: {', '.join(METHODS)} (run part of a study)")
    parser.add_argument("--seeds", type=int, nargs="+", metavar="SEED", help="override the preset's training seeds")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: fastest for these small models on a small CPU)")
    parser.add_argument("--jobs", type=int, default=default_jobs(),
                        help="trainings run at a time, each in its own process with --threads threads "
                             "(default: the CPU count, at most 4)")
    parser.add_argument("--fresh", action="store_true", help="delete OUT first instead of resuming it")
    parser.add_argument("--plan", action="store_true",
                        help="run nothing: print what the study would collect, train and evaluate, counted")
    parser.add_argument("--report", action="store_true",
                        help="train nothing: summarise the trainings of OUT evaluated so far (a study still "
                             "running, or interrupted), saying how many of the planned ones that is")
    return parser.parse_args(argv)


def default_jobs() -> int:
    """The CPUs this process may use, at most 4."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cpus))


def run_from_args(args: argparse.Namespace) -> int:
    """Run the study the parsed flags describe; the exit status."""
    preset = PRESETS[args.preset]
    overrides = {"steps": args.steps, "eval_episodes": args.eval_episodes, "tasks": args.tasks,
                 "demos": args.demos, "methods": args.methods, "seeds": args.seeds}
    preset = replace(preset, **{key: tuple(value) if isinstance(value, list) else value
                                for key, value in overrides.items() if value is not None})
    if args.methods:
        preset = replace(preset, ablations=())
    if args.jobs < 1 or args.threads < 1:
        print(f"{PROG}: error: --jobs and --threads must be at least 1 (got --jobs {args.jobs}, "
              f"--threads {args.threads})", file=sys.stderr)
        return 2
    if args.report and args.fresh:
        print(f"{PROG}: error: --report summarises OUT as it is; drop --fresh", file=sys.stderr)
        return 2
    if args.plan:
        print("\n".join(plan_lines(preset)))
        return 0
    torch.set_num_threads(args.threads)
    if args.fresh and args.out.exists():
        shutil.rmtree(args.out)
    try:
        require_extras(preset)
        if args.report:
            report_study(preset, args.out)
        else:
            run_study(preset, args.out, jobs=args.jobs)
    except (RuntimeError, MissingExtraError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_from_args(parse_args()))
