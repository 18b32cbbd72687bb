"""Supervised fine-tuning on action chunks (SFT) and single-step behaviour cloning (BC).

SFT is the paper's supervised baseline and CO-RFT's stage 1: full-parameter
fine-tuning of backbone and action expert with the imitation loss

    L_IL = Σ_{valid j} [ ||ĉ_j − (a_{t+j} − μ)/σ||² / D_c + BCE(ℓ_j, a^{grip}_{t+j} > 0) ] / n_valid

on chunks ``a_{t:t+H}`` (steps past the episode's end are masked out), with
random-shift image augmentation. BC is the same with H = 1.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from corft_algos.common.base import OfflineAlgorithm
from corft_algos.registry import register_algorithm


class SFT(OfflineAlgorithm):
    """Chunked behaviour cloning with full-parameter fine-tuning.

    Takes every :class:`~corft_algos.common.base.OfflineAlgorithm` argument, plus:

    :param weight_decay: AdamW weight decay.
    """

    algorithm_name: ClassVar[str] = "sft"

    def __init__(self, *args: Any, weight_decay: float = 1e-4, **kwargs: Any) -> None:
        self.weight_decay = weight_decay
        super().__init__(*args, **kwargs)

    def _setup_optimizers(self) -> None:
        self.optimizer = torch.optim.AdamW(self.imitation_parameters(), lr=self.lr_schedule(1.0),
                                           weight_decay=self.weight_decay)

    def optimizer_names(self) -> list[str]:
        return ["optimizer"]

    def imitation_parameters(self) -> list[torch.nn.Parameter]:
        """Backbone and action expert: everything stage 1 trains."""
        return [*self.policy.backbone_parameters(), *self.policy.actor_parameters()]

    def train_step(self) -> dict[str, float]:
        return self.imitation_step(self.optimizer)

    def imitation_step(self, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        """One gradient step of the imitation loss on all of :meth:`imitation_parameters`."""
        batch = self.next_batch()
        context = self.encode_batch(batch["observation"], batch["instruction"], augment=self.image_augmentation)
        continuous, logits = self.policy.action_expert(context)
        loss = self.policy.imitation_loss(continuous, logits, batch["actions"], batch["valid"])
        self.check_finite(imitation_loss=loss)
        norm = self.optimizer_step(optimizer, loss, self.imitation_parameters())
        return {"imitation_loss": loss.item(), "grad_norm": norm}


class BC(SFT):
    """Behaviour cloning of single actions (SFT with H = 1)."""

    algorithm_name: ClassVar[str] = "bc"

    def __init__(self, *args: Any, chunk_size: int = 1, **kwargs: Any) -> None:
        if chunk_size != 1:
            raise ValueError(f"BC predicts single actions (chunk_size=1), got chunk_size={chunk_size}; use SFT for chunks")
        super().__init__(*args, chunk_size=1, **kwargs)


register_algorithm(SFT.algorithm_name, SFT)
register_algorithm(BC.algorithm_name, BC)
