"""corft's LeRobot conversions checked against LeRobot itself, in a side environment.

LeRobot needs Python >= 3.12 and corft runs on 3.11, so this script runs in a separate venv that holds
``lerobot[dataset]`` and ``h5py`` and not corft (it imports nothing of corft)::

    python3.12 -m venv side && side/bin/pip install 'lerobot[dataset]==0.6.1' h5py

Two checks:

- ``read STORE EXPORT``: LeRobot's ``LeRobotDataset`` loads ``EXPORT`` (what ``corft export --format lerobot
  --data STORE`` wrote, split over several files or not) and every frame it returns is compared with the
  episode store's HDF5 files: vectors exactly, camera frames within the video encoding's error, the task text.
- ``write OUT``: LeRobot's own writer (``LeRobotDataset.create``, ``add_frame``, ``save_episode``) records a
  small dataset with another robot's features (a 6-D state and action, a non-square camera), for ``corft
  import --format lerobot OUT --out STORE --image-size 48 --demos-succeed`` to read in corft's environment;
  the frames it was given are saved beside it (``OUT.npz``).
- ``compare STORE OUT.npz`` (needs only numpy and h5py, so it runs in either environment): the imported store
  holds every frame LeRobot was given, the camera's centre square within the encoding's error.

Each prints what it compared and ``OK``, or raises at the first difference.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

#: Mean absolute difference (0-255 levels) allowed between a decoded frame and the recorded one.
IMAGE_ERROR_BOUND = 4.5
#: The dataset ``write`` records.
WRITTEN_FPS, WRITTEN_SHAPE, WRITTEN_LENGTHS = 30, (48, 64, 3), (8, 11)


def read_store(store: Path) -> list[dict]:
    """Each kept episode of a corft episode store, read with h5py from its index and HDF5 files."""
    import h5py

    index = json.loads((store / "index.json").read_text())
    episodes = []
    for record in index["episodes"]:
        with h5py.File(store / record["file"], "r") as file:
            episodes.append({"observations": {key: file["observations"][key][()] for key in file["observations"]},
                             "actions": file["actions"][()], "rewards": file["rewards"][()],
                             "is_success": file["is_success"][()], "instruction": record["instruction"]})
    return episodes


def check_read(store: Path, export: Path) -> None:
    """LeRobot reads ``export`` frame for frame as the store holds it."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    dataset = LeRobotDataset("corft/export", root=export, video_backend="pyav")
    episodes = read_store(store)
    assert dataset.meta.total_episodes == len(episodes), (dataset.meta.total_episodes, len(episodes))
    frames = sum(len(episode["actions"]) + 1 for episode in episodes)
    assert len(dataset) == frames, (len(dataset), frames)
    cameras = list(dataset.meta.video_keys)
    errors = {camera: [] for camera in cameras}
    index = 0
    for number, episode in enumerate(episodes):
        steps = len(episode["actions"])
        for t in range(steps + 1):
            item = dataset[index]
            index += 1
            assert int(item["episode_index"]) == number and int(item["frame_index"]) == t
            assert item["task"] == episode["instruction"], (item["task"], episode["instruction"])
            step = min(t, steps - 1)  # the final observation's frame repeats the last action
            np.testing.assert_array_equal(item["action"].numpy(), episode["actions"][step])
            np.testing.assert_array_equal(item["observation.state"].numpy(), episode["observations"]["state"][t])
            reward = episode["rewards"][t] if t < steps else 0.0
            assert float(item["next.reward"]) == float(reward)
            for camera in cameras:
                decoded = (item[camera].permute(1, 2, 0).numpy() * 255).round()  # (C, H, W) in [0, 1]
                recorded = episode["observations"]["image_" + camera.removeprefix("observation.images.")][t]
                errors[camera].append(np.abs(decoded - recorded).mean())
    for camera, values in errors.items():
        assert max(values) <= IMAGE_ERROR_BOUND, (camera, max(values))
    data_files = len(list(export.glob("data/*/*.parquet")))
    video_files = {camera: len(list(export.glob(f"videos/{camera}/*/*.mp4"))) for camera in cameras}
    print(f"LeRobotDataset read {export}: {len(episodes)} episodes, {index} frames, {data_files} data files, video "
          f"files {video_files}; actions, state, rewards and tasks equal the store's; mean image error per frame "
          + ", ".join(f"{camera} {np.mean(values):.2f} (max {max(values):.2f})" for camera, values in errors.items())
          + " levels of 255. OK")


