"""Multi-process data-parallel training (torch DDP, launched by ``torchrun``).

A process is part of a DDP job when the environment says ``WORLD_SIZE`` > 1 (torchrun sets it,
with ``RANK``, ``LOCAL_RANK`` and the rendezvous address). Backend: NCCL on CUDA (one GPU per
process, ``cuda:LOCAL_RANK``), gloo on CPU.

Consistency of the vector quantisers: their codebooks are buffers updated in the forward pass
(EMA statistics, data initialisation, dead-code restarts) from the batch the process sees.
:func:`sync_quantizers` makes every rank apply the *same* update, computed from the latents of
all ranks (all-gathered, in rank order) with a random generator seeded identically on every
rank; so the codebook after a step is the one a single process would get from the global batch,
and stays identical across ranks. DDP's ``broadcast_buffers=True`` (its default, kept) also
copies rank 0's buffers to the other ranks at the start of every forward: a safety net for the
codebooks. The networks hold no BatchNorm (SPADE normalises per image), so no batch statistic
differs across ranks.
"""
from __future__ import annotations

import contextlib
import datetime
import itertools
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn

from ..nets.quantizer import VectorQuantizer


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def setup(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the DDP job when WORLD_SIZE > 1; returns the process's rank info and device."""
    world = world_size_from_env()
    if world <= 1:
        return DistInfo(), device
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        # long enough for rank 0 to write a checkpoint or a rank to pseudo-label its share
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=60))
    return DistInfo(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank), device


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def agree(info: DistInfo, stop: bool, progress: float, device: torch.device) -> tuple[bool, float]:
    """Every rank's view of (stop?, budget progress) made one: stop if any rank stops, and the
    largest progress (so the learning rate and the schedule are the same on all ranks)."""
    if not info.enabled:
        return stop, progress
    t = torch.tensor([1.0 if stop else 0.0, progress], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t[0].item() > 0), float(t[1].item())


def _gather(t: torch.Tensor, world: int) -> torch.Tensor:
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=0)


@contextlib.contextmanager
def _shared_rng(device: torch.device, seed: int) -> Iterator[None]:
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def sync_quantizers(model: nn.Module, world: int, seed: int = 0) -> int:
    """Make the codebook updates of every :class:`VectorQuantizer` in ``model`` global.

    Patches the instances (not the class): their data initialisation and EMA update get the
    all-gathered latents, keep weights and indices of every rank and draw their random picks
    from a generator seeded the same on all ranks. Every rank must run the same quantisers in
    the same order each step (true of the training loop) and with equal batch shapes.
    Returns the number of quantisers patched.
    """
    counter = itertools.count()
    patched = 0
    for q in model.modules():
        if not isinstance(q, VectorQuantizer) or getattr(q, "_ddp_synced", False):
            continue
        init_from, ema_update = q._init_from, q._ema_update

        def synced_init(z: torch.Tensor, weight: torch.Tensor, _f=init_from) -> None:
            z, weight = _gather(z, world), _gather(weight, world)
            with _shared_rng(z.device, seed * 1_000_003 + next(counter)):
                _f(z, weight)

        def synced_ema(z: torch.Tensor, indices: torch.Tensor, weight: torch.Tensor, _f=ema_update) -> None:
            z, indices, weight = _gather(z, world), _gather(indices, world), _gather(weight, world)
            with _shared_rng(z.device, seed * 1_000_003 + next(counter)):
                _f(z, indices, weight)

        q._init_from = synced_init  # instance attributes shadow the methods
        q._ema_update = synced_ema
        q._ddp_synced = True
        patched += 1
    return patched


@torch.no_grad()
def consistent(model: nn.Module, info: DistInfo) -> bool:
    """Whether every rank holds the same parameters and codebook buffers (a collective: all ranks
    call it)."""
    if not info.enabled:
        return True
    tensors = list(model.parameters())
    tensors += [b for m in model.modules() if isinstance(m, VectorQuantizer) for b in m.buffers()]
    prints = []
    for t in tensors:
        v = t.detach().double().reshape(-1)
        prints += [v.sum(), (v * torch.arange(1, v.numel() + 1, dtype=v.dtype, device=v.device)).sum()]
    mine = torch.stack(prints)
    everyone = [torch.empty_like(mine) for _ in range(info.world)]
    dist.all_gather(everyone, mine)
    return all(torch.equal(everyone[0], e) for e in everyone[1:])
