"""The GPU recipe's CPU rehearsal: the same pack → run → unpack path a lent GPU takes
(sqgan_codec/train/device.py), with a few images and steps, so the recipe cannot rot unseen."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sqgan_codec.codec import Codec

from conftest import CAMVID, camvid_test_image

ROOT = Path(__file__).resolve().parents[1]
PART_BYTES = 6_000_000  # small parts: the result is cut in several, as a real run's is


def device(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "sqgan_codec.train.device", *args], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    if check and done.returncode:
        raise AssertionError(f"device {args[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory) -> dict[str, Path]:
    if not (CAMVID / "train").is_dir():
        pytest.skip("CamVid not beside the repo")
    tmp = tmp_path_factory.mktemp("device")
    pack, out, unpacked = tmp / "pack", tmp / "out", tmp / "unpacked"
    device("pack", "--data", str(CAMVID), "--out", str(pack), "--limit", "3", "--no-wheels")
    device("run", "--pack", str(pack), "--out", str(out), "--dry-run", "--sqgan-share", "0.75",
           "--part-bytes", str(PART_BYTES))
    device("unpack", str(out), "--out", str(unpacked))
    return {"pack": pack, "out": out, "unpacked": unpacked}


@pytest.mark.slow
def test_pack_holds_what_the_run_needs_and_counts_the_travel(rehearsal) -> None:
    manifest = json.loads((rehearsal["pack"] / "manifest.json").read_text())
    assert manifest["data"]["images"] == 6  # 3 train + 3 val
    assert manifest["data"]["psnr_min_db"] > 34  # lossy, but far above the codec's own distortion
    assert set(manifest["files"]) == {"camvid.tar", "perceptual-lite0.safetensors"}
    packed = sum(f["bytes"] for f in manifest["files"].values())
    assert manifest["travel_bytes"] == manifest["tracked_bytes"] + packed
    assert manifest["tracked_bytes"] > 10 * 2**20  # the weights travel as tracked files


def test_pack_refuses_to_exceed_the_travel_limit(tmp_path) -> None:
    if not (CAMVID / "train").is_dir():
        pytest.skip("CamVid not beside the repo")
    done = device("pack", "--data", str(CAMVID), "--out", str(tmp_path / "pack"), "--limit", "1",
                  "--no-wheels", "--limit-mib", "1", check=False)
    assert done.returncode != 0 and "would not travel" in done.stderr
    assert not (tmp_path / "pack").exists() and not (tmp_path / "pack.partial").exists()


def test_result_comes_back_in_parts_within_the_file_limit(rehearsal) -> None:
    out = rehearsal["out"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["parts"]) >= 2
    assert all((out / p["name"]).stat().st_size <= PART_BYTES for p in manifest["parts"])
    log = (out / "log.txt").read_text()
    assert "checks:" in log and "throughput" in log and "done in" in log


def test_unpacked_run_trained_checked_and_exported(rehearsal) -> None:
    result = rehearsal["unpacked"]
    summary = json.loads((result / "summary.json").read_text())
    assert summary["errors"] == {}
    assert summary["sqgan"]["steps"] == 2 and summary["coarse"]["steps"] == 2
    checks = json.loads((result / "checks.json").read_text())
    assert checks["ok"] and all(checks["golden_on_device"].values())
    verify = json.loads((result / "verify.json").read_text())
    assert verify["ok"] and {r["threads"] for r in verify["rows"]} == {1, 2}
    rows = json.loads((result / "throughput.json").read_text())["rows"]
    assert rows and all(r["encode_images_per_s"] > 0 for r in rows)
    # the exported weights are a complete registry: the codec loads them and round-trips an image
    weights = result / "weights"
    reg = json.loads((weights / "registry.json").read_text())
    assert reg["models"]["sqgan-camvid11"]["config"]["coarse_decoder"] == "coarse-camvid11"
    env = {**os.environ, "SQGAN_WEIGHTS_DIR": str(weights), "OMP_NUM_THREADS": "1"}
    code = ("import sys, numpy as np; from sqgan_codec.codec import Codec; c = Codec(device='cpu'); "
            "rgb = np.load(sys.argv[1]); d = c.encode(rgb, bpp=0.05); "
            "print(len(d), np.asarray(c.decode(d)).shape)")
    image = result / "probe.npy"
    np.save(image, camvid_test_image(0)[:96, :128])
    done = subprocess.run([sys.executable, "-c", code, str(image)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-3:] == ["(96,", "128,", "3)"]
    # and the continuation checkpoint starts a CPU run (fp16 weights, discriminator, no moments)
    import torch

    state = torch.load(result / "sqgan-last.pt", map_location="cpu", weights_only=True)
    assert "opt" not in state and state["model"]["image.to_rgb.1.weight"].dtype == torch.float16


def test_unpack_refuses_a_damaged_part(rehearsal, tmp_path) -> None:
    out = tmp_path / "copy"
    out.mkdir()
    for p in rehearsal["out"].iterdir():
        (out / p.name).write_bytes(p.read_bytes())
    part = out / "result.tar.001"
    data = bytearray(part.read_bytes())
    data[1000] ^= 0xFF
    part.write_bytes(bytes(data))
    done = device("unpack", str(out), "--out", str(tmp_path / "unpacked"), check=False)
    assert done.returncode != 0 and "not the file the manifest names" in done.stderr
    assert not (tmp_path / "unpacked").exists()


def test_shipped_weights_decode_streams_the_rehearsal_made(rehearsal, codec: Codec) -> None:
    """The run's check streams were made with the shipped weights: they decode here as recorded."""
    checks = json.loads((rehearsal["unpacked"] / "checks.json").read_text())
    for row in checks["streams"]:
        blob = (rehearsal["unpacked"] / "streams" / row["stream"]).read_bytes()
        assert codec.token_digest(blob) == row["tokens_sha256"]


