"""What `--roi` buys: quality inside and outside a region of interest at equal bpp.

    python benchmarks/roi.py --data ../shared/data/camvid --every 8 --bpp 0.03 --out docs/bench/roi.md

The box is the same for every image (the right-centre of the frame, where CamVid's pavements,
pedestrians and signs often are); quality is measured inside and outside it, with and without
``roi=[box]`` at the same target.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import emit  # noqa: E402

from sqgan_codec.classes import NUM_CLASSES  # noqa: E402
from sqgan_codec.codec import Codec, EncodeOptions  # noqa: E402
from sqgan_codec.evaluate.metrics import confusion_matrix, miou, psnr  # noqa: E402

BOX = (256, 96, 192, 160)  # x, y, w, h on a 480x360 frame


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="../shared/data/camvid")
    p.add_argument("--every", type=int, default=8)
    p.add_argument("--bpp", type=float, default=0.03)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    warnings.simplefilter("ignore")
    root = Path(a.data)
    codec = Codec(device="cpu")
    x, y, w, h = BOX
    inside = np.zeros((360, 480), bool)
    inside[y:y + h, x:x + w] = True
    stats = {k: {"psnr_in": [], "psnr_out": [], "bpp": [],
                 "cm_in": np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64),
                 "cm_out": np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)} for k in ("plain", "roi")}
    paths = sorted((root / "test").glob("*.png"))[:: a.every]
    for path in paths:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        gt = np.asarray(Image.open(root / "testannot" / path.name))
        analysis = codec.analyse(rgb)
        for key, roi in (("plain", ()), ("roi", (BOX,))):
            data = codec.encode_analysis(analysis, EncodeOptions(bpp=a.bpp, roi=roi))
            dec = np.asarray(codec.decode(data).convert("RGB"))
            pred = codec.segmenter.segment(dec)
            s = stats[key]
            s["bpp"].append(8 * len(data) / gt.size)
            # masked pixels as 1×N×3 "images" for the RGB metric
            s["psnr_in"].append(psnr(rgb[inside][None], dec[inside][None]))
            s["psnr_out"].append(psnr(rgb[~inside][None], dec[~inside][None]))
            s["cm_in"] += confusion_matrix(gt[inside], pred[inside])
            s["cm_out"] += confusion_matrix(gt[~inside], pred[~inside])
    lines = ["# Region of interest (`--roi`)", "",
             f"Command: `python benchmarks/roi.py --data {a.data} --every {a.every} --bpp {a.bpp}` "
             f"({len(paths)} CamVid test images; box x,y,w,h = {','.join(map(str, BOX))}, 19 % of the "
             "frame; mIoU of the bundled segmenter against ground truth within each region).", "",
             "| encode | mean bpp | PSNR inside | PSNR outside | mIoU inside | mIoU outside |",
             "|---|---|---|---|---|---|"]
    for key, label in (("plain", "no ROI"), ("roi", f"`--roi {','.join(map(str, BOX))}`")):
        s = stats[key]
        lines.append(f"| {label} | {np.mean(s['bpp']):.4f} | {np.mean(s['psnr_in']):.2f} | "
                     f"{np.mean(s['psnr_out']):.2f} | {miou(s['cm_in']):.3f} | {miou(s['cm_out']):.3f} |")
    plain, boxed = stats["plain"], stats["roi"]
    d_in = np.mean(boxed["psnr_in"]) - np.mean(plain["psnr_in"])
    d_out = np.mean(boxed["psnr_out"]) - np.mean(plain["psnr_out"])
    d_miou_in = miou(boxed["cm_in"]) - miou(plain["cm_in"])
    d_miou_out = miou(boxed["cm_out"]) - miou(plain["cm_out"])
    lines += ["", f"At equal bpp the box changes by {d_in:+.2f} dB PSNR and the rest of the frame by "
              f"{d_out:+.2f} dB; the segmenter's mIoU by {d_miou_in:+.3f} inside the box and "
              f"{d_miou_out:+.3f} outside (the semantic map, which an ROI re-ranks too, dominates what "
              "the segmenter reads at this rate)."]
    emit(lines, a.out)


if __name__ == "__main__":
    main()
