"""``--engine ray`` against the local engine, on a real local Ray cluster (a head and a worker node
on loopback, started and stopped here): same bytes, same ``--json`` rows, same exit codes, a
killed worker retried, ``--skip-existing`` re-runs, and a one-line error without Ray."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import camvid_test_image

ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install 'sqgan-codec[ray]')")
pytestmark = pytest.mark.slow  # a Ray cluster per test: most of the suite's time
from ray.cluster_utils import Cluster  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORKER_MARK = "FileWorker"  # in the process title Ray gives the codec workers


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c
    c.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ray-in")
    for i in range(4):  # quarter-size CamVid frames: quick to code, real content
        rgb = camvid_test_image(i * 40)
        Image.fromarray(rgb).resize((240, 176), Image.BICUBIC).save(folder / f"frame{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder


def sqgan(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sqgan_codec.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, timeout=600)


def rows(stdout: str) -> list[dict]:
    """--json rows without the timing and the output folder (which differ by design)."""
    out = []
    for line in stdout.splitlines():
        row = json.loads(line)
        row.pop("seconds", None)
        row["output"] = Path(row["output"]).name if row.get("output") else row.get("output")
        out.append(row)
    return out


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def local_run(images, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("local") / "sqg"
    return sqgan("encode", str(images), "-o", str(out), "--bpp", "0.05", "--json", "--batch-size", "2"), out


def test_ray_engine_writes_the_same_bytes_rows_and_status(cluster, images, local_run, tmp_path) -> None:
    local, local_out = local_run
    out = tmp_path / "sqg"
    done = sqgan("encode", str(images), "-o", str(out), "--bpp", "0.05", "--json", "--batch-size", "2",
                 "--engine", "ray", "--ray-address", cluster.address)
    assert local.returncode == done.returncode == 1  # broken.png fails on both
    assert rows(done.stdout) == rows(local.stdout)
    assert sum(not r["ok"] for r in rows(done.stdout)) == 1
    assert "broken.png" in done.stderr and "broken.png" in local.stderr
    assert outputs(out) == outputs(local_out) and len(outputs(out)) == 4
    # and back: decoding on Ray gives the local engine's images
    dec_ray, dec_local = tmp_path / "png-ray", tmp_path / "png-local"
    a = sqgan("decode", str(out), "-o", str(dec_ray), "--json", "--engine", "ray", "--ray-address", cluster.address)
    b = sqgan("decode", str(out), "-o", str(dec_local), "--json")
    assert a.returncode == b.returncode == 0, a.stderr[-2000:]
    assert rows(a.stdout) == rows(b.stdout)
    for name in outputs(dec_local):
        assert np.array_equal(np.asarray(Image.open(dec_ray / name)), np.asarray(Image.open(dec_local / name)))


def test_killed_worker_is_retried_and_nothing_is_lost(cluster, images, local_run, tmp_path) -> None:
    _, local_out = local_run
    out = tmp_path / "sqg"
    proc = subprocess.Popen([sys.executable, "-m", "sqgan_codec.cli", "encode", str(images), "-o", str(out),
                             "--bpp", "0.05", "--batch-size", "1", "--engine", "ray", "--ray-address",
                             cluster.address, "-q"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        pids = subprocess.run(["pgrep", "-f", WORKER_MARK], capture_output=True, text=True).stdout.split()
        if pids and out.is_dir() and any(out.iterdir()):  # workers up and coding: kill one mid-run
            killed = int(pids[0])
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    _, stderr = proc.communicate(timeout=600)
    assert killed is not None, "no worker was seen to kill"
    assert proc.returncode == 1, stderr[-2000:]  # broken.png only
    assert outputs(out) == outputs(local_out)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_skip_existing_finishes_an_interrupted_run(cluster, images, local_run, tmp_path) -> None:
    _, local_out = local_run
    out = tmp_path / "sqg"
    out.mkdir()
    (out / "frame0.sqg").write_bytes((local_out / "frame0.sqg").read_bytes())
    done = sqgan("encode", str(images), "-o", str(out), "--bpp", "0.05", "--json", "--batch-size", "2",
                 "--skip-existing", "--engine", "ray", "--ray-address", cluster.address)
    got = {r["output"]: r for r in rows(done.stdout)}
    assert got["frame0.sqg"] == {"input": str(images / "frame0.png"), "output": "frame0.sqg", "ok": True,
                                 "skipped": True}
    assert outputs(out) == outputs(local_out)
    assert "1 skipped" in done.stderr
    # without --skip-existing an existing output is an error, as on the local engine
    again = sqgan("encode", str(images / "frame1.png"), "-o", str(out / "frame1.sqg"), "--bpp", "0.05",
                  "--engine", "ray", "--ray-address", cluster.address)
    assert again.returncode == 1 and "already exists" in again.stderr


def test_without_ray_the_engine_is_a_one_line_error(tmp_path, images) -> None:
    fake = tmp_path / "noray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no ray here')\n")
    done = sqgan("encode", str(images / "frame0.png"), "-o", str(tmp_path / "x.sqg"), "--bpp", "0.05",
                 "--engine", "ray", env={"PYTHONPATH": f"{fake.parent}{os.pathsep}{ROOT}"})
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == ["sqgan: error: --engine ray needs Ray: pip install 'sqgan-codec[ray]'"]
    assert not (tmp_path / "x.sqg").exists()


def test_dataset_functions_code_like_the_codec(cluster, images) -> None:
    from sqgan_codec.codec import Codec
    from sqgan_codec.ray_engine import decode_dataset, encode_dataset

    arrays = [np.asarray(Image.open(images / f"frame{i}.png").convert("RGB")) for i in range(2)]
    codec = Codec(device="cpu")
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        ds = ray.data.from_items([{"name": f"frame{i}", "image": a} for i, a in enumerate(arrays)])
        coded = encode_dataset(ds, bpp=0.05, batch_size=1, concurrency=1).materialize()
        decoded = decode_dataset(coded, batch_size=1, concurrency=1).take_all()
    finally:
        ray.shutdown()
    by_name = {row["name"]: row for row in decoded}
    for i, rgb in enumerate(arrays):
        row = by_name[f"frame{i}"]
        assert bytes(row["sqg"]) == codec.encode(rgb, bpp=0.05)
        assert row["bytes"] == len(row["sqg"]) and row["mode"]
        assert np.array_equal(row["image"], np.asarray(codec.decode(bytes(row["sqg"]))))
