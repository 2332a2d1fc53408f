"""The processes of a run: one, or torchrun's (RANK, WORLD_SIZE, LOCAL_RANK), NCCL on GPU and gloo on CPU."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class WorldInfo:
    """This process's rank, the number of processes and this process's device. `wait_group`: a gloo group with a
    long timeout for the other ranks to wait on while rank 0 evaluates or exports (None for one process)."""

    rank: int
    world_size: int
    device: torch.device
    wait_group: dist.ProcessGroup | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def init_world(device_pref: str, group_always: bool = False, wait_minutes: float = 120.0) -> WorldInfo:
    """`device_pref` auto | cpu | cuda; joins torchrun's process group when WORLD_SIZE > 1, or for one process too
    with `group_always` (a strategy that needs one: FSDP), which then needs torchrun's environment."""
    use_cuda = torch.cuda.is_available() if device_pref == "auto" else device_pref == "cuda"
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise ValueError("run.device: cuda requested but torch sees no GPU (use run.device=cpu)")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if group_always and "MASTER_ADDR" not in os.environ:
        raise ValueError(
            "distributed.strategy: fsdp runs under torchrun, also for one process: "
            "torchrun --nproc-per-node N train.py --config ..."
        )
    wait_group = None
    if world_size > 1 or group_always:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        wait_group = dist.new_group(backend="gloo", timeout=timedelta(minutes=wait_minutes))
    return WorldInfo(rank, world_size, device, wait_group)


def all_reduce_sum(t: torch.Tensor, world: WorldInfo) -> torch.Tensor:
    """Sum `t` over all processes, in place (a no-op for one process)."""
    if world.is_distributed:
        dist.all_reduce(t)
    return t


def any_rank(flag: bool, world: WorldInfo) -> bool:
    """Whether `flag` holds on any process (a collective for several processes)."""
    if not world.is_distributed:
        return flag
    return bool(all_reduce_sum(torch.tensor([float(flag)], device=world.device), world).item())


def wait_for_main(world: WorldInfo) -> None:
    """Where rank 0 may take long (evaluation, export): every rank meets here, on the gloo group with the long
    timeout (distributed.wait_minutes), so the others wait past NCCL's 10-minute collective timeout."""
    if world.wait_group is not None:
        dist.barrier(group=world.wait_group)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
