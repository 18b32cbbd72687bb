"""The base class of every corft algorithm: stable-baselines3's ``BaseAlgorithm``, trained offline.

What it adds to SB3 for offline learning from an episode store:

- the spaces come from the dataset (or an env, for spaces only: an offline
  algorithm never steps it); the action space is the chunk ``Box(-1, 1, (H, A))``;
- normalisation statistics and the instruction vocabulary come from the
  dataset and are saved with the model, so a loaded model predicts without it;
- ``learn(total_timesteps)`` counts *gradient steps*; callbacks are called once
  per step; losses, Q statistics and gradient norms go to the SB3 logger;
- a non-finite loss or gradient skips its optimizer step on the device (a
  :class:`~torch.amp.GradScaler` with fused AdamW, so no host-device sync) and
  stops training with :class:`TrainingDivergedError` at the next check (every
  step on CPU, every ``log_interval`` steps on a GPU): no parameter is ever
  updated with it, so every checkpoint stays good;
- bf16 autocast on GPUs (``precision``), pinned-memory batches copied without
  blocking, and metrics kept on the device until the logs are written;
- under ``torchrun``, DistributedDataParallel: each rank trains on its shard
  of the global batch (:mod:`corft_algos.distributed`);
- ``save`` / ``load`` (and ``save_pretrained`` / ``from_pretrained``) use corft's model format
  (:mod:`corft_algos.model_format`): JSON and safetensors, so loading a model never runs code; ``load``
  refuses keyword arguments that conflict with the saved ones and a file saved by another algorithm.

Subclasses set :attr:`algorithm_name`, build their optimizers in
:meth:`_setup_optimizers` (with :meth:`make_optimizer`) and implement one
gradient step in :meth:`train_step`, computing each loss through
:meth:`run_loss` and applying it with :meth:`optimizer_step`.
"""

from __future__ import annotations

import base64
import dataclasses
import math
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.type_aliases import MaybeCallback
from stable_baselines3.common.utils import configure_logger
from tqdm import tqdm

from corft_algos.augmentation import random_offsets, shift_images
from corft_algos.data import ChunkDataset
from corft_algos.distributed import average_over_ranks, current_rank, data_parallel, shard_of
from corft_algos.feature_cache import FeatureCache
from corft_algos.model_format import read_model, restore_model, write_model_zip, write_pretrained
from corft_algos.policies import INSTRUCTION_KEY, NormalizationStats, VLAPolicy
from corft_envs.episode_store import EpisodeSource, store_signatures, space_differences

SelfOfflineAlgorithm = TypeVar("SelfOfflineAlgorithm", bound="OfflineAlgorithm")


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


#: The policy buffers holding :class:`NormalizationStats`' action and state statistics.
NORMALIZATION_BUFFERS = ("action_mean", "action_std", "state_mean", "state_std")


def observation_space_without_text(space: spaces.Dict) -> spaces.Dict:
    """The observation space minus the ``instruction`` Text key (policies take the instruction apart)."""
    return spaces.Dict({key: sub for key, sub in space.spaces.items() if key != INSTRUCTION_KEY})


