"""Visual grid: the same crop of an image coded by every codec at 0.025 / 0.05 / 0.1 bpp.

    python benchmarks/crop_grid.py --image sqgan_codec/samples/street.png --out docs/bench/crops_sample.png
    python benchmarks/crop_grid.py --image ../shared/data/camvid/test/0001TP_008550.png --out out/bench/crops.png

Rows: the original, sqgan, then each classical codec at whichever of full, 1/2 and 1/4
resolution gives the highest PSNR within the target (bpp from actual file bytes). Columns:
the targets. Each cell is labelled with the codec, scale and the bpp reached, or "cannot reach" where the
codec cannot go that low. CamVid images may not be committed to this repository, so grids of
them go to out/ (the committed one is of the project's own synthetic street scene).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqgan_codec.evaluate import classical  # noqa: E402

TARGETS = (0.025, 0.05, 0.1)
LABEL_H = 14


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255.0 ** 2 / max(mse, 1e-10))


def _cell(rgb: np.ndarray | None, box: tuple[int, int, int, int], label: str) -> Image.Image:
    x, y, w, h = box
    cell = Image.new("RGB", (w, h + LABEL_H), (255, 255, 255))
    if rgb is not None:
        cell.paste(Image.fromarray(rgb[y:y + h, x:x + w]), (0, LABEL_H))
    ImageDraw.Draw(cell).text((2, 1), label, fill=(0, 0, 0))
    return cell


def save_grid(rows: list[list[Image.Image]], out: str) -> None:
    """Labelled cells in rows → one PNG (columns as wide as the widest cell; each row as tall as
    its own tallest cell, so portrait and landscape images do not leave blank bands)."""
    cw = max(c.size[0] for r in rows for c in r)
    heights = [max(c.size[1] for c in r) for r in rows]
    grid = Image.new("RGB", (cw * max(len(r) for r in rows), sum(heights)), (255, 255, 255))
    y = 0
    for r, h in zip(rows, heights):
        for j, cell in enumerate(r):
            grid.paste(cell, (j * cw, y))
        y += h
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--crop", default=None, metavar="X,Y,W,H", help="default: the centre 200x150")
    p.add_argument("--targets", default=",".join(str(t) for t in TARGETS))
    p.add_argument("--md", default=None, help="also write a markdown part that shows the grid")
    a = p.parse_args(argv)
    from sqgan_codec.codec import Codec

    rgb = np.asarray(Image.open(a.image).convert("RGB"))
    h, w = rgb.shape[:2]
    box = (tuple(int(v) for v in a.crop.split(",")) if a.crop
           else ((w - 200) // 2, (h - 150) // 2, min(200, w), min(150, h)))
    targets = [float(t) for t in a.targets.split(",")]
    pixels = w * h
    codec = Codec(device="cpu")
    rows = [[_cell(rgb, box, f"original | column: {t} bpp") for t in targets]]
    row = []
    for t in targets:
        data = codec.encode(rgb, bpp=t)
        dec = np.asarray(codec.decode(data).convert("RGB"))
        row.append(_cell(dec, box, f"sqgan @ {8 * len(data) / pixels:.3f}"))
    rows.append(row)
    for name, reason in classical.available_codecs().items():
        if reason:
            continue
        row = []
        for t in targets:
            best = None
            for scale in classical.SCALES:
                r = classical.code_at_bpp(rgb, name, scale, t)
                if r is not None and (best is None or psnr(r.rgb, rgb) > psnr(best.rgb, rgb)):
                    best = r
            label = (f"{name} 1/{best.scale} @ {best.bpp:.3f}" if best and best.scale > 1
                     else f"{name} @ {best.bpp:.3f}" if best else f"{name}: cannot reach {t}")
            row.append(_cell(None if best is None else best.rgb, box, label))
        rows.append(row)
    save_grid(rows, a.out)
    print(f"wrote {a.out} ({len(rows)} rows × {len(targets)} targets, crop {box})")
    if a.md:
        cmd = f"python benchmarks/crop_grid.py --image {a.image} --out {a.out} --md {a.md}"
        rel = Path(a.out).resolve().relative_to(Path(a.md).resolve().parent)
        Path(a.md).write_text(
            "# Visual comparison\n\n"
            f"Command: `{cmd}`. Crop {box[2]}x{box[3]} at ({box[0]}, {box[1]}) of `{a.image}`; rows: "
            "original, sqgan (default options), then each classical codec at its best-PSNR scale "
            "within the target; columns: the targets; labels give the bpp reached.\n\n"
            "CamVid images may not be committed here, so this grid is of the project's own "
            "synthetic street scene, which is far from CamVid (sqgan's segmenter and decoder were "
            "trained on CamVid only). The same grid for a CamVid test image: `make bench` writes "
            "it to `out/bench/crops_camvid.png`.\n\n"
            f"![crops]({rel})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
