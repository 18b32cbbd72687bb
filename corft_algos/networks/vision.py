"""The vision tower: any ``transformers`` vision model, pooled to a few tokens per camera.

Two towers are built from a config (random init), chosen by ``vision_arch``:
``"siglip"`` (default), a small SigLIP-style vision transformer
(:func:`default_vision_config`), and ``"resnet"``, a small convolutional
``transformers`` ResNet (:func:`default_resnet_config`) whose feature map keeps
the spatial detail of small objects. Any vision or vision-language
model that ``transformers`` loads from a local directory can replace it
(``policy_kwargs={"vision_model": "/path/to/model"}``): for a vision-language
model its vision tower is used (:func:`vision_tower_of`: the ``vision_model`` of
SigLIP, CLIP, Idefics3 and SmolVLM, the ``vision_tower`` of PaliGemma); the
token features are read from ``last_hidden_state``, as sequences ``(B, N, D)``
or, for convolutional models, feature maps ``(B, D, h, w)``, which get a
learned position embedding per cell before pooling. A saved model carries the
folder's ``transformers`` config (:func:`folder_model_config`), and loading
rebuilds the tower from it (:func:`vision_model_from_config`) without the folder.

With ``film_dim`` (a trainable ResNet tower), the instruction conditions the
convolutional features *inside* the tower, as in RT-1: after each ResNet
stage every channel is scaled and shifted, ``h <- (1 + gamma(z)) h + beta(z)``,
with ``gamma, beta`` linear in a per-image condition ``z`` (the instruction's
token) and initialised to zero, so the tower starts as the plain one
(:class:`ResNetFiLM`). ``pooling="spatial_softmax"`` replaces the
cross-attention pooling of a feature map by keypoints (:class:`SpatialSoftmax`).
Convolutional towers built from a config use GroupNorm (:func:`replace_batch_norm`).

``vision_arch="mobilenet_v2"`` is a pretrained tower instead: ImageNet
MobileNetV2 truncated to its first blocks
(:class:`~corft_algos.networks.pretrained.PretrainedTower`), frozen by
default, in which case :meth:`VisionEncoder.tower_features` of a frame never
changes and the training code caches it (:mod:`corft_algos.feature_cache`);
FiLM then conditions the projected feature map, after the tower.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import (CONFIG_MAPPING, AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel, ResNetConfig,
                          ResNetModel, SiglipVisionConfig, SiglipVisionModel)

from corft_algos.networks.pretrained import DEFAULT_MOBILENET_LAYERS, PretrainedTower


def default_patch_size(image_size: int) -> int:
    """The largest patch size <= image_size / 6 that divides ``image_size`` (about 6x6 patches)."""
    for patch in range(max(1, image_size // 6), 0, -1):
        if image_size % patch == 0:
            return patch
    return 1


def default_vision_config(image_size: int, hidden_size: int = 128, layers: int = 2, heads: int = 4) -> SiglipVisionConfig:
    """A small SigLIP vision transformer config for ``image_size`` square images."""
    return SiglipVisionConfig(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=image_size,
        patch_size=default_patch_size(image_size),
    )


def default_resnet_config(image_size: int) -> ResNetConfig:
    """A small ResNet config: a stride-4 stem and two basic stages, an ``image_size / 8`` square feature map."""
    return ResNetConfig(embedding_size=16, hidden_sizes=[32, 64], depths=[1, 1], layer_type="basic")


#: ``vision_arch`` name -> (default config builder, model class).
VISION_ARCHS: dict[str, tuple] = {
    "siglip": (default_vision_config, SiglipVisionModel),
    "resnet": (default_resnet_config, ResNetModel),
}


def _model_folder(path: str | Path) -> Path:
    """:raises FileNotFoundError: if ``path`` is not a directory (models are never downloaded by name)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"vision_model={str(path)!r} is not a directory; pass a local folder saved with save_pretrained() "
            "(models are never downloaded by name)"
        )
    return path


