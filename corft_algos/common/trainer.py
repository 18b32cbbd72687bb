"""The training loop under :class:`~corft_algos.common.base.OfflineAlgorithm`: gradient steps, callbacks, logs.

:class:`OfflineTrainer` is the part of every corft algorithm that trains (the stable-baselines3-compatible
facade, ``learn`` / ``predict`` / ``save`` / ``load``, is :mod:`corft_algos.common.base`):

- batches drawn with :meth:`~corft_algos.data.ChunkDataset.draw_batch` (or its DataLoader with workers),
  pinned-memory batches copied without blocking, random-shift augmentation and the frozen tower's
  :class:`~corft_algos.feature_cache.FeatureCache`;
- the gradient steps of ``learn``: callbacks once per step; losses, Q statistics and gradient norms
  kept on the device until the SB3 logger writes them;
- a non-finite loss or gradient skips its optimizer step on the device (a
  :class:`~torch.amp.GradScaler` with fused AdamW, so no host-device sync) and
  stops training with :class:`TrainingDivergedError` at the next check (every
  step on CPU, every ``log_interval`` steps on a GPU): no parameter is ever
  updated with it, so every checkpoint stays good;
- bf16 autocast on GPUs (``precision``);
- under ``torchrun``, DistributedDataParallel: each rank trains on its shard
  of the global batch (:mod:`corft_algos.distributed`);
- the training's random streams, saved with every model so that a resumed run draws what an
  uninterrupted one would.
"""

from __future__ import annotations

import base64
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from tqdm import tqdm

from corft_algos.augmentation import random_offsets, shift_images
from corft_algos.data import ChunkDataset
from corft_algos.distributed import average_over_ranks, current_rank, data_parallel, shard_of
from corft_algos.feature_cache import FeatureCache
from corft_algos.policies import VLAPolicy


class TrainingDivergedError(RuntimeError):
    """A loss became NaN or infinite; no parameter was updated with it."""


#: Values of ``precision``: "auto" is bf16 autocast on a CUDA device with bf16 for a policy of at least
#: :data:`BF16_MIN_PARAMETERS` parameters, else fp32.
PRECISIONS = ("auto", "bf16", "fp32")
#: Below this size the policy's GPU step is bound by kernel launches and bf16's casts only cost time
#: (measured on an H100: README, Benchmarks).
BF16_MIN_PARAMETERS = 50_000_000


class GradientStepProgressBar(BaseCallback):
    """A tqdm bar over gradient steps (SB3's own bar counts env steps of a training env)."""

    def _on_training_start(self) -> None:
        total = self.model._total_timesteps - self.model._num_timesteps_at_start
        self.bar = tqdm(total=total, unit="step", desc=type(self.model).__name__, dynamic_ncols=True)

    def _on_step(self) -> bool:
        self.bar.update(1)
        return True

    def _on_training_end(self) -> None:
        self.bar.close()


