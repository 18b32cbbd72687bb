"""Labelled episode videos: every camera side by side, upscaled to a readable size, with the episode's title,
its instruction and each frame's step, reward and success drawn beneath; title cards; writing an mp4.

What ``corft view`` (a recorded episode store, :mod:`corft_algos.store_view`) and ``corft eval --video`` (the
episodes of an evaluation, :class:`~corft_algos.evaluation.video.FrameRecorder`) share: both describe an episode
as an :class:`EpisodeClip` and turn it into frames with :func:`clip_frames`.
"""

from __future__ import annotations

import errno
import functools
import math
import os
import string
import textwrap
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
from gymnasium import spaces

from corft_algos.policies import image_keys
from corft_robots.contract import CONTROL_HZ
from corft_robots.extras import import_optional

if TYPE_CHECKING:
    from PIL import Image, ImageFont

#: Each camera is upscaled by a whole factor (nearest neighbour) to at least this side (px).
MIN_CAMERA_SIDE = 384
#: Lines of the instruction kept beneath the cameras; a longer one ends in "...".
INSTRUCTION_LINES = 3
FONT_SIZE = 16
LINE_HEIGHT = 20
MARGIN = 8
BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
SUCCESS = (80, 220, 100)
FAILURE = (170, 170, 170)


def camera_keys(observation_space: spaces.Dict) -> dict[str, str]:
    """Camera name -> observation key of every camera image (``"front"`` -> ``"image_front"``), sorted."""
    return {key.removeprefix("image_"): key for key in image_keys(observation_space)}


@dataclass(frozen=True)
class EpisodeClip:
    """One episode as a labelled video shows it.

    :param title: what names the episode, e.g. ``"episode 3 of 10, seed 5"``.
    :param instruction: the episode's language instruction.
    :param cameras: camera name -> its ``T + 1`` images (after the reset, then after each step), ``uint8``
        ``(S, S, 3)``, every camera the same side; arrays, lists or lazily read views.
    :param rewards: the ``T`` rewards.
    :param successes: the ``T`` ``is_success`` flags.
    """

    title: str
    instruction: str
    cameras: Mapping[str, Sequence[np.ndarray]]
    rewards: Sequence[float]
    successes: Sequence[bool]

    def __post_init__(self) -> None:
        if not self.cameras:
            raise ValueError("an episode clip needs at least one camera")
        steps = len(self.rewards)
        if len(self.successes) != steps:
            raise ValueError(f"{steps} rewards but {len(self.successes)} success flags")
        for name, images in self.cameras.items():
            if len(images) != steps + 1:
                raise ValueError(f"camera {name!r} has {len(images)} images, expected {steps + 1} (one per step "
                                 "and the reset's)")

    @property
    def steps(self) -> int:
        """Number of steps ``T``; the clip has ``T + 1`` frames."""
        return len(self.rewards)

    def layout(self) -> FrameLayout:
        """The :class:`FrameLayout` of this clip's cameras."""
        first = next(iter(self.cameras.values()))[0]
        return FrameLayout(cameras=tuple(self.cameras), side=int(first.shape[0]))


@dataclass(frozen=True)
class FrameLayout:
    """Where everything lies in a labelled frame: a strip of camera names, the cameras side by side, each
    upscaled by :attr:`scale`, and a text panel beneath (title, instruction, step line).

    :param cameras: the camera names, left to right.
    :param side: the side of the recorded images (px).
    """

    cameras: tuple[str, ...]
    side: int

    @property
    def scale(self) -> int:
        """The whole factor each recorded pixel is repeated by, to reach :data:`MIN_CAMERA_SIDE`."""
        return max(1, math.ceil(MIN_CAMERA_SIDE / self.side))

    @property
    def camera_side(self) -> int:
        """The side of an upscaled camera image (px)."""
        return self.side * self.scale

    @property
    def camera_top(self) -> int:
        """The first row of the cameras, beneath the strip of camera names."""
        return LINE_HEIGHT + MARGIN

    @property
    def panel_top(self) -> int:
        """The first row of the text panel."""
        return self.camera_top + self.camera_side

    @property
    def width(self) -> int:
        """The frame's width (px)."""
        return self.camera_side * len(self.cameras)

    @property
    def height(self) -> int:
        """The frame's height (px): names, cameras, and the title, instruction and step lines."""
        return self.panel_top + 2 * MARGIN + (2 + INSTRUCTION_LINES) * LINE_HEIGHT

    def camera_box(self, index: int) -> tuple[slice, slice]:
        """Rows and columns of camera ``index``'s upscaled image in a frame."""
        left = index * self.camera_side
        return (slice(self.camera_top, self.panel_top), slice(left, left + self.camera_side))

    def blank(self) -> Image.Image:
        """An empty frame of this layout."""
        return _pillow("Image").new("RGB", (self.width, self.height), BACKGROUND)


@functools.cache
def _pillow(module: str) -> ModuleType:
    """``PIL.<module>``: Pillow draws the labels (corft's ``video`` extra).

    :raises MissingExtraError: if Pillow is not installed.
    """
    return import_optional(f"PIL.{module}", "video", "drawing labelled video frames")