#: Where vision-language models keep their vision tower: ``vision_model`` (SigLIP, CLIP, Idefics3, SmolVLM) or
#: ``vision_tower`` (PaliGemma, LLaVA). Called with ``pixel_values`` alone, the whole model wants text tokens too.
VISION_TOWER_ATTRIBUTES = ("vision_model", "vision_tower")


def vision_tower_of(model: nn.Module) -> nn.Module:
    """The vision tower of a vision-language ``model`` (the first of :data:`VISION_TOWER_ATTRIBUTES` it has), or
    ``model`` itself, a vision model."""
    for name in VISION_TOWER_ATTRIBUTES:
        tower = getattr(model, name, None)
        if isinstance(tower, nn.Module):
            return tower
    return model


def load_vision_model(path: str | Path) -> nn.Module:
    """Load a vision (or vision-language) model from a local directory, offline; its vision tower if it has one
    (:func:`vision_tower_of`).

    :raises FileNotFoundError: if ``path`` is not a directory.
    """
    return vision_tower_of(AutoModel.from_pretrained(_model_folder(path), local_files_only=True))


def folder_model_config(path: str | Path) -> dict[str, Any]:
    """The ``transformers`` config of the model in a local directory, as JSON data: what
    :func:`vision_model_from_config` rebuilds that model's architecture from.

    :raises FileNotFoundError: if ``path`` is not a directory.
    """
    config = AutoConfig.from_pretrained(_model_folder(path), local_files_only=True)
    return json.loads(config.to_json_string(use_diff=False))


def vision_model_from_config(config: dict[str, Any]) -> nn.Module:
    """The tower :func:`load_vision_model` gives for a folder with this config, built from the config alone
    (random init: a saved model's state dict brings the weights).

    :param config: a ``transformers`` config as JSON data (:func:`folder_model_config`).
    :raises ValueError: if this ``transformers`` does not know the config's ``model_type``.
    """
    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise ValueError(f"the vision model's config has model_type {model_type!r}, which transformers "
                         f"{transformers.__version__} does not know")
    return vision_tower_of(AutoModel.from_config(CONFIG_MAPPING[model_type].from_dict(config)))


def vision_model_config_problems(config: dict[str, Any], tower: nn.Module) -> list[str]:
    """How the tower :func:`vision_model_from_config` builds from ``config`` differs from ``tower`` (class,
    tensor names, shapes, dtypes); empty when the config rebuilds it. Built on the meta device: no memory,
    no weights."""
    try:
        with torch.device("meta"):
            rebuilt = vision_model_from_config(config)
    except (ValueError, TypeError, KeyError, AttributeError, RuntimeError) as exc:
        return [f"building it from its config fails ({exc})"]
    if type(rebuilt) is not type(tower):
        return [f"its config builds a {type(rebuilt).__name__}, the tower is a {type(tower).__name__}"]
    expected = {name: (tuple(value.shape), value.dtype) for name, value in tower.state_dict().items()}
    built = {name: (tuple(value.shape), value.dtype) for name, value in rebuilt.state_dict().items()}
    problems = [f"{name} missing" for name in sorted(expected.keys() - built.keys())]
    problems += [f"{name} unexpected" for name in sorted(built.keys() - expected.keys())]
    problems += [f"{name} is {built[name]} instead of {expected[name]}"
                 for name in sorted(expected.keys() & built.keys()) if built[name] != expected[name]]
    return problems


def _model_image_size(model: nn.Module) -> int | None:
    config: PretrainedConfig | None = getattr(model, "config", None)
    if config is None:
        return None
    vision_config = getattr(config, "vision_config", config)
    size = getattr(vision_config, "image_size", None)
    return int(size) if isinstance(size, int) else None


