"""Training data larger than memory: samples/s and peak memory of the chunk sampler at 60 and 600 episodes.

For each store size, in a fresh process: a :class:`~corft_algos.data.ChunkDataset`
reading frames lazily from the HDF5 files (``in_memory=False``, what
``in_memory="auto"`` picks for a store over its memory budget) behind a
DataLoader with ``num_workers`` workers draws ``batches`` batches of chunk
samples (images of both cameras, states, action chunks, next frames). Prints
samples/s and the peak resident memory of the process and its workers, with
the store's size on disk and in frames. Memory must stay nearly flat from 60
to 600 episodes: only the batches in flight are held.

Stores are collected once (``corft collect --workers``) into ``--cache`` and reused.

Run: ``python -m benchmarks.dataset_scale [--sizes 60,600 --batches 200 --num-workers 2]``.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import psutil  # noqa: E402

from benchmarks.common import parse_dataclass_args  # noqa: E402


@dataclass
class Args:
    """Benchmark settings."""

    env_id: str = "corft/PickPlace-v0"
    sizes: str = "60,600"
    image_size: int = 96
    batch_size: int = 32
    chunk_size: int = 10
    batches: int = 200
    num_workers: int = 2
    collect_workers: int = 2
    cache: str = "/tmp/corft_dataset_scale"


def store_for(args: Args, episodes: int) -> Path:
    """The cached store of ``episodes`` demos (collected now if missing or short)."""
    from corft_algos.cli import main as corft

    out = Path(args.cache) / f"{args.env_id.replace('/', '_')}_{args.image_size}px_{episodes}"
    status = corft(["collect", "--env", args.env_id, "--episodes", str(episodes), "--image-size",
                    str(args.image_size), "--out", str(out), "--workers", str(args.collect_workers), "--quiet"])
    if status != 0:
        raise RuntimeError(f"collecting {episodes} episodes into {out} failed")
    return out


def _tree_rss(process: psutil.Process) -> int:
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def measure(store: str, args: Args, results: multiprocessing.Queue) -> None:
    """Runs in a fresh process: draw the batches, sampling the process tree's memory every 20 ms."""
    import torch

    from corft_algos.data import ChunkDataset

    torch.set_num_threads(1)
    process = psutil.Process()
    peak, stop = [0], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _tree_rss(process))
            stop.wait(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    dataset = ChunkDataset(store, chunk_size=args.chunk_size, in_memory=False)
    loader = iter(dataset.make_loader(args.batch_size, num_workers=args.num_workers, seed=0,
                                      num_samples=(args.batches + 1) * args.batch_size))
    next(loader)  # workers started
    began = time.perf_counter()
    for _ in range(args.batches):
        next(loader)
    seconds = time.perf_counter() - began
    stop.set()
    watcher.join()
    results.put({"samples_per_s": args.batches * args.batch_size / seconds, "peak_rss_mib": peak[0] / 2**20,
                 "frames": dataset.frames.num_frames, "samples": len(dataset.episode_of_sample)})


def main() -> None:
    args = parse_dataclass_args(Args, __doc__.splitlines()[0])
    context = multiprocessing.get_context("spawn")
    print(f"{'episodes':>8s} {'frames':>8s} {'on disk':>9s} {'samples/s':>10s} {'peak memory':>12s}")
    for episodes in (int(size) for size in args.sizes.split(",")):
        store = store_for(args, episodes)
        disk = sum(path.stat().st_size for path in store.glob("*.h5")) / 2**20
        results = context.Queue()
        child = context.Process(target=measure, args=(str(store), args, results))
        child.start()
        result = results.get()
        child.join()
        print(f"{episodes:8d} {result['frames']:8d} {disk:7.0f} MiB {result['samples_per_s']:10.0f} "
              f"{result['peak_rss_mib']:8.0f} MiB")


if __name__ == "__main__":
    main()
