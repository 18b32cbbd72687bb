"""`corft view` and the labelled frames it shares with `corft eval --video`: the frames' layout and labels, videos
whose camera images are the store's, the summary table, and one error line for bad input."""

from __future__ import annotations

import re
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

from corft_algos.cli import main
from corft_algos.labelled_video import BACKGROUND, MIN_CAMERA_SIDE, EpisodeClip, FrameLayout, clip_frames
from corft_algos.store_view import TITLE_CARD_SECONDS
from corft_envs.collection import CollectConfig, collect
from corft_envs.episode_store import EpisodeDataset
from tests.helpers import IdleOnOddSeeds, success_pixels

IMAGE_SIZE = 32
CAMERAS = ("front", "wrist")
#: Mean absolute difference (of 255) allowed between a stored image and its upscaled copy decoded from the mp4
#: (measured: at most 1.4, against 0.1 to 10 between consecutive stored images).
VIDEO_TOLERANCE = 3.0


def downscaled(frame: np.ndarray, layout: FrameLayout, camera: int) -> np.ndarray:
    """Camera ``camera``'s region of a decoded frame, averaged back to the recorded side."""
    region = frame[layout.camera_box(camera)].astype(np.float64)
    side, scale = layout.side, layout.scale
    return region.reshape(side, scale, side, scale, 3).mean(axis=(1, 3))


def background_share(frame: np.ndarray, layout: FrameLayout) -> float:
    """The share of a frame's first camera region in the background colour."""
    region = frame[layout.camera_box(0)].astype(int)
    return float((np.abs(region - BACKGROUND).max(axis=-1) < 12).mean())


def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    with imageio.get_reader(path) as reader:
        return [np.asarray(frame) for frame in reader], reader.get_meta_data()["fps"]


# ------------------------------------------------------------------------------------------- the frames (unit)


@pytest.mark.parametrize("side", [32, 64, 128, 100])
def test_cameras_are_upscaled_by_a_whole_factor_to_a_readable_size(side):
    layout = FrameLayout(cameras=CAMERAS, side=side)
    assert MIN_CAMERA_SIDE <= layout.camera_side < MIN_CAMERA_SIDE + side
    assert layout.camera_side == side * layout.scale and layout.width == 2 * layout.camera_side
    rows, columns = layout.camera_box(1)
    assert (rows.start, columns.start, columns.stop) == (layout.camera_top, layout.camera_side, layout.width)
    assert rows.stop == layout.panel_top < layout.height


def test_clip_frames_show_each_step_s_images_upscaled_and_colour_the_success_step():
    rng = np.random.default_rng(0)
    images = {name: rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8) for name in CAMERAS}
    clip = EpisodeClip(title="episode 0", instruction="put the red cube on the plate " * 6, cameras=images,
                       rewards=[0.0, 0.0, 1.0], successes=[False, False, True])
    layout = clip.layout()
    frames = list(clip_frames(clip))
    assert len(frames) == 4
    for step, frame in enumerate(frames):
        assert frame.shape == (layout.height, layout.width, 3) and frame.dtype == np.uint8
        for k, name in enumerate(CAMERAS):
            expected = np.repeat(np.repeat(images[name][step], layout.scale, 0), layout.scale, 1)
            np.testing.assert_array_equal(frame[layout.camera_box(k)], expected)
    assert [success_pixels(frame, layout) > 0 for frame in frames] == [False, False, False, True]
    assert not np.array_equal(frames[1][layout.panel_top:], frames[2][layout.panel_top:])  # the step line changes


def test_a_clip_whose_lengths_disagree_is_refused():
    image = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match=r"camera 'front' has 2 images, expected 3"):
        EpisodeClip("t", "i", {"front": [image, image]}, rewards=[0.0, 1.0], successes=[False, True])
    with pytest.raises(ValueError, match="2 rewards but 1 success flags"):
        EpisodeClip("t", "i", {"front": [image] * 3}, rewards=[0.0, 1.0], successes=[True])
    with pytest.raises(ValueError, match="at least one camera"):
        EpisodeClip("t", "i", {}, rewards=[], successes=[])


# ------------------------------------------------------------------------------- corft view on a real store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Two episodes of the PickPlace expert at 32 px, the second (odd seed) a failure that times out."""
    out = tmp_path_factory.mktemp("view") / "pickplace"
    collect(CollectConfig(env_id="corft/PickPlace-v0", episodes=2, out=out, image_size=IMAGE_SIZE, seed=0,
                          keep_failures=True, env_options={"max_episode_steps": 50}),
            progress=False, make_policy=IdleOnOddSeeds)
    with EpisodeDataset(out) as dataset:
        assert dataset.successes.tolist() == [True, False]
    return out