def _feature_shape(model: nn.Module, image_size: int) -> tuple[int, int | None]:
    """Width of the model's ``last_hidden_state`` and, for a feature map, its number of cells (else ``None``),
    found with one dummy forward pass (in eval mode, so normalisation statistics are untouched)."""
    training = model.training
    with torch.no_grad():
        hidden = model.eval()(pixel_values=torch.zeros(1, 3, image_size, image_size)).last_hidden_state
    model.train(training)
    if hidden.dim() == 4:
        return int(hidden.shape[1]), int(hidden.shape[2] * hidden.shape[3])
    return int(hidden.shape[-1]), None


def is_resnet(model: nn.Module) -> bool:
    """Whether ``model`` is laid out like ``transformers``' ``ResNetModel`` (an ``embedder`` and ``encoder.stages``)."""
    return hasattr(model, "embedder") and hasattr(getattr(model, "encoder", None), "stages")


class ResNetFiLM(nn.Module):
    """FiLM layers for a ``transformers`` ResNet: runs its embedder and stages, each stage followed by FiLM.

    After stage ``i`` (``C_i`` channels) the feature map becomes
    ``(1 + gamma_i(z)) * h + beta_i(z)`` with ``[gamma_i, beta_i] = W_i z + b_i``
    per channel. ``W_i`` and ``b_i`` start at zero, so at initialisation the
    output equals the plain ResNet's for any condition (and gradients still
    reach ``W_i`` through ``z``). Only the FiLM layers are held here; the
    ResNet is passed to :meth:`forward` (it stays registered with its owner).

    :param model: the ResNet (``ResNetModel``, or any model with its ``embedder``, ``encoder.stages`` and
        ``config.hidden_sizes``).
    :param condition_dim: width of the condition vectors.
    :raises ValueError: if ``model`` is not a ResNet.
    """

    def __init__(self, model: nn.Module, condition_dim: int) -> None:
        super().__init__()
        if not is_resnet(model):
            raise ValueError("language_film needs a ResNet vision tower (vision_arch='resnet'), "
                             f"got {type(model).__name__}")
        self.layers = nn.ModuleList()
        for channels in model.config.hidden_sizes[:len(model.encoder.stages)]:
            layer = nn.Linear(condition_dim, 2 * channels)
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
            self.layers.append(layer)

    def forward(self, model: nn.Module, pixel_values: torch.Tensor,
                condition: torch.Tensor | None = None) -> torch.Tensor:
        """:param model: the ResNet these layers were built for.
        :param pixel_values: ``(B, 3, S, S)`` in the model's input range.
        :param condition: ``(B, condition_dim)``; ``None`` skips FiLM (the plain ResNet).
        :return: the last feature map ``(B, C, h, w)``."""
        hidden = model.embedder(pixel_values)
        for stage, layer in zip(model.encoder.stages, self.layers):
            hidden = stage(hidden)
            if condition is not None:
                gamma, beta = layer(condition)[:, :, None, None].chunk(2, dim=1)
                hidden = hidden * (1.0 + gamma) + beta
        return hidden


class SpatialSoftmax(nn.Module):
    """Feature map ``(B, C, h, w)`` -> keypoints ``(B, C, 2)``: per channel, the mean ``(x, y)`` cell position
    in [-1, 1] under the softmax of its activations over the cells (Levine et al., 2016), with a learned
    temperature."""

    def __init__(self) -> None:
        super().__init__()
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        height, width = features.shape[-2:]
        weights = torch.softmax(features.flatten(2) * torch.exp(-self.log_temperature), dim=-1)  # (B, C, h*w)
        ys, xs = torch.meshgrid(torch.linspace(-1.0, 1.0, height, device=features.device),
                                torch.linspace(-1.0, 1.0, width, device=features.device), indexing="ij")
        grid = torch.stack([xs.flatten(), ys.flatten()], dim=-1).to(features.dtype)  # (h*w, 2)
        return weights @ grid


#: ``pooling`` names of :class:`VisionEncoder`.
POOLINGS = ("attention", "spatial_softmax")


