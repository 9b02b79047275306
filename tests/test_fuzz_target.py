"""The coverage-guided fuzz target (benchmarks/fuzz_target.py) runs a short libFuzzer session
from the golden streams without a finding; the longer run is documented in docs/bench/fuzz.md."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="atheris is in the [test] extra (x86-64 Linux wheels)")

ROOT = Path(__file__).resolve().parents[1]


def test_fuzz_target_short_run_finds_nothing(tmp_path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for p in (ROOT / "tests" / "golden").glob("*.sqg"):
        shutil.copy(p, corpus / p.name)
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fuzz_target.py"), str(corpus),
                           "-runs=3000", "-seed=1"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done 3000 runs" in done.stderr
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("timeout-*"))
    assert len(list(corpus.iterdir())) > len(list((ROOT / "tests" / "golden").glob("*.sqg")))  # it explored
