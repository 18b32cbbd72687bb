"""The base class of every corft algorithm: stable-baselines3's ``BaseAlgorithm``, trained offline.

This module is the SB3-compatible facade users see (``learn`` / ``predict`` / ``save`` / ``load``); the
training loop under ``learn`` is :class:`~corft_algos.common.trainer.OfflineTrainer`
(:mod:`corft_algos.common.trainer`). What it adds to SB3 for offline learning from an episode store:

- the spaces come from the dataset (or an env, for spaces only: an offline
  algorithm never steps it); the action space is the chunk ``Box(-1, 1, (H, A))``;
- normalisation statistics and the instruction vocabulary come from the
  dataset and are saved with the model, so a loaded model predicts without it;
- ``learn(total_timesteps)`` counts *gradient steps*; callbacks are called once
  per step; losses, Q statistics and gradient norms go to the SB3 logger;
  a non-finite loss or gradient stops training with :class:`TrainingDivergedError`,
  no parameter updated with it;
- ``save`` / ``load`` (and ``save_pretrained`` / ``from_pretrained``) use corft's model format
  (:mod:`corft_algos.model_format`): JSON and safetensors, so loading a model never runs code; ``load``
  refuses keyword arguments that conflict with the saved ones and a file saved by another algorithm.

Subclasses set :attr:`algorithm_name`, build their optimizers in
:meth:`_setup_optimizers` (with :meth:`make_optimizer`) and implement one
gradient step in :meth:`train_step`, computing each loss through
:meth:`run_loss` and applying it with :meth:`optimizer_step`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
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

from corft_algos.common.trainer import (PRECISIONS, GradientStepProgressBar, OfflineTrainer,
                                        TrainingDivergedError)
from corft_algos.data import ChunkDataset
from corft_algos.distributed import current_rank
from corft_algos.model_format import read_model, restore_model, write_model_zip, write_pretrained
from corft_algos.policies import INSTRUCTION_KEY, NormalizationStats, VLAPolicy
from corft_envs.chunking import check_chunk_settings
from corft_envs.episode_store import EpisodeSource, store_signatures, space_differences
from corft_robots.extras import import_optional

# TrainingDivergedError and PRECISIONS are the trainer's; users import them from here.
__all__ = ["NORMALIZATION_BUFFERS", "PRECISIONS", "OfflineAlgorithm", "TrainingDivergedError",
           "observation_space_without_text"]

SelfOfflineAlgorithm = TypeVar("SelfOfflineAlgorithm", bound="OfflineAlgorithm")


#: The policy buffers holding :class:`NormalizationStats`' action and state statistics.
NORMALIZATION_BUFFERS = ("action_mean", "action_std", "state_mean", "state_std")


def observation_space_without_text(space: spaces.Dict) -> spaces.Dict:
    """The observation space minus the ``instruction`` Text key (policies take the instruction apart)."""
    return spaces.Dict({key: sub for key, sub in space.spaces.items() if key != INSTRUCTION_KEY})


class OfflineAlgorithm(OfflineTrainer, BaseAlgorithm):
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
        runs whole chunks. Default 3 of H = 10: 5 was better than whole chunks, and 3 better than 5 at train
        positions (+6.4 points [+1.2, +12.0], 5 training seeds x 50 paired episodes; as good unseen;
        benchmarks/RESULTS.md).
    :param policy_kwargs: :class:`~corft_algos.policies.VLAPolicy` arguments.
    :param tensorboard_log: folder for TensorBoard logs (``None``: none; needs corft's ``tb`` extra).
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
        execute: int | None = 3,
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
        if tensorboard_log is not None:
            import_optional("tensorboard", "tb", "tensorboard_log")
        super().__init__(policy=policy, env=None, learning_rate=learning_rate, policy_kwargs=policy_kwargs,
                         tensorboard_log=tensorboard_log, verbose=verbose, device=device, seed=seed)
        self.algorithm_name = type(self).algorithm_name
        check_chunk_settings(chunk_size, gamma)
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
                                        store_mix=self.store_mix, step_cost=self._step_cost())
        elif self.dataset.chunk_size != self.chunk_size:
            raise ValueError(f"the ChunkDataset has chunk_size={self.dataset.chunk_size}, "
                             f"the algorithm chunk_size={self.chunk_size}")
        elif self.dataset.step_cost != self._step_cost():
            raise ValueError(f"the ChunkDataset has step_cost={self.dataset.step_cost}, the algorithm "
                             f"step_cost={self._step_cost()}: pass the episode store instead, or the same cost")
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

    def _step_cost(self) -> float:
        """Cost subtracted from every step's reward (0: the stored rewards); only a critic reads rewards."""
        return 0.0

    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self._prepare_dataset()
        self.set_random_seed(self.seed)
        self.policy = self.policy_class(
            self.observation_space, self.action_space, self.lr_schedule, normalization=self.normalization,
            instructions=self.instructions, with_critic=self.uses_critic, **self.policy_kwargs,
        ).to(self.device)
        self._setup_trainer()

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
        self._run_gradient_steps(total_timesteps, callback, log_interval)
        return self

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