class OfflineTrainer(ABC):
    """The training half of :class:`~corft_algos.common.base.OfflineAlgorithm` (a mixin before SB3's
    ``BaseAlgorithm``, whose attributes it uses).

    Subclasses build their optimizers in :meth:`_setup_optimizers` (with :meth:`make_optimizer`) and
    implement one gradient step in :meth:`train_step`, computing each loss through :meth:`run_loss` and
    applying it with :meth:`optimizer_step`.
    """

    policy: VLAPolicy
    dataset: ChunkDataset | None
    device: torch.device
    seed: int | None
    batch_size: int
    num_workers: int
    max_grad_norm: float
    precision: str
    feature_cache_views: int
    verbose: int
    num_timesteps: int
    start_time: int
    _num_timesteps_at_start: int

    def _setup_trainer(self) -> None:
        """The random streams, the metric sums and the gradient scaler of a fresh policy, then the optimizers."""
        self._rng = np.random.default_rng(self.seed)
        self._torch_generator = torch.Generator().manual_seed(self.seed if self.seed is not None else 0)
        self._batches: Iterator[dict[str, Any]] | None = None
        self._feature_cache: FeatureCache | None = None
        self._data_parallel: torch.nn.Module | None = None
        self._num_policy_parameters = sum(p.numel() for p in self.policy.parameters())
        self._metric_sums: dict[str, Any] = {}
        self._metric_counts: dict[str, int] = {}
        # Scale 1 and no growth: the scaler only finds non-finite gradients and skips their steps on the device.
        self._grad_scaler = torch.amp.GradScaler(self.device.type, init_scale=1.0, growth_interval=2**31 - 1)
        self._setup_optimizers()

    def make_optimizer(self, groups: Any, lr: float = 0.0, weight_decay: float = 0.0) -> torch.optim.AdamW:
        """AdamW, fused, so a step whose gradients are not finite is skipped on the device without a sync."""
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=True)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """bf16 when training runs under autocast, else ``None`` (fp32)."""
        if self.precision == "bf16":
            return torch.bfloat16
        if self.precision == "auto" and self.device.type == "cuda" and torch.cuda.is_bf16_supported() \
                and self._num_policy_parameters >= BF16_MIN_PARAMETERS:
            return torch.bfloat16
        return None

    @abstractmethod
    def _setup_optimizers(self) -> None:
        """Create the optimizers (attributes named in :meth:`optimizer_names`)."""

    @abstractmethod
    def optimizer_names(self) -> list[str]:
        """Attribute names of the optimizers, saved and restored with the model."""

    @abstractmethod
    def train_step(self) -> dict[str, Any]:
        """One gradient step; returns scalar metrics (floats, or 0-d tensors left on the device) for ``train/``."""

    # ------------------------------------------------------------- data
    def next_batch(self, with_observations: bool = True, oversample_success: bool = False) -> dict[str, Any]:
        """The next training batch as torch tensors on the device.

        :param with_observations: include ``o_t``'s arrays (``"observation"``).
        :param oversample_success: draw chunks holding the success step
            ``dataset.success_oversample`` times more often (uniform otherwise).
            With ``num_workers > 0`` the DataLoader always oversamples.
        """
        if self.dataset is None:
            raise ValueError("no dataset to train on: pass dataset=... to the constructor or to load()")
        shard = shard_of(self.batch_size, current_rank())
        pin = self.device.type == "cuda"
        if self.num_workers > 0:
            if self._batches is None:
                loader = self.dataset.make_loader(self.batch_size, num_workers=self.num_workers,
                                                  seed=self.seed or 0, with_observations=with_observations,
                                                  pin_memory=pin, shard=shard)
                self._batches = (batch for _ in iter(int, 1) for batch in loader)
            batch = next(self._batches)
        else:
            batch = self.dataset.draw_batch(self.batch_size, self._rng, oversample_success, with_observations, shard)
        return {key: _to_device(value, self.device, pin) for key, value in batch.items()}

    def image_tensors(self, observation: dict[str, torch.Tensor], augment: bool) -> dict[str, torch.Tensor]:
        """uint8 HWC images -> float CHW in [0, 1] (randomly shifted if ``augment``); other keys unchanged."""
        tensors = dict(observation)
        for key in self.policy.image_keys:
            images = observation[key].permute(0, 3, 1, 2).float() / 255.0
            if augment:  # the global batch's shifts, so every rank shifts its shard as one process would
                rank = current_rank()
                offsets = random_offsets(len(images) * rank.world_size, generator=self._torch_generator)
                offsets = offsets[shard_of(len(offsets), rank)]
                images = shift_images(images, _to_device(offsets, self.device, self.device.type == "cuda"))
            tensors[key] = images
        return tensors

    @property
    def feature_cache(self) -> FeatureCache | None:
        """The frozen tower's features of every training frame (built on first use), or ``None`` when the
        tower trains or ``feature_cache_views`` is 0."""
        views = self.feature_cache_views
        if self._feature_cache is None and views > 0 and self.policy.vision_frozen and self.dataset is not None:
            self._feature_cache = FeatureCache.build_or_load(self.dataset.frames, self.policy, views=views,
                                                             progress=self.verbose > 0)
        return self._feature_cache

    def encode_batch(self, observation: dict[str, torch.Tensor], instruction_ids: torch.Tensor,
                     augment: bool, frames: torch.Tensor | None = None) -> torch.Tensor:
        """Context tokens of a batch of observations (with gradients).

        :param frames: the observations' global frame indices; with a :attr:`feature_cache`, the vision
            features are read from it (a random cached view of each frame if ``augment``, else the image
            itself) instead of running the tower.
        """
        embeddings = self.policy.instruction_embeddings[instruction_ids]
        cache = self.feature_cache if frames is not None else None
        if cache is not None:
            views = (torch.randint(0, cache.views, (len(frames),), generator=self._torch_generator) if augment
                     else torch.zeros(len(frames), dtype=torch.long))
            features = cache.get(frames, views, self.device)
            return self.policy.encode(observation, embeddings, vision_features=features)
        return self.policy.encode(self.image_tensors(observation, augment), embeddings, images_are_float=True)

    # ------------------------------------------------------------- learning
    def _run_gradient_steps(self, total_timesteps: int, callback: BaseCallback, log_interval: int) -> None:
        """Run gradient steps until ``num_timesteps`` reaches ``total_timesteps`` or a callback stops it.

        :raises TrainingDivergedError: as :meth:`raise_if_diverged`, checked every step on CPU and every
            ``log_interval`` steps and at the end on a GPU.
        """
        self.policy.set_training_mode(True)
        unchecked_from = self.num_timesteps + 1
        while self.num_timesteps < total_timesteps:
            metrics = self.train_step()
            step = self.num_timesteps + 1
            if self.device.type == "cpu" or step == total_timesteps or (log_interval and step % log_interval == 0):
                self.raise_if_diverged(metrics, unchecked_from)
                unchecked_from = step + 1
            self.num_timesteps = step
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            for name, value in metrics.items():  # summed where they are (the GPU): no sync per step
                self._metric_sums[name] = self._metric_sums.get(name, 0.0) + value
                self._metric_counts[name] = self._metric_counts.get(name, 0) + 1
            callback.update_locals(locals())
            if not callback.on_step():
                break
            if log_interval and self.num_timesteps % log_interval == 0:
                self.dump_training_logs()
        callback.on_training_end()

    def metric_means(self) -> dict[str, Any]:
        """Mean of each training metric since the last log dump (floats or device tensors)."""
        return {name: total / self._metric_counts[name] for name, total in self._metric_sums.items()}

    def dump_training_logs(self) -> None:
        """Write the training metrics averaged since the last dump (and over the ranks), step counts and speed.

        Every rank must call it (the averaging is a collective); the metrics leave the device here only.
        """
        elapsed = max((time.time_ns() - self.start_time) / 1e9, 1e-9)
        self.logger.record("time/gradient_steps", self.num_timesteps)
        self.logger.record("time/steps_per_second", (self.num_timesteps - self._num_timesteps_at_start) / elapsed)
        means = self.metric_means()
        names = sorted(means)
        if names:
            stacked = torch.stack([torch.as_tensor(means[name], dtype=torch.float32, device=self.device)
                                   for name in names])
            for name, value in zip(names, average_over_ranks(stacked).tolist()):
                self.logger.record(f"train/{name}", value)
        self._metric_sums, self._metric_counts = {}, {}
        self.logger.dump(step=self.num_timesteps)

    def raise_if_diverged(self, metrics: dict[str, Any], first_step: int) -> None:
        """Raise :class:`TrainingDivergedError` if a step since ``first_step`` met non-finite gradients.

        Such a step was skipped on the device by the gradient scaler (its scale
        halves from 1), so no parameter was updated with it. The error names the
        losses that are not finite in ``metrics`` or in the averages since the last log dump.
        """
        if self._grad_scaler.get_scale() >= 1.0:
            return
        losses = [f"{name} is {float(value)}" for name, value in {**self.metric_means(), **metrics}.items()
                  if name.endswith(("loss", "penalty")) and not math.isfinite(float(value))]
        last = self.num_timesteps + 1
        where = f"at gradient step {last}" if first_step == last else f"in gradient steps {first_step}..{last}"
        raise TrainingDivergedError(
            f"{type(self).__name__}: {', '.join(losses) or 'a gradient is not finite'} {where}; those steps were "
            "skipped, so no parameter was updated with it. Lower the learning rate or check the dataset; "
            "the last saved checkpoint is intact."
        )

    def run_loss(self, loss_fn: Callable[..., Any], *args: Any) -> Any:
        """``loss_fn(*args)`` under bf16 autocast when enabled, and through DistributedDataParallel under torchrun.

        Every loss that :meth:`optimizer_step` backpropagates must be computed here,
        so that DDP all-reduces its gradients.
        """
        dtype = self.autocast_dtype
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            rank = current_rank()
            if rank.world_size == 1:
                return loss_fn(*args)
            if self._data_parallel is None:
                self._data_parallel = data_parallel(self.policy, self.device)  # broadcasts rank 0's parameters
                if rank.rank:  # independent noise draws per rank; rank 0 keeps one process's stream
                    torch.manual_seed(torch.initial_seed() + rank.rank)
            return self._data_parallel(loss_fn, *args)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                       parameters: list[torch.nn.Parameter]) -> torch.Tensor:
        """Backpropagate ``loss``, clip the gradient norm, step; returns the norm before clipping (on the device).

        A step whose gradients are not finite is skipped on the device, without a
        host-device sync; :meth:`raise_if_diverged` reports it.
        """
        optimizer.zero_grad(set_to_none=True)
        self._grad_scaler.scale(loss).backward()
        self._grad_scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(parameters, self.max_grad_norm)
        self._grad_scaler.step(optimizer)
        self._grad_scaler.update()
        return norm.detach()

    def random_state(self) -> dict[str, Any]:
        """The training's random streams (the batch sampler's, the augmentation's, torch's global one, which
        the losses' noise draws from), JSON-serialisable: saved with every model and checkpoint, so that a run
        resumed from one draws the batches and noise an uninterrupted run would have drawn."""
        streams: dict[str, Any] = {"sampler": self._rng.bit_generator.state,
                                   "augmentation": _bytes_text(self._torch_generator.get_state()),
                                   "torch": _bytes_text(torch.get_rng_state())}
        if self.device.type == "cuda":
            streams["cuda"] = _bytes_text(torch.cuda.get_rng_state(self.device))
        return streams

    def set_random_state(self, streams: dict[str, Any]) -> None:
        """Restore what :meth:`random_state` returned (a CUDA stream only onto a CUDA device)."""
        self._rng.bit_generator.state = streams["sampler"]
        self._torch_generator.set_state(_text_bytes(streams["augmentation"]))
        torch.set_rng_state(_text_bytes(streams["torch"]))
        if "cuda" in streams and self.device.type == "cuda":
            torch.cuda.set_rng_state(_text_bytes(streams["cuda"]), self.device)


def _bytes_text(state: torch.Tensor) -> str:
    """A random generator's state (a uint8 tensor) as base64 text, for the model file's JSON."""
    return base64.b64encode(state.numpy().tobytes()).decode("ascii")


def _text_bytes(text: str) -> torch.Tensor:
    """The uint8 tensor that :func:`_bytes_text` encoded."""
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def _to_device(value: Any, device: torch.device, pin: bool = False) -> Any:
    """Arrays and tensors (also inside dicts) on ``device``; ``pin`` copies through pinned memory without blocking."""
    if isinstance(value, dict):
        return {key: _to_device(item, device, pin) for key, item in value.items()}
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        return value
    if pin and not value.is_pinned():
        value = value.pin_memory()
    return value.to(device, non_blocking=pin)