def test_out_of_gpu_memory_halves_the_batch_and_goes_on(monkeypatch) -> None:
    import torch

    from sqgan_codec.train import device as recipe

    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    tried = []

    def train(batch: int) -> str:
        tried.append(batch)
        if batch > 8:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return f"trained at {batch}"

    assert recipe.halving_on_oom(train, 32) == "trained at 8" and tried == [32, 16, 8]
    with pytest.raises(torch.OutOfMemoryError):
        recipe.halving_on_oom(lambda b: (_ for _ in ()).throw(torch.OutOfMemoryError("no")), 8)


@pytest.mark.slow
def test_coarse_only_run_continues_a_given_decoder_and_leaves_the_sqgan_model(tmp_path) -> None:
    """`--sqgan-share 0`: the coarse decoder alone trains (from the pack's `--coarse-start`) on
    the shipped SQ-GAN model, whose weights do not come back; a run without checks unpacks."""
    if not (CAMVID / "train").is_dir():
        pytest.skip("CamVid not beside the repo")
    start = ROOT / "weights" / "coarse-camvid11.safetensors"
    pack, out, unpacked = tmp_path / "pack", tmp_path / "out", tmp_path / "unpacked"
    device("pack", "--data", str(CAMVID), "--out", str(pack), "--limit", "2", "--no-wheels",
           "--coarse-start", str(start))
    assert json.loads((pack / "manifest.json").read_text())["coarse_start"] == "coarse-start.safetensors"
    done = device("run", "--pack", str(pack), "--out", str(out), "--dry-run", "--sqgan-share", "0",
                  "--no-checks", "--no-throughput")
    assert f"initialised from {pack / 'coarse-start.safetensors'}" in done.stdout
    assert "SQ-GAN training skipped" in done.stdout
    device("unpack", str(out), "--out", str(unpacked))
    summary = json.loads((unpacked / "summary.json").read_text())
    assert summary["errors"] == {} and "sqgan" not in summary and summary["coarse"]["steps"] == 2
    assert json.loads((unpacked / "verify.json").read_text())["skipped"]
    # the SQ-GAN weights in the unpacked folder are the shipped ones (completed from the repo)
    from sqgan_codec.registry import file_sha256

    assert file_sha256(unpacked / "weights" / "sqgan-camvid11.safetensors") == \
        file_sha256(ROOT / "weights" / "sqgan-camvid11.safetensors")
    assert file_sha256(unpacked / "weights" / "coarse-camvid11.safetensors") != file_sha256(start)
    # --coarse-priority: the same stage ships the decoder of prioritised streams, the current one stays
    out2, unpacked2 = tmp_path / "out2", tmp_path / "unpacked2"
    device("run", "--pack", str(pack), "--out", str(out2), "--dry-run", "--sqgan-share", "0",
           "--no-checks", "--no-throughput", "--coarse-priority", "--coarse-object-colour", "2",
           "--coarse-semantic-luma")
    device("unpack", str(out2), "--out", str(unpacked2))
    config = json.loads((unpacked2 / "weights" / "registry.json").read_text())["models"]["sqgan-camvid11"]["config"]
    assert config["coarse_decoder_priority"] == "coarse-camvid11-priority"
    assert file_sha256(unpacked2 / "weights" / "coarse-camvid11.safetensors") == \
        file_sha256(ROOT / "weights" / "coarse-camvid11.safetensors")
    assert file_sha256(unpacked2 / "weights" / "coarse-camvid11-priority.safetensors") != file_sha256(start)
    from safetensors import safe_open

    with safe_open(str(unpacked2 / "weights" / "coarse-camvid11-priority.safetensors"), framework="pt") as f:
        args = json.loads(f.metadata()["provenance"])["args"]
    assert args["object_colour"] == 2.0 and args["semantic_luma"] is True  # the recipe passes them on


def test_leave_behind_keeps_unneeded_tracked_files_here_and_undo_restores_them(tmp_path) -> None:
    from sqgan_codec.train.device import LEAVE_BEHIND

    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, capture_output=True, text=True,  # noqa: E731
                                    check=True).stdout
    git("init", "-q")
    exclude = tmp_path / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    exclude.write_text("# mine\n/scratch/\n")
    for name in ("code.py", *(f"{d}/file.bin" for d in LEAVE_BEHIND)):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x" * 1000)
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    before = git("ls-files")
    device("leave-behind", "--root", str(tmp_path))
    # out of the index and ignored (a device call carries tracked and unignored files), still on disk
    assert git("ls-files").split() == ["code.py"]
    assert git("ls-files", "--others", "--exclude-standard") == ""
    assert all((tmp_path / d / "file.bin").exists() for d in LEAVE_BEHIND)
    device("leave-behind", "--root", str(tmp_path), "--undo")
    assert git("ls-files") == before and git("status", "--porcelain") == ""
    assert exclude.read_text() == "# mine\n/scratch/\n"
