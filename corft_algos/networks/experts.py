"""The action expert and the critic expert of the VLA policy (CO-RFT, arXiv 2508.02219).

Both read the backbone's context tokens ``c_t`` of shape ``(B, L, d)``.

- :class:`ActionExpert`: H learned query tokens cross-attend to the context
  (a small transformer decoder) and each gives one action of the chunk:
  the continuous dimensions in normalised units, and a logit per binary
  dimension (the gripper).
- :class:`CriticExpert`: a small causal transformer over ``[c_t; a_0 .. a_{H-1}]``.
  Context tokens see only the context; action token j sees the context and
  action tokens ``0..j``. Head j reads action token j and gives
  ``Q^{(j)}(c_t, a_{t:t+j+1})``, so one forward pass yields the Q-value of
  every prefix of the chunk.
"""

from __future__ import annotations

import torch
from torch import nn


def _transformer_layer(d_model: int, heads: int, decoder: bool = False) -> nn.Module:
    layer = nn.TransformerDecoderLayer if decoder else nn.TransformerEncoderLayer
    return layer(d_model, heads, dim_feedforward=2 * d_model, dropout=0.0, batch_first=True, norm_first=True)


class ActionExpert(nn.Module):
    """Context tokens -> a chunk of H actions.

    :param d_model: width of the context tokens.
    :param chunk_size: H.
    :param continuous_dims: number of continuous action dimensions.
    :param binary_dims: number of binary action dimensions (logits).
    :param layers: decoder layers.
    :param heads: attention heads.
    """

    def __init__(self, d_model: int, chunk_size: int, continuous_dims: int, binary_dims: int,
                 layers: int = 1, heads: int = 4) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(chunk_size, d_model) * 0.02)
        self.decoder = nn.TransformerDecoder(_transformer_layer(d_model, heads, decoder=True), layers)
        self.norm = nn.LayerNorm(d_model)
        self.continuous_head = nn.Linear(d_model, continuous_dims)
        self.binary_head = nn.Linear(d_model, binary_dims) if binary_dims else None

    def forward(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:return: continuous actions ``(B, H, Dc)`` (normalised) and binary logits ``(B, H, Db)``."""
        queries = self.queries.expand(context.shape[0], -1, -1)
        hidden = self.norm(self.decoder(queries, context))
        if self.binary_head is None:
            return self.continuous_head(hidden), hidden.new_zeros(*hidden.shape[:-1], 0)
        return self.continuous_head(hidden), self.binary_head(hidden)


class ChunkQNetwork(nn.Module):
    """One copy of the critic expert: per-prefix Q-values of an action chunk.

    :param d_model: width of the context tokens.
    :param context_tokens: L, the number of context tokens.
    :param chunk_size: H.
    :param action_dim: dimensions of one (normalised) action.
    :param width: the critic's own token width (context tokens are projected to it);
        ``None`` keeps ``d_model``. A narrow critic keeps stage 2 cheap: it runs on
        every sampled chunk of Cal-QL and on H bootstrap states per sample.
    :param layers: transformer layers.
    :param heads: attention heads.
    """

    def __init__(self, d_model: int, context_tokens: int, chunk_size: int, action_dim: int,
                 width: int | None = None, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        width = width or d_model
        self.context_projection = nn.Linear(d_model, width)
        self.action_embedding = nn.Linear(action_dim, width)
        self.positions = nn.Parameter(torch.randn(chunk_size, width) * 0.02)
        self.encoder = nn.TransformerEncoder(_transformer_layer(width, heads), layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 1)
        self.context_tokens = context_tokens
        self.register_buffer("attention_mask", self._causal_mask(context_tokens, chunk_size), persistent=False)

    @staticmethod
    def _causal_mask(context_tokens: int, chunk_size: int) -> torch.Tensor:
        """Boolean mask, True where attention is *blocked*: context never sees actions, action j sees actions <= j."""
        size = context_tokens + chunk_size
        blocked = torch.zeros(size, size, dtype=torch.bool)
        blocked[:context_tokens, context_tokens:] = True
        blocked[context_tokens:, context_tokens:] = torch.triu(torch.ones(chunk_size, chunk_size, dtype=torch.bool), 1)
        return blocked

    def forward(self, context: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """:param context: ``(B, L, d)``. :param actions: ``(B, H, A)``. :return: ``Q^{(j)}``, ``(B, H)``."""
        tokens = torch.cat([self.context_projection(context), self.action_embedding(actions) + self.positions], dim=1)
        hidden = self.encoder(tokens, mask=self.attention_mask, is_causal=False)  # an explicit mask; no check (a sync)
        return self.head(self.norm(hidden[:, self.context_tokens:])).squeeze(-1)


class CriticExpert(nn.Module):
    """``n_critics`` independent :class:`ChunkQNetwork` copies; returns ``(n_critics, B, H)``."""

    def __init__(self, n_critics: int = 2, **network_kwargs) -> None:
        super().__init__()
        self.q_networks = nn.ModuleList(ChunkQNetwork(**network_kwargs) for _ in range(n_critics))

    def forward(self, context: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return torch.stack([q(context, actions) for q in self.q_networks])
