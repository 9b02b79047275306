"""Shared ending of the benchmark scripts: print a markdown report and write it where asked."""
from __future__ import annotations

import argparse
from pathlib import Path


def emit(lines: list[str], out: str | None) -> None:
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        Path(out).write_text(text)


def parse_run_args(p: argparse.ArgumentParser) -> argparse.Namespace:
    """``--threads`` and ``--out`` added, the arguments parsed, torch's threads set, warnings
    (the encoder's unfamiliar-image notes) silenced: the common start of a benchmark."""
    import warnings

    import torch

    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    warnings.simplefilter("ignore")
    return a
