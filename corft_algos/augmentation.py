"""Random-shift image augmentation for few-demo visual policies (DrQ's ±4 pixel shifts).

Each image is padded by replicating its border, then a window of the original
size is cut at a random offset ``(dy, dx) ∈ [0, 2·pad]²``: output pixel
``(i, j)`` is padded pixel ``(i + dy, j + dx)``, i.e. input pixel
``(clip(i + dy − pad), clip(j + dx − pad))``. The offsets are drawn apart from
the shift (:func:`random_offsets`), so data-parallel ranks can draw a global
batch's offsets and each shift its own shard.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Largest shift in pixels along each axis.
DEFAULT_PAD = 4


def random_offsets(count: int, pad: int = DEFAULT_PAD, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(count, 2)`` int64 window offsets ``(dy, dx)``, uniform in ``[0, 2·pad]``, on the CPU."""
    return torch.randint(0, 2 * pad + 1, (count, 2), generator=generator)


def shift_images(images: torch.Tensor, offsets: torch.Tensor, pad: int = DEFAULT_PAD) -> torch.Tensor:
    """Shift each image by its window offset (see the module docstring).

    :param images: ``(B, C, H, W)`` floats.
    :param offsets: ``(B, 2)`` integer offsets in ``[0, 2·pad]`` on the images' device.
    :param pad: the padding the offsets were drawn for; 0 returns the images unchanged.
    :return: shifted images, same shape.
    """
    if pad <= 0:
        return images
    batch, _, height, width = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    rows = offsets[:, :1] + torch.arange(height, device=images.device)  # (B, H)
    cols = offsets[:, 1:] + torch.arange(width, device=images.device)  # (B, W)
    index = torch.arange(batch, device=images.device)[:, None, None]
    shifted = padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return shifted.permute(0, 3, 1, 2).contiguous()
