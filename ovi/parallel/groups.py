"""Process layout for sequence parallelism: ranks form data-parallel groups of ``sp_size`` consecutive ranks.

    world = dp_size x sp_size;  rank = dp_rank * sp_size + sp_rank
    ranks 0..sp-1 split one clip's tokens (an SP group); each SP group takes its own prompts / data slots.

Consecutive ranks share a node for every SP size up to the GPUs per node, so the all-to-all traffic (heavy:
every attention layer) stays on NVLink while only gradients / prompts cross nodes. ``sp_rank == 0`` is the
group's leader: it runs the text encoder and the VAEs and writes the outputs (see ``ovi.pipeline``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ParallelLayout:
    """Where this process sits; ``sp_group`` is None for a one-rank SP group (no communication)."""

    rank: int = 0
    world_size: int = 1
    sp_size: int = 1
    sp_group: object | None = None  # torch.distributed ProcessGroup of this rank's SP group

    def __post_init__(self) -> None:
        if self.sp_size < 1 or self.world_size % self.sp_size:
            raise ValueError(f"sp_size {self.sp_size} must divide the number of processes ({self.world_size}): "
                             f"launch a multiple of {self.sp_size} processes or change sp_size")

    @property
    def sp_rank(self) -> int:
        return self.rank % self.sp_size

    @property
    def dp_rank(self) -> int:
        return self.rank // self.sp_size

    @property
    def dp_size(self) -> int:
        return self.world_size // self.sp_size

    @property
    def sp_leader(self) -> int:
        """Global rank of this SP group's leader (the broadcast source)."""
        return self.dp_rank * self.sp_size

    @property
    def is_leader(self) -> bool:
        return self.sp_rank == 0


def sequence_parallel_layout(sp_size: int) -> ParallelLayout:
    """The layout of the initialised default process group (one rank, SP 1, when none is initialised).

    Collective: every rank must call it (``new_group`` is called for every SP group on every rank).
    """
    if not dist.is_available() or not dist.is_initialized():
        if sp_size != 1:
            raise RuntimeError(f"sp_size={sp_size} needs {sp_size} or a multiple of processes: launch with "
                               f"`torchrun --nproc_per_node {sp_size} ...`")
        return ParallelLayout()
    rank, world = dist.get_rank(), dist.get_world_size()
    ParallelLayout(rank, world, sp_size)  # validates before any group is made
    mine = None
    for first in range(0, world, sp_size):
        group = dist.new_group(list(range(first, first + sp_size)))
        if first <= rank < first + sp_size:
            mine = group
    return ParallelLayout(rank, world, sp_size, mine if sp_size > 1 else None)


def init_from_env(device_type: str) -> int:
    """Join the torchrun process group (nccl on CUDA, gloo otherwise); returns LOCAL_RANK. No-op without torchrun."""
    if "WORLD_SIZE" not in os.environ or dist.is_initialized():
        return int(os.environ.get("LOCAL_RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return local_rank


def leave_process_group(sync: bool = True) -> None:
    """Leave the process group on purpose (no-op without one). Left to interpreter exit, gloo's worker threads
    can be torn down while a peer is still closing its sockets, and the rank aborts ("terminate called without
    an active exception") after its work is done. ``sync``: wait for every rank first."""
    if not dist.is_available() or not dist.is_initialized():
        return
    if sync:
        dist.barrier()
    dist.destroy_process_group()


def broadcast_tensors(tensors: list[torch.Tensor] | None, layout: ParallelLayout, device: torch.device,
                      dtype: torch.dtype) -> list[torch.Tensor]:
    """The leader's tensors (any shapes) on every rank of its SP group; other ranks pass None."""
    if layout.sp_group is None:
        assert tensors is not None
        return [t.to(device, dtype) for t in tensors]
    shapes = [[tuple(t.shape) for t in tensors] if layout.is_leader and tensors is not None else None]
    dist.broadcast_object_list(shapes, src=layout.sp_leader, group=layout.sp_group)
    out = []
    for i, shape in enumerate(shapes[0]):
        t = tensors[i].to(device, dtype).contiguous() if layout.is_leader else torch.empty(shape, device=device,
                                                                                              dtype=dtype)
        dist.broadcast(t, src=layout.sp_leader, group=layout.sp_group)
        out.append(t)
    return out


def agree(obj: object) -> object:
    """Rank 0's ``obj`` on every rank (e.g. the work list, so ranks that look at the disk at different moments
    still split the same list). Identity without a process group."""
    if not dist.is_available() or not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def my_share(items: list, layout: ParallelLayout) -> list:
    """This rank's SP group's share of ``items`` (round-robin over the data-parallel groups)."""
    return items[layout.dp_rank :: layout.dp_size]
