"""Calibration of the encoder's mode decision (sqgan_codec/decide.py) on CamVid *val* frames.

    python benchmarks/calibrate_decide.py --data ../shared/data/camvid --every 10 --out out/calibrate.json

For every image and target: each candidate's encoder-side scores (semantic agreement, MS-SSIM
of the luma) beside the true metrics (mIoU against the ground truth, PSNR, LPIPS-style), the
segmenter's confidence and the fidelity gap of the domain check. Prints the percentiles the
domain-check thresholds are set from and, per balanced slack, the mean true metrics of the
candidates it would pick, and how often the balanced search among the token and mixed modes
picks each (what ``decide.balanced_mode`` is set from). Val frames only: the test split and the
photos are for reporting.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data/camvid")
    p.add_argument("--split", default="val")
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--targets", default="0.025,0.05,0.1")
    p.add_argument("--out", default="out/calibrate.json")
    p.add_argument("--shares", default=None,
                   help="token-layer shares of the mixed candidates, e.g. 0.1,0.25 (default: decide.MIXED_SHARES)")
    p.add_argument("--modes", default=None,
                   help="only these candidates, e.g. mixed-10,mixed-25 (the balanced-search report needs tokens)")
    p.add_argument("--domain-only", action="store_true",
                   help="only the domain check's statistics (confidence, fidelity gap), on every image")
    a = p.parse_args(argv)
    if a.domain_only:
        return domain(a)
    from sqgan_codec import decide, rate
    from sqgan_codec.codec import Codec, EncodeOptions
    from sqgan_codec.evaluate.metrics import LpipsVggStyle, confusion_matrix, miou, psnr

    codec = Codec(device="cpu")
    from sqgan_codec.evaluate.run import lpips_dtype_for

    modes = decide.MODES if a.shares is None else (
        "tokens", "coarse", "coarse+learned", *(f"mixed-{round(100 * float(s))}" for s in a.shares.split(",")))
    if a.modes:
        modes = tuple(a.modes.split(","))

    lpips = LpipsVggStyle(scale=2, dtype=lpips_dtype_for("auto"))  # bfloat16 only where native
    root = Path(a.data)
    paths = sorted((root / a.split).glob("*.png"))[:: a.every]
    records = []
    for path in paths:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        gt = np.asarray(Image.open(root / f"{a.split}annot" / path.name))
        analysis = codec.analyse(rgb)
        for t in (float(v) for v in a.targets.split(",")):
            options = EncodeOptions(bpp=t)
            budget = rate.budget_of(analysis, options)
            tokens = rate.token_stream(codec, analysis, options, 0)
            # each candidate as it would be sent (AV1 thumbnails coded by the final preset)
            streams = {n: decide.finalise(codec, analysis, d, budget, 0)
                       for n, d in decide.candidates(codec, analysis, budget, tokens, 0, modes).items()}
            names = list(streams)
            decoded = [np.asarray(im.convert("RGB")) for im in codec.decode_many([streams[n] for n in names])]
            described = codec.segmenter.describe([rgb, *decoded])
            fid = decide.structural_similarity(rgb, decoded)
            rec = {"image": path.name, "bpp": t, "confidence": described[0].confidence, "candidates": {}}
            for n, d, v, f in zip(names, decoded, described[1:], fid):
                rec["candidates"][n] = {
                    "bytes": len(streams[n]), "agreement": rate.agreement(analysis.semantic_map, v.semantic_map),
                    "fidelity": f, "miou": miou(confusion_matrix(gt, v.semantic_map)),
                    "confusion": confusion_matrix(gt, v.semantic_map).tolist(),
                    "psnr": psnr(rgb, d), "lpips": lpips(rgb, d)}
            records.append(rec)
            print(path.name, t, {n: (round(c["agreement"], 3), round(c["fidelity"], 3), round(c["lpips"], 3))
                                 for n, c in rec["candidates"].items()}, flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(records, indent=1))
    report(records)
    return 0


def domain(a: argparse.Namespace) -> int:
    """The domain check's two statistics at 0.05 bpp: cheap (no learned render, no LPIPS)."""
    from sqgan_codec import decide, rate
    from sqgan_codec.codec import Codec, EncodeOptions

    codec = Codec(device="cpu")
    conf, gaps = [], []
    for path in sorted((Path(a.data) / a.split).glob("*.png"))[:: a.every]:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        analysis = codec.analyse(rgb)
        options = EncodeOptions(bpp=0.05)
        budget = rate.budget_of(analysis, options)
        tokens = rate.token_stream(codec, analysis, options, 0)
        thumb, quality = decide.thumbnail_within(rgb, budget - 60)
        only = decide.with_coarse(codec, analysis, None, thumb.encode(quality), 0)
        decoded = [np.asarray(codec.decode(d)) for d in (tokens, only)]
        fid = decide.structural_similarity(rgb, decoded)
        conf.append(codec.segmenter.describe([rgb])[0].confidence)
        gaps.append(fid[1] - fid[0])
        print(path.name, round(conf[-1], 3), round(gaps[-1], 3), flush=True)
    print(f"{len(conf)} images of {a.data}/{a.split}")
    print("confidence percentiles 1/2/5/50:", np.percentile(conf, [1, 2, 5, 50]).round(3))
    print("fidelity gap percentiles 50/95/98/99/max:", np.percentile(gaps, [50, 95, 98, 99, 100]).round(3))
    return 0


