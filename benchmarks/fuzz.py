"""Random damage to .sqg streams of every mode: crashes, hangs, silent layer loss, peak memory.

    python benchmarks/fuzz.py --cases 10000 --out docs/bench/fuzz.md

Streams of a CamVid frame at 240x176 in each mode the encoder writes (tokens; coarse image alone;
coarse + map + tokens; tokens + refinement; exact map + tokens) get one random mutation each (bit
flip, deletion or insertion of 1-7 bytes, truncation, or a header field set to a huge value with
its CRC fixed) and are decoded with the library's defaults. Counted: a *crash* is any exception
that is not the codec's own error (SqganError), a *hang* a decode over --hang-seconds, a *silent
layer loss* an image decoded without allow_partial whose layers are fewer than the original's.
Peak memory is the process's maximum resident set size.
"""
from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit  # noqa: E402

from sqgan_codec import bitstream  # noqa: E402
from sqgan_codec.codec import Codec  # noqa: E402
from sqgan_codec.errors import SqganError  # noqa: E402


def streams(codec: Codec, rgb: np.ndarray) -> dict[str, bytes]:
    return {
        "tokens": codec.encode(rgb, bpp=0.1, tune="semantic"),
        "coarse": codec.encode(rgb, bpp=0.3, tune="perceptual"),
        "balanced": codec.encode(rgb, bpp=0.3),
        "refine": codec.encode(rgb, bpp=0.3, tune="semantic", refine="on"),
        "lossless-map": codec.encode(rgb, bpp=1.0, tune="semantic", ssm="lossless"),
    }


def mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    op = rng.randrange(5)
    pos = rng.randrange(len(out))
    if op == 0:
        out[pos] ^= 1 << rng.randrange(8)
    elif op == 1:
        del out[pos:pos + rng.randrange(1, 8)]
    elif op == 2:
        out[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
    elif op == 3:
        out = out[: rng.randrange(len(out))]
    else:  # a well-formed header naming a huge image (the decompression bomb)
        stream = bitstream.unpack(data)
        import dataclasses

        side = rng.choice((4096, 8192, 65536, 1 << 20))
        header = dataclasses.replace(stream.header, width=side, height=rng.choice((side, 16)))
        return bitstream.pack(header, list(stream.chunks.items()))
    return bytes(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--image", default="../shared/data/camvid/test/0001TP_008550.png")
    ap.add_argument("--hang-seconds", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    codec = Codec(device="cpu")
    # the whole frame, small: the domain check recognises it (a crop would be "unfamiliar" and
    # every balanced stream a coarse image alone)
    rgb = np.asarray(Image.open(args.image).convert("RGB").resize((240, 176), Image.BICUBIC))
    originals = streams(codec, rgb)
    layers = {k: codec.decode(v).info["sqgan_layers"] for k, v in originals.items()}
    print({k: (len(v), layers[k]) for k, v in originals.items()}, flush=True)
    rng = random.Random(args.seed)
    counts = {k: {"cases": 0, "error": 0, "image": 0, "crash": 0, "hang": 0, "silent": 0} for k in originals}
    crashes: list[str] = []
    slowest = 0.0
    t_all = time.perf_counter()
    for i in range(args.cases):
        mode = list(originals)[i % len(originals)]
        data = mutate(originals[mode], rng)
        c = counts[mode]
        c["cases"] += 1
        t0 = time.perf_counter()
        try:
            image = codec.decode(data)
            c["image"] += 1
            if len(image.info["sqgan_layers"]) < len(layers[mode]) or image.info["sqgan_truncated"]:
                c["silent"] += 1
        except SqganError:
            c["error"] += 1
        except Exception as e:  # noqa: BLE001 -- what the benchmark counts
            c["crash"] += 1
            crashes.append(f"{mode}: {type(e).__name__}: {e}"[:200])
        dt = time.perf_counter() - t0
        slowest = max(slowest, dt)
        if dt > args.hang_seconds:
            c["hang"] += 1
    seconds = time.perf_counter() - t_all
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    total = {k: sum(c[k] for c in counts.values()) for k in next(iter(counts.values()))}
    lines = [f"# Fuzzed streams ({args.cases} cases, seed {args.seed})", "",
             f"`python benchmarks/fuzz.py --cases {args.cases} --out docs/bench/fuzz.md`", "",
             "| stream mode | cases | codec error | decoded | crash | hang | silent layer loss |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for mode, c in list(counts.items()) + [("**all**", total)]:
        lines.append(f"| {mode} | {c['cases']} | {c['error']} | {c['image']} | {c['crash']} | {c['hang']} | "
                     f"{c['silent']} |")
    lines += ["", f"Slowest case {slowest:.2f} s (a hang is > {args.hang_seconds:g} s); {seconds:.0f} s in all; "
              f"peak resident memory {peak_mb:.0f} MB (the loaded codec included).", ""]
    if crashes:
        lines += ["Crashes:", ""] + [f"- {c}" for c in crashes[:20]]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
