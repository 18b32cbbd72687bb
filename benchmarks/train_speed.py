"""Training and inference speed of the default VLA policy, measured in one run.

Prints, on the default model (batch size and image size stated):

1. SFT gradient steps/s (full-parameter: vision tower, fusion, action expert);
2. CO-RFT stage-2 gradient steps/s (frozen backbone with cached context
   tokens; critic step every step, actor step every ``policy_delay``), plus the
   one-off time to cache the contexts of every frame;
3. the ratio of their step times (target: CO-RFT at most 2.5x SFT);
4. policy inference latency per chunk at batch 1, median of ``--predictions``
   calls of ``model.predict`` (target: at most 30 ms on this CPU);
5. peak resident memory of the process after each phase.

Run: ``python -m benchmarks.train_speed [--image-size 96 --batch-size 32 --steps 30 --threads 0]``
(``--threads 0`` keeps torch's default, one thread per core).
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import corft_envs  # noqa: E402,F401
from benchmarks.common import parse_dataclass_args  # noqa: E402
from corft_algos import CORFT, SFT  # noqa: E402
from corft_envs.collection import CollectConfig, collect  # noqa: E402


@dataclass
class Args:
    """Benchmark settings."""

    env_id: str = "corft/PickPlace-v0"
    image_size: int = 96
    episodes: int = 5
    batch_size: int = 32
    chunk_size: int = 10
    steps: int = 30
    warmup_steps: int = 3
    predictions: int = 50
    threads: int = 0
    seed: int = 0


def peak_memory_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def seconds_per_step(model, steps: int, warmup: int) -> float:
    """Mean wall time of ``steps`` gradient steps after ``warmup`` untimed ones."""
    model.learn(warmup)
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    return (time.perf_counter() - start) / steps


def main() -> None:
    args = parse_dataclass_args(Args, __doc__.split("\n")[0])
    if args.threads:
        torch.set_num_threads(args.threads)
    common = dict(chunk_size=args.chunk_size, batch_size=args.batch_size, seed=args.seed)
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "demos"
        collect(CollectConfig(env_id=args.env_id, episodes=args.episodes, out=data, seed=args.seed,
                              image_size=args.image_size), progress=False)
        print(f"{args.env_id}, {args.image_size} px, batch {args.batch_size}, H={args.chunk_size}, "
              f"{args.episodes} demos, torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs")

        sft = SFT(dataset=data, **common)
        parameters = sum(p.numel() for p in sft.policy.parameters())
        sft_step = seconds_per_step(sft, args.steps, args.warmup_steps)
        memory_sft = peak_memory_mib()

        corft = CORFT(dataset=data, il_steps=0, critic_warmup_steps=0, **common)
        start = time.perf_counter()
        corft.frame_contexts()
        cache_seconds = time.perf_counter() - start
        corft_step = seconds_per_step(corft, args.steps, args.warmup_steps)
        memory_corft = peak_memory_mib()

        env = gym.make(args.env_id, image_size=args.image_size, include_instruction=True)
        observation, _ = env.reset(seed=args.seed)
        latencies = []
        for _ in range(args.predictions):
            start = time.perf_counter()
            sft.predict(observation)
            latencies.append(time.perf_counter() - start)
        env.close()

    print(f"default policy parameters (SFT / CO-RFT with critics): {parameters / 1e6:.2f} M / "
          f"{sum(p.numel() for p in corft.policy.parameters()) / 1e6:.2f} M")
    print(f"SFT gradient steps/s:                 {1 / sft_step:8.2f}")
    print(f"CO-RFT stage-2 gradient steps/s:      {1 / corft_step:8.2f}   (context cache of every frame: {cache_seconds:.1f} s once)")
    print(f"CO-RFT / SFT step time:               {corft_step / sft_step:8.2f}x   (target <= 2.5x)")
    print(f"inference latency per chunk, batch 1: {np.median(latencies) * 1e3:8.1f} ms median, "
          f"{np.percentile(latencies, 90) * 1e3:.1f} ms p90   (target <= 30 ms)")
    print(f"peak memory: after SFT {memory_sft:.0f} MiB, after CO-RFT {memory_corft:.0f} MiB")


if __name__ == "__main__":
    main()
