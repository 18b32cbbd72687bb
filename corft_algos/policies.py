"""The VLA policy: backbone (vision, language, proprio, fusion), action expert and critic expert.

Backbone: every camera image goes through one shared vision tower
(:class:`~corft_algos.networks.vision.VisionEncoder`) pooled to a few tokens
and tagged with a learned camera embedding; the instruction's frozen MiniLM
embedding is projected to one token (which, with ``language_pooling``, also
steers the vision pooling queries towards what the instruction names, and
with ``language_film`` scales and shifts the ResNet tower's channels after
each stage, FiLM as in RT-1), the
normalised proprio state to another; a small transformer fuses them into the
context tokens ``c_t``.
The action expert maps ``c_t`` to a chunk of H actions; the optional critic
expert (two copies, Polyak targets) gives per-prefix Q-values.

Actions are handled in *normalised* units, ``(a - mean) / std`` with the
dataset's statistics (saved with the model), except the binary dimensions
(those whose demonstrated values are all ±1, the gripper), which the action
expert predicts as logits. The critic reads normalised actions; a binary
dimension enters it as ``tanh(logit)``, normalised like the data.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from torch import nn

from corft_algos.networks.experts import ActionExpert, CriticExpert
from corft_algos.networks.language import EMBEDDING_DIM, embed_instructions
from corft_algos.networks.vision import VisionEncoder, build_vision_model, folder_model_config
from corft_envs.instruction_bytes import INSTRUCTION_KEY, decode_instructions
from corft_robots.contract import STATE_DIM

#: The dimensions of corft's state (:data:`corft_robots.contract.STATE_LAYOUT`) the policy reads by default: the
#: TCP height and the gripper opening. With a few demonstrations the full state lets the policy tell the
#: episodes apart and copy them instead of looking at the scene (benchmarks/RESULTS.md).
RECIPE_PROPRIO_DIMS = (2, 7)


@dataclass(frozen=True)
class NormalizationStats:
    """Dataset statistics the policy normalises with; saved with the model.

    :param action_mean: per action dimension.
    :param action_std: per action dimension (floored, > 0).
    :param binary_dims: boolean mask of the binary action dimensions.
    :param state_mean: per proprio dimension.
    :param state_std: per proprio dimension (floored, > 0).
    """

    action_mean: np.ndarray
    action_std: np.ndarray
    binary_dims: np.ndarray
    state_mean: np.ndarray
    state_std: np.ndarray

    @classmethod
    def from_dataset(cls, dataset: Any) -> NormalizationStats:
        """From a :class:`~corft_algos.data.ChunkDataset`'s ``action_stats()`` and ``state_stats()``."""
        actions, states = dataset.action_stats(), dataset.state_stats()
        binary = np.zeros(len(actions["mean"]), dtype=bool)
        binary[np.asarray(actions["binary_dims"], dtype=np.int64)] = True
        return cls(
            action_mean=np.asarray(actions["mean"], np.float32),
            action_std=np.asarray(actions["std"], np.float32),
            binary_dims=binary,
            state_mean=np.asarray(states["mean"], np.float32),
            state_std=np.asarray(states["std"], np.float32),
        )


def image_keys(observation_space: spaces.Dict) -> list[str]:
    """Keys of the ``uint8`` HxWx3 image entries, sorted."""
    return sorted(
        key for key, space in observation_space.spaces.items()
        if isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3
    )


