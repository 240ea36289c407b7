"""Data parallelism under ``torchrun``: process-group set-up and the few collectives training needs.

With ``WORLD_SIZE > 1`` in the environment (set by ``torchrun``), :func:`init_distributed` joins
the process group (NCCL on CUDA, gloo on CPU). Each rank trains on its shard of every global batch
(:func:`recsys.models.two_tower.data.epoch_batches`); the loss is normalised by the *global*
number of targets and gradients are summed over ranks, so one step equals the single-process step
on the whole global batch. With one process every helper here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def backend_for(device: str | torch.device) -> str:
    """NCCL when the ranks train on CUDA, gloo when they train on the CPU (even on a machine with GPUs)."""
    kind = device.type if isinstance(device, torch.device) else str(device)
    on_cuda = kind.startswith("cuda") or (kind == "auto" and torch.cuda.is_available())
    return "nccl" if on_cuda else "gloo"


def init_distributed(device: str | torch.device = "auto") -> DistInfo:
    """Join the process group when launched with ``WORLD_SIZE > 1`` (NCCL for CUDA ranks, gloo for CPU
    ranks); else a single-process DistInfo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend=backend_for(device))
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def device_for(device: str, info: DistInfo) -> str:
    """Under DDP on CUDA every rank takes its local GPU; otherwise ``device`` unchanged."""
    if info.active and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{info.local_rank}"
    return device


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of ``t`` over ranks (in place when distributed)."""
    if info.active:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_cat(t: torch.Tensor, info: DistInfo) -> tuple[torch.Tensor, int]:
    """Concatenate 1-D ``t`` from all ranks (sizes may differ); also returns this rank's start offset."""
    if not info.active:
        return t, 0
    n = torch.tensor([t.numel()], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(info.world_size)]
    dist.all_gather(sizes, n)
    sizes_i = [int(s) for s in sizes]
    padded = torch.zeros(max(sizes_i), dtype=t.dtype, device=t.device)
    padded[: t.numel()] = t
    parts = [torch.zeros_like(padded) for _ in range(info.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes_i, strict=True)]), sum(sizes_i[: info.rank])


def sync_gradients(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    """Sum every gradient over ranks (one flat buffer, one all-reduce)."""
    if not info.active:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    for p, g in zip(params, flat.split([g.numel() for g in grads]), strict=True):
        p.grad = g.view_as(p).clone()


def broadcast_parameters(module: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's parameters to every rank (same start point whatever the local seed)."""
    if info.active:
        for p in module.parameters():
            dist.broadcast(p.data, src=0)
