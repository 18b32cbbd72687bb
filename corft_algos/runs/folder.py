"""A training run's folder: what is in it, who may write it, and where a rerun resumes.

Layout of ``OUT`` (``corft train --out OUT``, :func:`corft_algos.runs.train`)::

    config.json         the resolved training configuration (:class:`~corft_algos.presets.TrainConfig`)
    data.json           the absolute paths of the stores the run trains on
    model.zip           the model at the end of training
    best_model.zip      the best evaluation's model (with an evaluation env)
    checkpoints/        rl_model_<N>_steps.zip every K gradient steps, the newest few kept
    progress.csv        the training log (progress_from_step_<N>.csv when resumed at step N)
    .lock               held by the training that writes the folder (:class:`~corft_envs.folder_lock.FolderLock`)

A rerun resumes from the most advanced intact saved state (:meth:`RunFolder.resume_point`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from stable_baselines3.common.logger import Logger, make_output_format

from corft_algos.callbacks import GradientStepCheckpoint, list_checkpoints
from corft_algos.distributed import Rank
from corft_algos.model_format import ModelFileError, OldFormatError, read_model, read_model_config
from corft_algos.presets import TrainConfig
from corft_envs.folder_lock import FolderBusyError, FolderLock
from corft_robots.extras import import_optional

MODEL_NAME = "model.zip"
CHECKPOINT_DIR = "checkpoints"
#: File the resolved configuration is written to.
CONFIG_NAME = "config.json"
#: The record of the stores a run trains on: a resume on other data is refused naming them.
DATA_RECORD = "data.json"


class UsageError(Exception):
    """A request (a command line, a :class:`~corft_algos.runs.TrainRequest`, ...) that cannot run as given; the
    message says what to change, naming the ``corft`` flags."""


def saved_state_problem(path: Path) -> str | None:
    """Why the saved model or checkpoint ``path`` cannot be resumed from (a damaged zip, a member whose
    bytes fail their CRC, a missing member, JSON or tensors that do not parse), or ``None`` if it is intact.

    :raises OldFormatError: for a file in the old pickle-based format: not skipped, since a run that went on
        without it would overwrite the run's state.
    """
    try:
        read_model(path)
    except OldFormatError:
        raise
    except ModelFileError as exc:
        return exc.reason
    except OSError as exc:
        return f"it cannot be read ({exc})"
    return None


def check_model_file(path: Path, flag: str) -> None:
    """Refuse a damaged model zip before loading it (see :func:`saved_state_problem`); a missing one is left
    to the loader's own message.

    :raises UsageError: naming ``flag``, ``path`` and what is damaged.
    """
    problem = saved_state_problem(path) if path.is_file() else None
    if problem is not None:
        raise UsageError(f"{flag} {path} cannot be loaded: {problem}; use an intact copy, or another checkpoint "
                         "of its run (OUT/checkpoints/)")


def write_json_atomically(path: Path, data: Any) -> None:
    """``data`` as indented JSON in ``path``, through a temporary file (its folder created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    temporary.replace(path)


class RunFolder:
    """The folder of one training run (see the module's docstring for its layout).

    :param path: the folder (``--out``); it need not exist yet.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def model_path(self) -> Path:
        """The model at the end of training."""
        return self.path / MODEL_NAME

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_NAME

    @contextlib.contextmanager
    def lock(self, rank: Rank = Rank(), log: Callable[[str], None] = print) -> Iterator[None]:
        """Hold the folder's lock while this run writes it (rank 0 alone: torchrun's processes are one run),
        creating the folder if missing; ``log`` is told when a stale lock is taken over.

        :raises UsageError: if the path is a file, or another live training holds the lock.
        """
        if not rank.is_main:
            yield
            return
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"--out {self.path} is a file; give a directory for the run (created if missing)")
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            lock = FolderLock(self.path)
        except FolderBusyError as exc:
            raise UsageError(f"another corft train ({exc}) is training in --out {self.path}; wait for it to "
                             "finish or choose another --out") from None
        with lock:
            if lock.takeover_note() is not None:
                log(lock.takeover_note())
            yield

    def resume_point(self, report: Callable[[str], None] | None = None) -> tuple[int, Path] | None:
        """The most advanced intact saved state, ``(steps, path)``; model.zip wins a tie.

        A damaged model.zip or checkpoint (a write cut short by a full disk, a copy gone wrong) is skipped
        for the next newest intact one, and ``report`` is told which and why.
        """
        candidates = [(steps, 0, path) for steps, path in list_checkpoints(self.checkpoint_dir)]
        final = self.model_path
        if final.is_file():
            problem = saved_state_problem(final)
            if problem is None:
                candidates.append((int(read_model_config(final)["progress"]["num_timesteps"]), 1, final))
            elif report is not None:
                report(f"skipping {final}: {problem}")
        for steps, _, path in sorted(candidates, reverse=True):
            problem = saved_state_problem(path) if path != final else None
            if problem is None:
                return steps, path
            if report is not None:
                report(f"skipping {path}: {problem}")
        return None

    def resume_note(self, checkpoint_every: int) -> str:
        """Which saved state a rerun of the training resumes from."""
        saved = self.resume_point()
        if saved is None:
            return f"no checkpoint was written yet (one every {checkpoint_every} steps); a rerun starts over"
        steps, path = saved
        return f"the last good checkpoint is kept at {path} (step {steps}); rerun the same command to resume from it"

    def checkpoint_callback(self, every: int, keep_last: int) -> GradientStepCheckpoint:
        """The callback that writes ``checkpoints/`` every ``every`` gradient steps, keeping the newest ``keep_last``."""
        return GradientStepCheckpoint(every, self.checkpoint_dir, keep_last=keep_last)

    def logger(self, start: int, stdout: bool, tensorboard: bool) -> Logger:
        """SB3 logger into the folder: progress.csv (progress_from_step_<N>.csv when resumed at N), optionally
        stdout and TensorBoard events.

        :raises MissingExtraError: for ``tensorboard`` without the ``tb`` extra."""
        if tensorboard:
            import_optional("tensorboard", "tb", "--tensorboard")
        formats = [*(["stdout"] if stdout else []), "csv", *(["tensorboard"] if tensorboard else [])]
        suffix = f"_from_step_{start}" if start else ""
        return Logger(str(self.path), [make_output_format(name, str(self.path), suffix) for name in formats])

    def write_config(self, config: TrainConfig) -> None:
        """The resolved configuration as ``config.json`` (written atomically)."""
        write_json_atomically(self.config_path, config.to_json())

    def read_config(self) -> dict[str, Any]:
        """``config.json`` as written by :meth:`write_config`."""
        return json.loads(self.config_path.read_text(encoding="utf-8"))

    def write_data_record(self, data: Sequence[Path]) -> None:
        """``data.json``: the absolute paths of the stores this run trains on (rewritten by every run of it)."""
        write_json_atomically(self.path / DATA_RECORD, {"data": [str(Path(root).resolve()) for root in data]})

    def recorded_data(self) -> list[str] | None:
        """The stores ``data.json`` names, or ``None`` without a readable one (runs from before it was written)."""
        try:
            stores = json.loads((self.path / DATA_RECORD).read_text(encoding="utf-8"))["data"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return [str(store) for store in stores] if isinstance(stores, list) and stores else None
