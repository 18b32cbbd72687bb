"""What the imports of datasets recorded elsewhere (:mod:`~corft_envs.interop.lerobot_foreign`,
:mod:`~corft_envs.interop.minari_foreign`) share: the cameras' frames made square and of one size, and writing the
converted episodes into a new store."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces

from corft_envs.episode_store import DatasetError, DatasetMeta, EpisodeData, EpisodeWriter
from corft_envs.interop.common import new_output

#: The smallest ``--image-size`` accepted.
MIN_IMAGE_SIZE = 8


def camera_spaces(source: object, shapes: dict[str, tuple[int, int, int]],
                  image_size: int | None) -> dict[str, spaces.Box]:
    """The store's ``uint8`` space of each camera, by key, from its recorded ``(H, W, 3)`` frame shape: ``(S, S, 3)``
    with ``image_size`` S, else the recorded shape, which must then be square and the same for every camera (the
    policy reads square frames of one size).

    :param source: the dataset, for the errors.
    :raises DatasetError: for an ``image_size`` below :data:`MIN_IMAGE_SIZE`, or frames of other shapes without one.
    """
    if image_size is not None and image_size < MIN_IMAGE_SIZE:
        raise DatasetError(f"--image-size must be at least {MIN_IMAGE_SIZE} pixels, got {image_size}")
    if image_size is None and (len(set(shapes.values())) > 1 or any(h != w for h, w, _ in shapes.values())):
        described = ", ".join(f"{h}x{w} ({key})" for key, (h, w, _) in shapes.items())
        raise DatasetError(f"{source}: the cameras' frames are {described}; the policy reads square frames of one "
                           "size: give --image-size N to crop each frame's centre square and resize it to N pixels")
    return {key: spaces.Box(0, 255, (image_size, image_size, 3) if image_size else shape, np.uint8)
            for key, shape in shapes.items()}


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """``(N, H, W, 3)`` ``uint8`` frames cropped to their centre square and resized to ``(N, size, size, 3)``
    (bilinear, antialiased when shrinking)."""
    height, width = frames.shape[1:3]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = torch.from_numpy(np.ascontiguousarray(frames[:, top:top + side, left:left + side]))
    if side == size:
        return square.numpy()
    resized = F.interpolate(square.permute(0, 3, 1, 2).float(), size=(size, size), mode="bilinear",
                            antialias=side > size, align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def write_episodes(out: Path, meta: DatasetMeta, episodes: Iterable[EpisodeData], source: object) -> None:
    """Write ``episodes`` as a new store at ``out`` (new or empty; removed again if a write fails).

    :raises DatasetError: for an episode that does not fit ``meta``'s spaces, or an ``out`` that holds something.
    """
    with new_output(out), EpisodeWriter(out, meta) as writer:
        for episode in episodes:
            try:
                writer.add(episode, keep=True)
            except ValueError as exc:
                raise DatasetError(f"{source}: an episode does not fit the spaces read from the dataset: {exc}") \
                    from exc