def report(records: list[dict]) -> None:
    conf = [r["confidence"] for r in records]
    gaps = [r["candidates"]["coarse"]["fidelity"] - r["candidates"]["tokens"]["fidelity"]
            for r in records if "coarse" in r["candidates"]]
    print("confidence percentiles 1/2/5/50:", np.percentile(conf, [1, 2, 5, 50]).round(3))
    if gaps:
        print("fidelity gap percentiles 50/95/98/99:", np.percentile(gaps, [50, 95, 98, 99]).round(3))
    for t in sorted({r["bpp"] for r in records}):
        rs = [r for r in records if r["bpp"] == t]
        from sqgan_codec.decide import MODES

        for name in sorted({m for r in rs for m in r["candidates"]}, key=lambda m: (MODES + (m,)).index(m)):
            got = [r["candidates"][name] for r in rs if name in r["candidates"]]
            if got:
                pooled = ""  # over the frames' pooled confusion matrix, as the benchmarks report mIoU
                if all("confusion" in g for g in got):
                    from sqgan_codec.evaluate.metrics import miou

                    pooled = f" (pooled {miou(np.sum([np.asarray(g['confusion']) for g in got], axis=0)):.3f})"
                print(f"{t} {name:15s} n={len(got)} mIoU {np.mean([g['miou'] for g in got]):.3f}{pooled} "
                      f"lpips {np.mean([g['lpips'] for g in got]):.3f} psnr {np.mean([g['psnr'] for g in got]):.2f}")
        for slack in (0.0, 0.02, 0.03, 0.05, 0.08, 0.12, 1.0):
            pick = []
            for r in rs:
                floor = max(c["agreement"] for c in r["candidates"].values()) - slack
                pick.append(max((c for c in r["candidates"].values() if c["agreement"] >= floor),
                                key=lambda c: c["fidelity"]))
            print(f"{t} balanced slack={slack:<5} mIoU {np.mean([g['miou'] for g in pick]):.3f} "
                  f"lpips {np.mean([g['lpips'] for g in pick]):.3f} psnr {np.mean([g['psnr'] for g in pick]):.2f}")
        # the search balanced ran before decide.balanced_mode replaced it: tokens and mixed modes, slack 0.08
        from collections import Counter

        searched = [{k: c for k, c in r["candidates"].items() if k == "tokens" or k.startswith("mixed-")}
                    for r in rs if "tokens" in r["candidates"]]
        picks = Counter()
        for cands in searched:
            floor = max(c["agreement"] for c in cands.values()) - decide_slack()
            picks[max((k for k in cands if cands[k]["agreement"] >= floor), key=lambda k: cands[k]["fidelity"])] += 1
        print(f"{t} balanced search picks (tokens, mixed modes): {dict(picks)}")


def decide_slack() -> float:
    from sqgan_codec.decide import BALANCED_SEMANTIC_SLACK

    return BALANCED_SEMANTIC_SLACK


if __name__ == "__main__":
    sys.exit(main())