class VLAPolicy(BasePolicy):
    """Vision-language-action policy with an action expert and, optionally, a critic expert.

    :param observation_space: the env's ``Dict`` observation space (images and ``state``; no ``Text``).
    :param action_space: the chunk space ``Box(-1, 1, (H, A))``.
    :param lr_schedule: unused here (the algorithm builds the optimizers); kept for SB3.
    :param normalization: dataset statistics.
    :param instructions: the training instructions; their embeddings are kept in a buffer.
    :param d_model: token width.
    :param vision_model: local directory of a ``transformers`` model replacing the default tower.
    :param vision_model_config: that model's ``transformers`` config as JSON data; read from the folder when
        not given (kept as :attr:`vision_model_config`, which a saved model carries). Given, the tower is built
        from it with a random init and the folder is not read: loading a saved model does this, its state
        dict bringing the weights.
    :param vision_arch: the tower when ``vision_model`` is ``None``: ``"mobilenet_v2"`` (the default;
        ImageNet-pretrained, :mod:`corft_algos.networks.pretrained`), or one built from a config with a random init,
        ``"siglip"`` (a small vision transformer) or ``"resnet"`` (a small ResNet).
    :param vision_config: overrides of the default config fields of ``vision_arch``.
    :param freeze_vision: keep the tower's weights fixed (``None``: frozen for a pretrained ``vision_arch``,
        trained otherwise). A frozen tower's features are computed once per frame and cached in training.
    :param vision_norm: ``"group"`` or ``"batch"``, the normalisation of a convolutional tower built from a
        config (GroupNorm behaves the same in training and evaluation; BatchNorm does not).
    :param vision_tokens: pooled tokens per camera.
    :param language_pooling: add the instruction's token to the vision pooling queries.
    :param language_film: condition the vision features on the instruction's token with FiLM (per-channel
        scale and shift, identity at initialisation): after each stage of a trainable ResNet tower, or after
        the projection of a frozen pretrained tower's feature map (before the spatial softmax, so the
        instruction can choose which keypoints are found); not with other trainable towers. ``None`` (the
        default): on for a frozen tower, off otherwise. Measured on Lift with distractors (1000 episodes):
        the named cube lifted first in 27/30 episodes with it, 15/30 without (benchmarks/RESULTS.md).
    :param vision_pooling: how the tower's features become ``vision_tokens`` tokens: ``"spatial_softmax"``
        (the default; one softmax keypoint per channel of a convolutional feature map, then a linear map; not
        with ``language_pooling``) or ``"attention"`` (learned queries).
    :param center_instructions: standardise instruction embeddings over the training instructions
        (subtract their mean, divide by the RMS norm of the rest) before projecting them: sentence
        embeddings of instructions that differ in one word are nearly parallel, and centring leaves
        what tells them apart.
    :param proprio_dims: the ``state`` dimensions the policy reads (``None``: all; ``[]``: none; ``[7]``:
        the gripper opening; ``"auto"``, the default: :data:`RECIPE_PROPRIO_DIMS`, the TCP height and the
        gripper opening, for corft's 15-D state, else all). With a few demonstrations the full state lets
        the policy tell the episodes apart and copy them instead of looking at the scene.
    :param fusion_layers: layers of the fusion transformer.
    :param heads: attention heads everywhere.
    :param action_layers: decoder layers of the action expert.
    :param with_critic: build the critic expert and the target networks.
    :param critic_layers: transformer layers of each critic copy.
    :param critic_width: token width inside the critic copies.
    :param n_critics: critic copies.
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Box,
        lr_schedule: Any = None,
        normalization: NormalizationStats | None = None,
        instructions: list[str] | tuple[str, ...] = (),
        d_model: int = 128,
        vision_model: str | None = None,
        vision_model_config: dict[str, Any] | None = None,
        vision_arch: str = "mobilenet_v2",
        vision_config: dict[str, Any] | None = None,
        freeze_vision: bool | None = None,
        vision_norm: str = "group",
        vision_tokens: int = 4,
        language_pooling: bool = False,
        language_film: bool | None = None,
        vision_pooling: str = "spatial_softmax",
        center_instructions: bool = False,
        proprio_dims: list[int] | str | None = "auto",
        fusion_layers: int = 2,
        heads: int = 4,
        action_layers: int = 1,
        with_critic: bool = False,
        critic_layers: int = 2,
        critic_width: int = 64,
        n_critics: int = 2,
    ) -> None:
        super().__init__(observation_space, action_space)
        if normalization is None:
            raise ValueError("VLAPolicy needs the dataset's NormalizationStats")
        if language_pooling and vision_pooling == "spatial_softmax":
            raise ValueError("language_pooling steers attention pooling; vision_pooling='spatial_softmax' has no "
                             "queries (condition the tower with language_film instead)")
        _check_sizes(with_critic, d_model=d_model, heads=heads, vision_tokens=vision_tokens,
                     fusion_layers=fusion_layers, action_layers=action_layers, critic_layers=critic_layers,
                     critic_width=critic_width, n_critics=n_critics)
        self.chunk_size, self.action_dim = action_space.shape
        self.normalization = normalization
        self.instructions = list(instructions)
        #: The ``vision_model`` folder's ``transformers`` config (``None`` without one).
        self.vision_model_config = vision_model_config
        if vision_model is not None and vision_model_config is None:
            self.vision_model_config = folder_model_config(vision_model)
        self.arch = dict(d_model=d_model, vision_model=vision_model, vision_model_config=self.vision_model_config,
                         vision_arch=vision_arch, proprio_dims=proprio_dims,
                         vision_config=vision_config, freeze_vision=freeze_vision, vision_norm=vision_norm,
                         vision_tokens=vision_tokens,
                         language_pooling=language_pooling, language_film=language_film,
                         vision_pooling=vision_pooling,
                         center_instructions=center_instructions,
                         fusion_layers=fusion_layers, heads=heads,
                         action_layers=action_layers, with_critic=with_critic,
                         critic_layers=critic_layers, critic_width=critic_width, n_critics=n_critics)

        self.image_keys = image_keys(observation_space)
        full_state_dim = observation_space["state"].shape[0] if "state" in observation_space.spaces else 0
        if proprio_dims == "auto":
            proprio_dims = list(RECIPE_PROPRIO_DIMS) if full_state_dim == STATE_DIM else None
        elif isinstance(proprio_dims, str):
            raise ValueError(f"proprio_dims must be a list of state indices, None (all) or 'auto', got {proprio_dims!r}")
        dims = list(range(full_state_dim)) if proprio_dims is None else [int(d) for d in proprio_dims]
        if any(not 0 <= d < full_state_dim for d in dims):
            raise ValueError(f"proprio_dims must index the {full_state_dim}-D state, got {proprio_dims}")
        self.register_buffer("proprio_index", torch.as_tensor(dims, dtype=torch.long), persistent=False)
        self.state_dim = len(dims)
        self._register_statistics(normalization)
        self.register_buffer("instruction_embeddings", embed_instructions(self.instructions))
        self._register_instruction_standardisation(center_instructions)
        self._instruction_index = {text: i for i, text in enumerate(self.instructions)}

        if self.image_keys:
            image_size = observation_space[self.image_keys[0]].shape[0]
            tower = build_vision_model(vision_model, image_size, vision_config, vision_arch, freeze=freeze_vision,
                                       norm=vision_norm, vision_model_config=vision_model_config)
            if language_film is None:  # on where it leaves the tower (and its feature cache) alone
                language_film = bool(getattr(tower, "frozen", False))
            self.vision = VisionEncoder(tower, image_size, d_model, vision_tokens, heads,
                                        film_dim=d_model if language_film else None, pooling=vision_pooling)
            self.camera_embedding = nn.Parameter(torch.randn(len(self.image_keys), 1, d_model) * 0.02)
        self.language = nn.Linear(EMBEDDING_DIM, d_model)
        self.language_pooling = language_pooling
        self.language_film = bool(language_film) and bool(self.image_keys)
        if self.state_dim:
            self.proprio = nn.Sequential(nn.Linear(self.state_dim, d_model), nn.GELU(), nn.Linear(d_model, d_model))
        self.token_type = nn.Parameter(torch.randn(2, d_model) * 0.02)  # language, proprio
        layer = nn.TransformerEncoderLayer(d_model, heads, 2 * d_model, dropout=0.0, batch_first=True, norm_first=True)
        self.fusion = nn.TransformerEncoder(layer, fusion_layers, enable_nested_tensor=False)
        self.context_tokens = len(self.image_keys) * vision_tokens + 1 + (1 if self.state_dim else 0)

        n_binary = int(normalization.binary_dims.sum())
        self.action_expert = ActionExpert(d_model, self.chunk_size, self.action_dim - n_binary, n_binary,
                                          action_layers, heads)
        if with_critic:
            self.critic = CriticExpert(n_critics, d_model=d_model, context_tokens=self.context_tokens,
                                       chunk_size=self.chunk_size, action_dim=self.action_dim,
                                       width=critic_width, layers=critic_layers, heads=heads)
            self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
            self.actor_target = copy.deepcopy(self.action_expert).requires_grad_(False)

    # ------------------------------------------------------------ parameters
    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Trainable parameters of the vision tower (none when frozen), camera and token embeddings,
        language projection, proprio MLP, fusion."""
        for name, parameter in self.named_parameters():
            if parameter.requires_grad and not name.startswith(("action_expert.", "critic.", "critic_target.",
                                                                "actor_target.")):
                yield parameter

    @property
    def vision_frozen(self) -> bool:
        """Whether the vision tower is frozen, so its features of a frame can be computed once and cached."""
        return bool(self.image_keys) and self.vision.frozen

    @torch.no_grad()
    def vision_features(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen tower's features of ``images`` ``(B, 3, S, S)`` floats in [0, 1] (what a feature cache
        holds per frame and camera)."""
        return self.vision.tower_features(images)

    def actor_parameters(self) -> Iterator[nn.Parameter]:
        return self.action_expert.parameters()

    def critic_parameters(self) -> Iterator[nn.Parameter]:
        return self.critic.parameters()

    # ------------------------------------------------------------- normalisation
    def _register_statistics(self, stats: NormalizationStats) -> None:
        binary = torch.as_tensor(stats.binary_dims, dtype=torch.bool)
        self.register_buffer("action_mean", torch.as_tensor(stats.action_mean, dtype=torch.float32))
        self.register_buffer("action_std", torch.as_tensor(stats.action_std, dtype=torch.float32))
        self.register_buffer("continuous_index", torch.nonzero(~binary).flatten())
        self.register_buffer("binary_index", torch.nonzero(binary).flatten())
        self.register_buffer("state_mean", torch.as_tensor(stats.state_mean, dtype=torch.float32))
        self.register_buffer("state_std", torch.as_tensor(stats.state_std, dtype=torch.float32))

    def _register_instruction_standardisation(self, enabled: bool) -> None:
        """Non-persistent buffers (recomputed from the saved instructions): the embeddings' mean and the
        inverse RMS norm of the centred embeddings; identity when disabled or with one instruction."""
        embeddings = self.instruction_embeddings
        center, scale = torch.zeros(EMBEDDING_DIM), torch.ones(())
        if enabled and len(embeddings) > 1:
            center = embeddings.mean(0)
            scale = (embeddings - center).norm(dim=-1).pow(2).mean().rsqrt()
        self.register_buffer("instruction_center", center, persistent=False)
        self.register_buffer("instruction_scale", scale, persistent=False)

    def normalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Raw actions ``(..., A)`` -> normalised ``(a - mean) / std``."""
        return (actions - self.action_mean) / self.action_std

    def critic_actions(self, continuous: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Action-expert outputs -> the critic's normalised actions ``(B, H, A)`` (differentiable; float32,
        also when the expert ran under bf16 autocast)."""
        actions = continuous.new_zeros(*continuous.shape[:-1], self.action_dim, dtype=torch.float32)
        actions[..., self.continuous_index] = continuous.float()
        binary = torch.tanh(logits)
        actions[..., self.binary_index] = (binary - self.action_mean[self.binary_index]) / self.action_std[self.binary_index]
        return actions

    def raw_actions(self, continuous: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Action-expert outputs -> env actions in [-1, 1]; binary dims are ±1 by the logit's sign."""
        actions = continuous.new_zeros(*continuous.shape[:-1], self.action_dim)
        mean, std = self.action_mean[self.continuous_index], self.action_std[self.continuous_index]
        actions[..., self.continuous_index] = (continuous * std + mean).clamp(-1.0, 1.0)
        actions[..., self.binary_index] = torch.where(logits > 0, 1.0, -1.0)
        return actions

    def imitation_loss(self, continuous: torch.Tensor, logits: torch.Tensor, data_actions: torch.Tensor,
                       valid: torch.Tensor) -> torch.Tensor:
        """Stage-1 loss: MSE on normalised continuous dims + BCE on binary dims, over valid steps.

        ``L = Σ_valid [ ||ĉ - (a_c - μ)/σ||² / Dc + BCE(ℓ, a_b > 0) ] / n_valid``.
        """
        target = self.normalize_actions(data_actions)[..., self.continuous_index]
        weights = valid.float()
        count = weights.sum().clamp(min=1.0)
        loss = (((continuous - target) ** 2).mean(-1) * weights).sum() / count
        if len(self.binary_index):
            labels = (data_actions[..., self.binary_index] > 0).float()
            bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(-1)
            loss = loss + (bce * weights).sum() / count
        return loss

    # ------------------------------------------------------------------- forward
    def instruction_embedding(self, instructions: list[str]) -> torch.Tensor:
        """``(B, 384)`` embeddings; training instructions come from the buffer, others from MiniLM."""
        known = [self._instruction_index.get(text) for text in instructions]
        if all(index is not None for index in known):
            return self.instruction_embeddings[torch.as_tensor(known, dtype=torch.long, device=self.device)]
        return embed_instructions(list(instructions)).to(self.device)

    def encode(self, observation: dict[str, torch.Tensor], instruction_embedding: torch.Tensor,
               images_are_float: bool = False, vision_features: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Backbone: observation tensors (images ``(B, S, S, 3)`` uint8, or ``(B, 3, S, S)`` floats in
        [0, 1] when ``images_are_float``) and instruction embeddings -> context tokens ``(B, L, d)``.

        :param vision_features: per camera key, the frozen tower's features of the images
            (:meth:`vision_features`, e.g. from a feature cache); the images are then not read."""
        language = self.language((instruction_embedding - self.instruction_center) * self.instruction_scale)
        condition = language if self.language_pooling else None
        film = language if self.language_film else None
        tokens = []
        for camera, key in enumerate(self.image_keys):
            if vision_features is not None:
                pooled = self.vision.pool_features(vision_features[key].float(), condition, film)
            else:
                images = observation[key]
                if not images_are_float:
                    images = images.permute(0, 3, 1, 2).float() / 255.0
                pooled = self.vision(images, condition, film)
            tokens.append(pooled + self.camera_embedding[camera])
        tokens.append((language + self.token_type[0]).unsqueeze(1))
        if self.state_dim:
            index = self.proprio_index
            state = (observation["state"].float()[:, index] - self.state_mean[index]) / self.state_std[index]
            tokens.append((self.proprio(state) + self.token_type[1]).unsqueeze(1))
        return self.fusion(torch.cat(tokens, dim=1))

    def _predict(self, observation: dict[str, torch.Tensor], deterministic: bool = True) -> torch.Tensor:
        instruction = observation[INSTRUCTION_KEY]
        context = self.encode(observation, instruction)
        return self.raw_actions(*self.action_expert(context))

    def forward(self, observation: dict[str, torch.Tensor], deterministic: bool = True) -> torch.Tensor:
        return self._predict(observation, deterministic)

    # ------------------------------------------------------------------- predict
    def check_observation(self, observation: dict[str, Any]) -> int | None:
        """Validate an observation; return its batch size, or ``None`` for a single one.

        :raises ValueError: naming the key, the shape received and the shapes accepted.
        """
        if not isinstance(observation, dict):
            raise ValueError(f"observation must be a dict with keys {sorted(self.observation_space.spaces)} "
                             f"and {INSTRUCTION_KEY!r}, got {type(observation).__name__}")
        sizes: dict[str, int | None] = {}
        for key, space in self.observation_space.spaces.items():
            if key not in observation:
                raise ValueError(f"observation is missing key {key!r}; expected keys {sorted(self.observation_space.spaces)}")
            shape = np.shape(observation[key])
            if shape == space.shape:
                sizes[key] = None
            elif shape[1:] == space.shape:
                sizes[key] = shape[0]
            else:
                raise ValueError(f"observation[{key!r}] has shape {shape}; this model expects {space.shape} "
                                 f"or (batch, {', '.join(map(str, space.shape))})")
        if len(set(sizes.values())) > 1:
            raise ValueError(f"observation keys disagree on the batch size (None: a single observation): {sizes}")
        batch = next(iter(sizes.values()))
        instruction = observation.get(INSTRUCTION_KEY)
        if instruction is None:
            raise ValueError(f"observation needs the key {INSTRUCTION_KEY!r} (the language instruction): "
                             "make the env with include_instruction=True or add it to the dict")
        if batch is None and not isinstance(instruction, str):
            raise ValueError(f"observation[{INSTRUCTION_KEY!r}] must be a str for a single observation")
        if batch is not None and (isinstance(instruction, str) or len(instruction) != batch):
            raise ValueError(f"observation[{INSTRUCTION_KEY!r}] must be a list of {batch} str for a batch of {batch}")
        return batch

    def predict(
        self,
        observation: dict[str, Any],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """A chunk ``(H, A)`` for one observation, or ``(B, H, A)`` for a batch.

        The observation dict holds the env's keys plus ``"instruction"`` (a str,
        or a list of str for a batch; or, as :class:`~corft_envs.instruction_bytes.InstructionBytes` gives it
        for stable-baselines3's vectorized envs, the encoded bytes).
        """
        batch, tensors = self.observation_tensors(observation)
        self.set_training_mode(False)
        with torch.no_grad():
            chunk = self._predict(tensors, deterministic).cpu().numpy()
        return (chunk[0] if batch is None else chunk), state

    def observation_tensors(self, observation: dict[str, Any]) -> tuple[int | None, dict[str, torch.Tensor]]:
        """A checked observation (single or batched) as batched tensors on the policy's device, the
        instruction as its embeddings; and the batch size (``None`` for a single observation). An instruction
        encoded as bytes (:class:`~corft_envs.instruction_bytes.InstructionBytes`) is decoded first."""
        encoded = observation.get(INSTRUCTION_KEY) if isinstance(observation, dict) else None
        if isinstance(encoded, np.ndarray) and encoded.dtype == np.uint8:
            observation = {**observation, INSTRUCTION_KEY: decode_instructions(encoded)}
        batch = self.check_observation(observation)
        instructions = [observation[INSTRUCTION_KEY]] if batch is None else list(observation[INSTRUCTION_KEY])
        tensors = {}
        for key in self.observation_space.spaces:
            value = np.asarray(observation[key])
            tensors[key] = torch.as_tensor(value if batch is not None else value[None], device=self.device)
        with torch.no_grad():
            tensors[INSTRUCTION_KEY] = self.instruction_embedding(instructions)
        return batch, tensors

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(normalization=self.normalization, instructions=self.instructions, **self.arch)
        return data


#: Size arguments of :class:`VLAPolicy` and the least value each takes.
_LEAST_SIZES = {"d_model": 1, "heads": 1, "vision_tokens": 1, "fusion_layers": 1, "action_layers": 1,
                "critic_layers": 1, "critic_width": 1, "n_critics": 1}


def _check_sizes(with_critic: bool, **sizes: int) -> None:
    """Refuse sizes torch would fail on deep inside (an assertion, a negative dimension), naming the argument.

    :raises ValueError: for a size below its least value, or a width the attention heads do not divide.
    """
    for name, value in sizes.items():
        if value < _LEAST_SIZES[name]:
            raise ValueError(f"{name} must be at least {_LEAST_SIZES[name]}, got {value}")
    widths = {"d_model": sizes["d_model"], **({"critic_width": sizes["critic_width"]} if with_critic else {})}
    for name, width in widths.items():
        if width % sizes["heads"]:
            raise ValueError(f"{name}={width} must be a multiple of heads={sizes['heads']}: each attention head "
                             f"takes {name} / heads of it")
