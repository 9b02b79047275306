"""Writers of a rate/quality run's results: CSV rows, JSON summary, plots and the Markdown
report (the runner is :mod:`.report`)."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import classical

if TYPE_CHECKING:  # pragma: no cover
    from .report import BenchResult

# metric name → (column, higher is better, axis label)
PLOT_METRICS = {
    "miou": ("miou", True, "mIoU (segmenter on decoded vs ground truth)"),
    "psnr": ("psnr_mean", True, "PSNR [dB]"),
    "ms_ssim": ("ms_ssim_mean", True, "MS-SSIM"),
    "lpips_vgg_style": ("lpips_vgg_style_mean", False, "LPIPS-style (HED-VGG16) ↓"),
    "fid_effnet_style": ("fid_effnet_style", False, "FID-style (EffNet-Lite0, 320-d) ↓"),
}

CSV_COLUMNS = ("image", "codec", "kind", "scale", "target_bpp", "status", "quality", "bytes", "bpp",
               "psnr", "ms_ssim", "lpips_vgg_style", "miou", "pixel_acc", "seg_agree_miou",
               "encode_s", "decode_s")


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        if not math.isfinite(v):
            return "inf" if v > 0 else ("" if math.isnan(v) else "-inf")
        return f"{v:.6g}"
    return "" if v is None else v


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k)) for k in CSV_COLUMNS})


def _json_safe(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, (np.floating, float)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def write_json(summary: dict, path: Path) -> None:
    path.write_text(json.dumps(_json_safe(summary), indent=2) + "\n")


def curves(summary: dict, metric: str, all_scales: bool = False) -> dict[str, list[tuple[float, float, int]]]:
    """Label → [(mean bpp, value, scale)] over targets. Only groups that reached the target on
    every image count. Default: per codec and target, the scale best in ``metric``."""
    col, higher, _ = PLOT_METRICS[metric]
    by_label: dict[str, dict[float, tuple[float, float, int]]] = {}
    for g in summary["groups"]:
        v = g.get(col)
        if v is None or g["coverage"] < 1 or g.get("bpp_mean") is None or not math.isfinite(v):
            continue
        label = f"{g['codec']} 1/{g['scale']}" if all_scales and g["kind"] == "classical" else g["codec"]
        point = (g["bpp_mean"], v, g["scale"])
        cur = by_label.setdefault(label, {}).get(g["target_bpp"])
        if cur is None or (v > cur[1] if higher else v < cur[1]):
            by_label[label][g["target_bpp"]] = point
    return {k: [pts[t] for t in sorted(pts)] for k, pts in sorted(by_label.items())}


def write_plots(summary: dict, out_dir: Path, all_scales: bool = False) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for metric, (col, _higher, ylabel) in PLOT_METRICS.items():
        cs = curves(summary, metric, all_scales)
        if not cs:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        for label, pts in cs.items():
            style = "-o" if label.split()[0] in classical.CODECS else "-s"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label,
                    lw=2.2 if style == "-s" else 1.3, ms=4)
            if not all_scales:
                for x, y, s in pts:
                    if s != 1:
                        ax.annotate(f"1/{s}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
        if metric == "miou" and summary.get("original", {}) and summary["original"].get("miou") is not None:
            ax.axhline(summary["original"]["miou"], color="k", ls="--", lw=1, label="original images")
        for t in summary["config"]["targets"]:
            ax.axvline(t, color="0.85", lw=0.8, zorder=0)
        ax.set_xlabel("bits per pixel (mean over images)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{ylabel.split(' (')[0]} vs rate, {summary['n_images']} images"
                     + ("" if all_scales else " (best scale per codec)"), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        path = out_dir / f"bpp_vs_{metric}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def _cell(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def per_class_table(summary: dict) -> list[str]:
    """Each class's IoU on the originals and on the learned codecs' decodes at every target
    (pooled over the images, bundled segmenter against the labels): where thin classes stand."""
    orig = (summary.get("original") or {}).get("per_class_iou")
    learned = [g for g in summary["groups"] if g["kind"] == "learned" and g.get("per_class_iou")]
    if not orig or not learned:
        return []
    learned.sort(key=lambda g: (g["codec"], g["target_bpp"]))
    head = " | ".join(f"{g['codec']} ≤ {g['target_bpp']}" for g in learned)
    lines = ["### IoU per class", "", f"| class | originals | {head} |", "|---|---|" + "---|" * len(learned)]
    for name, iou in orig.items():
        lines.append(f"| {name} | {_cell(iou, 3)} | "
                     + " | ".join(_cell(g["per_class_iou"].get(name), 3) for g in learned) + " |")
    return lines + [""]


def markdown(summary: dict, plots: list[Path] | None = None, title: str = "Rate/quality benchmark") -> str:
    """A markdown section: per target, each codec at its best scale (by mIoU, else MS-SSIM)."""
    has_miou = any(g.get("miou") is not None for g in summary["groups"])
    rank_col, rank_name = ("miou", "mIoU") if has_miou else ("ms_ssim_mean", "MS-SSIM")
    lines = [f"## {title}", ""]
    cfg = summary["config"]
    lines.append(f"{summary['n_images']} images; targets {', '.join(str(t) for t in cfg['targets'])} bpp; "
                 f"classical codecs at scales {', '.join('1/' + str(s) for s in cfg['scales'])} "
                 f"(Lanczos down, bicubic up); learned: {', '.join(cfg['learned']) or 'none'}.")
    orig = summary.get("original") or {}
    if orig.get("miou") is not None:
        lines.append(f"Segmenter mIoU on the original images: **{orig['miou']:.3f}** "
                     f"(pixel accuracy {orig['pixel_acc']:.3f}).")
    commands = summary.get("command")
    if commands:  # one command, or a list (a run merged into an earlier one: benchmarks/merge_rq.py)
        commands = [commands] if isinstance(commands, str) else commands
        lines.append(("Command: " if len(commands) == 1 else "Commands: ")
                     + ", then ".join(f"`{c}`" for c in commands) + ".")
    lines.append("")
    for t in cfg["targets"]:
        lines += [f"### ≤ {t} bpp", "",
                  "| codec | scale | bpp | PSNR | MS-SSIM | LPIPS-style ↓ | FID-style ↓ | mIoU | coverage |",
                  "|---|---|---|---|---|---|---|---|---|"]
        best: dict[str, dict] = {}
        for g in summary["groups"]:
            if g["target_bpp"] != t:
                continue
            cur = best.get(g["codec"])
            key = (g["coverage"] >= 1, g.get(rank_col) if g.get(rank_col) is not None else -1)
            if cur is None or key > (cur["coverage"] >= 1, cur.get(rank_col) if cur.get(rank_col) is not None else -1):
                best[g["codec"]] = g
        for g in sorted(best.values(), key=lambda g: (g["kind"] != "learned", g["codec"])):
            name = f"**{g['codec']}**" if g["kind"] == "learned" else g["codec"]
            cov = f"{g['n_coded']}/{g['n_images']}"
            if g.get("n_over_target"):
                cov += f" ({g['n_over_target']} over target)"
            lines.append(f"| {name} | 1/{g['scale']} | {_cell(g.get('bpp_mean'), 4)} | {_cell(g.get('psnr_mean'), 2)} "
                         f"| {_cell(g.get('ms_ssim_mean'), 4)} | {_cell(g.get('lpips_vgg_style_mean'), 4)} "
                         f"| {_cell(g.get('fid_effnet_style'), 2)} | {_cell(g.get('miou'), 3)} | {cov} |")
        lines.append("")
    lines += per_class_table(summary)
    lines.append(f"Best scale per codec chosen by {rank_name} among scales that reached the target on every "
                 "image; coverage counts images where the codec could get at or below the target at all "
                 "(means are over those). Every codec × scale is in `summary.json` and `results.csv`.")
    lines.append("")
    notes = summary["metric_notes"]
    lines.append(f"*LPIPS-style*: {notes['lpips_vgg_style']}. *FID-style*: {notes['fid_effnet_style']}.")
    lines.append("")
    for p in plots or []:
        lines.append(f"![{p.stem}]({p.name})")
    tm = summary["timing"]
    lines += ["", f"Run time {tm['wall_s'] / 60:.1f} min ({tm['wall_s_per_image']:.1f} s/image wall); per image "
              f"{_cell(tm.get('classical_coding_s_per_image'), 1)} s classical coding, "
              f"{_cell(tm.get('metrics_s_per_image'), 1)} s metrics, "
              f"{_cell(tm.get('learned_coding_s_per_image'), 1)} s learned coding, "
              f"{_cell(tm.get('cpu_s_per_image'), 1)} CPU-s in all (one thread per worker).", ""]
    if summary.get("skipped"):
        lines += ["Skipped: " + "; ".join(summary["skipped"]), ""]
    if summary.get("merged"):
        lines += [f"Merged (benchmarks/merge_rq.py): {summary['merged']}.", ""]
    return "\n".join(lines)


def write_all(result: BenchResult, out_dir: str | Path, all_scales: bool = False) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(result.rows, out / "results.csv")
    write_json(result.summary, out / "summary.json")
    plots = write_plots(result.summary, out, all_scales)
    (out / "report.md").write_text(markdown(result.summary, plots))
    return {"csv": out / "results.csv", "json": out / "summary.json", "markdown": out / "report.md",
            **{p.stem: p for p in plots}}
