"""Whole pictures side by side: original, sqgan (each --tune), and the best classical codec at the
same size, for a few images at one target.

    python benchmarks/side_by_side.py --images ../shared/data/photos --every 6 --bpp 0.05 --out out/bench/sbs_photos.png
    python benchmarks/side_by_side.py --images sqgan_codec/samples/street.png --bpp 0.025 --out docs/bench/sbs_sample.png

Columns: original | sqgan balanced (default) | sqgan perceptual | sqgan semantic | best classical
(highest PSNR among JPEG, JPEG 2000, WebP, AVIF, HEVC, JPEG XL at 1/1, 1/2, 1/4 within the
target). Labels give the mode the encoder chose, the bpp reached and PSNR. Images are shown at
most ``--width`` pixels wide. CamVid frames and the photos may not be committed: their grids go to
out/; the committed grid is of the project's own synthetic sample.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crop_grid import psnr, save_grid  # noqa: E402  (benchmarks/ is the script's folder)
from sqgan_codec.evaluate import classical  # noqa: E402

LABEL_H = 14
TUNES = ("balanced", "perceptual", "semantic")


def grid_cell(rgb: np.ndarray | None, size: tuple[int, int], label: str) -> Image.Image:
    cell = Image.new("RGB", (size[0], size[1] + LABEL_H), (255, 255, 255))
    if rgb is not None:
        cell.paste(Image.fromarray(rgb).resize(size, Image.BOX), (0, LABEL_H))
    ImageDraw.Draw(cell).text((2, 1), label, fill=(0, 0, 0))
    return cell


def best_classical(rgb: np.ndarray, target: float):
    best = None
    for name, reason in classical.available_codecs().items():
        if reason:
            continue
        for scale in classical.SCALES:
            r = classical.code_at_bpp(rgb, name, scale, target)
            if r is not None and (best is None or psnr(r.rgb, rgb) > psnr(best[1].rgb, rgb)):
                best = (name, r)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", required=True, help="an image or a folder")
    p.add_argument("--every", type=int, default=1)
    p.add_argument("--limit", type=int, default=6)
    p.add_argument("--bpp", type=float, default=0.05)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--out", required=True)
    p.add_argument("--md", default=None, help="also write a markdown part that shows the grid")
    p.add_argument("--priority", default=None, help="also a column of the default with this --priority "
                   "(e.g. Pedestrian=4)")
    a = p.parse_args(argv)
    from sqgan_codec.codec import Codec
    from sqgan_codec.options import parse_priority

    src = Path(a.images)
    paths = [src] if src.is_file() else sorted(q for q in src.iterdir() if q.suffix.lower() in (".png", ".jpg"))
    paths = paths[:: a.every][: a.limit]
    codec = Codec(device="cpu")
    rows = []
    for path in paths:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        h, w = rgb.shape[:2]
        size = (min(a.width, w), round(h * min(a.width, w) / w))
        row = [grid_cell(rgb, size, f"{path.name}")]
        for tune in TUNES:
            d = codec.encode_with_decision(rgb, bpp=a.bpp, tune=tune)
            dec = np.asarray(codec.decode(d.data).convert("RGB"))
            row.append(grid_cell(dec, size, f"{tune}: {d.mode} {8 * len(d.data) / (w * h):.3f} "
                                        f"{psnr(dec, rgb):.1f}dB"))
        if a.priority:
            d = codec.encode_with_decision(rgb, bpp=a.bpp, priority=parse_priority(a.priority, codec.vocabulary))
            dec = np.asarray(codec.decode(d.data).convert("RGB"))
            row.append(grid_cell(dec, size, f"{a.priority}: {8 * len(d.data) / (w * h):.3f} {psnr(dec, rgb):.1f}dB"))
        best = best_classical(rgb, a.bpp)
        if best is None:
            row.append(grid_cell(None, size, "no classical codec fits"))
        else:
            name, r = best
            row.append(grid_cell(r.rgb, size, f"{name} 1/{r.scale} {r.bpp:.3f} {psnr(r.rgb, rgb):.1f}dB"))
        rows.append(row)
        print(path.name, "done", flush=True)
    save_grid(rows, a.out)
    print(f"wrote {a.out}")
    if a.md:
        cmd = f"python benchmarks/side_by_side.py --images {a.images} --bpp {a.bpp} --out {a.out} --md {a.md}"
        rel = Path(a.out).resolve().relative_to(Path(a.md).resolve().parent)
        Path(a.md).write_text(
            "# Whole pictures side by side\n\n"
            f"Command: `{cmd}`. Columns: the original, sqgan with each `--tune` (label: the mode the "
            "encoder sent, bpp reached, PSNR), and the classical codec × scale with the highest PSNR "
            "within the target. The committed grid is of the project's own synthetic sample (CamVid "
            "frames and the photos may not be committed); `make bench` writes the same grids for "
            "CamVid test frames and the photos to `out/bench/sbs_camvid.png` and "
            "`out/bench/sbs_photos.png`.\n\n"
            f"![side by side]({rel})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
