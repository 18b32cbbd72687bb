"""Speed and memory of the simulated env, measured in one run.

Prints:

1. env steps/s with both cameras (``gym.make`` env, random actions);
2. raw MuJoCo steps/s of the same scene: the same physics substeps and the
   same two renders per control step, with no controller, observation or wrapper;
3. the env's overhead over raw, ``raw_steps_per_s / env_steps_per_s - 1``
   (target: at most 25%);
4. renders/s per camera;
5. memory while collecting ``collect_episodes`` demos in one run: the peak
   resident memory while 1, 2, ... episodes are saved. It must stay flat:
   only the current episode is held in memory.

Run: ``python -m benchmarks.env_speed [--image-size 96 --steps 400 --collect-episodes 60]``.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402

import corft_envs  # noqa: E402,F401
from benchmarks.common import parse_dataclass_args  # noqa: E402
from corft_envs.collection import CollectConfig, collect  # noqa: E402
from corft_envs.sim_env import CAMERAS  # noqa: E402


@dataclass
class Args:
    """Benchmark settings."""

    env_id: str = "corft/PickPlace-v0"
    image_size: int = 96
    steps: int = 400
    renders: int = 500
    collect_episodes: int = 60
    collect_block: int = 10
    seed: int = 0


def env_steps_per_second(args: Args) -> float:
    env = gym.make(args.env_id, image_size=args.image_size)
    rng = np.random.default_rng(args.seed)
    env.reset(seed=args.seed)
    env.action_space.seed(args.seed)
    elapsed = 0.0
    for _ in range(args.steps):
        action = rng.uniform(-1, 1, 7).astype(np.float32)
        start = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(action)
        elapsed += time.perf_counter() - start
        if terminated or truncated:
            env.reset()
    env.close()
    return args.steps / elapsed


def raw_steps_per_second(args: Args) -> tuple[float, dict[str, float]]:
    """Physics substeps and two renders per control step on the env's own model, nothing else."""
    env = gym.make(args.env_id, image_size=args.image_size)
    env.reset(seed=args.seed)
    sim = env.unwrapped
    model, data = sim.model, sim.data
    substeps = sim.controller.substeps
    renderer = mujoco.Renderer(model, args.image_size, args.image_size)
    option = sim._scene_option
    start = time.perf_counter()
    for _ in range(args.steps):
        mujoco.mj_step(model, data, nstep=substeps)
        for camera in CAMERAS:
            renderer.update_scene(data, camera=camera, scene_option=option)
            renderer.render()
    raw = args.steps / (time.perf_counter() - start)

    renders = {}
    for camera in CAMERAS:
        start = time.perf_counter()
        for _ in range(args.renders):
            renderer.update_scene(data, camera=camera, scene_option=option)
            renderer.render()
        renders[camera] = args.renders / (time.perf_counter() - start)
    renderer.close()
    env.close()
    return raw, renders


def collection_memory(args: Args) -> list[tuple[int, float]]:
    """(episodes saved, peak resident MiB while that many were saved) over one collection run.

    A sampling thread reads the process's resident memory and the number of
    finished episode files every 50 ms while :func:`collect` runs.
    """
    process = psutil.Process()
    peaks: dict[int, float] = {}
    done = threading.Event()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "store"

        def sample() -> None:
            while not done.wait(0.05):
                saved = len(list(out.glob("episode_*.h5"))) if out.exists() else 0
                peaks[saved] = max(peaks.get(saved, 0.0), process.memory_info().rss / 2**20)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        collect(CollectConfig(env_id=args.env_id, episodes=args.collect_episodes, out=out,
                              seed=args.seed, image_size=args.image_size), progress=False)
        done.set()
        sampler.join()
    return sorted(peaks.items())


def main() -> None:
    args = parse_dataclass_args(Args, __doc__.split("\n")[0])
    print(f"{args.env_id}, {args.image_size} px, both cameras, {os.cpu_count()} CPUs, MUJOCO_GL={os.environ['MUJOCO_GL']}")
    env_rate = env_steps_per_second(args)
    raw_rate, render_rates = raw_steps_per_second(args)
    overhead = raw_rate / env_rate - 1
    print(f"env steps/s (both cameras):           {env_rate:8.1f}")
    print(f"raw MuJoCo physics+render steps/s:    {raw_rate:8.1f}")
    print(f"env overhead over raw:                {overhead:8.1%}   (target <= 25%)")
    for camera, rate in render_rates.items():
        print(f"renders/s, {camera:<6} camera:            {rate:8.1f}   (target >= 200)")
    print(f"collecting {args.collect_episodes} episodes (one run), peak resident memory:")
    rows = collection_memory(args)
    for episodes, peak in rows:
        if episodes % args.collect_block == 0 or episodes == rows[-1][0]:
            print(f"  {episodes:4d} episodes saved: {peak:7.1f} MiB")
    first = next(peak for episodes, peak in rows if episodes >= 1)
    growth = max(peak for _, peak in rows) - first
    print(f"growth from the first saved episode to the end: {growth:+.1f} MiB "
          f"(flat means only the current episode is held)")

if __name__ == "__main__":
    main()
