"""How much the GPU pack's lossy training images differ from the PNG originals, per quality.

    python benchmarks/device_pack.py --data ../shared/data/camvid --every 2 --out docs/bench/device_pack.md

The GPU recipe (sqgan_codec/train/device.py) carries CamVid train+val as WebP because the PNGs do
not fit the 64 MiB a device call may carry. "Harmless" is measured against what the model is
trained to do: the pack's distortion must be far below the codec's own at 0.1 bpp (PSNR ~24 dB,
LPIPS-style ~0.12 on CamVid), and the bundled segmenter must see the same classes. Rows: WebP at
a few qualities (method 6, as packed) and JPEG 4:4:4 for comparison; bytes per image, PSNR,
LPIPS-style distance to the original (float32, 2x area-downsampled as in the benchmarks) and the
segmenter's mIoU on the carried images against its mIoU on the originals (CamVid val labels).
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _report import emit  # noqa: E402

from sqgan_codec.evaluate.metrics import LpipsVggStyle, confusion_matrix, miou, psnr  # noqa: E402
from sqgan_codec.segmenters import get_segmenter  # noqa: E402
from sqgan_codec.train.device import pack_image  # noqa: E402

QUALITIES = (75, 85, 95)


def jpeg(rgb: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/camvid")
    ap.add_argument("--split", default="val")
    ap.add_argument("--every", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    root = Path(args.data)
    names = sorted(p.name for p in (root / args.split).glob("*.png"))[:: args.every]
    coders = [(f"WebP q{q} (pack)", lambda rgb, q=q: pack_image(rgb, q)) for q in QUALITIES]
    coders.append(("JPEG q90 4:4:4", lambda rgb: jpeg(rgb, 90)))
    lpips = LpipsVggStyle(scale=2)
    seg = get_segmenter("bundled", device="cpu")
    stats = {name: {"bytes": [], "psnr": [], "lpips": [], "cm": 0} for name, _ in coders}
    cm_orig = 0
    for n in names:
        rgb = np.asarray(Image.open(root / args.split / n).convert("RGB"))
        label = np.asarray(Image.open(root / f"{args.split}annot" / n))
        cm_orig = cm_orig + confusion_matrix(label, seg.segment(rgb))
        for name, code in coders:
            data = code(rgb)
            back = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            s = stats[name]
            s["bytes"].append(len(data))
            s["psnr"].append(psnr(rgb, back))
            s["lpips"].append(lpips(rgb, back))
            s["cm"] = s["cm"] + confusion_matrix(label, seg.segment(back))
    lines = [f"# Training images as the GPU pack carries them ({len(names)} CamVid {args.split} images)", "",
             "`python benchmarks/device_pack.py --data ../shared/data/camvid --every "
             f"{args.every} --out docs/bench/device_pack.md`", "",
             f"Bundled segmenter on the PNG originals: mIoU {miou(cm_orig):.4f}.", "",
             "| carried as | KB / image | 468 images (MiB) | PSNR (dB) mean / min | LPIPS-style | segmenter mIoU |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, _ in coders:
        s = stats[name]
        kb = np.mean(s["bytes"]) / 1e3
        lines.append(f"| {name} | {kb:.1f} | {468 * np.mean(s['bytes']) / 2**20:.1f} | "
                     f"{np.mean(s['psnr']):.2f} / {np.min(s['psnr']):.2f} | {np.mean(s['lpips']):.4f} | "
                     f"{miou(s['cm']):.4f} |")
    lines += ["", "For scale: the codec's own decodes of CamVid test at 0.1 bpp are at about 24 dB and "
              "LPIPS-style 0.12 (docs/benchmarks.md)."]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
