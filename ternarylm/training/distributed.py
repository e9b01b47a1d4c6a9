"""DistributedDataParallel under ``torchrun`` (NCCL on GPU, gloo on CPU); no-ops for one process."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device | None = None  # set for multi-process runs (one device per rank)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup() -> DistContext:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
        device = torch.device("cuda", local_rank)
    else:
        dist.init_process_group("gloo")
        device = torch.device("cpu")
    return DistContext(rank=rank, world_size=world, device=device)


def wrap(model, ctx: DistContext):
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.device.index] if ctx.device is not None and ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def no_sync_unless_last(model, ctx: DistContext, last: bool):
    """Skip the gradient all-reduce on all but the last micro-batch of an accumulation step."""
    if ctx.enabled and not last:
        return model.no_sync()
    return contextlib.nullcontext()


def barrier(ctx: DistContext):
    if ctx.enabled:
        dist.barrier()


def broadcast_object(obj, ctx: DistContext):
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj, ctx: DistContext) -> list:
    if not ctx.enabled:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def teardown(ctx: DistContext):
    if ctx.enabled:
        dist.barrier()
        dist.destroy_process_group()
