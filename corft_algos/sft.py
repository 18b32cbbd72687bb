"""Supervised fine-tuning on action chunks (SFT) and single-step behaviour cloning (BC).

SFT is the paper's supervised baseline and CO-RFT's stage 1: full-parameter
fine-tuning of backbone and action expert with the imitation loss

    L_IL = Σ_{valid j} [ ||ĉ_j − (a_{t+j} − μ)/σ||² / D_c + BCE(ℓ_j, a^{grip}_{t+j} > 0) ] / n_valid

on chunks ``a_{t:t+H}`` (steps past the episode's end are masked out), with
random-shift image augmentation and, optionally, a learning rate warmed up
linearly and decayed along a cosine over the imitation steps. BC is the same
with H = 1.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from corft_algos.common.base import OfflineAlgorithm
from corft_algos.registry import register_algorithm


class SFT(OfflineAlgorithm):
    """Chunked behaviour cloning with full-parameter fine-tuning.

    Takes every :class:`~corft_algos.common.base.OfflineAlgorithm` argument, plus:

    :param weight_decay: AdamW weight decay.
    :param lr_schedule_kind: ``"cosine"`` (the default), or ``"constant"``: the imitation learning rate rises
        linearly over ``lr_warmup_steps``, then follows a cosine down to 0 at the end of the
        imitation steps (``il_steps`` of a staged subclass, else the steps ``learn`` runs to).
    :param lr_warmup_steps: linear warm-up steps of the ``"cosine"`` schedule.
    """

    algorithm_name: ClassVar[str] = "sft"
    lr_schedule_kinds: ClassVar[tuple[str, ...]] = ("constant", "cosine")

    def __init__(self, *args: Any, weight_decay: float = 1e-4, lr_schedule_kind: str = "cosine",
                 lr_warmup_steps: int = 100, **kwargs: Any) -> None:
        if lr_schedule_kind not in self.lr_schedule_kinds:
            raise ValueError(f"lr_schedule_kind={lr_schedule_kind!r} is unknown; use one of {self.lr_schedule_kinds}")
        if lr_warmup_steps < 0:
            raise ValueError(f"lr_warmup_steps must be >= 0, got {lr_warmup_steps}")
        self.weight_decay = weight_decay
        self.lr_schedule_kind, self.lr_warmup_steps = lr_schedule_kind, int(lr_warmup_steps)
        super().__init__(*args, **kwargs)

    def _setup_optimizers(self) -> None:
        self.optimizer = self.make_optimizer(self.imitation_parameters(), lr=self.lr_schedule(1.0),
                                             weight_decay=self.weight_decay)

    def optimizer_names(self) -> list[str]:
        return ["optimizer"]

    def imitation_parameters(self) -> list[torch.nn.Parameter]:
        """Backbone and action expert: everything stage 1 trains."""
        return [*self.policy.backbone_parameters(), *self.policy.actor_parameters()]

    def train_step(self) -> dict[str, Any]:
        return self.imitation_step(self.optimizer)

    def imitation_learning_rate(self, step: int) -> float:
        """The imitation learning rate at gradient step ``step`` (counted from 0)."""
        base = self.lr_schedule(1.0)
        if self.lr_schedule_kind == "constant":
            return base
        if step < self.lr_warmup_steps:
            return base * (step + 1) / self.lr_warmup_steps
        horizon = getattr(self, "il_steps", 0) or self._total_timesteps
        progress = min(1.0, (step - self.lr_warmup_steps) / max(1, horizon - self.lr_warmup_steps))
        return base * 0.5 * (1.0 + math.cos(math.pi * progress))

    def imitation_step(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """One gradient step of the imitation loss on all of :meth:`imitation_parameters`."""
        learning_rate = self.imitation_learning_rate(self.num_timesteps)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate
        loss = self.run_loss(self.imitation_loss, self.next_batch())
        norm = self.optimizer_step(optimizer, loss, self.imitation_parameters())
        return {"imitation_loss": loss.detach(), "grad_norm": norm, "learning_rate": learning_rate}

    def imitation_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """The imitation loss ``L_IL`` of a batch (images augmented if ``image_augmentation``), over the
        valid steps of successful episodes: failed ones (a policy's rollouts) are not imitated."""
        context = self.encode_batch(batch["observation"], batch["instruction"], augment=self.image_augmentation,
                                    frames=batch["frame"])
        continuous, logits = self.policy.action_expert(context)
        return self.policy.imitation_loss(continuous, logits, batch["actions"], batch["imitate"])


class BC(SFT):
    """Behaviour cloning of single actions (SFT with H = 1)."""

    algorithm_name: ClassVar[str] = "bc"

    def __init__(self, *args: Any, chunk_size: int = 1, **kwargs: Any) -> None:
        if chunk_size != 1:
            raise ValueError(f"BC predicts single actions (chunk_size=1), got chunk_size={chunk_size}; use SFT for chunks")
        super().__init__(*args, chunk_size=1, **kwargs)


register_algorithm(SFT.algorithm_name, SFT)
register_algorithm(BC.algorithm_name, BC)
