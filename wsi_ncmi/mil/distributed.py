"""Multi-process training with torch.distributed (torchrun): which bags a rank sees, and global NCMI state.

Every rank trains DistributedDataParallel on its share of each epoch's bags; the closed-form centroid pass, the
running centre and validation use the embeddings of all ranks (gathered), so every rank holds the same NCMI state
and the same metrics; only rank 0 writes files. BatchNorm statistics (a `bn` neck) are averaged over the ranks
after each epoch. Works with NCCL on GPUs and gloo on CPU. A single process is the same code with a world of one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from wsi_ncmi.core.device import cuda_available


@dataclass(frozen=True)
class Cluster:
    """This process's rank in a world of `world` training processes."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Cluster:
        """Join the process group torchrun describes (WORLD_SIZE, RANK, ...); a world of one without it."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if cuda_available() else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group(backend)
        return cls(dist.get_rank(), dist.get_world_size())

    def device(self, device: torch.device) -> torch.device:
        """cuda -> this rank's GPU (LOCAL_RANK); others unchanged."""
        if device.type == "cuda" and self.world > 1:
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", str(self.rank))))
        return device

    def share(self, order: np.ndarray) -> np.ndarray:
        """This rank's bags of an epoch: the order padded by wrapping to a multiple of the world, every world-th."""
        if self.world == 1:
            return order
        padded = np.resize(order, -(-len(order) // self.world) * self.world)
        return padded[self.rank :: self.world]

    def part(self, index: np.ndarray) -> np.ndarray:
        """This rank's disjoint part of a set of bags (for no-grad passes; no padding)."""
        return index if self.world == 1 else index[self.rank :: self.world]

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rows of `tensor` from every rank, concatenated in rank order (sizes may differ between ranks)."""
        if self.world == 1:
            return tensor
        import torch.distributed as dist

        pieces: list[torch.Tensor | None] = [None] * self.world
        dist.all_gather_object(pieces, tensor.detach().cpu())
        return torch.cat([p for p in pieces if p is not None]).to(tensor.device)

    def average_buffers(self, module: torch.nn.Module) -> None:
        """Every floating-point buffer of `module` (BatchNorm running statistics) set to its mean over the ranks, so
        that every rank embeds with the same model after an epoch in which each saw different bags."""
        if self.world == 1:
            return
        import torch.distributed as dist

        for buffer in module.buffers():
            if buffer.dtype.is_floating_point:
                dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
                buffer.div_(self.world)

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        """Leave the process group once every rank is done: a process that exits with it still open can abort
        in the backend's teardown (gloo: 'terminate called without an active exception') and fail the torchrun."""
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()
                dist.destroy_process_group()
