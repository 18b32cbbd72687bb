"""The loss terms of chunked offline RL (CO-RFT, arXiv 2508.02219), as pure tensor functions.

Notation (DESIGN.md section 4): chunk length H, per-step discount γ, for a
sample starting at step t: rewards ``r_{t+j}``, ``valid_j = [t + j < T]``,
``d_j = 1`` if the episode terminated at or before ``t + j``, and
``G_t = Σ_{i=0}^{T-1-t} γ^i r_{t+i}`` the Monte-Carlo return.

- Per-prefix TD target, for every valid ``j``:
  ``y_j = Σ_{i=0..j} γ^i r_{t+i} + γ^{j+1} (1 - d_j) V_j``, where
  ``V_j = min_k Q̄_k^{(H-1)}(c_{t+j+1}, π̄(c_{t+j+1}) + ε)``; the boundary-only
  variant (Q-chunking) keeps only the last valid ``j``.
- Cal-QL conservatism on the full-chunk head (or, with ``calql_heads="all"``, summed over every
  valid prefix head): ``α · E[ logsumexp_{a ∈ samples} max(Q(c, a), G) − Q(c, a_data) ]``, the floor
  ``G`` on every sample or (``calql_floor="policy"``, the Cal-QL reference's choice) on the policy's only.
- Actor (TD3+BC): ``−λ · mean_j Q_1^{(j)}(c, π(c)_{0:j+1}) / mean|Q| + L_BC``.
"""

from __future__ import annotations

import torch


def discounted_prefix_sums(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """``R_j = Σ_{i=0..j} γ^i r_i`` for each prefix; ``rewards`` ``(B, H)`` -> ``(B, H)``."""
    discounts = gamma ** torch.arange(rewards.shape[-1], dtype=rewards.dtype, device=rewards.device)
    return torch.cumsum(rewards * discounts, dim=-1)


def last_valid_index(valid: torch.Tensor) -> torch.Tensor:
    """Index of the last valid step of each chunk, ``(B,)``; chunks always have step 0 valid."""
    positions = torch.arange(valid.shape[-1], device=valid.device).expand_as(valid)
    return torch.where(valid, positions, torch.zeros_like(positions)).max(dim=-1).values


def per_prefix_targets(
    rewards: torch.Tensor,
    done: torch.Tensor,
    valid: torch.Tensor,
    next_values: torch.Tensor,
    gamma: float,
    boundary_only: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """TD targets ``y_j`` for every prefix of the chunk, and the mask of those trained.

    :param rewards: ``(B, H)``, zero past the episode's end.
    :param done: ``(B, H)`` bool, terminated at or before ``t + j``.
    :param valid: ``(B, H)`` bool, ``t + j < T``.
    :param next_values: ``(B, H)``, ``V_j`` evaluated at ``c_{t+j+1}``.
    :param gamma: per-step discount.
    :param boundary_only: train only the last valid prefix (Q-chunking's target).
    :return: ``(targets, mask)``, both ``(B, H)``; targets are meaningless where ``mask`` is False.
    """
    horizon = rewards.shape[-1]
    powers = gamma ** torch.arange(1, horizon + 1, dtype=rewards.dtype, device=rewards.device)
    targets = discounted_prefix_sums(rewards, gamma) + powers * (1.0 - done.float()) * next_values
    mask = valid.clone()
    if boundary_only:
        mask = torch.zeros_like(valid)
        mask[torch.arange(valid.shape[0], device=valid.device), last_valid_index(valid)] = True
    return targets, mask


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the entries where ``mask`` is True (0 if none), without a host-device sync."""
    weights = mask.float()
    return (values * weights).sum() / weights.sum().clamp(min=1.0)


def prefix_td_loss(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(1/B) Σ_b Σ_j mask_bj (Q_bj − y_bj)²``: the squared TD errors of a sample's valid prefixes, summed,
    averaged over the ``B`` samples.

    Each prefix head then weighs as a single-step critic's TD loss does, whatever H. A mean over all
    ``B·H`` entries instead would weaken the full-chunk head's TD pull H-fold against the per-sample
    Cal-QL term, whose push on ``Q(c, a_data)`` would then hold that head ``α·H/2`` above its target.

    :param prediction: ``(B, H)`` Q-values. :param target: ``(B, H)``. :param mask: ``(B, H)`` bool.
    """
    return (((prediction - target) ** 2) * mask.float()).sum() / prediction.shape[0]


def calql_penalty(sample_q: torch.Tensor, data_q: torch.Tensor, mc_return: torch.Tensor,
                  floored: torch.Tensor | None = None, head_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cal-QL conservatism (without α): ``E_b[ Σ_j m_bj (logsumexp_n q̃_bnj − Q_bj(c, a_data)) ]``.

    ``q̃_bnj = max(Q_bnj(c, a_n), G_b)`` for the samples the floor applies to, ``Q_bnj`` for the others:
    the Cal-QL reference floors only the policy's samples, so uniform random chunks are not lifted to
    the return. Without heads (2-D ``sample_q``) the sum over ``j`` drops out.

    :param sample_q: ``(B, N)``, or ``(B, N, H)`` with a Q-value per prefix head.
    :param data_q: ``(B,)``, or ``(B, H)``: the dataset chunk's.
    :param mc_return: ``(B,)`` Monte-Carlo return ``G`` from the chunk's start, the calibration floor
        (every prefix head estimates the return from the same start).
    :param floored: ``(N,)`` bool, the samples floored at ``G``; default all.
    :param head_mask: ``(B, H)`` bool ``m``, the heads penalised (summed per sample); default all.
    """
    floor = mc_return.view(-1, *([1] * (sample_q.dim() - 1)))
    lifted = torch.maximum(sample_q, floor)
    if floored is not None:
        shape = (1, -1) + (1,) * (sample_q.dim() - 2)
        lifted = torch.where(floored.view(shape), lifted, sample_q)
    per_head = torch.logsumexp(lifted, dim=1) - data_q
    if per_head.dim() == 2:
        mask = torch.ones_like(per_head, dtype=torch.bool) if head_mask is None else head_mask
        per_head = (per_head * mask.float()).sum(-1)
    return per_head.mean()


def actor_q_term(prefix_q: torch.Tensor, valid: torch.Tensor, weight: float,
                 scale: torch.Tensor | None = None) -> torch.Tensor:
    """TD3+BC's Q term: ``−λ · mean_valid Q^{(j)} / mean|Q|`` (the scale is not differentiated).

    :param prefix_q: ``(B, H)`` ``Q_1^{(j)}(c, π(c)_{0:j+1})``.
    :param valid: ``(B, H)`` bool.
    :param weight: λ.
    :param scale: ``mean|Q|`` if it is computed elsewhere (over a data-parallel global batch);
        default: over this batch's valid entries.
    """
    if scale is None:
        scale = masked_mean(prefix_q.abs(), valid)
    return -weight * masked_mean(prefix_q, valid) / scale.detach().clamp(min=1e-6)
