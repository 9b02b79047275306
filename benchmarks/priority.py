"""What `--priority CLASS=4` buys with the default options: the class's IoU on the CamVid test
images that contain it, and the other classes' mean IoU, at equal size.

    python benchmarks/priority.py --data ../shared/data/camvid --every 3 --bpp 0.03 --out docs/bench/priority.md

For each class, the test images whose ground truth holds more than 200 of its pixels (every
``--every``-th of them), each coded at the same target with and without the priority; IoU from
the bundled segmenter on the decodes against the ground truth, pooled over the images. With a
class prioritised, the reduced exact map is refined at 1/2 over the cells where the class is
(chunk F, ``decide.balanced_mode``), and its objects of at least 0.5 % of the image are also sent
as finer patches of the coarse image (chunk P).
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
from unseen_segmenter import CNN_ASSET, load_cnn  # noqa: E402

from sqgan_codec import bitstream, decide  # noqa: E402
from sqgan_codec.codec import Codec, EncodeOptions  # noqa: E402
from sqgan_codec.evaluate.metrics import confusion_matrix, psnr  # noqa: E402

CLASSES = ("Pedestrian", "Bicyclist", "SignSymbol", "Pole")
MIN_PIXELS = 200


def colour_error(decoded: np.ndarray, rgb: np.ndarray, mask: np.ndarray, cell: int = 4) -> tuple[float, float]:
    """How far the decode's colours are from the original's inside ``mask`` (the class's pixels):
    mean colours over ``cell``x``cell`` cells, absolute difference averaged over channels, weighted
    by the mask's cover. Returns (weighted sum, cover) to pool over images. Colour casts count in
    full; texture inside a cell does not."""
    h, w = (mask.shape[0] // cell) * cell, (mask.shape[1] // cell) * cell
    m = mask[:h, :w].astype(np.float64)[..., None]

    def cells(a: np.ndarray) -> np.ndarray:
        return a.reshape(h // cell, cell, w // cell, cell, -1).sum((1, 3))

    cover = cells(m)[..., 0]
    keep = cover > 0
    diff = np.abs(cells(decoded[:h, :w] * m) - cells(rgb[:h, :w] * m))[keep] / cover[keep][:, None]
    return float((diff.mean(1) * cover[keep]).sum()), float(cover.sum())


def iou(cm: np.ndarray, unmapped: np.ndarray | None = None) -> np.ndarray:
    """Per-class IoU of a confusion matrix; ``unmapped``: per class, ground-truth pixels of
    images with no prediction at all (a stream that sends no map), counted as missed."""
    tp = np.diag(cm).astype(np.float64)
    return tp / np.maximum(cm.sum(0) + cm.sum(1) + (0 if unmapped is None else unmapped) - tp, 1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="../shared/data/camvid")
    p.add_argument("--every", type=int, default=3)
    p.add_argument("--bpp", type=float, default=0.03)
    p.add_argument("--weight", type=float, default=4.0)
    p.add_argument("--split", default="test", help="test, or val to try a setting without looking at test")
    p.add_argument("--classes", default=",".join(CLASSES))
    p.add_argument("--together", action="store_true",
                   help="prioritise all --classes at once in every stream (each class still read on its images)")
    p.add_argument("--grid", default=None, help="PNG: for each class, its frame with most of it, cropped "
                   "around the class (2x): original | no priority | the priority's stream rendered by the "
                   "current coarse decoder | by the decoder it names | the best classical codec at the same size")
    a = parse_run_args(p)
    root = Path(a.data)
    codec = Codec(device="cpu")
    unseen, _ = load_cnn(CNN_ASSET)  # a segmenter sqgan's training never saw (docs/bench/unseen.md)
    readers = {"bundled": codec.segmenter, **({"unseen CNN": unseen} if unseen is not None else {})}
    n = codec.num_classes
    paths = sorted((root / a.split).glob("*.png"))
    truth = {q.name: np.asarray(Image.open(root / f"{a.split}annot" / q.name)) for q in paths}
    classes = [c.strip() for c in a.classes.split(",") if c.strip()]
    split_args = (f" --split {a.split}" if a.split != "test" else "") + (
        f" --classes {','.join(classes)}" if tuple(classes) != CLASSES else "") + (" --together" if a.together else "")
    lines = ["# Several class priorities at once" if a.together else "# Class priorities with the default options", "",
             f"Command: `python benchmarks/priority.py --data {a.data} --every {a.every} --bpp {a.bpp}{split_args}` "
             f"(`--priority {','.join(f'{c}={a.weight:g}' for c in classes) if a.together else f'CLASS={a.weight:g}'}` "
             f"against no priority at {a.bpp} bpp, default `--tune balanced`; "
             f"CamVid {a.split} images with more than {MIN_PIXELS} pixels of the class, 1 in {a.every}; "
             "IoU on the decodes against the ground truth, pooled, read by the bundled segmenter and by the "
             "unseen CNN of docs/bench/unseen.md). *no patches*: the priority with its patches switched off "
             "(`decide.PRIORITY_MIN_AREA` = 1), to tell the two apart.", "",
             "*Colour error*: how far the decode's local colours are from the original's on the class's "
             "pixels (mean colours of 4x4 cells, absolute difference, 0-255; `colour_error`), the number "
             "that shows a decoder painting objects in their class's typical colours. *Decoded map*: "
             "the class's IoU in the semantic map the stream itself carries (`decode --ssm-out`; a stream "
             "with no map counts as missing the class), against the bundled segmenter on the originals: "
             "what a priority puts in the map, before the renderer draws it.", "",
             "| class | read by | images | with patches | IoU: none / no patches / priority | change | "
             "other classes' mIoU: none / no patches / priority | PSNR dB: none / priority | "
             "colour error: none / priority | decoded map: none / priority (originals) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    min_area = decide.PRIORITY_MIN_AREA
    best: dict = {}  # class -> (its pixels, frame, original, {key: decode}) for --grid
    for name in classes:
        cid = codec.vocabulary.class_id(name)
        chosen = [q for q in paths if (truth[q.name] == cid).sum() > MIN_PIXELS][:: a.every]
        keys = ("plain", "tokens", "priority")
        cms = {(r, k): np.zeros((n, n), np.int64) for r in readers for k in keys}
        patched = 0
        psnrs: dict = {k: [] for k in keys}
        colour = {k: np.zeros(2) for k in keys}
        maps = {k: np.zeros((n, n), np.int64) for k in ("original", *keys)}
        unmapped = {k: np.zeros(n, np.int64) for k in keys}
        for q in chosen:
            rgb = np.asarray(Image.open(q).convert("RGB"))
            analysis = codec.analyse(rgb)
            maps["original"] += confusion_matrix(truth[q.name], analysis.semantic_map)
            for key in keys:
                decide.PRIORITY_MIN_AREA = 1.0 if key == "tokens" else min_area
                data = codec.encode_analysis(analysis, EncodeOptions(
                    bpp=a.bpp, priority=None if key == "plain" else
                    {c: a.weight for c in (classes if a.together else [name])}))
                patched += key == "priority" and bitstream.CHUNK_PATCHES in bitstream.unpack(data).chunks
                image, smap = codec.decode_with_map(data)
                decoded = np.asarray(image.convert("RGB"))
                if smap is None:
                    unmapped[key] += np.bincount(truth[q.name].ravel(), minlength=256)[:n]
                else:
                    maps[key] += confusion_matrix(truth[q.name], smap)
                psnrs[key].append(psnr(rgb, decoded))
                colour[key] += colour_error(decoded.astype(np.float64), rgb.astype(np.float64), truth[q.name] == cid)
                if a.grid and key != "tokens":
                    pixels = int((truth[q.name] == cid).sum())
                    if pixels > best.get(name, (0,))[0]:
                        best[name] = (pixels, q.name, rgb, None)
                    if best[name][1] == q.name:
                        best[name] = (*best[name][:3], {**(best[name][3] or {}), key: decoded})
                for reader, seg in readers.items():
                    cms[reader, key] += confusion_matrix(truth[q.name], seg.segment(decoded))
        for reader in readers:
            before, tokens, after = (iou(cms[reader, k]) for k in keys)
            lines.append(f"| {name} | {reader} | {len(chosen)} | {patched} | {before[cid]:.3f} / {tokens[cid]:.3f} / "
                         f"**{after[cid]:.3f}** | {after[cid] - before[cid]:+.3f} | "
                         f"{np.delete(before, cid).mean():.3f} / {np.delete(tokens, cid).mean():.3f} / "
                         f"**{np.delete(after, cid).mean():.3f}** | "
                         f"{np.mean(psnrs['plain']):.2f} / {np.mean(psnrs['priority']):.2f} | "
                         f"{colour['plain'][0] / colour['plain'][1]:.2f} / "
                         f"{colour['priority'][0] / colour['priority'][1]:.2f} | "
                         f"{iou(maps['plain'], unmapped['plain'])[cid]:.3f} / "
                         f"{iou(maps['priority'], unmapped['priority'])[cid]:.3f} "
                         f"({iou(maps['original'])[cid]:.3f}) |")
            print(lines[-1], flush=True)
    if a.grid:
        save_grid(best, truth, codec, a.grid, a.bpp, a.weight)
        lines += ["", f"Crops (`--grid {a.grid}`, CamVid frames: not committed): for each class its test frame "
                  "with most of it, around the class's pixels, 2x: original | no priority | the priority's "
                  "stream rendered by the current coarse decoder | by the decoder it names (the priority "
                  "decoder where the model has one) | the best classical codec at the same size."]
    emit(lines, a.out)


def save_grid(best: dict, truth: dict, codec: Codec, path: str, bpp: float, weight: float,
              size: tuple[int, int] = (160, 120)) -> None:
    """One row per class, cropped around the class's pixels (see ``--grid``)."""
    from side_by_side import best_classical

    rows = []
    for name, (_, frame, rgb, decodes) in best.items():
        data = codec.encode(rgb, bpp=bpp, priority={name: weight})  # the priority's stream again (deterministic)
        with codec.coarse_decoder_swapped(codec.coarse_tag(priority=True), codec.coarse_tag()):
            current = np.asarray(codec.decode(data).convert("RGB"))
        classical = best_classical(rgb, bpp)
        ys, xs = np.nonzero(truth[frame] == codec.vocabulary.class_id(name))
        w, h = size
        x0 = int(np.clip(np.median(xs) - w // 2, 0, rgb.shape[1] - w))
        y0 = int(np.clip(np.median(ys) - h // 2, 0, rgb.shape[0] - h))
        images = (rgb, decodes["plain"], current, decodes["priority"],
                  np.zeros_like(rgb) if classical is None else classical[1].rgb)
        rows.append(np.concatenate([im[y0:y0 + h, x0:x0 + w] for im in images], 1).repeat(2, 0).repeat(2, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, 0)).save(path)


if __name__ == "__main__":
    main()
