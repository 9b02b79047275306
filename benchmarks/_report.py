"""Shared ending of the benchmark scripts: print a markdown report and write it where asked."""
from __future__ import annotations

from pathlib import Path


def emit(lines: list[str], out: str | None) -> None:
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        Path(out).write_text(text)
