"""Throughput of parallel collection and evaluation: N workers against 1, measured in one run.

Prints, for ``corft collect --workers N`` (scripted expert) and ``corft eval
--workers N`` (a small SFT model trained here for a few steps), the episodes
per second with 1 worker and with N, their ratio, and whether the N-worker
result equals the 1-worker one (it must: same seeds, same store, same records).

Run: ``python -m benchmarks.parallel_speed [--workers 2 --episodes 8]``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

from benchmarks.common import parse_dataclass_args  # noqa: E402
from corft_algos.cli import main as corft  # noqa: E402
from corft_envs.episode_store import EpisodeDataset  # noqa: E402


@dataclass
class Args:
    """Benchmark settings."""

    env_id: str = "corft/PickPlace-v0"
    workers: int = 2
    episodes: int = 8
    image_size: int = 64
    train_steps: int = 20


def timed(args: list[str]) -> float:
    began = time.perf_counter()
    if corft(args) != 0:
        raise RuntimeError(f"corft {' '.join(args)} failed")
    return time.perf_counter() - began


def same_stores(left: Path, right: Path) -> bool:
    a, b = EpisodeDataset(left), EpisodeDataset(right)
    return a.records == b.records and all(
        (x.load().actions == y.load().actions).all() for x, y in zip(a, b, strict=True))


def main() -> None:
    args = parse_dataclass_args(Args, __doc__.splitlines()[0])
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        collect = ["collect", "--env", args.env_id, "--episodes", str(args.episodes), "--image-size",
                   str(args.image_size), "--quiet", "--keep-failures"]
        serial_s = timed([*collect, "--out", str(root / "serial")])
        parallel_s = timed([*collect, "--out", str(root / "parallel"), "--workers", str(args.workers)])
        print(f"collect: 1 worker {args.episodes / serial_s:.2f} episodes/s, {args.workers} workers "
              f"{args.episodes / parallel_s:.2f} episodes/s: {serial_s / parallel_s:.2f}x; "
              f"same store: {same_stores(root / 'serial', root / 'parallel')}")

        timed(["train", "--algo", "sft", "--data", str(root / "serial"), "--out", str(root / "run"), "--steps",
               str(args.train_steps), "--batch-size", "8", "--threads", "1", "--quiet"])
        eval_args = ["eval", "--model", str(root / "run" / "model.zip"), "--episodes", str(args.episodes),
                     "--threads", "1", "--quiet"]
        serial_s = timed([*eval_args, "--json", str(root / "serial.json")])
        parallel_s = timed([*eval_args, "--json", str(root / "parallel.json"), "--workers", str(args.workers)])
        same = json.loads((root / "serial.json").read_text()) == json.loads((root / "parallel.json").read_text())
        print(f"eval: 1 worker {args.episodes / serial_s:.2f} episodes/s, {args.workers} workers "
              f"{args.episodes / parallel_s:.2f} episodes/s: {serial_s / parallel_s:.2f}x; same result: {same}")


if __name__ == "__main__":
    main()
