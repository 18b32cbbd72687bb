"""Inference time per chunk of critic-ranked selection (best-of-N) against the expert's chunk alone.

Loads a CO-RFT model, resets its env on a few seeds and times ``predict`` for
each N (N = 1 is the model's own ``predict``; N > 1 a
:class:`~corft_algos.selection.ChunkSelector`), interleaving the N values on
every observation so that a busy CPU slows all of them alike. Prints the mean
and 95th percentile per N and the ratio to N = 1, measured in this one run,
against the 100 ms a chunk may take at 10 Hz.

Run: ``python -m benchmarks.selection_latency --model runs/pp_corft/model.zip [--candidates 1,8,32
--observations 30 --threads 2]``
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import corft_envs  # noqa: E402,F401
from benchmarks.common import parse_dataclass_args  # noqa: E402
from corft_algos.evaluation import load_model, model_image_size, trained_env_id, trained_scene  # noqa: E402
from corft_algos.selection import ChunkSelector  # noqa: E402
from corft_robots.contract import CONTROL_PERIOD  # noqa: E402


@dataclass
class Args:
    """Benchmark settings."""

    model: str = ""
    candidates: str = "1,8,32"
    observations: int = 30
    threads: int = 2


def main() -> None:
    args = parse_dataclass_args(Args, __doc__.splitlines()[0])
    if not args.model:
        raise SystemExit("pass --model PATH (a CO-RFT model.zip)")
    torch.set_num_threads(args.threads)
    candidates = [int(n) for n in args.candidates.split(",")]
    model = load_model(Path(args.model), device="cpu")
    predictors = {n: model if n == 1 else ChunkSelector(model, n_candidates=n) for n in candidates}
    env = gym.make(trained_env_id(model), include_instruction=True, image_size=model_image_size(model),
                   **trained_scene(model))
    seconds: dict[int, list[float]] = {n: [] for n in candidates}
    try:
        for k in range(args.observations):
            observation, _ = env.reset(seed=k)
            for n, predictor in predictors.items():
                began = time.perf_counter()
                predictor.predict(observation)
                seconds[n].append(time.perf_counter() - began)
    finally:
        env.close()
    baseline = float(np.mean(seconds[candidates[0]]))
    print(f"{args.model}: predict per chunk over {args.observations} observations, {args.threads} threads")
    print(f"{'N':>4s} {'mean ms':>9s} {'p95 ms':>9s} {'x N=' + str(candidates[0]):>8s} {'of 100 ms':>10s}")
    for n, values in seconds.items():
        mean = float(np.mean(values))
        print(f"{n:4d} {1e3 * mean:9.1f} {1e3 * float(np.percentile(values, 95)):9.1f} {mean / baseline:8.2f} "
              f"{mean / CONTROL_PERIOD:10.0%}")


if __name__ == "__main__":
    main()
