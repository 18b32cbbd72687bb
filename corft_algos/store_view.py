"""Looking at an episode store (what ``corft view`` does): a table of its episodes, and labelled videos of them.

Any store ``corft collect`` wrote (scripted demos, teleoperation, a policy's rollouts) is read through
:class:`~corft_envs.episode_store.EpisodeDataset`; the frames are drawn by :mod:`corft_algos.labelled_video`::

    from corft_algos.store_view import summary_lines, write_store_video
    from corft_envs.episode_store import EpisodeDataset

    with EpisodeDataset("data/pickplace_30", validate=False) as store:
        print("\\n".join(summary_lines(store)))
        write_store_video(store, Path("episode_3.mp4"), episode=3)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from corft_algos.labelled_video import EpisodeClip, camera_keys, clip_frames, title_card, write_video
from corft_envs.episode_store import EpisodeSource
from corft_robots.contract import CONTROL_HZ

#: Seconds the title card before each episode lasts in a video of the whole store.
TITLE_CARD_SECONDS = 1.0


def check_episode(source: EpisodeSource, episode: int) -> None:
    """Raise a ``ValueError`` saying which episodes ``source`` holds if ``episode`` is not one of them."""
    if not 0 <= episode < len(source):
        held = "no episodes" if len(source) == 0 else f"{len(source)} episodes (0..{len(source) - 1})"
        raise ValueError(f"episode {episode} is out of range: {source.root} holds {held}")


def episode_clip(source: EpisodeSource, episode: int) -> EpisodeClip:
    """Episode ``episode`` of ``source`` as a clip, its images read one at a time as the frames are drawn.

    :raises ValueError: if ``source`` holds no such episode.
    """
    check_episode(source, episode)
    stored = source[episode]
    cameras = {name: stored.observations[key] for name, key in camera_keys(source.observation_space).items()}
    return EpisodeClip(title=f"{source.root.name}: episode {episode} of 0..{len(source) - 1}, seed {stored.seed}",
                       instruction=stored.instruction, cameras=cameras, rewards=np.asarray(stored.rewards),
                       successes=np.asarray(stored.is_success))


def summary_lines(source: EpisodeSource, episode: int | None = None) -> list[str]:
    """A table of ``source``'s episodes (or of episode ``episode`` alone): number, steps, success, return,
    seed and instruction, beneath a line naming the store, its env and its cameras.

    :raises ValueError: if ``episode`` is given and ``source`` holds no such episode.
    """
    if episode is not None:
        check_episode(source, episode)
    sides = ", ".join(f"{name} {source.observation_space[key].shape[0]} px"
                      for name, key in camera_keys(source.observation_space).items())
    lines = [f"{source.root}: {len(source)} episodes of {source.env_id}, {int(source.successes.sum())} successful, "
             f"cameras: {sides or 'none'}",
             f"{'episode':>7}  {'steps':>5}  {'success':>7}  {'return':>6}  {'seed':>6}  instruction"]
    for k in range(len(source)) if episode is None else [episode]:
        stored = source[k]
        lines.append(f"{k:7d}  {len(stored):5d}  {'yes' if stored.success else 'no':>7}  "
                     f"{float(np.asarray(stored.rewards).sum()):6.2f}  {str(stored.seed):>6}  {stored.instruction}")
    return lines


def store_frames(source: EpisodeSource, episode: int | None, fps: float) -> Iterator[np.ndarray]:
    """The labelled frames of episode ``episode``, or of every episode, each after a title card of
    :data:`TITLE_CARD_SECONDS` at ``fps``.

    :raises ValueError: if ``source`` holds no such episode (or none at all), or has no camera images.
    """
    if not camera_keys(source.observation_space):
        raise ValueError(f"{source.root} holds no camera images to show")
    if episode is not None:
        yield from clip_frames(episode_clip(source, episode))
        return
    check_episode(source, 0)
    card_frames = max(1, round(TITLE_CARD_SECONDS * fps))
    for k in range(len(source)):
        clip = episode_clip(source, k)
        stored = source[k]
        outcome = "success" if stored.success else "failure"
        card = title_card(clip.layout(), [f"episode {k} of 0..{len(source) - 1}: {outcome}, {len(stored)} steps, "
                                          f"seed {stored.seed}", "", stored.instruction])
        yield from [card] * card_frames
        yield from clip_frames(clip)


def write_store_video(source: EpisodeSource, out: Path, episode: int | None = None, fps: float = CONTROL_HZ) -> int:
    """Write the labelled video of episode ``episode`` of ``source``, or of all its episodes one after another
    (see :func:`store_frames`), to the mp4 ``out``; returns the number of frames.

    :raises ValueError: if ``out`` does not end in ``.mp4``, or for what :func:`store_frames` refuses; before
        anything is written.
    :raises OSError: if ``out`` cannot be written.
    """
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"{out}: the video is written as an mp4; give a path ending in .mp4")
    frames = store_frames(source, episode, fps)
    first = next(frames)  # the checks of store_frames run here, before the file is made
    return write_video(out, itertools.chain([first], frames), fps=fps)
