"""Data-parallel training with ``torch.distributed``: one process per device, launched by ``torchrun``.

``torchrun --nproc_per_node N -m corft_algos.cli train ...`` starts N copies of
``corft train``; :func:`distributed_session` joins them into one process group
(NCCL on GPUs, gloo on CPU) from torchrun's environment variables (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT`` or a rendezvous
endpoint for several nodes). Inside it, :class:`~corft_algos.common.base.OfflineAlgorithm`
trains with :class:`~torch.nn.parallel.DistributedDataParallel`:

- every rank draws the same *global* batch of ``batch_size`` sample indices
  (and the same image shifts) from identically seeded generators and reads
  only its contiguous shard of ``batch_size / world_size`` samples
  (:func:`shard_of`), so data loading is split across ranks;
- losses run through :class:`LossRunner` wrapped in DDP, whose backward
  all-reduces (averages) the gradients; every rank then takes the same
  optimizer step on the same parameters;
- the logged training metrics are averaged over the ranks at each log dump;
- only rank 0 prints, logs, evaluates and writes checkpoints (:func:`corft_algos.runs.train`'s job).

Averaging the shards' gradients equals the gradient of the global batch when
every shard holds as many valid steps; the loss normalisers differ slightly
otherwise (each shard divides by its own count of valid chunk steps).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Rank:
    """This process's place in the process group (``rank 0 of 1`` without one)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this process logs, evaluates and saves (rank 0)."""
        return self.rank == 0


def current_rank() -> Rank:
    """This process's rank and the world size; ``Rank()`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return Rank(dist.get_rank(), dist.get_world_size())
    return Rank()


def launched_by_torchrun() -> bool:
    """Whether torchrun (or another launcher setting ``WORLD_SIZE``) started this process."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def launcher_rank() -> Rank:
    """This process's rank as its launcher numbered it, also before or after the process group: which process
    reports an error (``Rank()`` without torchrun)."""
    if launched_by_torchrun():
        return Rank(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
    return current_rank()


def resolve_device(device: str) -> torch.device:
    """The device of this process: ``cuda:<LOCAL_RANK>`` for ``cuda``/``auto`` under torchrun with GPUs.

    :raises ValueError: for a device string torch does not know, or ``cuda`` on a machine without one.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device!r} is not a device: use cpu, cuda, cuda:N or auto") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but torch sees no CUDA device; use --device cpu")
        if resolved.index is None:
            resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return resolved


@contextmanager
def distributed_session(resolved: torch.device) -> Iterator[Rank]:
    """Join torchrun's process group for the duration of the block (no-op when not launched by torchrun).

    The backend is NCCL on CUDA devices and gloo on CPU. Yields this process's
    :class:`Rank`; the group is destroyed on exit, also after an error.

    :param resolved: this process's device, from :func:`resolve_device`.
    """
    if not launched_by_torchrun() or dist.is_initialized():
        yield current_rank()
        return
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo",
                            device_id=resolved if resolved.type == "cuda" else None)
    try:
        yield current_rank()
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op outside a process group)."""
    if current_rank().world_size > 1:
        dist.barrier()


def average_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over the ranks (``values`` itself outside a process group)."""
    world_size = current_rank().world_size
    if world_size == 1:
        return values
    total = values.clone()
    dist.all_reduce(total)
    return total / world_size


def shard_of(batch_size: int, rank: Rank) -> slice:
    """The contiguous slice of a global batch that ``rank`` trains on.

    :raises ValueError: if ``batch_size`` does not split evenly across the ranks.
    """
    if batch_size % rank.world_size:
        raise ValueError(f"batch_size {batch_size} is the global batch and must split evenly across "
                         f"{rank.world_size} processes; use a multiple of {rank.world_size}")
    size = batch_size // rank.world_size
    return slice(rank.rank * size, (rank.rank + 1) * size)


class LossRunner(nn.Module):
    """Runs a loss function of the policy as its ``forward``, so DDP can hook the backward of any loss.

    The training step passes the loss function and its inputs; DDP (with
    ``find_unused_parameters``, since each loss uses a different part of the
    policy) all-reduces the gradients of whatever the loss reached.
    """

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, loss_fn: Callable[..., Any], *args: Any) -> Any:
        return loss_fn(*args)


def data_parallel(policy: nn.Module, device: torch.device) -> nn.Module:
    """``policy``'s :class:`LossRunner` under DistributedDataParallel (parameters broadcast from rank 0)."""
    return nn.parallel.DistributedDataParallel(
        LossRunner(policy), device_ids=[device] if device.type == "cuda" else None, find_unused_parameters=True,
    )
