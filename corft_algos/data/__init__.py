"""The offline training data: chunks of an episode store, drawn in weighted batches.

The package is split by job; this module is its public face:

* :mod:`~corft_algos.data.frames`: :class:`FrameStore`, every frame's observation by a global frame index;
* :mod:`~corft_algos.data.chunks`: :class:`ChunkDataset`, one action chunk per start step with its TD
  masks and returns, the batch sampler (:meth:`ChunkDataset.draw_batch`), store mixing and the
  normalisation statistics.
"""

from corft_algos.data.chunks import STD_FLOOR, Batch, ChunkDataset, discounted_returns, to_torch
from corft_algos.data.frames import DEFAULT_MEMORY_BUDGET, FrameStore, InMemory

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "STD_FLOOR",
    "Batch",
    "ChunkDataset",
    "FrameStore",
    "InMemory",
    "discounted_returns",
    "to_torch",
]
