"""CO-RFT: chunked offline RL fine-tuning of a VLA policy (arXiv 2508.02219).

Stage 1 (the first ``il_steps`` gradient steps) is :class:`~corft_algos.sft.SFT`:
full-parameter imitation learning. Stage 2 is offline TD learning over action
chunks with a critic expert beside the action expert (DESIGN.md section 4):

- **critic**: two :class:`~corft_algos.networks.experts.ChunkQNetwork` copies,
  each giving ``Q_k^{(j)}(c_t, a_{t:t+j+1})`` for every prefix j in one pass;
  trained towards the per-prefix targets

      y_j = Σ_{i=0..j} γ^i r_{t+i} + γ^{j+1} (1 − d_{t+j}) min_k Q̄_k^{(H−1)}(c_{t+j+1}, ã),
      ã = π̄(c_{t+j+1}) + clip(N(0, σ²), −c, c),

  over valid steps (``boundary_only=True`` keeps only the last valid prefix,
  Q-chunking's target; ``value_bounds=(low, high)`` clips the bootstrapped
  ``min_k Q̄`` to the range returns can take), each sample's squared errors
  summed over its prefixes and averaged over samples, plus the Cal-QL term on
  the full-chunk head (``calql_heads="all"``: summed over every valid head)

      α · E[ logsumexp_{a ∈ samples} max(Q(c, a), G(c)) − Q(c, a_data) ],

  samples = uniform chunks, π(c_t) + noise and π(c_{t+1}) + noise, G the
  discounted Monte-Carlo return (``calql_floor="policy"``: the floor on the
  policy's samples only, as in the Cal-QL reference). For a chunk cut by the episode's end the last
  valid head stands in for the full-chunk head.
- **actor** (TD3+BC): ``−λ · mean_j Q_1^{(j)}(c, π(c)_{0:j+1}) / mean|Q| + L_IL``
  over valid steps (``L_IL`` over those of successful episodes only: failed
  rollouts in the data teach the critic what fails, not the actor), updated
  every ``policy_delay`` critic steps after ``critic_warmup_steps`` with the
  actor frozen.
- **targets**: Polyak averages (τ) of both critics and of the action expert.
- **backbone**: frozen in stage 2 by default (``backbone_lr=0``): context tokens
  are computed once per frame and reused; ``backbone_lr > 0`` fine-tunes it
  through the actor loss instead.
- **sampling**: chunks holding the success step are drawn ``success_oversample``
  times more often in stage 2.

:class:`OfflineRLH1` is the same with H = 1: single-step offline RL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from corft_algos.common.base import OfflineAlgorithm
from corft_algos.distributed import average_over_ranks
from corft_algos.losses import (actor_q_term, calql_penalty, last_valid_index, masked_mean, prefix_td_loss,
                                per_prefix_targets)
from corft_algos.registry import register_algorithm
from corft_algos.sft import SFT


CALQL_HEADS = ("last", "all")
CALQL_FLOORS = ("all", "policy")


def polyak_update(target: torch.nn.Module, source: torch.nn.Module, tau: float) -> None:
    """``θ̄ ← (1 − τ) θ̄ + τ θ`` for every parameter."""
    with torch.no_grad():
        for target_parameter, parameter in zip(target.parameters(), source.parameters()):
            target_parameter.lerp_(parameter, tau)


class CORFT(SFT):
    """CO-RFT: SFT for ``il_steps`` gradient steps, then chunked offline RL.

    Takes every :class:`~corft_algos.sft.SFT` argument, plus:

    :param il_steps: stage-1 (imitation) gradient steps (default: three quarters of a 6000-step budget);
        0 starts in stage 2
        (use :meth:`init_from` to start from an SFT checkpoint).
    :param rl_steps: stage-2 gradient steps (``learn(il_steps + rl_steps)`` runs both).
    :param actor_lr: stage-2 learning rate of the action expert.
    :param critic_lr: learning rate of the critic expert.
    :param backbone_lr: stage-2 learning rate of the backbone; 0 freezes it.
    :param tau: Polyak rate of the target networks.
    :param policy_delay: critic steps per actor step.
    :param critic_warmup_steps: stage-2 steps with the actor frozen.
    :param calql_alpha: α, weight of the Cal-QL term (0 disables it).
    :param actor_q_weight: λ of the TD3+BC actor loss. Default 0: in every paired measurement λ = 0 was at
        least as good (the full study's ablation: 46% vs 39% at train positions, 18% vs 18% unseen; stage 2
        from the co-trained SFT: 0.0 points [−8.7, +8.7] train, −16.0 [−26.0, −6.0] unseen for λ = 0.25;
        benchmarks/RESULTS.md), so stage 2 trains the critic (for ranking chunks, :mod:`corft_algos.selection`,
        and diagnostics) and refits the action expert by imitation. The paper's critic-guided actor is
        ``actor_q_weight=0.25`` (TD3+BC's 2.5 collapsed the policy), what the study's CO-RFT rows run.
    :param target_noise: σ of the target policy smoothing noise (normalised action units).
    :param noise_clip: c, the clip of that noise.
    :param n_action_samples: chunks of each kind (uniform, π(c_t), π(c_{t+1})) in Cal-QL's logsumexp.
    :param boundary_only: train only the last valid prefix (Q-chunking's target).
    :param calql_heads: ``"last"``: Cal-QL on the (last valid) full-chunk head only; ``"all"``: on every
        valid prefix head, summed per sample as the TD loss is (the actor maximises every head, so an
        unconstrained one may overestimate).
    :param calql_floor: ``"all"``: every sample is floored at the Monte-Carlo return; ``"policy"``: only
        the policy's samples, as the Cal-QL reference does (uniform chunks are not lifted).
    :param success_oversample: stage-2 oversampling of chunks that hold the success step.
    :param value_bounds: ``(low, high)`` clip of the bootstrapped value ``min_k Q̄`` in the critic's
        targets, the range the returns of the stored rewards can take: ``(0, 1)`` for a sparse reward of
        1 that ends the episode (no value above it can be real), the default, which the corft tasks'
        rewards fit; ``None`` does not clip (other rewards). A ``step_cost`` c lowers ``low`` by
        ``c / (1 − γ)`` (:attr:`bootstrap_bounds`).
    :param step_cost: c subtracted from every step's reward in training (the stores are not changed;
        :class:`~corft_algos.data.ChunkDataset`): 0 keeps the sparse reward, whose Q moves by about
        ``(1 − γ) Q`` (1% at γ = 0.99) for a step of delay; c > 0 adds c to that, and lets a failure
        that runs on fall to ``−c / (1 − γ)`` (−1 for c = 0.01) instead of 0. Measured on PickPlace
        (benchmarks/RESULTS.md), c = 0.01 with ``actor_q_weight=0.25`` cost success and no cycle time.
    """

    algorithm_name: ClassVar[str] = "corft"
    uses_critic: ClassVar[bool] = True
    training_state_attributes: ClassVar[tuple[str, ...]] = (*SFT.training_state_attributes, "rl_started")

    def __init__(
        self,
        *args: Any,
        il_steps: int = 4500,
        rl_steps: int = 1500,
        actor_lr: float = 1e-4,
        critic_lr: float = 3e-4,
        backbone_lr: float = 0.0,
        tau: float = 0.005,
        policy_delay: int = 2,
        critic_warmup_steps: int = 200,
        calql_alpha: float = 0.2,
        actor_q_weight: float = 0.0,
        target_noise: float = 0.2,
        noise_clip: float = 0.5,
        n_action_samples: int = 3,
        boundary_only: bool = False,
        calql_heads: str = "last",
        calql_floor: str = "all",
        success_oversample: float = 2.0,
        value_bounds: tuple[float, float] | None = (0.0, 1.0),
        step_cost: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if value_bounds is not None and not (len(value_bounds) == 2 and value_bounds[0] < value_bounds[1]):
            raise ValueError(f"value_bounds must be (low, high) with low < high, got {value_bounds!r}")
        self.il_steps, self.rl_steps = il_steps, rl_steps
        self.actor_lr, self.critic_lr, self.backbone_lr = actor_lr, critic_lr, backbone_lr
        self.tau, self.policy_delay, self.critic_warmup_steps = tau, policy_delay, critic_warmup_steps
        self.calql_alpha, self.actor_q_weight = calql_alpha, actor_q_weight
        self.target_noise, self.noise_clip, self.n_action_samples = target_noise, noise_clip, n_action_samples
        if calql_heads not in CALQL_HEADS:
            raise ValueError(f"calql_heads must be one of {CALQL_HEADS}, got {calql_heads!r}")
        if calql_floor not in CALQL_FLOORS:
            raise ValueError(f"calql_floor must be one of {CALQL_FLOORS}, got {calql_floor!r}")
        self.calql_heads, self.calql_floor = calql_heads, calql_floor
        self.boundary_only, self.success_oversample = boundary_only, success_oversample
        self.step_cost = float(step_cost)
        self.value_bounds = None if value_bounds is None else (float(value_bounds[0]), float(value_bounds[1]))
        self.rl_started = False
        self._contexts: torch.Tensor | None = None
        super().__init__(*args, **kwargs)

    def _success_oversample(self) -> float:
        return self.success_oversample

    def _step_cost(self) -> float:
        return self.step_cost

    @property
    def bootstrap_bounds(self) -> tuple[float, float] | None:
        """The clip of the bootstrapped values: :attr:`value_bounds` with ``low − c / (1 − γ)`` for a
        ``step_cost`` c (the lowest return the costs can add; −inf for γ = 1), or ``None``."""
        if self.value_bounds is None:
            return None
        low, high = self.value_bounds
        if self.step_cost > 0:
            low = low - self.step_cost / (1 - self.gamma) if self.gamma < 1 else float("-inf")
        return float(low), float(high)

    def _setup_optimizers(self) -> None:
        super()._setup_optimizers()
        actor_groups = [{"params": list(self.policy.actor_parameters()), "lr": self.actor_lr}]
        if self.backbone_lr > 0:
            actor_groups.append({"params": list(self.policy.backbone_parameters()), "lr": self.backbone_lr})
        self.actor_optimizer = self.make_optimizer(actor_groups, weight_decay=self.weight_decay)
        self.critic_optimizer = self.make_optimizer(list(self.policy.critic_parameters()), lr=self.critic_lr,
                                                    weight_decay=self.weight_decay)
        self._contexts = None

    def optimizer_names(self) -> list[str]:
        return ["optimizer", "actor_optimizer", "critic_optimizer"]

    @property
    def stage(self) -> int:
        """1 during imitation learning, 2 during offline RL."""
        return 1 if self.num_timesteps < self.il_steps else 2

    def train_step(self) -> dict[str, Any]:
        if self.stage == 1:
            return self.imitation_step(self.optimizer)
        if not self.rl_started:
            self._start_rl()
        return self.rl_step()

    # ------------------------------------------------------------- stage 2
    def _start_rl(self) -> None:
        """Targets start as copies of the current critic and action expert."""
        self.policy.critic_target.load_state_dict(self.policy.critic.state_dict())
        self.policy.actor_target.load_state_dict(self.policy.action_expert.state_dict())
        self.rl_started = True

    @torch.no_grad()
    def frame_contexts(self) -> torch.Tensor:
        """Context tokens of every frame of the dataset, ``(N_frames, L, d)`` (frozen backbone).

        Computed in evaluation mode, as the backbone runs at inference: a BatchNorm layer (the ResNet
        tower's) normalises with its running statistics and leaves them untouched.
        """
        if self._contexts is None:
            frames = self.dataset.frames
            contexts = []
            training = self.policy.training
            self.policy.set_training_mode(False)
            try:
                for start in range(0, frames.num_frames, 256):
                    indices = torch.arange(start, min(start + 256, frames.num_frames))
                    observation = {key: torch.from_numpy(value).to(self.device)
                                   for key, value in frames.get(indices.numpy()).items()}
                    instruction = torch.from_numpy(frames.instruction_ids[indices.numpy()]).to(self.device)
                    contexts.append(self.encode_batch(observation, instruction, augment=False,
                                                      frames=indices.to(self.device)))
            finally:
                self.policy.set_training_mode(training)
            self._contexts = torch.cat(contexts)
        return self._contexts

    def _contexts_for(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``c_t`` (``(B, L, d)``, with gradients if the backbone trains) and ``c_{t+j+1}`` (``(B, H, L, d)``)."""
        if self.backbone_lr == 0:
            contexts = self.frame_contexts()
            return contexts[batch["frame"]], contexts[batch["next_frames"]]
        context = self.encode_batch(batch["observation"], batch["instruction"], augment=self.image_augmentation,
                                    frames=batch["frame"])
        next_frames = batch["next_frames"].flatten()
        with torch.no_grad():
            observation = {key: torch.from_numpy(value).to(self.device)
                           for key, value in self.dataset.frames.get(next_frames.cpu().numpy()).items()}
            instruction = batch["instruction"].repeat_interleave(self.chunk_size)
            next_context = self.encode_batch(observation, instruction, augment=False, frames=next_frames)
        return context, next_context.view(*batch["next_frames"].shape, *next_context.shape[1:])

    def _noisy(self, actions: torch.Tensor) -> torch.Tensor:
        noise = (torch.randn_like(actions) * self.target_noise).clamp(-self.noise_clip, self.noise_clip)
        return actions + noise

    def _policy_chunks(self, context: torch.Tensor, expert: torch.nn.Module) -> torch.Tensor:
        """The critic's normalised actions of ``expert``'s chunks for ``context``."""
        return self.policy.critic_actions(*expert(context))

    def rl_step(self) -> dict[str, Any]:
        """One critic step and, every ``policy_delay`` steps after the warm-up, one actor step."""
        policy = self.policy
        batch = self.next_batch(with_observations=self.backbone_lr > 0, oversample_success=True)
        context, next_context = self._contexts_for(batch)
        critic_loss, metrics = self.run_loss(self.critic_loss, context.detach(), next_context, batch)
        metrics["critic_grad_norm"] = self.optimizer_step(self.critic_optimizer, critic_loss,
                                                          list(policy.critic_parameters()))
        polyak_update(policy.critic_target, policy.critic, self.tau)
        rl_step = self.num_timesteps - self.il_steps
        if rl_step >= self.critic_warmup_steps and rl_step % self.policy_delay == 0:
            metrics.update(self._actor_step(context, batch))
        return metrics

    def critic_loss(self, context: torch.Tensor, next_context: torch.Tensor,
                    batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The critic loss (per-prefix TD + α · Cal-QL) and its detached statistics, without host-device syncs."""
        policy = self.policy
        with torch.no_grad():
            next_values = self.bootstrap_values(next_context)
            targets, mask = per_prefix_targets(batch["rewards"], batch["done"], batch["valid"], next_values,
                                               self.gamma, self.boundary_only)
        data_q = policy.critic(context, policy.normalize_actions(batch["actions"]))  # (K, B, H)
        td_loss = sum(prefix_td_loss(q, targets, mask) for q in data_q)
        critic_loss = td_loss
        metrics = {"td_loss": td_loss.detach()}
        if self.calql_alpha > 0:
            penalty = self._calql_penalty(context, next_context[:, 0].detach(), data_q, batch)
            critic_loss = critic_loss + self.calql_alpha * penalty
            metrics["calql_penalty"] = penalty.detach()
        valid = batch["valid"].expand_as(data_q)
        q = data_q.detach().float()
        metrics.update(q_mean=masked_mean(q, valid), q_max=q.masked_fill(~valid, float("-inf")).max(),
                       target_mean=masked_mean(targets.float(), mask))
        return critic_loss, metrics

    @torch.no_grad()
    def bootstrap_values(self, next_context: torch.Tensor) -> torch.Tensor:
        """``min_k Q̄_k^{(H−1)}(c_{t+j+1}, π̄(c_{t+j+1}) + clip(N(0, σ²), −c, c))``, clipped to :attr:`bootstrap_bounds`.

        :param next_context: ``(B, H, L, d)`` contexts ``c_{t+j+1}``.
        :return: ``(B, H)``.
        """
        policy = self.policy
        size, horizon = next_context.shape[:2]
        flat_next = next_context.flatten(0, 1)
        next_actions = self._noisy(self._policy_chunks(flat_next, policy.actor_target))
        values = policy.critic_target(flat_next, next_actions)[:, :, -1].min(0).values.view(size, horizon)
        bounds = self.bootstrap_bounds
        return values if bounds is None else values.clamp(*bounds)

    def _calql_penalty(self, context: torch.Tensor, next_context: torch.Tensor, data_q: torch.Tensor,
                       batch: dict[str, Any]) -> torch.Tensor:
        """Cal-QL on the last valid head (``calql_heads="last"``) or every valid head, summed over the critic
        copies; the floor on every sample or on the policy's only (``calql_floor``)."""
        policy, samples = self.policy, self.n_action_samples
        size = context.shape[0]
        with torch.no_grad():
            uniform = torch.rand(size, samples, *self.action_space.shape, device=self.device) * 2 - 1
            chunks = [policy.normalize_actions(uniform)]
            for source in (context, next_context):
                repeated = source.repeat_interleave(samples, dim=0)
                chunks.append(self._noisy(self._policy_chunks(repeated, policy.action_expert)).view_as(chunks[0]))
            sampled = torch.cat(chunks, dim=1)  # (B, 3N, H, A): uniform, then the policy's
        count = sampled.shape[1]
        sample_q = policy.critic(context.repeat_interleave(count, dim=0), sampled.flatten(0, 1))
        sample_q = sample_q.view(len(sample_q), size, count, -1)  # (K, B, 3N, H)
        floored = torch.arange(count, device=self.device) >= (samples if self.calql_floor == "policy" else 0)
        if self.calql_heads == "all":
            heads = batch["valid"]
        else:
            heads = torch.zeros_like(batch["valid"])
            heads[torch.arange(size, device=self.device), last_valid_index(batch["valid"])] = True
        return sum(calql_penalty(sample_q[k], data_q[k], batch["mc_return"], floored, heads)
                   for k in range(len(data_q)))

    def _actor_step(self, context: torch.Tensor, batch: dict[str, Any]) -> dict[str, Any]:
        q_term, bc_term = self.run_loss(self.actor_loss_terms, context, batch)
        parameters = [p for group in self.actor_optimizer.param_groups for p in group["params"]]
        norm = self.optimizer_step(self.actor_optimizer, q_term + bc_term, parameters)
        self.policy.critic.zero_grad(set_to_none=True)
        polyak_update(self.policy.actor_target, self.policy.action_expert, self.tau)
        return {"actor_q_term": q_term.detach(), "actor_bc_loss": bc_term.detach(), "actor_grad_norm": norm}

    def actor_loss_terms(self, context: torch.Tensor, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The actor's TD3+BC terms: ``(−λ · mean_j Q_1^{(j)} / mean|Q|, L_IL)``."""
        policy = self.policy
        continuous, logits = policy.action_expert(context)
        prefix_q = policy.critic.q_networks[0](context.detach() if self.backbone_lr == 0 else context,
                                               policy.critic_actions(continuous, logits))
        scale = average_over_ranks(masked_mean(prefix_q.detach().abs(), batch["valid"]))  # the global batch's
        q_term = actor_q_term(prefix_q, batch["valid"], self.actor_q_weight, scale)
        return q_term, policy.imitation_loss(continuous, logits, batch["actions"], batch["imitate"])

    @classmethod
    def from_sft(cls, sft: SFT | str | Path, dataset: Any, **kwargs: Any) -> CORFT:
        """Start stage 2 from an SFT model or checkpoint: same chunk size and architecture, ``il_steps=0``."""
        if not isinstance(sft, OfflineAlgorithm):
            sft = SFT.load(sft)
        kwargs.setdefault("policy_kwargs", sft.policy_kwargs)
        model = cls(dataset=dataset, chunk_size=sft.chunk_size, gamma=kwargs.pop("gamma", sft.gamma),
                    il_steps=0, **kwargs)
        model.init_from(sft)
        return model


class OfflineRLH1(CORFT):
    """Single-step offline RL: CO-RFT's losses with H = 1 (stage 1 is then BC)."""

    algorithm_name: ClassVar[str] = "offline_rl_h1"

    def __init__(self, *args: Any, chunk_size: int = 1, **kwargs: Any) -> None:
        if chunk_size != 1:
            raise ValueError(f"OfflineRLH1 is single-step (chunk_size=1), got chunk_size={chunk_size}; use CORFT")
        super().__init__(*args, chunk_size=1, **kwargs)


register_algorithm(CORFT.algorithm_name, CORFT)
register_algorithm(OfflineRLH1.algorithm_name, OfflineRLH1)
