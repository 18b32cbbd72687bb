"""Critic-ranked chunk selection: best-of-N over the action expert's chunks (Q-chunking's extraction).

A CO-RFT model has two ways to turn its critic into behaviour. Stage 2's
TD3+BC actor loss moves the action expert up the critic's gradient; best-of-N
instead leaves the expert as it is and, at every prediction, asks the critic
to choose among N candidate chunks (Q-chunking, Li et al. 2025, extracts its
policy this way):

    a* = argmax_{a ∈ {a_0, ..., a_{N−1}}} min_k Q_k^{(H−1)}(c_t, a),

with the full-chunk head ``H − 1`` and the minimum over the critic copies
(the pessimistic value the critic is trained to bootstrap).

Candidates. The action expert is deterministic, so candidates are drawn
around its chunk ``μ(c_t)`` in normalised action units:
``a_0 = μ(c_t)`` and ``a_n = μ(c_t) + σ ε_n``, ``ε_n ~ N(0, I)`` drawn once per
candidate and shared by the chunk's H steps (one whole alternative motion:
independent per-step noise averages out over the executed steps). The
gripper keeps the expert's logits. Best-of-N can therefore return the
expert's own chunk whenever the critic ranks it first.

Ensemble candidates. With ``members`` (other trained models of the same
task and chunk size, e.g. SFT with other training seeds) the candidates are
instead the model's own chunk and each member's, ``N = 1 + len(members)``:
distinct motions the data supports, not offsets of one. Each member encodes
the observation with its own backbone; the critic values every candidate as
the env actions it is (``(a − μ) / σ`` in the critic model's normalisation,
the gripper at ±1).

Attribution. ``selection="random"`` picks uniformly among the same candidates;
the difference between the two on identical evaluation seeds is the critic's
ranking, not the candidates' spread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from corft_algos.policies import INSTRUCTION_KEY

Selection = Literal["critic", "random"]
SELECTIONS: tuple[str, ...] = ("critic", "random")
#: σ of the candidates' offsets, normalised action units (the dataset's standard deviations).
DEFAULT_CANDIDATE_NOISE = 0.1


def candidate_chunks(mean: torch.Tensor, n_candidates: int, noise: float,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """``(B, N, H, D)`` candidates around ``mean`` ``(B, H, D)``: the mean itself, then ``mean + σ ε_n``.

    ``ε_n ~ N(0, I)`` has shape ``(B, N − 1, 1, D)``: one offset per candidate, the same at every step.
    """
    if n_candidates < 1:
        raise ValueError(f"n_candidates must be at least 1, got {n_candidates}")
    size, _, dims = mean.shape
    offsets = torch.randn(size, n_candidates - 1, 1, dims, generator=generator, device=mean.device, dtype=mean.dtype)
    others = mean.unsqueeze(1) + noise * offsets
    return torch.cat([mean.unsqueeze(1), others], dim=1)


def observation_context(policy: Any, observation: dict[str, Any]) -> tuple[int | None, torch.Tensor]:
    """The policy's context tokens ``(B, L, d)`` for an observation (with its instruction) in eval mode, and the
    batch size (``None`` for one unbatched observation)."""
    batch, tensors = policy.observation_tensors(observation)
    policy.set_training_mode(False)
    with torch.no_grad():
        return batch, policy.encode(tensors, tensors[INSTRUCTION_KEY])


def perturbed_chunk(model: Any, observation: dict[str, Any], noise: float,
                    generator: torch.Generator | None = None) -> np.ndarray:
    """The model's chunk for one observation moved by one offset, env actions ``(H, A)``: ``μ(c_t) + σ ε`` in
    normalised action units, ``ε ~ N(0, I)`` shared by the chunk's steps, the gripper as the model's (a
    candidate of :func:`candidate_chunks`). Exploration for ``corft collect --policy-noise``: rollouts whose
    actions vary around the policy's show the critic what other actions in the same states lead to."""
    policy = model.policy
    _, context = observation_context(policy, observation)
    with torch.no_grad():
        continuous, logits = policy.action_expert(context)
        offset = candidate_chunks(continuous, 2, noise, generator)[:, 1]
        return policy.raw_actions(offset, logits)[0].cpu().numpy()


