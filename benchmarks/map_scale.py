"""How the semantic map is sent beside the coarse image: G_s's tokens (the mixed mode) against the
exact map at a reduced scale (chunk M), at equal file size, on labelled CamVid frames.

    python benchmarks/map_scale.py --data ../shared/data/camvid --split val --every 4 --out docs/bench/map_scale.md

Each frame is coded at each target in each mode, built and finalised as the encoder sends it
(``decide.build`` + ``decide.finalise``): ``mixed-N`` is the mode ``balanced`` sent before the
reduced map (map and tokens on 0.0125 bpp, 10-25 % of the budget), ``scaledF-N`` the map exact at
1/F with image tokens on N % of the budget beyond it, ``detailB-S`` the map at the finest of 1/16
.. 1/6 within B % of the budget refined at 1/2 over the cells that add most to its mean IoU until
it takes S % (chunk F, what a priority sends, here without one), ``balanced`` what
``decide.balanced_mode`` picks. mIoU is pooled over the frames (bundled segmenter on the decodes against the ground truth);
*map share*: chunks M and F's bytes over the budget. Calibrate on ``val``; ``test`` is for reporting.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import emit, parse_run_args  # noqa: E402

from sqgan_codec import bitstream, decide  # noqa: E402
from sqgan_codec.codec import Codec, EncodeOptions  # noqa: E402
from sqgan_codec.evaluate.metrics import LpipsVggStyle, confusion_matrix, iou_from_confusion, psnr  # noqa: E402
from sqgan_codec.rate import budget_of  # noqa: E402

THIN = ("Pole", "SignSymbol", "Pedestrian", "Bicyclist")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="../shared/data/camvid")
    p.add_argument("--split", default="val")
    p.add_argument("--every", type=int, default=4)
    p.add_argument("--targets", default="0.025,0.05,0.1")
    p.add_argument("--modes", default="mixed,scaled8-0,scaled6-0,scaled4-0,detail30-40,balanced")
    a = parse_run_args(p)
    codec = Codec(device="cpu")
    lpips = LpipsVggStyle(scale=2)
    n = codec.num_classes
    thin = [codec.vocabulary.class_id(c) for c in THIN]
    root = Path(a.data)
    paths = sorted((root / a.split).glob("*.png"))[:: a.every]
    targets = [float(t) for t in a.targets.split(",")]
    modes = a.modes.split(",")
    stats: dict = {}
    for path in paths:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        truth = np.asarray(Image.open(root / f"{a.split}annot" / path.name))
        analysis = codec.analyse(rgb)
        for bpp in targets:
            budget = budget_of(analysis, EncodeOptions(bpp=bpp))
            for name in modes:
                mode = {"mixed": decide.mixed_mode(analysis.semantic_map.size, budget),
                        "balanced": decide.balanced_mode(codec, analysis, budget, 0)}.get(name, name)
                if name.startswith("detail"):  # detail<base share %>-<map share %>: chunk F, no priority
                    base_share, share = (int(v) / 100 for v in name[6:].split("-"))
                    mode = decide.detail_mode(codec, analysis, budget, 0, decide.BALANCED_MAP_SCALES, base_share, share)
                    if mode is None:
                        continue
                data = decide.build(codec, analysis, budget, lambda: b"", 0, mode)
                if data is None:
                    continue
                data = decide.finalise(codec, analysis, data, budget, 0)
                decoded = np.asarray(codec.decode(data).convert("RGB"))
                s = stats.setdefault((bpp, name), {"cm": np.zeros((n, n), np.int64), "psnr": [], "lpips": [],
                                                   "share": [], "fill": [], "modes": {}})
                s["cm"] += confusion_matrix(truth, codec.segmenter.segment(decoded), n)
                s["psnr"].append(psnr(rgb, decoded))
                s["lpips"].append(lpips(rgb, decoded))
                s["share"].append(sum(len(bitstream.unpack(data).chunks.get(k, b"")) for k in (
                    bitstream.CHUNK_SEMANTIC_SCALED, bitstream.CHUNK_MAP_DETAIL)) / budget)
                s["fill"].append(len(data) / budget)
                s["modes"][mode] = s["modes"].get(mode, 0) + 1
        print(path.name, flush=True)
    lines = ["# The semantic map beside the coarse image: G_s's tokens or exact at a reduced scale", "",
             f"Command: `python benchmarks/map_scale.py --data {a.data} --split {a.split} --every {a.every}"
             + (f" --modes {a.modes}" if a.modes != p.get_default("modes") else "") + "` "
             f"({len(paths)} CamVid {a.split} frames, 1 in {a.every}; equal size: every stream within its budget, "
             "at least 97 % of it; mIoU pooled, bundled segmenter on the decodes against the ground truth; "
             f"thin: mean IoU of {', '.join(THIN)}; map share: chunks M and F's bytes over the budget).", "",
             "| bpp | mode | mIoU | thin classes' IoU | PSNR | LPIPS-style | map share | fill (min) |",
             "|---|---|---|---|---|---|---|---|"]
    for (bpp, name), s in sorted(stats.items(), key=lambda kv: (kv[0][0], modes.index(kv[0][1]))):
        v = iou_from_confusion(s["cm"])
        label = name if name != "mixed" else f"mixed ({', '.join(s['modes'])})"
        if name == "balanced":
            label = "**balanced** (" + ", ".join(f"{m} {c}" for m, c in sorted(s["modes"].items())) + ")"
        lines.append(f"| {bpp} | {label} | {np.nanmean(v):.3f} | {np.nanmean(v[thin]):.3f} | {np.mean(s['psnr']):.2f} | "
                     f"{np.mean(s['lpips']):.4f} | {np.mean(s['share']):.2f} | {np.mean(s['fill']):.3f} "
                     f"({np.min(s['fill']):.3f}) |")
    emit(lines, a.out)


if __name__ == "__main__":
    main()
