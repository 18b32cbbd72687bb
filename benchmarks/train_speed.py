"""Training and inference speed of the default VLA policy, measured in one run.

Prints, on the default model (batch size and image size stated):

1. SFT gradient steps/s (every trainable parameter; with the default frozen pretrained tower, on its
   cached features), and with a frozen tower also the one-off time to build the feature cache and
   the steps/s of the same SFT running the tower at every step instead (``feature_cache_views=0``),
   with their ratio;
2. CO-RFT stage-2 gradient steps/s (frozen backbone with cached context
   tokens; critic step every step, actor step every ``policy_delay``), plus the
   one-off time to cache the contexts of every frame;
3. the ratio of their step times (target: CO-RFT at most 2.5x SFT);
4. policy inference latency per chunk at batch 1, median of ``--predictions``
   calls of ``model.predict`` (target: at most 30 ms on this CPU);
5. peak resident memory of the process after each phase;
6. on a GPU (``--device cuda``): the GPU's name, its mean utilisation while
   the timed steps ran (sampled through NVML) and the peak GPU memory;
   ``--precision`` chooses bf16 autocast or fp32 (default: bf16 on a GPU).

Run: ``python -m benchmarks.train_speed [--image-size 128 --batch-size 64 --steps 30 --threads 0]``
(``--threads 0`` keeps torch's default, one thread per core); ``--data DIR``
times an existing episode store instead of collecting ``--episodes`` demos;
``--policy-kwargs JSON`` times another policy (e.g. the study's ResNet recipe).
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

os.environ.setdefault("MUJOCO_GL", "egl")

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
    image_size: int = 128
    episodes: int = 5
    batch_size: int = 64
    chunk_size: int = 10
    steps: int = 30
    warmup_steps: int = 3
    predictions: int = 50
    threads: int = 0
    seed: int = 0
    device: str = "cpu"
    precision: str = "auto"
    data: str = ""
    policy_kwargs: str = "{}"


def peak_memory_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def gpu_utilisation(device: torch.device, samples: list[int]) -> Iterator[None]:
    """Sample the GPU's utilisation (percent, NVML) every 50 ms into ``samples`` while the block runs."""
    if device.type != "cuda":
        yield
        return
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            samples.append(torch.cuda.utilization(device))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def seconds_per_step(model, steps: int, warmup: int, utilisation: list[int]) -> float:
    """Mean wall time of ``steps`` gradient steps after ``warmup`` untimed ones."""
    model.learn(warmup)
    synchronize(model.device)
    with gpu_utilisation(model.device, utilisation):
        start = time.perf_counter()
        model.learn(steps, reset_num_timesteps=False)
        synchronize(model.device)
        elapsed = time.perf_counter() - start
    return elapsed / steps


def stored_observation(data: Path) -> dict:
    """The first frame of the store's first episode, with its instruction, as ``predict`` takes it."""
    from corft_envs.episode_store import EpisodeDataset

    dataset = EpisodeDataset(data)
    episode = dataset[0]
    observation = {key: np.asarray(value[0]) for key, value in episode.observations.items()}
    observation["instruction"] = dataset.instructions[0]
    return observation


def main() -> None:
    args = parse_dataclass_args(Args, __doc__.split("\n")[0])
    if args.threads:
        torch.set_num_threads(args.threads)
    common = dict(chunk_size=args.chunk_size, batch_size=args.batch_size, seed=args.seed, device=args.device,
                  precision=args.precision, policy_kwargs=json.loads(args.policy_kwargs))
    with tempfile.TemporaryDirectory() as folder:
        data = Path(args.data) if args.data else Path(folder) / "demos"
        if not args.data:
            collect(CollectConfig(env_id=args.env_id, episodes=args.episodes, out=data, seed=args.seed,
                                  image_size=args.image_size), progress=False)
        observation = stored_observation(data)
        size = observation[next(key for key in observation if key.startswith("image"))].shape[0]
        sft = SFT(dataset=data, **common)
        device = sft.device
        hardware = (torch.cuda.get_device_name(device) if device.type == "cuda"
                    else f"CPU, torch threads {torch.get_num_threads()}")
        print(f"{sft.dataset.num_episodes} demos at {size} px from {'--data ' + args.data if args.data else args.env_id}, "
              f"batch {args.batch_size}, H={args.chunk_size}; {device} ({hardware}), {os.cpu_count()} CPUs, "
              f"precision {args.precision} ({sft.autocast_dtype or torch.float32})")

        parameters = sum(p.numel() for p in sft.policy.parameters())
        start = time.perf_counter()
        cached = sft.feature_cache is not None
        feature_cache_seconds = time.perf_counter() - start
        utilisation_sft: list[int] = []
        sft_step = seconds_per_step(sft, args.steps, args.warmup_steps, utilisation_sft)
        memory_sft = peak_memory_mib()
        if cached:
            uncached = SFT(dataset=data, feature_cache_views=0, **common)
            uncached_step = seconds_per_step(uncached, args.steps, args.warmup_steps, [])

        corft = CORFT(dataset=data, il_steps=0, critic_warmup_steps=0, **common)
        start = time.perf_counter()
        corft.frame_contexts()
        synchronize(device)
        cache_seconds = time.perf_counter() - start
        utilisation_corft: list[int] = []
        corft_step = seconds_per_step(corft, args.steps, args.warmup_steps, utilisation_corft)
        memory_corft = peak_memory_mib()

        latencies = []
        for _ in range(args.predictions):
            start = time.perf_counter()
            sft.predict(observation)
            latencies.append(time.perf_counter() - start)

    print(f"default policy parameters (SFT / CO-RFT with critics): {parameters / 1e6:.2f} M / "
          f"{sum(p.numel() for p in corft.policy.parameters()) / 1e6:.2f} M")
    print(f"SFT gradient steps/s:                 {1 / sft_step:8.2f}")
    if cached:
        print(f"  on cached features vs running the frozen tower every step: {1 / sft_step:.2f} vs "
              f"{1 / uncached_step:.2f} steps/s, {uncached_step / sft_step:.1f}x faster "
              f"(feature cache of every frame: {feature_cache_seconds:.1f} s once)")
    print(f"CO-RFT stage-2 gradient steps/s:      {1 / corft_step:8.2f}   (context cache of every frame: {cache_seconds:.1f} s once)")
    print(f"CO-RFT / SFT step time:               {corft_step / sft_step:8.2f}x   (target <= 2.5x)")
    print(f"inference latency per chunk, batch 1: {np.median(latencies) * 1e3:8.1f} ms median, "
          f"{np.percentile(latencies, 90) * 1e3:.1f} ms p90   (target <= 30 ms)")
    print(f"peak memory: after SFT {memory_sft:.0f} MiB, after CO-RFT {memory_corft:.0f} MiB")
    if device.type == "cuda":
        print(f"GPU utilisation during timed steps: SFT {np.mean(utilisation_sft or [0]):.0f}%, "
              f"CO-RFT {np.mean(utilisation_corft or [0]):.0f}% (NVML, sampled every 50 ms); "
              f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
