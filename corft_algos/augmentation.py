"""Image augmentation for few-demo visual policies."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(images: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image by a random integer offset in ``[-pad, pad]`` pixels per axis.

    The image is padded by replicating its border, then a window of the
    original size is cut at a random offset, independently per image.

    :param images: ``(B, C, H, W)`` floats.
    :param pad: largest shift in pixels.
    :param generator: torch random generator (for reproducibility).
    :return: shifted images, same shape.
    """
    if pad <= 0:
        return images
    batch, _, height, width = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    offsets = torch.randint(0, 2 * pad + 1, (batch, 2), generator=generator).to(images.device)
    rows = offsets[:, :1] + torch.arange(height, device=images.device)  # (B, H)
    cols = offsets[:, 1:] + torch.arange(width, device=images.device)  # (B, W)
    index = torch.arange(batch, device=images.device)[:, None, None]
    shifted = padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return shifted.permute(0, 3, 1, 2).contiguous()
