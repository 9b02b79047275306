"""Images/s of ``sqgan encode`` / ``decode`` on the local engine and on Ray with 1 and 2 workers.

    python benchmarks/ray_engine.py --images ../shared/data/camvid/test --count 16 --out docs/bench/ray.md

Each configuration is one ``sqgan`` command over the same folder (default options, --bpp 0.05),
timed from start to exit: it includes loading the models (once per process or per Ray worker)
and, for Ray, joining a local cluster started beforehand (a head node with as many CPUs as this
machine has, started once; what `ray start --head` would give). One thread per process (Ray gives
each worker one CPU; the local engine is also run with all threads, the default).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def timed(args: list[str], threads: int | None) -> float:
    env = {**os.environ}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "sqgan_codec.cli", *args, "-q"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", default="../shared/data/camvid/test")
    ap.add_argument("--count", type=int, default=16)
    ap.add_argument("--bpp", type=float, default=0.05)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from ray.cluster_utils import Cluster

    work = Path(tempfile.mkdtemp(prefix="sqgan-ray-bench-"))
    src = work / "in"
    src.mkdir()
    for p in sorted(Path(args.images).glob("*.png"))[: args.count]:
        shutil.copy(p, src / p.name)
    cpus = os.cpu_count() or 1
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus, "include_dashboard": False})
    rows = []
    try:
        configs = [("local, all threads", [], None), ("local, 1 thread", [], 1)]
        configs += [(f"Ray, {n} worker{'s' if n > 1 else ''}", ["--engine", "ray", "--ray-address", cluster.address,
                                                           "--workers", str(n)], None) for n in (1, 2)]
        for name, extra, threads in configs:
            tag = name.replace(" ", "").replace(",", "_")
            enc = timed(["encode", str(src), "-o", str(work / f"sqg-{tag}"), "--bpp", str(args.bpp), *extra], threads)
            dec = timed(["decode", str(work / f"sqg-{tag}"), "-o", str(work / f"png-{tag}"), *extra], threads)
            rows.append((name, enc, dec))
            print(name, f"encode {args.count / enc:.3f}/s, decode {args.count / dec:.3f}/s", flush=True)
    finally:
        cluster.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    import platform

    lines = [f"# Batch coding: local engine and Ray ({args.count} CamVid test images, 480x360, --bpp {args.bpp})",
             "", f"`python benchmarks/ray_engine.py --images {args.images} --count {args.count} --out docs/bench/ray.md`",
             "", f"Machine: {platform.machine()}, {cpus} CPUs. Wall time of each whole command (model loading "
             "and joining the cluster included), images per second.", "",
             "| engine | encode images/s | decode images/s | encode s | decode s |", "|---|---:|---:|---:|---:|"]
    for name, enc, dec in rows:
        lines.append(f"| {name} | {args.count / enc:.3f} | {args.count / dec:.3f} | {enc:.1f} | {dec:.1f} |")
    emit(lines, args.out)


if __name__ == "__main__":
    main()
