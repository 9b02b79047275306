"""Data-parallel training: 2 CPU processes with gloo, launched like a user would (torchrun)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.distributed as dist

from sqgan_codec.nets.quantizer import VectorQuantizer
from sqgan_codec.nets.sqgan import SQGAN, SQGANConfig

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo not available")
ROOT = Path(__file__).resolve().parents[1]


def _tiny_camvid(root: Path, n: int = 3) -> Path:
    rng = np.random.default_rng(0)
    (root / "train").mkdir(parents=True)
    (root / "trainannot").mkdir()
    for i in range(n):
        lab = np.full((48, 64), 3, np.uint8)
        lab[:16] = 0
        lab[16:, 20 + 10 * i:] = 8
        img = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "train" / f"im{i}.png"), img)
        cv2.imwrite(str(root / "trainannot" / f"im{i}.png"), lab)
    return root


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1",
                PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_torchrun_two_processes_write_one_plain_checkpoint(tmp_path: Path) -> None:
    data = _tiny_camvid(tmp_path / "camvid")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "sqgan_codec.train", "joint", "--data", str(data), "--splits", "train", "--out", str(run),
           "--batch", "2", "--crop", "32", "--threads", "1", "--minutes", "5", "--max-steps", "2",
           "--perceptual", "0", "--semantic", "0", "--gan-start", "0", "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=110)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]  # torchrun exits 0 only when both ranks did
    assert out.count("done: 2 steps") == 1, out[-4000:]  # rank 0 alone reports and writes
    assert "ddp: parameters and codebooks identical on all 2 ranks" in out, out[-4000:]
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    assert set(state) == {"model", "opt", "step", "elapsed", "config", "vocabulary", "args", "gan", "hardware"}
    assert state["step"] == 2 and state["args"]["world_size"] == 2
    assert not any(k.startswith("module.") for k in state["model"])
    model = SQGAN(SQGANConfig.from_dict(state["config"]))
    model.load_state_dict(state["model"])  # strict: same keys as a single-process checkpoint
    assert sorted(p.name for p in run.iterdir()) == ["last.pt", "log.jsonl"]  # no stray files


# -- the codebook update is global: every rank applies the one a single process would make


def _quantizer_worker(rank: int, world: int, init_file: str, result_file: str) -> None:
    from sqgan_codec.train.ddp import sync_quantizers

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # same start on every rank
        q = VectorQuantizer(16, 4, restart_threshold=0.0).train()
        reference = VectorQuantizer(16, 4, restart_threshold=0.0).train()
        reference.load_state_dict(q.state_dict())
        assert sync_quantizers(q, world, seed=3) == 1
        z = torch.randn(world * 2, 4, 3, 3, generator=torch.Generator().manual_seed(1))
        keep = torch.rand(world * 2, 1, 3, 3, generator=torch.Generator().manual_seed(2)) > 0.3
        mine = slice(2 * rank, 2 * rank + 2)
        q(z[mine], keep[mine])  # data initialisation (+ first EMA step), from every rank's latents
        reference.load_state_dict(q.state_dict())  # same codebook: compare the EMA steps alone
        for _ in range(2):
            q(z[mine], keep[mine])
            reference(z, keep)  # one process, the whole batch
        states = [None] * world
        dist.all_gather_object(states, {k: v.clone() for k, v in q.state_dict().items()})
        if rank == 0:
            same_across = all(torch.equal(states[0][k], s[k]) for s in states[1:] for k in states[0])
            like_single = all(torch.allclose(states[0][k].float(), v.float(), atol=1e-6)
                              for k, v in reference.state_dict().items())
            Path(result_file).write_text(f"{same_across} {like_single}")
    finally:
        dist.destroy_process_group()


def test_codebook_updates_agree_across_ranks(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    result = tmp_path / "result"
    # fork where there is one: the workers need not import torch again (seconds on a busy machine)
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(_quantizer_worker, args=(2, str(tmp_path / "init"), str(result)), nprocs=2,
                       join=True, start_method=method)
    assert result.read_text() == "True True"
