"""Faithfulness check of a rate/quality run: sqgan against the best classical codec, per rate and
per image (the targets of the issue on faithful pictures).

    python benchmarks/faithful.py --results docs/bench/rq_photos/results.csv --out docs/bench/faithful_photos.md

From ``results.csv`` of ``benchmarks/rate_quality.py``: per target, sqgan's mean PSNR, MS-SSIM
and LPIPS-style beside the best classical codec × scale for each metric (among those that reach
the target on every image); per image, sqgan's PSNR less the best PSNR any classical codec ×
scale reached on that image within the target (how many images are more than 1 dB below, and
the worst); and whether semantic agreement rises with rate.
"""
from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def _f(v: str) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", required=True)
    p.add_argument("--learned", default="sqgan")
    p.add_argument("--out", required=True)
    p.add_argument("--title", default="Faithfulness against the best classical codec")
    a = p.parse_args(argv)
    rows = list(csv.DictReader(open(a.results)))
    images = sorted({r["image"] for r in rows})
    targets = sorted({float(r["target_bpp"]) for r in rows if r["target_bpp"]})
    groups: dict[tuple, dict[str, dict]] = defaultdict(dict)  # (codec, scale, target) -> image -> row
    for r in rows:
        if r["target_bpp"] and r["status"] == "ok":
            groups[r["codec"], int(r["scale"]), float(r["target_bpp"])][r["image"]] = r
    lines = [f"# {a.title}", "", f"Command: `python benchmarks/faithful.py --results {a.results} --out {a.out}` "
             f"({len(images)} images). Best classical: the codec × scale with the best mean of that metric "
             "among those that reach the target on every image.", "",
             "| bpp | sqgan PSNR | best classical PSNR | sqgan MS-SSIM | best classical MS-SSIM | "
             "sqgan LPIPS-style | best classical LPIPS-style (ratio) | images > 1 dB below their best classical "
             "| worst image (dB) | sqgan semantic agreement |", "|---|---|---|---|---|---|---|---|---|---|"]
    agreement = []
    for t in targets:
        mine = groups.get((a.learned, 1, t), {})
        classical = lambda k: k[0] != a.learned and not k[0].startswith(a.learned + "-")  # noqa: E731
        full = {k: g for k, g in groups.items() if k[2] == t and classical(k) and len(g) == len(images)}

        def mean(g: dict, col: str) -> float:
            return float(np.mean([_f(r[col]) for r in g.values() if _f(r[col]) is not None]))

        def best(col: str, lower: bool = False):
            cands = [(mean(g, col), f"{k[0]} 1/{k[1]}") for k, g in full.items()]
            return (min if lower else max)(cands) if cands else (float("nan"), "-")

        bp, bs, bl = best("psnr"), best("ms_ssim"), best("lpips_vgg_style", lower=True)
        gaps = []
        for im, r in mine.items():
            others = [_f(g[im]["psnr"]) for k, g in groups.items() if k[2] == t and classical(k) and im in g]
            if others:
                gaps.append((_f(r["psnr"]) - max(others), im))
        below = sum(1 for g, _ in gaps if g < -1.0)
        worst = min(gaps) if gaps else (float("nan"), "-")
        agree = mean(mine, "seg_agree_miou") if mine else float("nan")
        agreement.append(agree)
        ml = mean(mine, "lpips_vgg_style")
        lines.append(f"| {t} | {mean(mine, 'psnr'):.2f} | {bp[0]:.2f} ({bp[1]}) | {mean(mine, 'ms_ssim'):.3f} | "
                     f"{bs[0]:.3f} ({bs[1]}) | {ml:.3f} | {bl[0]:.3f} ({bl[1]}; {ml / bl[0]:.2f}x) | "
                     f"{below} of {len(gaps)} | {worst[0]:+.2f} ({worst[1]}) | {agree:.3f} |")
    rising = all(b >= a_ for a_, b in zip(agreement, agreement[1:]))
    lines += ["", f"Semantic agreement (segmenter on the decode vs on the original) "
              f"{'rises' if rising else 'does NOT rise'} with rate: {', '.join(f'{v:.3f}' for v in agreement)}.", ""]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