class OfflineAlgorithm(BaseAlgorithm):
    """Offline algorithm on an episode store, with stable-baselines3's API.

    :param policy: ``"VLAPolicy"`` or a policy class.
    :param dataset: an :class:`EpisodeSource` (one store or several), its directory, or a :class:`ChunkDataset`.
    :param env: optional; only its spaces are used (checked against the dataset's).
    :param chunk_size: H, actions per chunk.
    :param gamma: per-step discount.
    :param batch_size: samples per gradient step.
    :param learning_rate: learning rate of the stage-1 (imitation) optimizer.
    :param image_augmentation: random-shift pixels (±4) when images are encoded with gradients.
    :param max_grad_norm: gradient clipping norm.
    :param feature_cache_views: with a frozen vision tower, cache its features of every frame in this many
        versions (the image and ``views - 1`` randomly shifted copies; :mod:`corft_algos.feature_cache`),
        so training runs at the speed of the heads; 0 runs the tower at every step instead.
    :param num_workers: DataLoader workers (0: sample in the main process).
    :param store_mix: with several stores (``dataset=[target demos, base data]``), each store's share of
        the training draws, e.g. ``(1, 1)``: co-training that keeps a base policy's data in every batch
        (:class:`~corft_algos.data.ChunkDataset`); ``None`` draws in proportion to the stores' sizes.
    :param execute: actions of each predicted chunk run before the next prediction when the model is rolled
        out (``corft eval``, ``corft collect --policy``; receding horizon), saved with the model; ``None``
        runs whole chunks. Default 5 of H = 10: measured better than whole chunks (benchmarks/RESULTS.md).
    :param policy_kwargs: :class:`~corft_algos.policies.VLAPolicy` arguments.
    :param tensorboard_log: folder for TensorBoard logs (``None``: none).
    :param verbose: 0 silent, 1 training logs.
    :param seed: random seed.
    :param device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
    :param precision: ``"auto"`` (bf16 autocast on a CUDA device with bf16 for a policy of at least
        :data:`BF16_MIN_PARAMETERS` parameters, else fp32), ``"bf16"`` or ``"fp32"``.
    """

    algorithm_name: ClassVar[str] = ""
    policy_aliases: ClassVar[dict[str, type[VLAPolicy]]] = {"VLAPolicy": VLAPolicy}
    #: Attributes that a saved model keeps besides its arguments, for resuming (JSON values).
    training_state_attributes: ClassVar[tuple[str, ...]] = ("num_timesteps",)
    #: Whether the policy needs the critic expert.
    uses_critic: ClassVar[bool] = False
    policy: VLAPolicy

    def __init__(
        self,
        policy: str | type[VLAPolicy] = "VLAPolicy",
        dataset: ChunkDataset | EpisodeSource | str | Path | None = None,
        env: gym.Env | None = None,
        chunk_size: int = 10,
        gamma: float = 0.99,
        batch_size: int = 64,
        learning_rate: float = 1e-3,
        image_augmentation: bool = True,
        max_grad_norm: float = 10.0,
        feature_cache_views: int = 3,
        num_workers: int = 0,
        store_mix: Sequence[float] | None = None,
        execute: int | None = 5,
        policy_kwargs: dict[str, Any] | None = None,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        precision: str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r} is unknown; use one of {PRECISIONS}")
        self.precision = precision
        super().__init__(policy=policy, env=None, learning_rate=learning_rate, policy_kwargs=policy_kwargs,
                         tensorboard_log=tensorboard_log, verbose=verbose, device=device, seed=seed)
        self.algorithm_name = type(self).algorithm_name
        if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        self.chunk_size, self.gamma, self.batch_size = int(chunk_size), float(gamma), int(batch_size)
        self.image_augmentation, self.max_grad_norm, self.num_workers = image_augmentation, max_grad_norm, num_workers
        if not isinstance(feature_cache_views, (int, np.integer)) or feature_cache_views < 0:
            raise ValueError(f"feature_cache_views must be an int >= 0, got {feature_cache_views!r}")
        self.feature_cache_views = int(feature_cache_views)
        self.store_mix = None if store_mix is None else [float(share) for share in store_mix]
        if execute is not None and (not isinstance(execute, (int, np.integer)) or execute < 1):
            raise ValueError(f"execute must be a positive int or None (whole chunks), got {execute!r}")
        self.execute = None if execute is None else int(execute)
        self.dataset = dataset
        self._spaces_env = env
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------- setup
    def _prepare_dataset(self) -> None:
        """Turn ``self.dataset`` into a :class:`ChunkDataset` and take spaces and statistics from it.

        For a loaded model, the dataset must match the saved spaces.
        """
        if self.dataset is None:
            if getattr(self, "normalization", None) is None:
                raise ValueError(f"{type(self).__name__} needs a dataset: pass dataset=<episode store directory> "
                                 "(the normalisation statistics and instructions come from it)")
            return
        if not isinstance(self.dataset, ChunkDataset):
            self.dataset = ChunkDataset(self.dataset, chunk_size=self.chunk_size, gamma=self.gamma,
                                        success_oversample=self._success_oversample(),
                                        store_mix=self.store_mix)
        elif self.dataset.chunk_size != self.chunk_size:
            raise ValueError(f"the ChunkDataset has chunk_size={self.dataset.chunk_size}, "
                             f"the algorithm chunk_size={self.chunk_size}")
        observation_space = observation_space_without_text(self.dataset.observation_space)
        step_space = self.dataset.action_space
        if getattr(self, "normalization", None) is not None:  # a loaded model: the data must fit it
            problems = space_differences(self.observation_space, observation_space, "observation space")
            if problems:
                raise ValueError("the dataset does not fit this model: " + "; ".join(problems))
        else:
            self.observation_space = observation_space
            self.action_space = spaces.Box(-1.0, 1.0, (self.chunk_size, *step_space.shape), np.float32)
            self.normalization = NormalizationStats.from_dataset(self.dataset)
            self.instructions = list(self.dataset.instructions)
            self.dataset_env_id = self.dataset.env_id
            self.dataset_env_kwargs = dict(self.dataset.env_kwargs)
            self.dataset_signatures = store_signatures(self.dataset.episodes)
        if self._spaces_env is not None:
            self._check_env_spaces(self._spaces_env)

    def _check_env_spaces(self, env: gym.Env) -> None:
        problems = space_differences(self.observation_space, observation_space_without_text(env.observation_space),
                                     "observation space")
        if problems:
            raise ValueError("the env does not fit the dataset: " + "; ".join(problems))

    def _success_oversample(self) -> float:
        """Oversampling of chunks holding a success step (1 = none); RL algorithms raise it."""
        return 1.0

    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self._prepare_dataset()
        self.set_random_seed(self.seed)
        self.policy = self.policy_class(
            self.observation_space, self.action_space, self.lr_schedule, normalization=self.normalization,
            instructions=self.instructions, with_critic=self.uses_critic, **self.policy_kwargs,
        ).to(self.device)
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
    def learn(
        self: SelfOfflineAlgorithm,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 100,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfOfflineAlgorithm:
        """Train for ``total_timesteps`` gradient steps.

        :param total_timesteps: gradient steps to run (added to the counter when
            ``reset_num_timesteps`` is False, as in SB3).
        :param callback: SB3 callback(s), called once per gradient step.
        :param log_interval: dump the logger every this many steps.
        :param tb_log_name: TensorBoard run name (default: the algorithm's name).
        :param reset_num_timesteps: start counting from 0.
        :param progress_bar: show a tqdm bar over gradient steps (on rank 0 only under torchrun).
        :raises TrainingDivergedError: if a loss or gradient is NaN or infinite (checked every step on
            CPU, every ``log_interval`` steps and at the end on a GPU; the offending steps were skipped).
        """
        self.start_time = time.time_ns()
        if reset_num_timesteps:
            self.num_timesteps = 0
        else:
            total_timesteps += self.num_timesteps
        self._total_timesteps = total_timesteps
        self._num_timesteps_at_start = self.num_timesteps
        if not self._custom_logger:
            self._logger = configure_logger(self.verbose, self.tensorboard_log,
                                            tb_log_name or self.algorithm_name, reset_num_timesteps)
        callbacks = [callback] if isinstance(callback, BaseCallback) else list(callback or [])
        if progress_bar and current_rank().is_main:
            callbacks.append(GradientStepProgressBar())
        callback = self._init_callback(CallbackList(callbacks), progress_bar=False)
        callback.on_training_start(locals(), globals())
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
        return self

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

    # ------------------------------------------------------------- transfer
    def init_from(self, source: OfflineAlgorithm | str | Path, normalization: str = "source") -> list[str]:
        """Copy the weights of another model (e.g. a pretrained base policy) where names and shapes match.

        The policy's instruction embeddings and the state dims it reads stay this
        model's (they describe its dataset); its layers' buffers (BatchNorm's
        running statistics) are copied with their weights.

        :param source: a model, or a model file (:meth:`load`'s; read without running code).
        :param normalization: ``"source"`` (the default) also takes the source's action and state
            statistics, so the model starts out acting exactly as the source does and fine-tuning
            adapts it in the units it was trained in; with this dataset's statistics instead
            (``"dataset"``), every copied layer starts on rescaled inputs and emits rescaled actions.
            (Measured on 30 PickPlace demos from the committed base, one seed: 20/50 against 22/50, no
            difference at that size; benchmarks/RESULTS.md.) The source's are taken only where they
            have the same shapes and binary action dimensions.
        :returns: the names of the tensors copied.
        :raises ValueError: on an unknown ``normalization``, or a model file that cannot be read (damaged, or in
            the old pickle-based format).
        """
        if normalization not in ("source", "dataset"):
            raise ValueError(f"normalization must be 'source' or 'dataset', got {normalization!r}")
        state = source.policy.state_dict() if isinstance(source, OfflineAlgorithm) else read_model(source).policy_state
        own = self.policy.state_dict()
        skipped = {name for name, _ in self.policy.named_buffers(recurse=False)}
        if normalization == "source" and all(name in state and state[name].shape == own[name].shape
                                             for name in NORMALIZATION_BUFFERS) \
                and torch.equal(state["binary_index"].cpu(), own["binary_index"].cpu()):
            skipped -= set(NORMALIZATION_BUFFERS)
        copied = {name: value for name, value in state.items()
                  if name in own and name not in skipped and own[name].shape == value.shape}
        self.policy.load_state_dict(copied, strict=False)
        if NORMALIZATION_BUFFERS[0] in copied:
            self.normalization = self.policy.normalization = dataclasses.replace(
                self.normalization, **{name: copied[name].cpu().numpy() for name in NORMALIZATION_BUFFERS})
        return sorted(copied)

    # ------------------------------------------------------------- save / load
    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        """The modules and optimizers :meth:`get_parameters` and :meth:`set_parameters` cover."""
        return ["policy", *self.optimizer_names()], []

    def save(self, path: str | Path) -> None:  # type: ignore[override]
        """Save the model to one zip in corft's model format (:mod:`corft_algos.model_format`): the arguments,
        spaces, statistics and progress as JSON, the policy's and the optimizers' tensors as safetensors.
        Loading it never runs code. ``.zip`` is appended to a path without a suffix.

        :raises ValueError: if something to save is not a JSON value (e.g. a learning rate given as a function)
            or a ``vision_model`` tower cannot be rebuilt from its config.
        """
        write_model_zip(self, path)

    def save_pretrained(self, folder: str | Path, include_optimizers: bool = False) -> None:
        """Save the model in Hugging Face's layout: ``folder/config.json`` (the zip's ``corft_model.json``) and
        ``folder/model.safetensors`` (the policy), plus the optimizer files if ``include_optimizers``.

        :raises ValueError: as :meth:`save`.
        """
        write_pretrained(self, folder, include_optimizers)

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

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfOfflineAlgorithm],
        path: str | Path,
        env: gym.Env | None = None,
        device: torch.device | str = "auto",
        **kwargs: Any,
    ) -> SelfOfflineAlgorithm:
        """Load a model saved by :meth:`save` (or :meth:`save_pretrained`); ``dataset=...`` attaches training data
        to continue learning. Reads JSON and safetensors only; a file in the old pickle-based format is refused.

        :param env: optional; its spaces are checked against the model's.
        :param kwargs: constructor arguments; each one the file holds must equal the saved value.
        :raises FileNotFoundError: if ``path`` does not exist.
        :raises ValueError: if the file was saved by another algorithm, a keyword argument conflicts with the saved
            value, or the file is damaged, not a corft model, or in the old format
            (:class:`~corft_algos.model_format.ModelFileError`, naming the file).
        """
        path = Path(path)
        if not path.exists() and not path.suffix and path.with_suffix(".zip").is_file():  # as save() names it
            path = path.with_suffix(".zip")
        model = restore_model(cls, read_model(path), device=device, **kwargs)
        if env is not None:
            model._check_env_spaces(env)
        return model

    @classmethod
    def from_pretrained(
        cls: type[SelfOfflineAlgorithm],
        folder: str | Path,
        env: gym.Env | None = None,
        device: torch.device | str = "auto",
        **kwargs: Any,
    ) -> SelfOfflineAlgorithm:
        """Load a model saved by :meth:`save_pretrained`, as :meth:`load` does.

        :raises NotADirectoryError: if ``folder`` is not a folder (a model zip loads with :meth:`load`).
        """
        if not Path(folder).is_dir():
            raise NotADirectoryError(f"{folder} is not a folder written by save_pretrained(); "
                                     f"load a model zip with {cls.__name__}.load")
        return cls.load(folder, env=env, device=device, **kwargs)


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
