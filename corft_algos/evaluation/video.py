"""Videos of evaluation episodes: :class:`FrameRecorder` keeps one front-camera frame per control step,
:func:`write_video` writes them as an mp4."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np

from robots.contract import CONTROL_HZ


class FrameRecorder(gym.Wrapper):
    """Keeps ``env.render()`` after ``reset`` and after every step: one video frame per control step.

    Placed beneath :class:`~corft_envs.chunking.ActionChunk`, so a chunk executed in one call still
    gives one frame per action. :attr:`frames` holds the current episode.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        if env.render_mode != "rgb_array":
            raise ValueError(f"FrameRecorder needs render_mode='rgb_array', the env has {env.render_mode!r}")
        self.frames: list[np.ndarray] = []

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        observation, info = self.env.reset(**kwargs)
        self.frames = [self.env.render()]
        return observation, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        result = self.env.step(action)
        self.frames.append(self.env.render())
        return result


def find_frame_recorder(env: gym.Env) -> FrameRecorder | None:
    """The :class:`FrameRecorder` in ``env``'s wrapper chain, if any."""
    while isinstance(env, gym.Wrapper):
        if isinstance(env, FrameRecorder):
            return env
        env = env.env
    return None


def write_video(path: Path, frames: list[np.ndarray], fps: float = CONTROL_HZ) -> None:
    """Write RGB ``uint8`` frames as an H.264 mp4; odd sides are padded by one pixel (the codec needs even ones)."""
    height, width = frames[0].shape[:2]
    padding = ((0, height % 2), (0, width % 2), (0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=1) as writer:
        for frame in frames:
            writer.append_data(np.pad(frame, padding, mode="edge"))
