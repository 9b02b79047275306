"""Which tokens to keep: SAMM's learned scores against the segmenter's gradient, at equal size.

    python benchmarks/importance.py --images ../shared/data/camvid/test --every 12 --bpp 0.03 \\
        --out docs/bench/importance.md

Each image is coded twice with ``--tune semantic`` (map and image tokens only, where the ranking
decides the whole stream) at the same target: image tokens ranked by SAMM (the default) and by
``--importance gradient`` (sqgan_codec/importance.py: the bundled segmenter's loss gradient).
The decodes are segmented by the bundled segmenter — the one the gradient comes from, so its
view is biased towards the gradient ranking — and by the CNN that sqgan's training never saw
(benchmarks/assets/unseen-segmenter-lite0.safetensors); mIoU and the thin classes' IoU over
the pooled confusion matrix against the ground truth, PSNR, file sizes.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit  # noqa: E402
from unseen_segmenter import CNN_ASSET, load_cnn  # noqa: E402

from sqgan_codec.codec import Codec  # noqa: E402
from sqgan_codec.evaluate.metrics import confusion_matrix, miou, psnr  # noqa: E402
from sqgan_codec.evaluate.report import find_images, load_label, load_rgb  # noqa: E402

THIN = ("Pedestrian", "Pole", "SignSymbol", "Bicyclist")
RANKINGS = ("samm", "gradient")


def class_iou(cm: np.ndarray, k: int) -> float:
    inter = cm[k, k]
    union = cm[k, :].sum() + cm[:, k].sum() - inter
    return float(inter / union) if union else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", default="../shared/data/camvid/test")
    ap.add_argument("--every", type=int, default=12)
    ap.add_argument("--bpp", type=float, default=0.03)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    codec = Codec(device="cpu")
    cnn, _ = load_cnn(CNN_ASSET)
    segmenters = {"bundled": codec.segmenter, **({"unseen CNN": cnn} if cnn is not None else {})}
    pairs = find_images(args.images, every=args.every)
    cms = {(r, s): 0 for r in RANKINGS for s in segmenters}
    sizes, psnrs, seconds = {r: [] for r in RANKINGS}, {r: [] for r in RANKINGS}, {r: 0.0 for r in RANKINGS}
    t0 = time.time()
    for k, (path, label_path) in enumerate(pairs):
        rgb, labels = load_rgb(path), load_label(label_path)
        for ranking in RANKINGS:
            t = time.perf_counter()
            data = codec.encode(rgb, bpp=args.bpp, tune="semantic", importance=ranking)
            seconds[ranking] += time.perf_counter() - t
            out = np.asarray(codec.decode(data).convert("RGB"))
            sizes[ranking].append(8 * len(data) / (rgb.shape[0] * rgb.shape[1]))
            psnrs[ranking].append(psnr(rgb, out))
            for name, seg in segmenters.items():
                cms[ranking, name] = cms[ranking, name] + confusion_matrix(labels, seg.segment(out))
        print(f"[{k + 1}/{len(pairs)}] {path.name} {time.time() - t0:.0f}s", flush=True)
    names = codec.vocabulary.names
    lines = ["# Token importance: SAMM against the segmenter's gradient", "",
             f"`python benchmarks/importance.py --images {args.images} --every {args.every} --bpp {args.bpp}`", "",
             f"{len(pairs)} images, `--tune semantic` at {args.bpp} bpp (map and image tokens); mIoU and "
             "per-class IoU over the pooled confusion matrix against the ground truth. The bundled "
             "segmenter is the one the gradient ranking differentiates; the unseen CNN never took part "
             "in sqgan's training or in the ranking.", "",
             "| ranking | mean bpp | encode s/image | PSNR | " + " | ".join(
                 f"mIoU {s} | " + " | ".join(f"{c} ({s})" for c in THIN) for s in segmenters) + " |",
             "|---|---:|---:|---:|" + "---:|" * (len(segmenters) * (1 + len(THIN)))]
    for r in RANKINGS:
        cells = []
        for s in segmenters:
            cm = np.asarray(cms[r, s])
            cells += [f"{miou(cm):.3f}"] + [f"{class_iou(cm, names.index(c)):.3f}" for c in THIN]
        lines.append(f"| {r} | {np.mean(sizes[r]):.4f} | {seconds[r] / len(pairs):.2f} | {np.mean(psnrs[r]):.2f} | "
                     + " | ".join(cells) + " |")
    diffs = [f"mIoU {s} {miou(np.asarray(cms['gradient', s])) - miou(np.asarray(cms['samm', s])):+.3f}"
             for s in segmenters]
    lines += ["", "Gradient against SAMM at the same size: " + ", ".join(diffs)
              + f", PSNR {np.mean(psnrs['gradient']) - np.mean(psnrs['samm']):+.2f} dB. The gradient ranking "
              "is linearised around SAMM's mask keeping 40 % of the positions (sqgan_codec/importance.py; "
              "chosen on CamVid val over linearising with every token kept)."]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
