"""Does a CO-RFT critic tell success from failure, and can it rank candidate chunks?

For every episode of a store that holds both outcomes (e.g. ``corft collect --policy SFT
--keep-failures``), the critic values the recorded chunks every ``--stride`` steps over the first
``--steps`` steps, ``min_k Q_k^{(H−1)}(c_t, a_{t:t+H})`` (a chunk cut by the episode's end is padded with
its last action). It prints, for successful against failed episodes:

1. the mean value of the first chunk and of all the chunks valued, with the AUC of the episodes'
   values (the probability that a successful episode is valued above a failed one; 0.5 is chance);
2. for best-of-N (:mod:`corft_algos.selection`): the spread of the values of N candidates around the
   action expert's chunk at the same observations, and by how much the expert's own chunk trails the
   best other one. A spread far below the gap between outcomes means the ranking is mostly noise.

Run: ``python -m benchmarks.critic_diagnostics --model runs/pp_corft/model.zip --data data/pp_rollouts
[--steps 60 --stride 5 --candidates 8 --noise 0.1]``
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import parse_dataclass_args
from corft_algos.evaluation import load_model
from corft_algos.selection import candidate_chunks, pessimistic_chunk_values
from corft_envs.episode_store import EpisodeData, EpisodeDataset


@dataclass
class Args:
    """Diagnostic settings."""

    model: str = ""
    data: str = ""
    steps: int = 60
    stride: int = 5
    candidates: int = 8
    noise: float = 0.1
    threads: int = 2


def recorded_chunks(episode: EpisodeData, starts: list[int], horizon: int) -> np.ndarray:
    """``(len(starts), H, A)`` recorded actions from each start, padded with the episode's last action."""
    actions = episode.actions
    chunks = np.repeat(actions[-1][None, None], len(starts), axis=0).repeat(horizon, axis=1)
    for row, start in enumerate(starts):
        taken = actions[start:start + horizon]
        chunks[row, :len(taken)] = taken
    return chunks.astype(np.float32)


def auc(positives: list[float], negatives: list[float]) -> float:
    """P(a positive is valued above a negative), ties counting one half."""
    if not positives or not negatives:
        return float("nan")
    p, n = np.asarray(positives)[:, None], np.asarray(negatives)[None, :]
    return float(np.mean((p > n) + 0.5 * (p == n)))


@torch.no_grad()
def episode_values(model, episode: EpisodeData, args: Args, generator: torch.Generator) -> dict[str, float]:
    """The critic's values of one episode's recorded chunks, and of candidates at the same observations."""
    policy = model.policy
    starts = list(range(0, min(len(episode.actions), args.steps), args.stride))
    observation = {key: torch.as_tensor(value[starts]) for key, value in episode.observations.items()
                   if key in policy.observation_space.spaces}
    context = policy.encode(observation, policy.instruction_embedding([episode.instruction] * len(starts)))
    recorded = policy.normalize_actions(torch.as_tensor(recorded_chunks(episode, starts, model.chunk_size)))
    values = policy.critic(context, recorded)[..., -1].min(0).values
    continuous, logits = policy.action_expert(context)
    candidates = candidate_chunks(continuous, args.candidates, args.noise, generator)
    candidate_logits = logits.unsqueeze(1).expand(*candidates.shape[:3], logits.shape[-1])
    ranked = pessimistic_chunk_values(policy.critic, context, policy.critic_actions(candidates, candidate_logits))
    return {"first": float(values[0]), "mean": float(values.mean()),
            "spread": float(ranked.std(1).mean()),
            "expert_margin": float((ranked[:, 0] - ranked[:, 1:].max(1).values).mean())}


def main() -> None:
    args = parse_dataclass_args(Args, __doc__.splitlines()[0])
    if not args.model or not args.data:
        raise SystemExit("pass --model PATH (a CO-RFT model.zip) and --data STORE (episodes of both outcomes)")
    torch.set_num_threads(args.threads)
    model = load_model(Path(args.model), device="cpu")
    if getattr(model.policy, "critic", None) is None:
        raise SystemExit(f"{args.model} has no critic: pass a CO-RFT model")
    model.policy.set_training_mode(False)
    generator = torch.Generator().manual_seed(0)
    rows = [(bool(episode.is_success.any()), episode_values(model, episode, args, generator))
            for episode in (item.load() for item in EpisodeDataset(Path(args.data)))]
    succeeded = [values for success, values in rows if success]
    failed = [values for success, values in rows if not success]
    print(f"{args.model} on {args.data}: {len(succeeded)} successful, {len(failed)} failed episodes")
    for key, label in (("first", "first chunk"), ("mean", f"chunks of steps 0-{args.steps - 1}, every {args.stride}")):
        good, bad = [v[key] for v in succeeded], [v[key] for v in failed]
        print(f"  value of the {label}: successful {np.mean(good):.3f}, failed {np.mean(bad):.3f}, "
              f"AUC {auc(good, bad):.2f}")
    print(f"  {args.candidates} candidates (σ {args.noise}): value spread {np.mean([v['spread'] for _, v in rows]):.4f}, "
          f"expert's chunk minus the best other {np.mean([v['expert_margin'] for _, v in rows]):+.4f}")


if __name__ == "__main__":
    main()