@functools.cache
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font at :data:`FONT_SIZE`."""
    return _pillow("ImageFont").load_default(size=FONT_SIZE)


def _wrap(text: str, width: int, lines: int) -> list[str]:
    """``text`` in at most ``lines`` lines that fit ``width`` pixels, the last ending in "..." if cut."""
    room = width - 2 * MARGIN
    chars = int(room / (_font().getlength(string.ascii_lowercase + " ") / 27))
    while True:
        wrapped = textwrap.wrap(text, chars, max_lines=lines, placeholder=" ...") or [""]
        if chars <= 8 or all(_font().getlength(line) <= room for line in wrapped):
            return wrapped
        chars -= 1


def title_card(layout: FrameLayout, lines: Sequence[str]) -> np.ndarray:
    """A frame of ``layout``'s size holding ``lines`` (each wrapped to the width), e.g. between episodes."""
    image = layout.blank()
    draw = _pillow("ImageDraw").Draw(image)
    wrapped = [part for line in lines for part in _wrap(line, layout.width, INSTRUCTION_LINES)]
    top = max(MARGIN, (layout.height - len(wrapped) * LINE_HEIGHT) // 2)
    for k, line in enumerate(wrapped):
        draw.text((2 * MARGIN, top + k * LINE_HEIGHT), line, fill=TEXT, font=_font())
    return np.asarray(image)


def _clip_background(clip: EpisodeClip, layout: FrameLayout) -> Image.Image:
    """What every frame of ``clip`` shares: the camera names, the title and the instruction."""
    image = layout.blank()
    draw = _pillow("ImageDraw").Draw(image)
    for k, name in enumerate(clip.cameras):
        draw.text((k * layout.camera_side + MARGIN, MARGIN // 2), name, fill=TEXT, font=_font())
    top = layout.panel_top + MARGIN
    draw.text((MARGIN, top), _wrap(clip.title, layout.width, 1)[0], fill=TEXT, font=_font())
    for k, line in enumerate(_wrap(clip.instruction, layout.width, INSTRUCTION_LINES)):
        draw.text((MARGIN, top + (k + 1) * LINE_HEIGHT), line, fill=TEXT, font=_font())
    return image


def upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """``image`` with every pixel repeated ``scale`` x ``scale`` times (nearest neighbour)."""
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


def clip_frames(clip: EpisodeClip) -> Iterator[np.ndarray]:
    """The ``T + 1`` labelled RGB ``uint8`` frames of ``clip`` (:meth:`EpisodeClip.layout` sized), one at a time.

    Frame ``k`` shows the images after step ``k`` (0: after the reset) and that step's reward and success.
    """
    layout = clip.layout()
    background = _clip_background(clip, layout)
    status_top = layout.panel_top + MARGIN + (1 + INSTRUCTION_LINES) * LINE_HEIGHT
    episode_return = 0.0
    for step in range(clip.steps + 1):
        image = background.copy()
        draw = _pillow("ImageDraw").Draw(image)
        if step == 0:
            status, success = f"step 0/{clip.steps}   reward -   return 0.00   success no", False
        else:
            reward, success = float(clip.rewards[step - 1]), bool(clip.successes[step - 1])
            episode_return += reward
            status = (f"step {step}/{clip.steps}   reward {reward:.2f}   return {episode_return:.2f}   "
                      f"success {'yes' if success else 'no'}")
        draw.text((MARGIN, status_top), status, fill=SUCCESS if success else FAILURE, font=_font())
        frame = np.array(image)
        for k, images in enumerate(clip.cameras.values()):
            frame[layout.camera_box(k)] = upscale(np.asarray(images[step]), layout.scale)
        yield frame


def video_writer() -> ModuleType:
    """``imageio.v2``, with the ffmpeg plugin that writes mp4s.

    :raises MissingExtraError: if imageio or imageio-ffmpeg is not installed (corft's ``video`` extra).
    """
    import_optional("imageio_ffmpeg", "video", "writing videos")
    return import_optional("imageio.v2", "video", "writing videos")


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float = CONTROL_HZ) -> int:
    """Write RGB ``uint8`` frames, taken one at a time, as an H.264 mp4; returns how many were written.

    Odd sides are padded by one pixel (the codec needs even ones). The folder is made if missing, and the
    video is written beside ``path`` as ``<name>.partial.mp4`` and renamed when whole, so a failure leaves no
    half video at ``path``.

    :raises ValueError: if ``frames`` is empty.
    :raises OSError: if ``path`` cannot be written.
    """
    if path.parent.exists() and not path.parent.is_dir():  # mkdir would say "File exists"
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path.parent))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.partial{path.suffix}")
    imageio = video_writer()
    partial.touch()  # a folder we may not write to fails here, naming the file
    count = 0
    try:
        with imageio.get_writer(partial, fps=fps, codec="libx264", macro_block_size=1) as writer:
            for frame in frames:
                height, width = frame.shape[:2]
                writer.append_data(np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge"))
                count += 1
        if count == 0:
            raise ValueError(f"{path}: no frames to write")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)
    return count
