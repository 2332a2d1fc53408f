"""The processes of a run: one, or torchrun's (RANK, WORLD_SIZE, LOCAL_RANK), NCCL on GPU and gloo on CPU."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class WorldInfo:
    """This process's rank, the number of processes and this process's device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def init_world(device_pref: str) -> WorldInfo:
    """`device_pref` auto | cpu | cuda; joins torchrun's process group when WORLD_SIZE > 1."""
    use_cuda = torch.cuda.is_available() if device_pref == "auto" else device_pref == "cuda"
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise ValueError("run.device: cuda requested but torch sees no GPU (use run.device=cpu)")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return WorldInfo(rank, world_size, device)


def all_reduce_sum(t: torch.Tensor, world: WorldInfo) -> torch.Tensor:
    """Sum `t` over all processes, in place (a no-op for one process)."""
    if world.is_distributed:
        dist.all_reduce(t)
    return t


def barrier(world: WorldInfo) -> None:
    if world.is_distributed:
        dist.barrier()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
