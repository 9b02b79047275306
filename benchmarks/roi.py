"""What `--roi` buys: quality inside and outside a region of interest at equal bpp.

    python benchmarks/roi.py --data ../shared/data/camvid --every 8 --bpp 0.03 --out docs/bench/roi.md \
        --grid docs/bench/roi_sample.png

The box is the same for every image (the right-centre of the frame, where CamVid's pavements,
pedestrians and signs often are); quality is measured inside and outside it, with and without
``roi=[box]`` at the same target, for the default (``balanced``: the box also coded as a finer
patch of the coarse image, chunk P) and for ``--tune semantic`` (tokens only: the box's tokens
ranked first). LPIPS-style inside the box compares the box's crops; outside, the frame with the
box greyed in both images.
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

from sqgan_codec.classes import NUM_CLASSES  # noqa: E402
from sqgan_codec.codec import Codec, EncodeOptions  # noqa: E402
from sqgan_codec.evaluate.metrics import LpipsVggStyle, confusion_matrix, miou, psnr  # noqa: E402

BOX = (256, 96, 192, 160)  # x, y, w, h on a 480x360 frame


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="../shared/data/camvid")
    p.add_argument("--every", type=int, default=8)
    p.add_argument("--bpp", type=float, default=0.03)
    p.add_argument("--grid", default=None, help="also write the bundled sample's picture grid here (PNG)")
    a = parse_run_args(p)
    root = Path(a.data)
    codec = Codec(device="cpu")
    lpips = LpipsVggStyle(scale=2)
    x, y, w, h = BOX
    inside = np.zeros((360, 480), bool)
    inside[y:y + h, x:x + w] = True
    runs = [(tune, key) for tune in ("balanced", "semantic") for key in ("plain", "roi")]
    stats = {r: {"psnr_in": [], "psnr_out": [], "lpips_in": [], "lpips_out": [], "bpp": [],
                 "cm_in": np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64),
                 "cm_out": np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)} for r in runs}
    paths = sorted((root / "test").glob("*.png"))[:: a.every]
    for path in paths:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        gt = np.asarray(Image.open(root / "testannot" / path.name))
        analysis = codec.analyse(rgb)
        for tune, key in runs:
            data = codec.encode_analysis(analysis, EncodeOptions(bpp=a.bpp, tune=tune,
                                                                 roi=(BOX,) if key == "roi" else ()))
            dec = np.asarray(codec.decode(data).convert("RGB"))
            pred = codec.segmenter.segment(dec)
            s = stats[tune, key]
            s["bpp"].append(8 * len(data) / gt.size)
            # masked pixels as 1×N×3 "images" for the RGB metric
            s["psnr_in"].append(psnr(rgb[inside][None], dec[inside][None]))
            s["psnr_out"].append(psnr(rgb[~inside][None], dec[~inside][None]))
            s["lpips_in"].append(lpips(rgb[y:y + h, x:x + w], dec[y:y + h, x:x + w]))
            grey_ref, grey_dec = rgb.copy(), dec.copy()
            grey_ref[inside] = grey_dec[inside] = 128
            s["lpips_out"].append(lpips(grey_ref, grey_dec))
            s["cm_in"] += confusion_matrix(gt[inside], pred[inside])
            s["cm_out"] += confusion_matrix(gt[~inside], pred[~inside])
    lines = ["# Region of interest (`--roi`)", "",
             f"Command: `python benchmarks/roi.py --data {a.data} --every {a.every} --bpp {a.bpp}` "
             f"({len(paths)} CamVid test images; box x,y,w,h = {','.join(map(str, BOX))}, 18 % of the "
             "frame; LPIPS-style of the box's crops inside, of the frames with the box greyed outside; "
             "mIoU of the bundled segmenter against ground truth within each region).", "",
             "| tune | encode | mean bpp | PSNR inside | PSNR outside | LPIPS-style inside | LPIPS-style outside "
             "| mIoU inside | mIoU outside |",
             "|---|---|---|---|---|---|---|---|---|"]
    box = ",".join(map(str, BOX))
    for tune, key in runs:
        s = stats[tune, key]
        lines.append(f"| {tune} | {'no ROI' if key == 'plain' else f'`--roi {box}`'} | {np.mean(s['bpp']):.4f} | "
                     f"{np.mean(s['psnr_in']):.2f} | {np.mean(s['psnr_out']):.2f} | {np.mean(s['lpips_in']):.4f} | "
                     f"{np.mean(s['lpips_out']):.4f} | {miou(s['cm_in']):.3f} | {miou(s['cm_out']):.3f} |")
    lines.append("")
    for tune in ("balanced", "semantic"):
        plain, boxed = stats[tune, "plain"], stats[tune, "roi"]
        d = lambda k: np.mean(boxed[k]) - np.mean(plain[k])  # noqa: E731
        rel = lambda k: 100 * (np.mean(boxed[k]) / np.mean(plain[k]) - 1)  # noqa: E731
        lines.append(f"- `--tune {tune}`: inside the box {d('psnr_in'):+.2f} dB PSNR and {rel('lpips_in'):+.1f} % "
                     f"LPIPS-style, outside {d('psnr_out'):+.2f} dB and {rel('lpips_out'):+.1f} %; mIoU "
                     f"{miou(boxed['cm_in']) - miou(plain['cm_in']):+.3f} inside, "
                     f"{miou(boxed['cm_out']) - miou(plain['cm_out']):+.3f} outside.")
    if a.grid:
        lines += ["", "![roi](roi_sample.png)", "",
                  f"The bundled sample at {a.bpp} bpp (`--grid`): the original, the default without and with "
                  f"`--roi {box}` (the box drawn), the same size each."]
        sample_grid(codec, a.bpp, Path(a.grid))
    emit(lines, a.out)


def sample_grid(codec: Codec, bpp: float, out: Path) -> None:
    """The bundled sample: original | default | default with the box (outlined), one row."""
    from PIL import ImageDraw

    from sqgan_codec.demo import sample_path

    rgb = np.asarray(Image.open(sample_path()).convert("RGB"))
    tiles = [rgb] + [np.asarray(codec.decode(codec.encode(rgb, bpp=bpp, roi=roi)).convert("RGB"))
                     for roi in ((), (BOX,))]
    grid = Image.fromarray(np.concatenate(tiles, 1))
    x, y, w, h = BOX
    draw = ImageDraw.Draw(grid)
    for i in range(3):
        draw.rectangle([i * rgb.shape[1] + x, y, i * rgb.shape[1] + x + w - 1, y + h - 1], outline=(255, 200, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)


if __name__ == "__main__":
    main()
