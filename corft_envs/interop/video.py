"""Camera frames to and from MP4 files, through the ffmpeg binary that ``imageio-ffmpeg`` ships.

H.264 (libx264, one of the codecs LeRobot writes and reads; it plays in browsers, LeRobot's viewer included),
``yuv420p`` and a key frame every 2 frames as LeRobot's default encoding has, at constant rate factor 18.
``yuv420p`` halves the colour resolution, so the decode is lossy, mostly at colour edges, and more so the
smaller the image: a decoded frame differs from the rendered one by 2.3 to 2.7 levels (of 255) on average at
64 px (19 at the 99th percentile) and by up to 3.7 at 32 px (measured on scripted PickPlace episodes, front
and wrist camera); :data:`MEAN_ERROR_BOUND` is what the tests allow.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from corft_envs.interop.common import require

#: Codec (ffmpeg's encoder name and the codec name a probe reports), pixel format and settings of the videos.
ENCODER = "libx264"
CODEC = "h264"
PIXEL_FORMAT = "yuv420p"
KEYFRAME_INTERVAL = 2
CRF = 18
#: The largest mean absolute difference (0-255 levels) between a decoded frame and the recorded one that the
#: tests allow.
MEAN_ERROR_BOUND = 4.5


class VideoWriter:
    """Append ``(H, W, 3)`` ``uint8`` RGB frames to a new MP4 file; :meth:`close` finishes it.

    :param path: the file to write (its folder is created).
    :param height: frame height in pixels, even (``yuv420p`` halves it for colour).
    :param width: frame width in pixels, even.
    :param fps: frames per second.
    :raises ValueError: for an odd frame size.
    """

    def __init__(self, path: Path, height: int, width: int, fps: int) -> None:
        if height % 2 or width % 2:
            raise ValueError(f"{PIXEL_FORMAT} video needs even image sides, got {height}x{width}; "
                             "collect with an even --image-size")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.shape = (height, width, 3)
        self.frames = 0
        self._encoder = require("imageio_ffmpeg").write_frames(
            str(path), (width, height), fps=fps, codec=ENCODER, pix_fmt_in="rgb24", pix_fmt_out=PIXEL_FORMAT,
            quality=None, macro_block_size=1, ffmpeg_log_level="error",
            output_params=["-crf", str(CRF), "-g", str(KEYFRAME_INTERVAL)])
        self._encoder.send(None)  # starts ffmpeg

    def append(self, frames: np.ndarray) -> None:
        """Encode ``frames``, ``(N, H, W, 3)`` ``uint8``."""
        if frames.shape[1:] != self.shape or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 {self.shape}, got {frames.dtype} {frames.shape[1:]}")
        for frame in frames:
            self._encoder.send(np.ascontiguousarray(frame).tobytes())
        self.frames += len(frames)

    def close(self) -> None:
        """Flush the encoder and close the file."""
        self._encoder.close()


def read_video(path: Path) -> Iterator[np.ndarray]:
    """The frames of an MP4 file in order, each ``(H, W, 3)`` ``uint8`` RGB."""
    reader = require("imageio_ffmpeg").read_frames(str(path), pix_fmt="rgb24")
    info = next(reader)
    width, height = info["size"]
    try:
        for data in reader:
            yield np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)
    finally:
        reader.close()


def concatenate_videos(parts: Sequence[Path], out: Path) -> None:
    """Join MP4 files of the same encoding into ``out``, one after the other, without re-encoding (ffmpeg's
    concat demuxer, stream copy): frame for frame what the parts hold.

    :raises RuntimeError: if ffmpeg fails, with its message.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        listing = Path(folder) / "parts.txt"
        listing.write_text("".join(f"file '{part.resolve()}'\n" for part in parts), encoding="utf-8")
        ffmpeg = require("imageio_ffmpeg").get_ffmpeg_exe()
        done = subprocess.run([ffmpeg, "-v", "error", "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy",
                               "-y", str(out)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg could not join {len(parts)} videos into {out}: {done.stderr.strip()}")
