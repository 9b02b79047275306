"""Accuracy and CPU speed of the bundled segmenter on CamVid test (233 images, 480x360).

    python benchmarks/segmenter.py --data ../shared/data/camvid --out docs/segmenter.md
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import emit  # noqa: E402

from sqgan_codec.classes import CLASS_NAMES  # noqa: E402
from sqgan_codec.evaluate.metrics import confusion_matrix, iou_from_confusion, pixel_accuracy  # noqa: E402
from sqgan_codec.segmenters import get_segmenter  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="../shared/data/camvid")
    p.add_argument("--split", default="test")
    p.add_argument("--out", default=None, help="markdown report to write")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    seg = get_segmenter("bundled", device="cpu")
    root = Path(args.data)
    names = sorted((root / args.split).glob("*.png"))[: args.limit]
    cm = np.zeros((11, 11), np.int64)
    times = []
    for i, path in enumerate(names):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        gt = np.asarray(Image.open(root / f"{args.split}annot" / path.name))
        t0 = time.perf_counter()
        pred = seg.segment(rgb)
        times.append(time.perf_counter() - t0)
        cm += confusion_matrix(gt, pred)
    iou = iou_from_confusion(cm)
    warm = np.array(times[3:] or times) * 1000
    lines = [
        "# Bundled segmenter: measured on CamVid " + args.split, "",
        f"Command: `python benchmarks/segmenter.py --data {args.data} --split {args.split} "
        f"--threads {args.threads}{' --out ' + args.out if args.out else ''}`", "",
        f"- images: {len(names)} at 480x360, void (11) ignored",
        f"- **mIoU (11 classes): {np.nanmean(iou):.4f}**; pixel accuracy {pixel_accuracy(cm):.4f}",
        f"- CPU latency per image ({args.threads} threads, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}): median {np.median(warm):.0f} ms, p90 {np.percentile(warm, 90):.0f} ms",
        "", "| class | IoU |", "|---|---|",
    ] + [f"| {n} | {v:.4f} |" for n, v in zip(CLASS_NAMES, iou)]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