def pessimistic_chunk_values(critic: torch.nn.Module, context: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """``min_k Q_k^{(H−1)}(c, a)`` of every candidate: ``context`` ``(B, L, d)``, ``actions`` ``(B, N, H, A)``
    normalised -> ``(B, N)``."""
    size, count = actions.shape[:2]
    values = critic(context.repeat_interleave(count, dim=0), actions.flatten(0, 1))  # (K, B·N, H)
    return values[..., -1].min(0).values.view(size, count)


def choose(values: torch.Tensor, selection: Selection, generator: torch.Generator | None = None) -> torch.Tensor:
    """Index of the chosen candidate per sample, ``(B,)``: the critic's best, or uniformly random."""
    if selection == "critic":
        return values.argmax(dim=1)
    if selection == "random":
        return torch.randint(values.shape[1], (values.shape[0],), generator=generator, device=values.device)
    raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")


class ChunkSelector:
    """A CO-RFT model whose ``predict`` returns the critic-ranked (or a random) chunk of N candidates.

    Everything else (``chunk_size``, the spaces, ``policy``, ...) is the model's, so it evaluates,
    collects and runs on the twin wherever the model does (``corft eval --candidates N``).

    :param model: a trained model with a critic (``CORFT``, ``OfflineRLH1``).
    :param n_candidates: N; 1 returns the expert's chunk.
    :param noise: σ of the candidates' offsets (normalised action units).
    :param selection: ``"critic"`` (best-of-N) or ``"random"`` (the attribution baseline).
    :param seed: seed of the candidates' offsets and of the random choice.
    :param members: further models whose chunks are the other candidates (ensemble candidates, see the
        module docstring); ``n_candidates`` is then ``1 + len(members)`` and ``noise`` is not used.
    :raises ValueError: if the model has no critic, a member's chunk or action size differs, or for a bad
        argument.
    """

    def __init__(self, model: Any, n_candidates: int = 8, noise: float = DEFAULT_CANDIDATE_NOISE,
                 selection: Selection = "critic", seed: int = 0, members: Sequence[Any] = ()) -> None:
        if getattr(model.policy, "critic", None) is None:
            raise ValueError(f"critic-ranked selection needs a model with a critic (CORFT); "
                             f"{type(model).__name__} has none")
        if n_candidates < 1:
            raise ValueError(f"n_candidates must be at least 1, got {n_candidates}")
        if not noise >= 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
        for member in members:
            if member.action_space.shape != model.action_space.shape:
                raise ValueError(f"a member's chunks have shape {member.action_space.shape}, the model's "
                                 f"{model.action_space.shape}: ensemble candidates need the same chunk size "
                                 "and action dims")
        self.members = list(members)
        self.model, self.selection = model, selection
        self.n_candidates = 1 + len(self.members) if self.members else n_candidates
        self.noise = 0.0 if self.members else float(noise)
        self.generator = torch.Generator(device=model.policy.device).manual_seed(seed)

    def __getattr__(self, name: str) -> Any:
        if name == "model":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.model, name)

    def predict(self, observation: dict[str, Any], state: tuple[np.ndarray, ...] | None = None,
                episode_start: np.ndarray | None = None,
                deterministic: bool = True) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """The chosen chunk ``(H, A)`` for one observation (``(B, H, A)`` for a batch), as the model's ``predict``."""
        batch, context = observation_context(self.model.policy, observation)
        with torch.no_grad():
            if self.members:
                chunk = self.select_among(context, self.member_chunks(observation, batch is None))
            else:
                chunk = self.select(context)
        return (chunk[0] if batch is None else chunk).cpu().numpy(), state

    def member_chunks(self, observation: dict[str, Any], single: bool) -> torch.Tensor:
        """Each member's chunk for ``observation``, env actions ``(B, M, H, A)``."""
        chunks = [np.asarray(member.predict(observation, deterministic=True)[0]) for member in self.members]
        stacked = np.stack([chunk[None] if single else chunk for chunk in chunks], axis=1)
        return torch.as_tensor(stacked, dtype=torch.float32, device=self.model.policy.device)

    @torch.no_grad()
    def select_among(self, context: torch.Tensor, member_chunks: torch.Tensor) -> torch.Tensor:
        """Env actions ``(B, H, A)`` of the chosen one of the model's chunk and ``member_chunks`` ``(B, M, H, A)``."""
        policy = self.model.policy
        own = policy.raw_actions(*policy.action_expert(context)).unsqueeze(1)
        candidates = torch.cat([own, member_chunks.to(own.dtype)], dim=1)
        values = pessimistic_chunk_values(policy.critic, context, policy.normalize_actions(candidates))
        index = choose(values, self.selection, self.generator)
        return candidates[torch.arange(len(index), device=index.device), index]

    @torch.no_grad()
    def select(self, context: torch.Tensor) -> torch.Tensor:
        """Env actions ``(B, H, A)`` of the chosen candidates for context tokens ``(B, L, d)``."""
        policy = self.model.policy
        continuous, logits = policy.action_expert(context)
        candidates = candidate_chunks(continuous, self.n_candidates, self.noise, self.generator)
        candidate_logits = logits.unsqueeze(1).expand(*candidates.shape[:3], logits.shape[-1])
        values = pessimistic_chunk_values(policy.critic, context,
                                          policy.critic_actions(candidates, candidate_logits))
        index = choose(values, self.selection, self.generator)
        rows = torch.arange(len(index), device=index.device)
        return policy.raw_actions(candidates[rows, index], logits)
