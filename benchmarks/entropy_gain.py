"""Bits the entropy coder saves against the paper's fixed-length accounting, on CamVid test.

Fixed-length: every mask position costs 1 bit and every kept index log2(codebook size) bits
(10 for 1024 codes, 9 for 512). Ours: the actual range-coded payload of each chunk.

    python benchmarks/entropy_gain.py --data ../shared/data/camvid --limit 233
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqgan_codec import bitstream  # noqa: E402
from sqgan_codec.codec import Codec  # noqa: E402
from sqgan_codec.rate import keep_pair  # noqa: E402
from sqgan_codec.nets.samm import top_k_mask  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="../shared/data/camvid")
    p.add_argument("--limit", type=int, default=233)
    p.add_argument("--knobs", default="0.1,0.3,0.6,1.0")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    codec = Codec(device="cpu")
    knobs = [float(k) for k in args.knobs.split(",")]
    paths = sorted((Path(args.data) / "test").glob("*.png"))[: args.limit]
    bits_s = math.log2(codec.config.ssm_codes)
    bits_x = math.log2(codec.config.image_codes)
    totals = {k: np.zeros(4) for k in knobs}  # fixed S, coded S, fixed I, coded I
    for path in paths:
        analysis = codec.analyse(str(path))
        positions = analysis.ssm_indices.size
        for k in knobs:
            ks, kx = keep_pair(k)
            stream = bitstream.unpack(codec.pack(analysis, ks, kx))
            n_s = int(top_k_mask(analysis.ssm_scores, ks).sum())
            n_x = int(top_k_mask(analysis.image_scores, kx).sum())
            totals[k] += [positions + n_s * bits_s, 8 * len(stream.chunks["S"]),
                          positions + n_x * bits_x, 8 * len(stream.chunks.get("I", b""))]
    n = len(paths)
    print(f"Command: `python benchmarks/entropy_gain.py --data {args.data} --limit {args.limit}` "
          f"({n} CamVid test images, 480x360, mean bits per image)\n")
    print("| rate knob | keep (map, image) | map: fixed → coded | image: fixed → coded | total saved |")
    print("|---|---|---|---|---|")
    for k in knobs:
        fs, cs, fx, cx = totals[k] / n
        ks, kx = keep_pair(k)
        saved = 1 - (cs + cx) / (fs + fx)
        print(f"| {k:g} | {ks:.2f}, {kx:.2f} | {fs:.0f} → {cs:.0f} | {fx:.0f} → {cx:.0f} | {100 * saved:.1f} % |")


if __name__ == "__main__":
    main()