class VisionEncoder(nn.Module):
    """Images -> ``tokens`` pooled tokens of width ``d_model`` (shared across cameras).

    Pixels are scaled to [-1, 1] and resized to the model's input size when it
    has one; the model's token features are projected to ``d_model`` (plus a
    learned position embedding per cell of a convolutional feature map) and
    pooled by cross-attention from ``tokens`` learned queries, to which a
    per-image ``condition`` vector (e.g. the instruction's token) may be added,
    so what is pooled depends on the task. With ``film_dim`` a per-image
    ``film`` vector also modulates the ResNet's stages (:class:`ResNetFiLM`),
    so what is *seen* depends on the task; on a frozen tower it scales and
    shifts the projected feature map instead (zero-initialised, as there), so
    the tower's output and its feature cache stay valid. With ``pooling="spatial_softmax"``
    (feature maps only) the projected feature map is reduced to one keypoint
    per channel (:class:`SpatialSoftmax`) and the keypoints are mapped to the
    ``tokens`` tokens by a linear layer; ``condition`` is then not accepted.

    :param model: the ``transformers`` vision model (called with ``pixel_values``).
    :param image_size: side of the observation images (px).
    :param d_model: width of the output tokens.
    :param tokens: pooled tokens per image.
    :param heads: attention heads of the pooling.
    :param film_dim: width of the FiLM condition; ``None`` (default): no FiLM.
    :param pooling: ``"attention"`` (default) or ``"spatial_softmax"``.
    :raises ValueError: if ``film_dim`` is given and ``model`` is neither a ResNet nor frozen, for an unknown
        ``pooling``, or for ``"spatial_softmax"`` on a model without a feature map.
    """

    def __init__(self, model: nn.Module, image_size: int, d_model: int, tokens: int = 4, heads: int = 4,
                 film_dim: int | None = None, pooling: str = "attention") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"vision_pooling={pooling!r} is unknown; use one of {', '.join(map(repr, POOLINGS))}")
        self.model = model
        frozen = bool(getattr(model, "frozen", False))
        # A frozen tower keeps its output (and its feature cache): FiLM then modulates the projected feature map.
        self.film = ResNetFiLM(model, film_dim) if film_dim is not None and not frozen else None
        self.output_film = nn.Linear(film_dim, 2 * d_model) if film_dim is not None and frozen else None
        if self.output_film is not None:
            nn.init.zeros_(self.output_film.weight)
            nn.init.zeros_(self.output_film.bias)
        self.input_size = _model_image_size(model) or image_size
        width, cells = _feature_shape(model, self.input_size)
        self.projection = nn.Linear(width, d_model)
        self.tokens, self.d_model = tokens, d_model
        if pooling == "spatial_softmax":
            if cells is None:
                raise ValueError("vision_pooling='spatial_softmax' needs a convolutional tower (a feature map), "
                                 f"got {type(model).__name__}")
            self.keypoints = SpatialSoftmax()
            self.keypoint_tokens = nn.Linear(2 * d_model, tokens * d_model)
            self.positions = self.queries = self.pool = None
        else:
            self.keypoints = self.keypoint_tokens = None
            self.positions = nn.Parameter(torch.randn(cells, d_model) * 0.02) if cells else None
            self.queries = nn.Parameter(torch.randn(tokens, d_model) * 0.02)
            self.pool = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.norm = nn.LayerNorm(d_model)

    def _projected(self, hidden: torch.Tensor, film: torch.Tensor | None) -> torch.Tensor:
        """Tower features projected to ``d_model`` channels, ``(B, d_model, h, w)`` for a feature map or
        ``(B, N, d_model)``; with :attr:`output_film`, scaled and shifted per channel by the condition."""
        if hidden.dim() == 4:
            features = self.projection(hidden.permute(0, 2, 3, 1))  # (B, h, w, d_model)
        else:
            features = self.projection(hidden)  # (B, N, d_model)
        if self.output_film is not None and film is not None:
            gamma, beta = self.output_film(film).chunk(2, dim=-1)
            shape = (len(film), *([1] * (features.dim() - 2)), -1)
            features = features * (1.0 + gamma.view(shape)) + beta.view(shape)
        return features.permute(0, 3, 1, 2) if hidden.dim() == 4 else features

    def tower_features(self, images: torch.Tensor, film: torch.Tensor | None = None) -> torch.Tensor:
        """The tower's output for ``images`` ``(B, 3, S, S)`` floats in [0, 1]: a feature map ``(B, D, h, w)``
        or token features ``(B, N, D)``; what :meth:`pool_features` pools, and what a feature cache stores for a
        frozen tower.

        :raises ValueError: if ``film`` is given to an encoder built without ``film_dim``."""
        pixels = images * 2.0 - 1.0
        if pixels.shape[-1] != self.input_size:
            pixels = F.interpolate(pixels, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        if film is not None and self.film is None:
            raise ValueError("a FiLM condition was given to a VisionEncoder built without film_dim for the tower's "
                             "stages (a frozen tower takes it in pool_features)")
        if self.film is not None:
            return self.film(self.model, pixels, film)
        return self.model(pixel_values=pixels).last_hidden_state

    def pool_features(self, hidden: torch.Tensor, condition: torch.Tensor | None = None,
                      film: torch.Tensor | None = None) -> torch.Tensor:
        """Tower features (:meth:`tower_features`) -> ``(B, tokens, d_model)``.

        :param condition: optional ``(B, d_model)``, added to every pooling query.
        :param film: optional ``(B, film_dim)``: on a frozen tower, the FiLM condition of the projected
            feature map (ignored otherwise: the tower's stages took it).
        :raises ValueError: if ``condition`` is given to an encoder with spatial-softmax pooling, or ``film``
            to one built without ``film_dim``."""
        if film is not None and self.film is None and self.output_film is None:
            raise ValueError("a FiLM condition was given to a VisionEncoder built without film_dim")
        features = self._projected(hidden, film)
        if self.keypoints is not None:
            if condition is not None:
                raise ValueError("spatial-softmax pooling takes no condition (language_pooling); use FiLM")
            keypoints = self.keypoints(features).flatten(1)  # (B, 2 * d_model)
            return self.norm(self.keypoint_tokens(keypoints).view(-1, self.tokens, self.d_model))
        if features.dim() == 4:  # convolutional feature map (B, d_model, h, w)
            features = features.flatten(2).transpose(1, 2)
        if self.positions is not None:
            features = features + self.positions
        queries = self.queries.expand(features.shape[0], -1, -1)
        if condition is not None:
            queries = queries + condition.unsqueeze(1)
        pooled, _ = self.pool(queries, features, features, need_weights=False)
        return self.norm(pooled)

    def forward(self, images: torch.Tensor, condition: torch.Tensor | None = None,
                film: torch.Tensor | None = None) -> torch.Tensor:
        """:param images: ``(B, 3, S, S)`` floats in [0, 1].
        :param condition: optional ``(B, d_model)``, added to every pooling query.
        :param film: optional ``(B, film_dim)``, the FiLM condition of the ResNet stages (needs
            ``film_dim``).
        :return: ``(B, tokens, d_model)``.
        :raises ValueError: if ``film`` is given to an encoder built without ``film_dim``, or ``condition`` to
            one with spatial-softmax pooling."""
        stage_film = film if self.film is not None else None
        return self.pool_features(self.tower_features(images, stage_film), condition, film)

    @property
    def frozen(self) -> bool:
        """Whether the tower is a frozen pretrained network (its features can be computed once per frame)."""
        return bool(getattr(self.model, "frozen", False))


#: ``vision_norm`` names: how a convolutional tower trained from scratch normalises its activations.
VISION_NORMS = ("group", "batch")
#: Towers that load pretrained weights instead of a random init (``vision_config``: ``{"layers": n}``).
PRETRAINED_ARCHS = ("mobilenet_v2",)


def replace_batch_norm(model: nn.Module, max_groups: int = 8) -> nn.Module:
    """Swap every ``BatchNorm2d`` of ``model`` for a ``GroupNorm`` over the same channels, in place.

    GroupNorm normalises each image by itself, so a tower trained in train mode sees the same statistics
    in evaluation mode (BatchNorm's batch statistics and running averages differ, and with a few dozen
    demonstrations they differ a lot); Diffusion Policy and robomimic do the same. The number of groups
    is the largest divisor of the channel count up to ``max_groups``.
    """
    for name, child in model.named_children():
        if isinstance(child, nn.BatchNorm2d):
            channels = child.num_features
            groups = max(g for g in range(1, max_groups + 1) if channels % g == 0)
            setattr(model, name, nn.GroupNorm(groups, channels))
        else:
            replace_batch_norm(child, max_groups)
    return model


def build_vision_model(vision_model: str | Path | None, image_size: int, vision_config: dict | None,
                       vision_arch: str = "siglip", freeze: bool | None = None, norm: str = "group",
                       vision_model_config: dict[str, Any] | None = None) -> nn.Module:
    """A model from a local directory, the pretrained ``vision_arch`` tower, or the ``vision_arch`` tower
    built from its default config overridden by ``vision_config`` fields.

    :param freeze: keep a pretrained tower's weights fixed (``None``: frozen for :data:`PRETRAINED_ARCHS`);
        only pretrained towers can be frozen.
    :param norm: ``"group"`` (default) or ``"batch"``: the normalisation of a convolutional tower built
        from a config (:func:`replace_batch_norm`); a pretrained tower keeps its own.
    :param vision_model_config: the ``vision_model`` folder's config (:func:`folder_model_config`): the tower
        is built from it (:func:`vision_model_from_config`) and the folder is not read.
    :raises ValueError: for an unknown ``vision_arch`` or ``norm``, a ``vision_config`` field its config
        lacks, ``freeze=True`` with a tower trained from scratch, or ``vision_model_config`` without
        ``vision_model``.
    """
    if norm not in VISION_NORMS:
        raise ValueError(f"vision_norm={norm!r} is unknown; use one of {', '.join(map(repr, VISION_NORMS))}")
    if vision_model_config is not None and vision_model is None:
        raise ValueError("vision_model_config describes the model of a vision_model folder; give vision_model too")
    if vision_model is not None:
        if freeze:
            raise ValueError("freeze_vision=True is for vision_arch='mobilenet_v2'; a vision_model folder fine-tunes")
        if vision_model_config is not None:
            return vision_model_from_config(vision_model_config)
        return load_vision_model(vision_model)
    if vision_arch in PRETRAINED_ARCHS:
        unknown = set(vision_config or {}) - {"layers"}
        if unknown:
            raise ValueError(f"vision_config has no field {sorted(unknown)[0]!r} for vision_arch={vision_arch!r} "
                             "(its one field: 'layers', the MobileNetV2 blocks kept, 1..19)")
        layers = (vision_config or {}).get("layers", DEFAULT_MOBILENET_LAYERS)
        return PretrainedTower(layers, frozen=True if freeze is None else bool(freeze))
    if freeze:
        raise ValueError(f"freeze_vision=True needs a pretrained tower ({', '.join(PRETRAINED_ARCHS)}); "
                         f"vision_arch={vision_arch!r} starts from a random init")
    if vision_arch not in VISION_ARCHS:
        names = (*VISION_ARCHS, *PRETRAINED_ARCHS)
        raise ValueError(f"vision_arch={vision_arch!r} is unknown; use one of {', '.join(map(repr, names))}")
    default_config, model_class = VISION_ARCHS[vision_arch]
    config = default_config(image_size)
    for key, value in (vision_config or {}).items():
        if not hasattr(config, key):
            raise ValueError(f"vision_config has no field {key!r} for vision_arch={vision_arch!r} "
                             f"({type(config).__name__} fields: {', '.join(sorted(config.to_diff_dict()))}, ...)")
        setattr(config, key, value)
    model: PreTrainedModel = model_class(config)
    return replace_batch_norm(model) if norm == "group" else model
