"""The real env's control loop on the twin: achieved rate, latency per step, and the sim-to-twin gap.

Runs the real env (``corft/FR3Real-<Task>-v0``, ``robot_host="twin"``: franky
over loopback to franky-sim, cameras through pyrealsense2 software devices)
and the sim env on the same seeds, and prints:

1. the achieved control rate against the requested 10 Hz, with the per-step
   latency breakdown the env reports (``info["timing"]``: sending the command,
   reading the arm's state, reading each camera, the whole period) and, with
   a model, the policy's inference time per chunk. Each period lasts 0.1 s
   of wall-clock *and* simulated time, so where franky-sim runs slower than
   real time the wall-clock rate drops below 10 Hz while the simulated one
   stays at 10 Hz;
2. success rate and cycle time of the scripted expert (closed loop, reading
   the scene's true state) in the sim env and on the twin: the gap the
   hardware path alone opens (franky's dynamics limits, command latency);
3. with ``--model``, the same for a policy trained in the sim env, run
   unchanged on the twin: the sim-to-twin gap of the policy.

Run: ``python -m benchmarks.twin_loop [--task PickPlace --episodes 5 --dynamics-factor 0.1 --model runs/x/model.zip
--no-distractors --execute 5 --image-size 64]`` (the model's own settings: ``--no-distractors`` if it was
trained without them, as in the paper study).
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import corft_envs  # noqa: E402,F401
from benchmarks.common import parse_dataclass_args  # noqa: E402
from corft_algos.evaluation import DEFAULT_EVAL_SEED, evaluate_episode, load_model  # noqa: E402
from corft_envs.chunking import ActionChunk  # noqa: E402
from corft_envs.collection import scripted_actions  # noqa: E402
from corft_envs.experts import make_expert  # noqa: E402
from corft_envs.rollout import run_episode  # noqa: E402
from corft_robots.contract import CONTROL_HZ  # noqa: E402


@dataclass
class Args:
    """Benchmark settings."""

    task: str = "PickPlace"
    episodes: int = 5
    image_size: int = 96
    positions: str = "train"
    distractors: bool = True
    seed: int = DEFAULT_EVAL_SEED
    dynamics_factor: float = 0.1
    model: str = ""
    execute: int = 0
    threads: int = 1
    json: str = ""


Timings = dict[str, list[float]]


class StepTimings(gym.Wrapper):
    """Appends ``info["timing"]`` of every step to ``timings`` (place it beneath the chunk wrapper)."""

    def __init__(self, env: gym.Env, timings: Timings) -> None:
        super().__init__(env)
        self.timings = timings

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        result = self.env.step(action)
        for name, seconds in result[4].get("timing", {}).items():
            self.timings[name].append(seconds)
        return result


class TimedPolicy:
    """A model whose ``predict`` calls are timed."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.seconds: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        result = self.model.predict(*args, **kwargs)
        self.seconds.append(time.perf_counter() - began)
        return result


def env_id(args: Args, twin: bool) -> str:
    return f"corft/FR3Real-{args.task}-v0" if twin else f"corft/{args.task}-v0"


def make_env(args: Args, twin: bool, include_instruction: bool = False) -> gym.Env:
    kwargs: dict[str, Any] = {"image_size": args.image_size, "positions": args.positions,
                              "distractors": args.distractors, "include_instruction": include_instruction}
    if twin:
        kwargs.update(robot_host="twin", arm_options={"dynamics_factor": args.dynamics_factor})
    return gym.make(env_id(args, twin), **kwargs)


def run_expert(args: Args, twin: bool, timings: Timings | None = None) -> list[tuple[bool, int]]:
    """(success, steps) of the scripted expert per episode."""
    env = make_env(args, twin)
    if timings is not None:
        env = StepTimings(env, timings)
    expert = make_expert(env)
    try:
        seeds = [args.seed + k for k in range(args.episodes)]
        records = [run_episode(env, scripted_actions(expert, seed, None), seed) for seed in seeds]
    finally:
        env.close()
    return [(record.success, record.steps) for record in records]


def run_model(args: Args, twin: bool, policy: TimedPolicy, timings: Timings | None = None) -> list[tuple[bool, int]]:
    """(success, steps) of the model per episode, chunks executed as ``corft eval`` does."""
    env: gym.Env = make_env(args, twin, include_instruction=True)
    if timings is not None:
        env = StepTimings(env, timings)
    env = ActionChunk(env, policy.chunk_size, execute=args.execute or None)
    try:
        records = [evaluate_episode(policy, env, args.seed + k) for k in range(args.episodes)]
    finally:
        env.close()
    return [(record.success, record.steps) for record in records]


def summarize(outcomes: list[tuple[bool, int]]) -> dict[str, Any]:
    successes = [steps for success, steps in outcomes if success]
    return {"episodes": len(outcomes), "successes": len(successes),
            "success_rate": len(successes) / len(outcomes),
            "cycle_time_steps": float(np.mean(successes)) if successes else None}


def latency_table(timings: Timings, inference: list[float]) -> dict[str, dict[str, float]]:
    table = {name: {"mean_ms": 1e3 * float(np.mean(values)), "p95_ms": 1e3 * float(np.percentile(values, 95))}
             for name, values in timings.items()}
    if inference:
        table["policy_inference_per_chunk_s"] = {"mean_ms": 1e3 * float(np.mean(inference)),
                                                  "p95_ms": 1e3 * float(np.percentile(inference, 95))}
    return table


def main() -> None:
    args = parse_dataclass_args(Args, __doc__.splitlines()[0])
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    timings: Timings = defaultdict(list)
    results: dict[str, Any] = {"args": asdict(args)}
    results["expert"] = {"sim": summarize(run_expert(args, twin=False)),
                         "twin": summarize(run_expert(args, twin=True, timings=timings))}
    inference: list[float] = []
    if args.model:
        policy = TimedPolicy(load_model(Path(args.model), device="cpu"))
        results["model"] = {"sim": summarize(run_model(args, False, policy))}
        policy.seconds.clear()
        results["model"]["twin"] = summarize(run_model(args, True, policy, timings))
        inference = policy.seconds
    periods = timings["period_s"]
    results["control_rate_hz"] = {"requested": CONTROL_HZ, "achieved": 1.0 / float(np.mean(periods)),
                                  "achieved_in_simulated_time": 1.0 / float(np.mean(timings["sim_period_s"])),
                                  "steps": len(periods)}
    results["latency"] = latency_table(timings, inference)
    results["wall_s"] = time.perf_counter() - began

    rate = results["control_rate_hz"]
    print(f"control rate on the twin: {rate['achieved']:.2f} Hz achieved / {rate['requested']} Hz requested "
          f"over {rate['steps']} steps (dynamics_factor {args.dynamics_factor}); "
          f"{rate['achieved_in_simulated_time']:.2f} Hz in the simulator's time (steps wait for its clock too)")
    print("per-step latency (mean / p95, ms):")
    for name, value in results["latency"].items():
        print(f"  {name:32s} {value['mean_ms']:8.2f} / {value['p95_ms']:8.2f}")
    print(f"{'policy':8s} {'env':5s} {'success':>10s} {'cycle time (steps)':>20s}")
    for who in ("expert", "model"):
        for where, summary in results.get(who, {}).items():
            cycle = summary["cycle_time_steps"]
            print(f"{who:8s} {where:5s} {summary['successes']:4d}/{summary['episodes']:<5d} "
                  f"{'-' if cycle is None else f'{cycle:.1f}':>20s}")
    print(f"wall time {results['wall_s']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
