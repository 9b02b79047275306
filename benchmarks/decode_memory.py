"""Peak memory that decoding adds, by image size: banded (the default) against whole-image.

    python benchmarks/decode_memory.py --out docs/bench/decode_memory.md

For each size the bundled sample is resized, encoded once (tokens, --keep 0.3; a coarse-image
stream would not run the SPADE decoder) and decoded in a fresh process per configuration, on
one thread: the process's peak resident memory after decoding minus before (the codec loaded),
and the decode's wall time. ``whole image`` sets ``nets.image.BAND_ROWS = 0`` (the decoder before
banding).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZES = ((480, 360), (1920, 1080), (3840, 2160), (4896, 3264))
WHOLE_MAX_PIXELS = 9_000_000  # the whole-image decoder above this would take > 5 GB: not run
LIMIT = 20_000_000  # max_pixels raised past the default 12 MP for the 16 MP rows and the bomb

# Encoding is measured too (peak resident memory of a fresh process, the image in it).
MAKE = """
import json, resource, sys, time, numpy as np
from PIL import Image
from sqgan_codec.codec import Codec
from sqgan_codec.demo import sample_path
w, h, keep, limit = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
if keep > 0:
    rgb = np.asarray(Image.open(sample_path()).convert("RGB").resize((w, h), Image.BICUBIC))
else:  # the decompression bomb: a flat image, every image token masked, a few dozen bytes
    rgb = np.full((h, w, 3), 128, np.uint8)
c = Codec(device="cpu", max_pixels=limit)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
data = c.encode(rgb, keep=keep)
dt = time.perf_counter() - t0
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
open(sys.argv[1], "wb").write(data)
print(json.dumps({"bytes": len(data), "added_mb": (after - before) / 1024, "peak_mb": after / 1024,
                  "seconds": dt}))
"""

DECODE = """
import json, resource, sys, time
from sqgan_codec.codec import Codec
from sqgan_codec.nets import image
if sys.argv[2] == "whole":
    image.BAND_ROWS = 0
c = Codec(device="cpu", max_pixels=int(sys.argv[3]))
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
im = c.decode(data)
dt = time.perf_counter() - t0
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"size": im.size, "added_mb": (after - before) / 1024, "peak_mb": after / 1024, "seconds": dt}))
"""


def python(code: str, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


NOTES = [
    "The banded decoder runs the SPADE decoder's last two up blocks (quarter and half resolution) in "
    "bands of 32 input rows with the whole image's normalisation statistics; against whole-image "
    "decoding it differs by ±1 level in about 1 pixel in 100,000 (`tests/test_codec_e2e.py`).", "",
    "Across thread counts: tokens are identical (every coded probability comes from integer tables); "
    "decoded pixels differ by ±1 level in about 0.002 % of pixels between 1 and 2 threads (float "
    "summation order inside oneDNN's convolutions; measured on CamVid test 0001TP_008550 at 0.05 bpp, "
    "tokens and default streams). Pixel-identical decoding would need deterministic convolution "
    "kernels; not attempted.", "",
    "GPU: no GPU has been lent to this project's sessions so far; the GPU recipe (`docs/training.md`, "
    "\"Training on a lent GPU\") measures the GPU throughput table (batch 1, 8, 32 at 480x360 and "
    "1920x1080) in its first minute when one is.",
]


def _pixels(size: str) -> int:
    w, h = size.split()[0].split("x")
    return int(w) * int(h)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--from-log", default=None, metavar="LOG",
                    help="only write the report from an earlier run's printed lines (its stdout)")
    args = ap.parse_args()
    if args.from_log:
        rows, encodes = [], []
        for line in Path(args.from_log).read_text().splitlines():
            if " {" not in line or not line[:1].isdigit():
                continue
            head, _, rest = line.partition(" {")
            r = ast.literal_eval("{" + rest)
            name, _, mode = head.rpartition(" ")
            (encodes.append((name, r)) if mode == "encode" else rows.append((name, mode, r)))
        emit(report(rows, encodes), args.out)
        return
    rows, encodes = [], []
    cases = [(w, h, 0.3, f"{w}x{h}") for w, h in SIZES] + [(4096, 4096, 0.0, "4096x4096 bomb")]
    with tempfile.TemporaryDirectory() as tmp:
        for w, h, keep, name in cases:
            path = str(Path(tmp) / f"{w}x{h}-{keep}.sqg")
            made = json.loads(python(MAKE, path, str(w), str(h), str(keep), str(LIMIT)))
            encodes.append((name, made))
            print(name, "encode", made, flush=True)
            for mode in ("banded", "whole") if w * h <= WHOLE_MAX_PIXELS else ("banded",):
                r = json.loads(python(DECODE, path, mode, str(LIMIT)))
                rows.append((name, mode, r))
                print(name, mode, r, flush=True)
    emit(report(rows, encodes), args.out)


def report(rows: list, encodes: list) -> list[str]:
    per_pixel = ", ".join(f"{size} {1e6 * r['seconds'] / _pixels(size):.1f} µs"
                          for size, mode, r in rows if mode == "banded")
    lines = ["# Decoding memory by image size (CPU, 1 thread)", "",
             "`python benchmarks/decode_memory.py --out docs/bench/decode_memory.md`", "",
             "Token streams (`--keep 0.3`) of the bundled sample resized; each decode in a fresh process. "
             "*Added* is the peak resident memory after decoding minus before it (the loaded codec, "
             f"about {rows[0][2]['peak_mb'] - rows[0][2]['added_mb']:.0f} MB, not counted); *peak* includes it. "
             "Times are one run each (indicative: the memory is what this table is for); time per pixel "
             f"{per_pixel}.", "",
             "| size | decoder | added (MB) | peak (MB) | decode (s) |", "|---|---|---:|---:|---:|"]
    for size, mode, r in rows:
        lines.append(f"| {size} | {'banded (default)' if mode == 'banded' else 'whole image'} | "
                     f"{r['added_mb']:.0f} | {r['peak_mb']:.0f} | {r['seconds']:.1f} |")
    lines += ["", f"Above {WHOLE_MAX_PIXELS / 1e6:.0f} MP only the banded decoder is run. The 16 MP row and the "
              f"*bomb* (a flat 4096x4096 image coded with every image token masked, `keep=0`: a small file, "
              f"a large picture; the default limit of 12 MP refuses it from its header) are decoded with "
              f"`max_pixels={LIMIT:,}`.", "", *NOTES,
              "", "## Encoding memory by image size (CPU, 1 thread)", "",
              "Same images, each encoded in a fresh process (`keep=0.3`; the bomb at `keep=0`). "
              "Encoding is not banded: the segmenter and the encoders see the whole image.", "",
              "| size | stream bytes | added (MB) | peak (MB) | encode (s) |", "|---|---:|---:|---:|---:|"]
    for size, r in encodes:
        lines.append(f"| {size} | {r['bytes']:,} | {r['added_mb']:.0f} | {r['peak_mb']:.0f} | {r['seconds']:.1f} |")
    return lines


if __name__ == "__main__":
    main()