@pytest.mark.integration
def test_video_of_one_episode_holds_its_stored_images_frame_by_frame(store, tmp_path, capsys):
    out = tmp_path / "videos" / "episode_0.mp4"
    assert main(["view", str(store), "--episode", "0", "--video", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out} (")
    frames, fps = read_video(out)
    layout = FrameLayout(cameras=CAMERAS, side=IMAGE_SIZE)
    with EpisodeDataset(store) as dataset:
        episode = dataset[0].load()
    assert fps == 10 and len(frames) == episode.length + 1
    assert frames[0].shape == (layout.height, layout.width, 3)
    for k, name in enumerate(CAMERAS):
        stored = episode.observations[f"image_{name}"].astype(np.float64)
        # errors[i, j]: decoded frame i against stored image j
        errors = np.stack([np.abs(downscaled(frame, layout, k)[None] - stored).mean(axis=(1, 2, 3))
                           for frame in frames])
        aligned = np.diagonal(errors)
        assert aligned.max() < VIDEO_TOLERANCE, (name, aligned)
        # the same step, not merely a similar scene: one step off matches worse, the last frame is not the first
        assert aligned.mean() < np.diagonal(errors, offset=1).mean() and aligned.mean() < np.diagonal(errors, -1).mean()
        assert errors[-1, -1] < errors[-1, 0]
    assert success_pixels(frames[-1], layout) > 0 and success_pixels(frames[-2], layout) == 0


@pytest.mark.integration
def test_video_of_the_store_plays_every_episode_after_a_title_card(store, tmp_path):
    out = tmp_path / "all.mp4"
    assert main(["view", str(store), "--video", str(out), "--fps", "4"]) == 0
    frames, fps = read_video(out)
    card = round(TITLE_CARD_SECONDS * 4)
    with EpisodeDataset(store) as dataset:
        lengths = dataset.lengths.tolist()
    assert fps == 4 and len(frames) == sum(length + 1 + card for length in lengths)
    layout = FrameLayout(cameras=CAMERAS, side=IMAGE_SIZE)
    second_card = card + lengths[0] + 1
    for start in (0, second_card):  # a title card is text on the background, where the episode's images come
        assert background_share(frames[start], layout) > 0.9 > 0.5 > background_share(frames[start + card], layout)
    successes = [success_pixels(frame, layout) > 0 for frame in frames]
    assert successes[second_card - 1] and not any(successes[second_card:])  # the failure never shows success


@pytest.mark.integration
def test_summary_table_lists_every_episode_with_its_outcome(store, capsys):
    assert main(["view", str(store)]) == 0
    lines = capsys.readouterr().out.splitlines()
    with EpisodeDataset(store) as dataset:
        assert lines[0].startswith(f"{store}: 2 episodes of corft/PickPlace-v0, 1 successful")
        assert "front 32 px, wrist 32 px" in lines[0]
        assert lines[1].split() == ["episode", "steps", "success", "return", "seed", "instruction"]
        rows = lines[2:]
        assert len(rows) == 2
        for k, row in enumerate(rows):
            number, steps, success, episode_return, seed, *instruction = row.split()
            assert int(number) == k and int(steps) == dataset.lengths[k] and int(seed) == dataset.seeds[k]
            assert success == ("yes" if dataset.successes[k] else "no")
            assert float(episode_return) == pytest.approx(float(dataset.successes[k]))
            assert " ".join(instruction) == dataset.instructions[k]
    assert main(["view", str(store), "--episode", "1"]) == 0
    only = capsys.readouterr().out.splitlines()
    assert len(only) == 3 and only[2] == rows[1]


@pytest.mark.integration
@pytest.mark.parametrize("case, expected", [
    ("missing store", "no such directory"),
    ("episode out of range", r"episode 2 is out of range: \S+ holds 2 episodes \(0\.\.1\)"),
    ("unwritable video", r"cannot write (\S+)/blocker/episode\.mp4: Not a directory: \1/blocker$"),
    ("not an mp4", r"the video is written as an mp4; give a path ending in \.mp4"),
])
def test_bad_input_is_one_error_line_and_writes_nothing(store, tmp_path, capsys, case, expected):
    (tmp_path / "blocker").write_text("a file where a folder is needed")
    args = {
        "missing store": ["view", str(tmp_path / "nowhere")],
        "episode out of range": ["view", str(store), "--episode", "2", "--video", str(tmp_path / "e.mp4")],
        "unwritable video": ["view", str(store), "--video", str(tmp_path / "blocker" / "episode.mp4")],
        "not an mp4": ["view", str(store), "--video", str(tmp_path / "episode.avi")],
    }[case]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    error = captured.err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("corft view: error: ")
    assert re.search(expected, error), error
    assert sorted(path.name for path in tmp_path.iterdir()) == ["blocker"]
