"""Data-parallel training across processes started by `torchrun` (one per GPU, or per CPU slot).

Every rank holds the same G, D and optimiser states and sees its own slice of each global minibatch.
After each backward pass the gradients are averaged over ranks (one all-reduce of a flat buffer), so
every rank takes the same optimiser step; the few statistics that depend on the data (ADA's r_t, the
path-length mean, the mapping network's running w average) are averaged the same way. Rank 0 writes
all outputs. Gradients are averaged by hand rather than with DistributedDataParallel because R1 and
path-length regularisation differentiate through gradients (create_graph), which DDP's hooks don't
support.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..devices import choose_device


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel ranks: `rank` (0 writes the outputs), `size` (processes),
    `local_rank` (its GPU on the node). `World()` is a single process."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that writes every output."""
        return self.rank == 0

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise mean of `tensor` over ranks (itself in a single process)."""
        if self.size == 1:
            return tensor
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor / self.size

    def average_gradients(self, parameters, nan_to_num: bool = False) -> None:
        """Replace each gradient of `parameters` (those requiring grad; a missing gradient counts as zeros) by its
        mean over ranks, in one all-reduce of a flat buffer per dtype. With `nan_to_num`, NaNs → 0 and ±∞ → ±1e5 in
        the same buffer (a rare overflow in reduced precision must not poison the weights; in a single process only
        the gradients that exist are touched). A gradient keeps its own memory layout (e.g. channels_last)."""
        averaging = self.size > 1
        if not averaging and not nan_to_num:
            return
        params = [p for p in parameters if (p.requires_grad if averaging else p.grad is not None)]
        by_dtype: dict[torch.dtype, list] = {}
        for p in params:
            by_dtype.setdefault(p.dtype, []).append(p)
        for group in by_dtype.values():
            flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in group])
            if averaging:
                flat = self.mean(flat)
            if nan_to_num:
                torch.nan_to_num_(flat, nan=0.0, posinf=1e5, neginf=-1e5)
            for p, grad in zip(group, flat.split([p.numel() for p in group])):
                if p.grad is not None and not p.grad.is_contiguous():
                    p.grad.copy_(grad.view(p.shape))
                else:
                    p.grad = grad.view(p.shape)

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Make every rank start from rank 0's parameters and buffers."""
        if self.size == 1:
            return
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)

    def assert_in_sync(self, module: torch.nn.Module) -> None:
        """Raise if the ranks' copies of `module` have drifted apart (they must take identical steps)."""
        if self.size == 1:
            return
        flat = torch.cat([p.detach().double().flatten() for p in module.parameters()])
        digest = torch.stack([flat.sum(), flat.square().sum(), (flat * torch.arange(len(flat), device=flat.device,
                                                                                     dtype=flat.dtype)).sum()])
        copies = [torch.empty_like(digest) for _ in range(self.size)]
        dist.all_gather(copies, digest)
        if any(not torch.equal(copy, copies[0]) for copy in copies):
            raise RuntimeError(f"data-parallel ranks hold different weights: {[c.tolist() for c in copies]}")

    def barrier(self) -> None:
        """Wait until every rank gets here (nothing in a single process)."""
        if self.size > 1:
            dist.barrier()


def join_world(device: str | None) -> tuple[World, torch.device]:
    """Join the process group torchrun describes in the environment (if any) and pick this rank's device.

    `device` as `devices.choose_device` takes it (None: CUDA when available). On CUDA each torchrun process takes
    the GPU of its LOCAL_RANK (NCCL); a single process the GPU named (`cuda:1`) or the current one; otherwise
    gloo on the CPU. Raises DeviceError for a device this machine does not have."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    chosen = choose_device(device)
    if chosen.type == "cuda":
        index = local_rank if size > 1 else chosen.index if chosen.index is not None else torch.cuda.current_device()
        chosen = torch.device("cuda", index)
        torch.cuda.set_device(chosen)
    if size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    return World(rank, size, local_rank), chosen


def leave_world() -> None:
    """Leave the process group, if one was joined (torchrun)."""
    if dist.is_initialized():
        dist.destroy_process_group()
