"""Process-group setup and the few collectives the trainer needs. Ranks come from stylegan.cluster."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import torch
import torch.distributed as dist

from stylegan.cluster import restart_attempt, torchrun_rank


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(timeout_s: int = 600) -> DistEnv:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on CPUs); a plain process is rank 0 of 1.

    The collective timeout makes a job whose rank died fail instead of hanging, so torchrun can restart it."""
    rank, world, local_rank = torchrun_rank()
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        timeout = datetime.timedelta(seconds=timeout_s)
        store, _, _ = next(dist.rendezvous("env://", rank, world, timeout=timeout))
        # torchrun restarts failed workers on the same store: without a key prefix per attempt the new group reads
        # the dead group's addresses and cannot connect (torch 2.13: refused connections or a hang).
        store = dist.PrefixStore(f"restart{restart_attempt()}", store)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=store, rank=rank,
                                world_size=world, timeout=timeout)
    return DistEnv(rank, world, local_rank, device)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def broadcast_module(module: torch.nn.Module) -> None:
    """Make every rank start from rank 0's parameters and buffers."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def gather_lists(items: list) -> list:
    """Every rank's list, concatenated in rank order, on every rank (one list as it is without a process group)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        out: list = [None] * dist.get_world_size()
        dist.all_gather_object(out, items)
        return [x for part in out for x in part]
    return items


def broadcast_object(obj: object) -> object:
    """Rank 0's value of `obj` on every rank."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return obj


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
