"""Where the networks run: one reading of ``--device`` for the codec, the segmenters and training."""
from __future__ import annotations

import torch

from .errors import SqganError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto``: CUDA when available, else the CPU; a named CUDA device that is not there is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SqganError("CUDA was requested but is not available")
    return dev
