"""Shared training plumbing: time budget, atomic checkpoints, schedules, logging."""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path

import torch


def autocast(device: torch.device, amp: str):
    """The mixed-precision context of a training step: bf16 autocast or none."""
    if amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def hardware(device: torch.device) -> str:
    """What trained a checkpoint, for the weights' provenance."""
    import platform

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{platform.machine()} CPU, torch {torch.__version__}"


def save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def resume(path: Path, net: torch.nn.Module, opt: torch.optim.Optimizer, device: torch.device) -> tuple[int, float]:
    """Load a run's ``last.pt`` into ``net`` and ``opt``: (steps done, seconds elapsed)."""
    state = torch.load(path, map_location=device, weights_only=True)
    net.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    step, elapsed = int(state["step"]), float(state["elapsed"])
    print(f"resumed at step {step}, {elapsed / 60:.1f} min elapsed")
    return step, elapsed


def cosine_lr(base: float, progress: float, warmup: float = 0.02, floor: float = 0.02) -> float:
    """Learning rate at a fraction of the time budget: linear warm-up, then cosine to base*floor."""
    if progress < warmup:
        return base * max(progress / warmup, 0.05)
    p = min(1.0, (progress - warmup) / (1 - warmup))
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))


class Budget:
    """Wall-clock training budget that survives resumes (elapsed time is checkpointed)."""

    def __init__(self, minutes: float, already: float = 0.0):
        self.total = minutes * 60.0
        self.already = already
        self.start = time.monotonic()

    @property
    def elapsed(self) -> float:
        return self.already + time.monotonic() - self.start

    @property
    def progress(self) -> float:
        return min(1.0, self.elapsed / self.total) if self.total > 0 else 1.0

    def done(self) -> bool:
        return self.elapsed >= self.total


class StopFlag:
    """Set by SIGTERM/SIGINT so a loop can checkpoint and exit cleanly (resume picks it up)."""

    def __init__(self) -> None:
        import signal

        self.stop = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handler)

    def _handler(self, *_: object) -> None:
        self.stop = True


class JsonlLog:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a", encoding="utf-8")

    def write(self, **record) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
