"""Data-parallel training with `torch.distributed` (DDP), launched by ``torchrun``.

    torchrun --standalone --nproc-per-node 4 -m archspec.cli train fcos.yaml --data D --out RUN
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 --rdzv-backend c10d \\
             --rdzv-endpoint head:29500 -m archspec.cli train ...   # on each node, with its rank

A trainer asks `start_distributed` for a `Distributed` context: without torchrun's environment
(or with one process) it is a single-process context whose every method is a no-op, so one
training loop serves both. The pieces, for any trainer (`detection/train.py` uses them all; a
supernet trainer (DetNAS, CR-NAS one-shot) would use the same ones):

* the process group: gloo on CPU, NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``);
* `Distributed.wrap`: the model in `DistributedDataParallel` (gradients averaged over the
  processes; BatchNorm buffers broadcast from rank 0), optionally with SyncBatchNorm first
  (``--sync-bn``: DetNAS and CR-NAS train with it; per-GPU batches are too small for BN);
* `Distributed.loader`: the data, sharded. Every epoch's order is one permutation drawn from
  (seed, epoch), cut into *global* batches of ``--batch-size`` images, each split over the
  processes. So the batches -- and the optimizer steps per epoch, and the learning-rate
  schedule -- are the same for any number of processes: a rerun is reproducible, and a run
  resumed with another number of processes continues the same schedule on the same data;
* `Distributed.is_main`: rank 0 alone writes the run folder (checkpoints, atomically; logs);
  `Distributed.mean` averages logged losses over the processes; `Distributed.barrier` makes
  the others wait while rank 0 evaluates and writes.

Resuming reads ``last.pt`` on every process, so on several nodes the run folder must be on a
shared filesystem; `Distributed.agree` turns a node that sees another checkpoint into an error
instead of a silent divergence. Checkpoints hold the unwrapped model's weights (no ``module.``
prefix, plain BatchNorm names), so they load with any process count, with or without SyncBN.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class Distributed:
    """This process's place in the job (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    """``gloo`` or ``nccl`` once the process group is up; None for a single process."""

    @property
    def active(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def place(self, device: torch.device) -> torch.device:
        """The device of this process: ``cuda`` means this process's GPU, ``cuda:LOCAL_RANK``."""
        if device.type == "cuda" and self.active:
            return torch.device("cuda", self.local_rank)
        return device

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The module to call for training steps: `model` itself, or `model` in DDP. Keep using
        `model` for everything else (losses, evaluation, state dicts)."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def loader(self, dataset, batch_size: int, *, seed: int, collate_fn) -> torch.utils.data.DataLoader:
        """This process's share of the epoch's global batches (see the module docstring)."""
        sampler = ShardedBatchSampler(len(dataset), batch_size, self.rank, self.world_size, seed)
        return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn)

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Each value averaged over the processes (every process gets the same dict)."""
        if not self.active or not values:
            return values
        names = sorted(values)
        tensor = torch.tensor([float(values[name]) for name in names], dtype=torch.float64,
                              device=self._collective_device())
        dist.all_reduce(tensor)
        return {name: float(value) / self.world_size for name, value in zip(names, tensor.tolist())}

    def agree(self, value: int, what: str) -> int:
        """`value`, checked to be the same on every process (an error on all of them if not)."""
        if not self.active:
            return value
        mine = torch.tensor([value, -value], dtype=torch.int64, device=self._collective_device())
        dist.all_reduce(mine, op=dist.ReduceOp.MAX)
        low, high = -int(mine[1]), int(mine[0])
        if low != high:
            raise RuntimeError(f"the processes disagree on {what} ({low} to {high}); with several nodes the run "
                               "folder must be on a filesystem every node shares")
        return value

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()
        self.backend = None

    def _collective_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def start_distributed(device: str) -> Distributed:
    """Join the process group torchrun set up (gloo for ``cpu``, NCCL for ``cuda``), or a
    single-process context without torchrun or with one process."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return Distributed()
    rank, world, local = (int(os.environ[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if device.startswith("cuda"):
        if not torch.cuda.is_available() or torch.cuda.device_count() <= local:
            raise ValueError(f"--device cuda under torchrun: process {rank} wants GPU {local}, but this node has "
                             f"{torch.cuda.device_count()}; use --nproc-per-node <= the GPUs per node")
        torch.cuda.set_device(local)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend)
    return Distributed(rank, world, local, backend)


def convert_sync_batchnorm(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """BatchNorm layers -> SyncBatchNorm (statistics over every process's batch). torch's
    SyncBatchNorm runs on GPUs only, so CPU training refuses it instead of failing mid-step."""
    if device.type != "cuda":
        raise ValueError("--sync-bn needs --device cuda: torch's SyncBatchNorm has no CPU implementation")
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


class ShardedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """One process's share of each global batch of an epoch.

    The epoch's order is ``torch.randperm(size)`` drawn from a generator seeded with `seed`
    (the trainer passes seed + epoch), cut into global batches of `batch_size`; process `rank`
    of `world_size` takes the rank-th of `world_size` near-equal parts of each. A last global
    batch smaller than `world_size` borrows from the start of the order, so every process has
    the same number of steps (DDP needs that) and no process gets an empty batch."""

    def __init__(self, size: int, batch_size: int, rank: int, world_size: int, seed: int):
        if batch_size < world_size:
            raise ValueError(f"--batch-size {batch_size} is the global batch, split over the processes; it must be at "
                             f"least the number of processes ({world_size})")
        if size < 1:
            raise ValueError("the training split has no images")
        self.size, self.batch_size, self.rank, self.world_size, self.seed = size, batch_size, rank, world_size, seed

    def global_batches(self) -> list[list[int]]:
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed)).tolist()
        batches = [order[i:i + self.batch_size] for i in range(0, self.size, self.batch_size)]
        if len(batches[-1]) < self.world_size:
            batches[-1] = (batches[-1] + order * self.world_size)[:self.world_size]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            yield [int(part) for part in _split(batch, self.world_size)[self.rank]]

    def __len__(self) -> int:
        return -(-self.size // self.batch_size)


def _split(batch: list[int], parts: int) -> list[list[int]]:
    """`batch` in `parts` contiguous, near-equal pieces (the first ones one longer)."""
    base, extra = divmod(len(batch), parts)
    pieces, start = [], 0
    for index in range(parts):
        end = start + base + (index < extra)
        pieces.append(batch[start:end])
        start = end
    return pieces
