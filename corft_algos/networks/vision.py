"""The vision tower: any ``transformers`` vision model, pooled to a few tokens per camera.

Two towers are built from a config (random init), chosen by ``vision_arch``:
``"siglip"`` (default), a small SigLIP-style vision transformer
(:func:`default_vision_config`), and ``"resnet"``, a small convolutional
``transformers`` ResNet (:func:`default_resnet_config`) whose feature map keeps
the spatial detail of small objects. Any vision or vision-language
model that ``transformers`` loads from a local directory can replace it
(``policy_kwargs={"vision_model": "/path/to/model"}``): for a model with a
``vision_model`` attribute (SigLIP, CLIP, ...) that tower is used; the
token features are read from ``last_hidden_state``, as sequences ``(B, N, D)``
or, for convolutional models, feature maps ``(B, D, h, w)``, which get a
learned position embedding per cell before pooling.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (AutoModel, PretrainedConfig, PreTrainedModel, ResNetConfig, ResNetModel, SiglipVisionConfig,
                          SiglipVisionModel)


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


def load_vision_model(path: str | Path) -> nn.Module:
    """Load a vision (or vision-language) model from a local directory, offline.

    :raises FileNotFoundError: if ``path`` is not a directory.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"vision_model={str(path)!r} is not a directory; pass a local folder saved with save_pretrained() "
            "(models are never downloaded by name)"
        )
    model = AutoModel.from_pretrained(path, local_files_only=True)
    return getattr(model, "vision_model", model)


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


class VisionEncoder(nn.Module):
    """Images -> ``tokens`` pooled tokens of width ``d_model`` (shared across cameras).

    Pixels are scaled to [-1, 1] and resized to the model's input size when it
    has one; the model's token features are projected to ``d_model`` (plus a
    learned position embedding per cell of a convolutional feature map) and
    pooled by cross-attention from ``tokens`` learned queries, to which a
    per-image ``condition`` vector (e.g. the instruction's token) may be added,
    so what is pooled depends on the task.

    :param model: the ``transformers`` vision model (called with ``pixel_values``).
    :param image_size: side of the observation images (px).
    :param d_model: width of the output tokens.
    :param tokens: pooled tokens per image.
    :param heads: attention heads of the pooling.
    """

    def __init__(self, model: nn.Module, image_size: int, d_model: int, tokens: int = 4, heads: int = 4) -> None:
        super().__init__()
        self.model = model
        self.input_size = _model_image_size(model) or image_size
        width, cells = _feature_shape(model, self.input_size)
        self.projection = nn.Linear(width, d_model)
        self.positions = nn.Parameter(torch.randn(cells, d_model) * 0.02) if cells else None
        self.queries = nn.Parameter(torch.randn(tokens, d_model) * 0.02)
        self.pool = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, images: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """:param images: ``(B, 3, S, S)`` floats in [0, 1].
        :param condition: optional ``(B, d_model)``, added to every pooling query.
        :return: ``(B, tokens, d_model)``."""
        pixels = images * 2.0 - 1.0
        if pixels.shape[-1] != self.input_size:
            pixels = F.interpolate(pixels, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        hidden = self.model(pixel_values=pixels).last_hidden_state
        if hidden.dim() == 4:  # convolutional feature map (B, D, h, w)
            hidden = hidden.flatten(2).transpose(1, 2)
        features = self.projection(hidden)
        if self.positions is not None:
            features = features + self.positions
        queries = self.queries.expand(features.shape[0], -1, -1)
        if condition is not None:
            queries = queries + condition.unsqueeze(1)
        pooled, _ = self.pool(queries, features, features, need_weights=False)
        return self.norm(pooled)


def build_vision_model(vision_model: str | Path | None, image_size: int, vision_config: dict | None,
                       vision_arch: str = "siglip") -> nn.Module:
    """A model from a local directory, or the ``vision_arch`` tower built from its default config
    overridden by ``vision_config`` fields.

    :raises ValueError: for an unknown ``vision_arch`` or a ``vision_config`` field its config lacks.
    """
    if vision_model is not None:
        return load_vision_model(vision_model)
    if vision_arch not in VISION_ARCHS:
        raise ValueError(f"vision_arch={vision_arch!r} is unknown; use one of {', '.join(map(repr, VISION_ARCHS))}")
    default_config, model_class = VISION_ARCHS[vision_arch]
    config = default_config(image_size)
    for key, value in (vision_config or {}).items():
        if not hasattr(config, key):
            raise ValueError(f"vision_config has no field {key!r} for vision_arch={vision_arch!r} "
                             f"({type(config).__name__} fields: {', '.join(sorted(config.to_diff_dict()))}, ...)")
        setattr(config, key, value)
    model: PreTrainedModel = model_class(config)
    return model
