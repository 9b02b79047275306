"""Lossless label-map coder (sqgan_codec.ssm_lossless) on CamVid: bits per map and speed.

Tables are fitted on trainannot and measured on testannot (480x360). Void pixels (11) are
filled from neighbouring classes first (ssm_lossless.fill_void): the codec's maps come from
a segmenter and never hold void.

    python benchmarks/ssm_lossless.py --data ../shared/data/camvid
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqgan_codec.classes import NUM_CLASSES  # noqa: E402
from sqgan_codec.ssm_lossless import (  # noqa: E402
    NUM_CONTEXTS, decode_label_map, encode_label_map, fill_void, fit_tables,
)


def load_maps(folder: Path, limit: int | None) -> tuple[list[np.ndarray], int]:
    """Void-filled label maps of a CamVid annotation folder, and their PNG bytes in total."""
    paths = sorted(folder.glob("*.png"))[:limit]
    if not paths:
        raise SystemExit(f"no label maps in {folder}")
    return [fill_void(np.asarray(Image.open(p))) for p in paths], sum(p.stat().st_size for p in paths)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/camvid")
    p.add_argument("--limit", type=int, default=None, help="use only the first N maps of each split")
    args = p.parse_args()
    root = Path(args.data)
    train, _ = load_maps(root / "trainannot", args.limit)
    test, png_bytes = load_maps(root / "testannot", args.limit)

    t0 = time.perf_counter()
    tables = fit_tables(train)
    fit_s = time.perf_counter() - t0
    decode_label_map(encode_label_map(test[0], tables), test[0].shape, tables)  # one-off lookup tables

    bits, enc_s, dec_s = [], [], []
    for labels in test:
        t0 = time.perf_counter()
        data = encode_label_map(labels, tables)
        t1 = time.perf_counter()
        out = decode_label_map(data, labels.shape, tables)
        t2 = time.perf_counter()
        if not np.array_equal(out, labels):
            raise SystemExit("round trip failed")
        bits.append(8 * len(data))
        enc_s.append(t1 - t0)
        dec_s.append(t2 - t1)

    n = len(test)
    h, w = test[0].shape
    pixels = np.mean([m.size for m in test])
    naive = pixels * math.log2(NUM_CLASSES)
    print(f"Command: `python benchmarks/ssm_lossless.py --data {args.data}"
          f"{'' if args.limit is None else f' --limit {args.limit}'}` "
          f"(tables fitted on {len(train)} CamVid train maps in {fit_s:.1f} s, "
          f"{NUM_CONTEXTS * NUM_CLASSES} table entries; {n} test maps, {w}x{h}, void filled; "
          f"times on one thread of this machine)\n")
    print("| coder | mean bits per map | bits per pixel | mean encode | mean decode (max) |")
    print("|---|---|---|---|---|")
    print(f"| fixed length, log2({NUM_CLASSES}) bits per pixel | {naive:.0f} | {naive / pixels:.3f} | | |")
    png_bits = 8 * png_bytes / n
    print(f"| CamVid's PNG files (void not filled) | {png_bits:.0f} | {png_bits / pixels:.4f} | | |")
    print(f"| ssm_lossless | {np.mean(bits):.0f} | {np.mean(bits) / pixels:.4f} | "
          f"{1e3 * np.mean(enc_s):.0f} ms | {1e3 * np.mean(dec_s):.0f} ms ({1e3 * np.max(dec_s):.0f} ms) |")


if __name__ == "__main__":
    main()
