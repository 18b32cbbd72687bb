"""Videos of evaluation episodes: :class:`FrameRecorder` keeps every camera's image, the reward and the success
of each control step, :meth:`FrameRecorder.write` writes them as a labelled mp4 (:mod:`corft_algos.labelled_video`,
the frames ``corft view`` draws of a recorded episode)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from corft_algos.labelled_video import EpisodeClip, camera_keys, clip_frames, video_writer, write_video


class FrameRecorder(gym.Wrapper):
    """Keeps the camera images of the observation after ``reset`` and after every step, with each step's reward
    and ``info["is_success"]``, and the instruction of ``info["instruction"]`` at reset: the current episode,
    written by :meth:`write`.

    Placed beneath :class:`~corft_envs.chunking.ActionChunk`, so a chunk executed in one call still
    gives one frame per action.

    :raises ValueError: if the env's observations hold no camera image.
    :raises MissingExtraError: without the ``video`` extra, before any episode runs (:func:`video_writer`).
    """

    def __init__(self, env: gym.Env) -> None:
        video_writer()
        super().__init__(env)
        self.cameras = camera_keys(env.observation_space)
        if not self.cameras:
            raise ValueError(f"FrameRecorder needs camera images in the observations, the env has "
                             f"{sorted(env.observation_space.spaces)}")
        self.instruction = ""
        self.images: dict[str, list[np.ndarray]] = {name: [] for name in self.cameras}
        self.rewards: list[float] = []
        self.successes: list[bool] = []

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        observation, info = self.env.reset(**kwargs)
        self.instruction = str(info.get("instruction", ""))
        self.images = {name: [observation[key]] for name, key in self.cameras.items()}
        self.rewards, self.successes = [], []
        return observation, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        for name, key in self.cameras.items():
            self.images[name].append(observation[key])
        self.rewards.append(float(reward))
        self.successes.append(bool(info.get("is_success", False)))
        return observation, reward, terminated, truncated, info

    def clip(self, title: str) -> EpisodeClip:
        """The current episode as an :class:`~corft_algos.labelled_video.EpisodeClip` named ``title``."""
        return EpisodeClip(title=title, instruction=self.instruction, cameras=self.images, rewards=self.rewards,
                           successes=self.successes)

    def write(self, path: Path, title: str) -> None:
        """Write the current episode as a labelled mp4, one frame per control step (the reset's first)."""
        write_video(path, clip_frames(self.clip(title)))


def find_frame_recorder(env: gym.Env) -> FrameRecorder | None:
    """The :class:`FrameRecorder` in ``env``'s wrapper chain, if any."""
    while isinstance(env, gym.Wrapper):
        if isinstance(env, FrameRecorder):
            return env
        env = env.env
    return None
