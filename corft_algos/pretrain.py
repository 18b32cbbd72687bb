"""A pretrained, language-conditioned base policy for the sim world: the paper's starting point.

CO-RFT fine-tunes a *pretrained* VLA from 30-60 demonstrations. corft's sim
world has no such model, so :func:`collect_pretraining_data` makes its data:
the scripted experts of the pretraining tasks (:data:`PRETRAIN_TASKS`, by
default ``Lift``: "pick up the <colour> cube", and ``Place``: "put the <colour> cube on the white
square", the square anywhere), with every colour, objects
anywhere on the table (``positions="all"``) and the distractor cubes on (the env's default), many
episodes each. ``corft pretrain`` then trains SFT on it (the library's default
recipe) and writes a manifest of exactly what the base saw.

The fine-tuning targets (:data:`~corft_envs.tasks.TARGET_TASKS`: PickPlace
into the bowl, Push onto the target, Stack) are refused as pretraining tasks,
so fine-tuning on their few demonstrations is a real adaptation: the base
knows which cube a colour word names and how to grasp it anywhere, not where
the bowl is. Seeds start at :data:`PRETRAIN_SEED` (one block of
:data:`SEED_BLOCK` per task), away from the demonstrations' (0, 1, ...) and
the evaluations' (:data:`~corft_algos.evaluation.DEFAULT_EVAL_SEED`, ...).

:func:`pretrain` does all of it (collect, train in the base's run folder, write the manifest);
``corft train --init-from BASE/model.zip`` fine-tunes the base with full parameters.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from corft_algos.runs import RunFolder, TrainRequest, train
from corft_envs.collection import CollectConfig, collect
from corft_envs.episode_store import EpisodeDataset
from corft_envs.tasks import PRETRAIN_TASKS, TARGET_TASKS, TASKS

#: First seed of the pretraining episodes; task ``i`` uses ``PRETRAIN_SEED + i * SEED_BLOCK + k``.
PRETRAIN_SEED = 1_000_000
SEED_BLOCK = 100_000
#: The manifest's file name in the base's folder.
MANIFEST_NAME = "manifest.json"
#: Cached views of each pretraining frame: one (many episodes need no shifted copies, and the cache of
#: 1000 episodes takes a third of the time).
PRETRAIN_CACHE_VIEWS = 1


@dataclass(frozen=True)
class PretrainConfig:
    """What ``corft pretrain`` collects.

    :param out: the base's folder: ``data/<Task>`` stores, the training run, ``manifest.json``.
    :param tasks: pretraining tasks (never a fine-tuning target).
    :param episodes: episodes per task.
    :param image_size: camera image side (px); the fine-tuning data must use the same.
    :param workers: collection processes.
    :raises ValueError: for a target or unknown task, or fewer than one episode.
    """

    out: Path
    tasks: tuple[str, ...] = PRETRAIN_TASKS
    episodes: int = 1000
    image_size: int = 128
    workers: int = 1

    def __post_init__(self) -> None:
        for task in self.tasks:
            if task in TARGET_TASKS:
                raise ValueError(f"{task} is a fine-tuning target ({', '.join(TARGET_TASKS)}); a base policy "
                                 f"must not see it, or fine-tuning on its demos is no adaptation. Pretrain on "
                                 f"{', '.join(name for name in TASKS if name not in TARGET_TASKS)}")
            if task not in TASKS:
                raise ValueError(f"unknown task {task!r}; use one of "
                                 f"{', '.join(name for name in TASKS if name not in TARGET_TASKS)}")
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")

    def data_dir(self, task: str) -> Path:
        return Path(self.out) / "data" / task

    def collect_config(self, task: str) -> CollectConfig:
        seed = PRETRAIN_SEED + self.tasks.index(task) * SEED_BLOCK
        return CollectConfig(env_id=f"corft/{task}-v0", episodes=self.episodes, out=self.data_dir(task),
                             positions="all", seed=seed, image_size=self.image_size, workers=self.workers)


@dataclass(frozen=True)
class PretrainTraining:
    """How ``corft pretrain`` trains the base on the collected data: SFT, in the base's folder.

    :param steps: SFT gradient steps (8000: what the committed base was trained with).
    :param seed: training seed.
    :param preset: training recipe (:data:`~corft_algos.presets.PRESETS`).
    :param config: a training configuration file, as for ``corft train --config``.
    """

    steps: int = 8000
    seed: int = 0
    preset: str = "default"
    config: Path | None = None

    def request(self, data: PretrainConfig, stores: Sequence[Path], quiet: bool = False) -> TrainRequest:
        """The training of the base on ``stores`` (from :func:`collect_pretraining_data`)."""
        return TrainRequest(data=tuple(stores), out=data.out, algo="sft", steps=self.steps, seed=self.seed,
                            preset=self.preset, config=self.config,
                            algo_kwargs={"feature_cache_views": PRETRAIN_CACHE_VIEWS}, quiet=quiet)

    def command(self, data: PretrainConfig) -> str:
        """The ``corft pretrain`` command line that builds this base (recorded in its manifest)."""
        return shlex.join(["corft", "pretrain", "--out", str(data.out), "--tasks", *data.tasks,
                           "--episodes", str(data.episodes), "--image-size", str(data.image_size),
                           "--steps", str(self.steps), "--seed", str(self.seed), "--workers", str(data.workers),
                           "--preset", self.preset, *(["--config", str(self.config)] if self.config else [])])


def pretrain(data: PretrainConfig, training: PretrainTraining = PretrainTraining(), progress: bool = True,
             log: Callable[[str], None] = print) -> Path:
    """Collect the pretraining data, train the base on it and write its manifest (each resumed where done);
    the base's model zip.

    :raises corft_algos.runs.UsageError: for a training that cannot run (see :func:`corft_algos.runs.train`).
    """
    began = time.perf_counter()
    stores = collect_pretraining_data(data, progress=progress)
    model = train(training.request(data, stores, quiet=not progress), log=log)
    write_manifest(data, training, time.perf_counter() - began)
    return model


def collect_pretraining_data(config: PretrainConfig, progress: bool = True) -> list[Path]:
    """Collect (or resume) every pretraining task's store; returns their folders."""
    stores = []
    for task in config.tasks:
        collect(config.collect_config(task), progress=progress)
        stores.append(config.data_dir(task))
    return stores