def write_dataset(out: Path) -> None:
    """Record a small dataset with LeRobot's writer, and the frames given to it in ``OUT.npz``."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    features = {
        "observation.images.top": {"dtype": "video", "shape": WRITTEN_SHAPE, "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (6,), "names": None},
        "action": {"dtype": "float32", "shape": (6,), "names": None},
    }
    dataset = LeRobotDataset.create("elsewhere/so101_test", WRITTEN_FPS, root=out, robot_type="so101",
                                    features=features, use_videos=True)
    rng = np.random.default_rng(0)
    given: dict[str, np.ndarray] = {}
    for number, length in enumerate(WRITTEN_LENGTHS):
        height, width, _ = WRITTEN_SHAPE
        frames = np.zeros((length, *WRITTEN_SHAPE), np.uint8)
        frames[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, None]
        frames[..., 1] = np.linspace(0, 255, height, dtype=np.uint8)[None, :, None]
        for t in range(length):
            frames[t, 8:24, 4 + 3 * t:20 + 3 * t, 2] = 200
        state = rng.normal(size=(length, 6)).astype(np.float32)
        action = rng.normal(size=(length, 6)).astype(np.float32)
        for t in range(length):
            dataset.add_frame({"observation.images.top": frames[t], "observation.state": state[t],
                               "action": action[t], "task": f"task {number}"})
        dataset.save_episode()
        given |= {f"top_{number}": frames, f"state_{number}": state, f"action_{number}": action}
    dataset.finalize()
    np.savez(out.with_suffix(".npz"), **given)
    print(f"LeRobot wrote {out} ({len(WRITTEN_LENGTHS)} episodes of {WRITTEN_LENGTHS} frames at {WRITTEN_FPS} fps, "
          f"codec {dataset.meta.info.features['observation.images.top']['info']['video.codec']}) "
          f"and {out.with_suffix('.npz')}. OK")


def compare(store: Path, given_path: Path) -> None:
    """The store imported from ``write``'s dataset holds the frames LeRobot was given."""
    given = np.load(given_path)
    episodes = read_store(store)
    assert len(episodes) == len(WRITTEN_LENGTHS)
    errors = []
    for number, (episode, length) in enumerate(zip(episodes, WRITTEN_LENGTHS)):
        assert len(episode["actions"]) == length and episode["instruction"] == f"task {number}"
        np.testing.assert_array_equal(episode["actions"], given[f"action_{number}"])
        np.testing.assert_array_equal(episode["observations"]["state"][:-1], given[f"state_{number}"])
        top = episode["observations"]["image_top"][:-1]
        width = given[f"top_{number}"].shape[2]
        left = (width - top.shape[2]) // 2
        errors.append(np.abs(top.astype(np.int16) - given[f"top_{number}"][:, :, left:left + top.shape[2]]).mean())
        assert episode["is_success"].tolist() == [False] * (length - 1) + [True]
    assert max(errors) <= IMAGE_ERROR_BOUND, errors
    print(f"{store} holds the {sum(WRITTEN_LENGTHS)} frames LeRobot was given: actions, state and tasks equal, "
          f"camera (centre square) mean error {np.mean(errors):.2f} levels of 255 (max per episode "
          f"{max(errors):.2f}). OK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    read = commands.add_parser("read", help="LeRobot reads a corft export as the store holds it")
    read.add_argument("store", type=Path)
    read.add_argument("export", type=Path)
    write = commands.add_parser("write", help="LeRobot's writer records a dataset for corft import")
    write.add_argument("out", type=Path)
    compared = commands.add_parser("compare", help="a store imported from write's dataset holds its frames")
    compared.add_argument("store", type=Path)
    compared.add_argument("given", type=Path)
    args = parser.parse_args()
    if args.command == "read":
        check_read(args.store, args.export)
    elif args.command == "write":
        write_dataset(args.out)
    else:
        compare(args.store, args.given)


if __name__ == "__main__":
    main()
