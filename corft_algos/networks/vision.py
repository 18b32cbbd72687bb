"""The vision tower: any ``transformers`` vision model, pooled to a few tokens per camera.

By default a small SigLIP-style vision transformer is built from a config
(random init, :func:`default_vision_config`). Any vision or vision-language
model that ``transformers`` loads from a local directory can replace it
(``policy_kwargs={"vision_model": "/path/to/model"}``): for a model with a
``vision_model`` attribute (SigLIP, CLIP, ...) that tower is used; the
token features are read from ``last_hidden_state``, as sequences ``(B, N, D)``
or, for convolutional models, feature maps ``(B, D, h, w)``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PretrainedConfig, PreTrainedModel, SiglipVisionConfig, SiglipVisionModel


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


def _model_width(model: nn.Module, image_size: int) -> int:
    """Feature width of the model's ``last_hidden_state``, found with one dummy forward pass."""
    with torch.no_grad():
        hidden = model(pixel_values=torch.zeros(1, 3, image_size, image_size)).last_hidden_state
    return int(hidden.shape[1] if hidden.dim() == 4 else hidden.shape[-1])


class VisionEncoder(nn.Module):
    """Images -> ``tokens`` pooled tokens of width ``d_model`` (shared across cameras).

    Pixels are scaled to [-1, 1] and resized to the model's input size when it
    has one; the model's token features are projected to ``d_model`` and pooled
    by cross-attention from ``tokens`` learned queries.

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
        self.projection = nn.Linear(_model_width(model, self.input_size), d_model)
        self.queries = nn.Parameter(torch.randn(tokens, d_model) * 0.02)
        self.pool = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """:param images: ``(B, 3, S, S)`` floats in [0, 1]. :return: ``(B, tokens, d_model)``."""
        pixels = images * 2.0 - 1.0
        if pixels.shape[-1] != self.input_size:
            pixels = F.interpolate(pixels, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        hidden = self.model(pixel_values=pixels).last_hidden_state
        if hidden.dim() == 4:  # convolutional feature map (B, D, h, w)
            hidden = hidden.flatten(2).transpose(1, 2)
        features = self.projection(hidden)
        queries = self.queries.expand(features.shape[0], -1, -1)
        pooled, _ = self.pool(queries, features, features, need_weights=False)
        return self.norm(pooled)


def build_vision_model(vision_model: str | Path | None, image_size: int, vision_config: dict | None) -> nn.Module:
    """The default SigLIP tower (overridable by ``vision_config`` fields) or a model from a local directory."""
    if vision_model is not None:
        return load_vision_model(vision_model)
    config = default_vision_config(image_size)
    for key, value in (vision_config or {}).items():
        if not hasattr(config, key):
            raise ValueError(f"vision_config has no field {key!r} (SiglipVisionConfig fields: hidden_size, "
                             "num_hidden_layers, num_attention_heads, patch_size, intermediate_size, ...)")
        setattr(config, key, value)
    model: PreTrainedModel = SiglipVisionModel(config)
    return model