def project_commit() -> str | None:
    """The git commit of the corft checkout this runs from, if it is one."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                                capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def write_manifest(config: PretrainConfig, training: PretrainTraining, wall_time_s: float) -> Path:
    """``manifest.json``: the command, what the base saw (tasks, instructions, seeds, episodes), what it did
    not (the target tasks), the training configuration (its run folder's), the commit and the wall time."""
    seen = {}
    for task in config.tasks:
        store = EpisodeDataset(config.data_dir(task), validate=False)
        collect_config = config.collect_config(task)
        seen[task] = {"episodes": len(store), "attempt_seeds": [collect_config.seed,
                                                                collect_config.seed + store.num_attempts - 1],
                      "instructions": sorted(set(store.instructions)), "env_kwargs": store.env_kwargs,
                      "distractors": bool(store.env_kwargs.get("distractors", True))}  # the env's default: on
        store.close()
    manifest = {"command": training.command(config), "config": {**asdict(config), "out": str(config.out)},
                "tasks": seen, "never_seen": list(TARGET_TASKS), "train": RunFolder(config.out).read_config(), "commit": project_commit(),
                "wall_time_s": round(wall_time_s, 1)}
    path = Path(config.out) / MANIFEST_NAME
    temporary = path.with_name(f".{MANIFEST_NAME}.tmp")
    temporary.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    temporary.replace(path)
    return path
