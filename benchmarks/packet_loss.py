"""Quality under packet loss: sqgan packet streams against classical files cut into the same packets.

    python benchmarks/packet_loss.py --images ../shared/data/camvid/test --every 12 --seeds 3 \\
        --out docs/bench/packet_loss.md
    python benchmarks/packet_loss.py --grid docs/bench/packet_loss_sample.png   # pictures, bundled sample

For each image and target rate: the sqgan packet stream (``encode(bpp=, packet_bytes=)``, every
packet counted in the budget), WebP at 1/4 resolution (the best classical codec on CamVid at
these rates, docs/benchmarks.md) and JPEG at 1/4 with a restart marker every MCU row (the
classical codec that has a decoder-side concealment: libjpeg resynchronises at the markers),
both at the largest size within the same budget. Each file goes through
:func:`sqgan_codec.channel.transmit` at every loss rate, i.i.d. and bursty (Gilbert–Elliott,
mean burst 4 packets), with several seeds; what arrives is decoded. A file that no longer
decodes is *lost* and scored as a mid-grey picture (what a receiver would have to show).
Reported: mIoU of the bundled segmenter on the decodes against the ground-truth labels (one
confusion matrix per cell, over images and seeds), PSNR, LPIPS-style (images 2x downsampled,
float32), and the share of files that decoded. Also the packet overhead: the packet stream of
the same tokens against the plain stream, as a file (with its records' lengths) and as the
packets a link carries (the datagram's own length frames each).

    python benchmarks/packet_loss.py --overhead-only --out docs/bench/packet_loss.md

measures the overhead alone (a minute) and keeps the curves of the saved results beside --out.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit  # noqa: E402

from sqgan_codec import channel, packets  # noqa: E402
from sqgan_codec.codec import Codec  # noqa: E402
from sqgan_codec.errors import PacketLossWarning  # noqa: E402
from sqgan_codec.evaluate.classical import code_at_bpp  # noqa: E402
from sqgan_codec.evaluate.metrics import LpipsVggStyle, confusion_matrix, miou, psnr  # noqa: E402
from sqgan_codec.evaluate.report import find_images, load_label, load_rgb  # noqa: E402

LOSSES = (0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5)
SHIPPED_DEMASKER = "sqgan, shipped de-masker"
PATTERNS = (("i.i.d.", 1.0), ("bursty (mean 4)", 4.0))


def jpeg_restart(rgb: np.ndarray, target_bytes: float) -> bytes | None:
    """JPEG at 1/4 (else 1/8) resolution with a restart marker every MCU row: the largest
    quality within ``target_bytes``."""
    full = Image.fromarray(rgb)
    for scale in (4, 8):
        small = full.resize((max(1, round(full.width / scale)), max(1, round(full.height / scale))),
                            Image.Resampling.LANCZOS)

        def coded(q: int) -> bytes:
            buf = io.BytesIO()
            small.save(buf, "JPEG", quality=q, optimize=True, restart_marker_rows=1)
            return buf.getvalue()

        lo, hi, best = 1, 95, None
        while lo <= hi:
            mid = (lo + hi) // 2
            data = coded(mid)
            if len(data) <= target_bytes:
                best, lo = data, mid + 1
            else:
                hi = mid - 1
        if best is not None:
            return best
    return None


def decode_classical(data: bytes, size: tuple[int, int]) -> np.ndarray | None:
    """Decode what arrived of a classical file (libjpeg conceals what it can); None if it fails."""
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                return np.asarray(im.convert("RGB").resize(size, Image.Resampling.BICUBIC)).copy()
    except Exception:  # noqa: BLE001 - any failure of a damaged file counts as lost
        return None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def grid(out: str, image: str, bpp: float, packet_bytes: int, losses=(0.0, 0.1, 0.3, 0.5), width: int = 320) -> None:
    """One image through the channel (i.i.d., seed 0): rows sqgan (and, when the model has an
    erasure adapter, sqgan with the shipped de-masker alone) / WebP 1/4 / JPEG 1/4 with restart
    markers, columns the loss rates; labels give PSNR or 'lost'."""
    from crop_grid import save_grid
    from side_by_side import grid_cell

    codec = Codec(device="cpu")
    decoders = {"sqgan": codec}
    if codec.erasure_image_net() is not None:
        decoders[SHIPPED_DEMASKER] = Codec(device="cpu", erasure_adapter=False)
    rgb = load_rgb(Path(image))
    h, w = rgb.shape[:2]
    size = (min(width, w), round(h * min(width, w) / w))
    sqgan = codec.encode(rgb, bpp=bpp, packet_bytes=packet_bytes)
    files = {**{name: sqgan for name in decoders},
             "webp 1/4": code_at_bpp(rgb, "webp", 4, bpp).data, "jpeg 1/4+RST": jpeg_restart(rgb, bpp * w * h / 8)}
    rows = [[grid_cell(rgb, size, f"original; {bpp} bpp, {packet_bytes}-byte packets")]]
    for name, data in files.items():
        row = []
        for loss in losses:
            arrived, report = channel.transmit(data, loss=loss, seed=0, packet_bytes=packet_bytes)
            if name in decoders:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", PacketLossWarning)
                    dec = np.asarray(decoders[name].decode(arrived).convert("RGB"))
            else:
                dec = decode_classical(arrived, (w, h))
            lost = f"{report.lost}/{report.packets} lost"
            row.append(grid_cell(dec, size, f"{name}, {round(100 * loss)}%: {lost}, "
                                        + ("not decodable" if dec is None else f"{psnr(rgb, dec):.1f} dB")))
        rows.append(row)
    save_grid(rows, out)
    print(f"wrote {out}")


def packet_overhead(codec: Codec, rgb: np.ndarray, bpp: float, packet_bytes: int) -> list[int]:
    """Bytes of: the plain token stream at ``bpp``, the same tokens as a packet stream (file),
    its packets without their records' lengths (what a link carries), and the packet stream
    the encoder fits under the budget."""
    plain = codec.encode(rgb, bpp=bpp, tune="semantic", ssm="vq")
    cut = codec.packetize(plain, packet_bytes=packet_bytes)
    records, _ = packets.split_records(cut)
    return [len(plain), len(cut), sum(map(len, records)), len(codec.encode(rgb, bpp=bpp, packet_bytes=packet_bytes))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", default="../shared/data/camvid/test")
    ap.add_argument("--every", type=int, default=12)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--bpp", default="0.025,0.05")
    ap.add_argument("--packet-bytes", type=int, default=150)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument("--grid", default=None, metavar="PNG", help="only draw the picture grid of --grid-image")
    ap.add_argument("--grid-image", default=str(Path(__file__).resolve().parents[1] / "sqgan_codec" / "samples" / "street.png"))
    ap.add_argument("--losses", default=",".join(map(str, LOSSES)), help="packet loss rates")
    ap.add_argument("--sqgan-only", action="store_true", help="no classical codecs")
    ap.add_argument("--shipped-demasker", action="store_true",
                    help="also decode every sqgan packet stream with the shipped de-masker instead of the "
                         "erasure adapter (rows 'sqgan, shipped de-masker')")
    ap.add_argument("--overhead-only", action="store_true",
                    help="measure the packet overhead alone; the curves come from the results saved beside --out")
    ap.add_argument("--from-json", default=None, metavar="JSON",
                    help="only render the report of an earlier run's saved results (beside its --out)")
    args = ap.parse_args()
    if args.from_json:
        emit(report(json.loads(Path(args.from_json).read_text())), args.out)
        return
    if args.grid:
        grid(args.grid, args.grid_image, float(args.bpp.split(",")[-1]), args.packet_bytes)
        return
    rates = [float(b) for b in args.bpp.split(",")]
    codec = Codec(device="cpu")
    if args.overhead_only:
        if not args.out:
            raise SystemExit("--overhead-only needs --out (its saved results hold the curves)")
        saved = json.loads(Path(args.out).with_suffix(".json").read_text())
        pairs = find_images(saved["images"], every=saved["every"], limit=saved["limit"])
        saved["overhead"] = {str(b): [packet_overhead(codec, load_rgb(p), b, saved["packet_bytes"])
                                      for p, _ in pairs] for b in saved["rates"]}
        saved["overhead_format"] = packets.PACKET_VERSION
        Path(args.out).with_suffix(".json").write_text(json.dumps(saved))
        emit(report(saved), args.out)
        return
    lpips = LpipsVggStyle(scale=2)
    losses = tuple(float(x) for x in args.losses.split(","))
    decoders = {"sqgan": codec}
    if args.shipped_demasker:
        decoders[SHIPPED_DEMASKER] = Codec(device="cpu", erasure_adapter=False)
    pairs = find_images(args.images, every=args.every, limit=args.limit)
    cells: dict[tuple, dict] = defaultdict(lambda: {"cm": 0, "psnr": [], "lpips": [], "decoded": 0, "n": 0})
    overhead: dict[float, list[list[int]]] = defaultdict(list)
    t0 = time.time()
    for k, (path, label_path) in enumerate(pairs):
        rgb, labels = load_rgb(path), load_label(label_path)
        h, w = rgb.shape[:2]
        grey = np.full_like(rgb, 128)
        for bpp in rates:
            budget = bpp * w * h / 8
            files = {"sqgan": codec.encode(rgb, bpp=bpp, packet_bytes=args.packet_bytes)}
            files.update({name: files["sqgan"] for name in decoders})
            overhead[bpp].append(packet_overhead(codec, rgb, bpp, args.packet_bytes))
            webp = None if args.sqgan_only else code_at_bpp(rgb, "webp", 4, bpp)
            if webp is not None:
                files["webp 1/4"] = webp.data
            jpeg = None if args.sqgan_only else jpeg_restart(rgb, budget)
            if jpeg is not None:
                files["jpeg 1/4 + restart markers"] = jpeg
            for name, data in files.items():
                for pattern, burst in PATTERNS:
                    for loss in losses:
                        if loss == 0 and burst != PATTERNS[0][1]:
                            continue  # nothing lost: the same decode for every pattern
                        for seed in range(1 if loss == 0 else args.seeds):
                            arrived, _ = channel.transmit(data, loss=loss, burst=burst, seed=seed,
                                                          packet_bytes=args.packet_bytes)
                            if name in decoders:
                                try:
                                    with warnings.catch_warnings():
                                        warnings.simplefilter("ignore", PacketLossWarning)
                                        out = np.asarray(decoders[name].decode(arrived).convert("RGB"))
                                except Exception:  # noqa: BLE001 - every header copy lost
                                    out = None
                            else:
                                out = decode_classical(arrived, (w, h))
                            cell = cells[name, bpp, pattern, loss]
                            cell["n"] += 1
                            cell["decoded"] += out is not None
                            out = grey if out is None else out
                            cell["cm"] = cell["cm"] + confusion_matrix(labels, codec.segmenter.segment(out))
                            cell["psnr"].append(psnr(rgb, out))
                            cell["lpips"].append(lpips(rgb, out))
        print(f"[{k + 1}/{len(pairs)}] {path.name} {time.time() - t0:.0f}s", flush=True)

    results = {"images": args.images, "every": args.every, "seeds": args.seeds, "limit": args.limit,
               "packet_bytes": args.packet_bytes, "count": len(pairs), "rates": rates,
               "minutes": round((time.time() - t0) / 60, 1), "losses": list(losses),
               "sqgan_only": args.sqgan_only, "shipped_demasker": args.shipped_demasker,
               "overhead": {str(b): v for b, v in overhead.items()}, "overhead_format": packets.PACKET_VERSION,
               "curves_format": packets.PACKET_VERSION,
               "cells": [{"codec": k[0], "bpp": k[1], "pattern": k[2], "loss": k[3],
                          "cm": np.asarray(c["cm"]).tolist(), "psnr": [float(x) for x in c["psnr"]],
                          "lpips": [float(x) for x in c["lpips"]], "decoded": int(c["decoded"]), "n": c["n"]} for k, c in cells.items()]}
    if args.out:
        Path(args.out).with_suffix(".json").write_text(json.dumps(results))
    emit(report(results), args.out)


def report(results: dict) -> list[str]:
    """The Markdown part from the saved results (``--from-json`` renders it again)."""
    rates, seeds = results["rates"], results["seeds"]
    cells = {(c["codec"], c["bpp"], c["pattern"], c["loss"]): {**c, "cm": np.array(c["cm"])}
             for c in results["cells"]}
    overhead = {float(b): v for b, v in results["overhead"].items()}
    limit = results.get("limit")
    losses = tuple(results.get("losses", LOSSES))
    flags = (f"{' --limit %d' % limit if limit else ''}"
             + (f" --losses {','.join(map(str, losses))}" if losses != LOSSES else "")
             + (" --sqgan-only" if results.get("sqgan_only") else "")
             + (" --shipped-demasker" if results.get("shipped_demasker") else ""))
    lines = ["# Quality under packet loss", "",
             f"`python benchmarks/packet_loss.py --images {results['images']} --every {results['every']} "
             f"--seeds {seeds} --packet-bytes {results['packet_bytes']}{flags}`", "",
             f"{results['count']} CamVid images; packets of at most {results['packet_bytes']} bytes; losses "
             f"{', '.join(f'{round(100 * x)} %' for x in losses)}; {seeds} seeds per lossy cell; a file "
             "that does not decode is scored as a mid-grey picture. mIoU: bundled segmenter on the "
             "decodes against the ground truth. sqgan: `encode(bpp=, packet_bytes=)` (a packet stream "
             "carries the token layers: `--tune semantic --ssm vq`), every packet counted in the "
             "budget. Run time "
             f"{results['minutes']:.1f} min on one CPU thread.", ""]
    lines += reading(cells, overhead, rates)
    if results.get("shipped_demasker"):
        lines += ["", "sqgan fills the positions of lost packets with the model's erasure adapter "
                  "(`python -m sqgan_codec.train erasure`: the de-masker tuned to fill lost packets); "
                  f"'{SHIPPED_DEMASKER}' decodes the same packets with the de-masker alone, trained on "
                  "SAMM's masks only."]
    else:
        lines += ["", "These curves were measured before the erasure adapter (the de-masker tuned to "
                  "fill lost packets): the de-masker, trained on SAMM's masks only, filled lost "
                  "packets' positions as it fills the positions the encoder dropped."]
    fmt = results.get("overhead_format", 1)
    lines += ["", "## Packet overhead", "",
              f"Packet format {fmt} (CRC-{32 if fmt == 1 else 24} per packet, two header copies); means over the images."
              + (f" Measured with `--overhead-only` on the same images; the loss curves in this report were measured with "
                 f"packet format {results.get('curves_format', 1)}, whose packets hold the same tokens with "
                 f"one CRC byte more each." if fmt != results.get("curves_format", 1) else ""), "",
              "| bpp | plain token stream (bytes) | same tokens as packets: file | overhead | "
              "packets on a link (no record lengths) | overhead | packet stream under the budget |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for bpp in rates:
        rows = np.array(overhead[bpp], float)
        link = (f"{rows[:, 2].mean():.0f} | {100 * (rows[:, 2].sum() / rows[:, 0].sum() - 1):.1f} %"
                if rows.shape[1] == 4 else "– | –")
        lines.append(f"| {bpp} | {rows[:, 0].mean():.0f} | {rows[:, 1].mean():.0f} | "
                     f"{100 * (rows[:, 1].sum() / rows[:, 0].sum() - 1):.1f} % | {link} | {rows[:, -1].mean():.0f} |")
    for bpp in rates:
        for pattern, _ in PATTERNS:
            lines += ["", f"## {bpp} bpp, {pattern} losses", "",
                      "| codec | " + " | ".join(f"{round(100 * x)} %" for x in losses) + " |",
                      "|---|" + "---:|" * len(losses)]
            names = sorted({k[0] for k in cells if k[1] == bpp}, key=lambda n: (n != "sqgan", n))
            for metric in ("mIoU", "PSNR", "LPIPS-style", "decoded"):
                for name in names:
                    vals = []
                    for loss in losses:
                        c = cells.get((name, bpp, pattern, loss)) or cells.get((name, bpp, PATTERNS[0][0], loss))
                        if c is None or not c["n"]:
                            vals.append("–")
                        elif metric == "mIoU":
                            vals.append(f"{miou(c['cm']):.3f}")
                        elif metric == "PSNR":
                            vals.append(f"{np.mean(c['psnr']):.2f}")
                        elif metric == "LPIPS-style":
                            vals.append(f"{np.mean(c['lpips']):.3f}")
                        else:
                            vals.append(f"{100 * c['decoded'] / c['n']:.0f} %")
                    lines.append(f"| {name}: {metric} | " + " | ".join(vals) + " |")
    lines += ["", "The bundled sample through the same channel (i.i.d., seed 0; "
              "`python benchmarks/packet_loss.py --grid docs/bench/packet_loss_sample.png`):", "",
              "![packet loss, bundled sample](packet_loss_sample.png)"]
    return lines


def reading(cells: dict, overhead: dict, rates: list[float]) -> list[str]:
    """What the tables say, written from the numbers: mIoU kept against the loss-free decode."""
    out = []
    for bpp in rates:
        free = cells.get(("sqgan", bpp, PATTERNS[0][0], 0.0))
        if free is None:
            continue
        base = miou(free["cm"])
        kept = []
        for pattern, _ in PATTERNS:
            parts = []
            for loss in (0.1, 0.3, 0.5):
                c = cells.get(("sqgan", bpp, pattern, loss))
                if c is not None:
                    parts.append(f"{miou(c['cm']) / base:.2f}x at {round(100 * loss)} %")
            kept.append(f"{pattern}: " + ", ".join(parts))
        shipped = []
        for pattern, _ in PATTERNS:
            for loss in (0.1, 0.3, 0.5):
                c, a = cells.get((SHIPPED_DEMASKER, bpp, pattern, loss)), cells.get(("sqgan", bpp, pattern, loss))
                if c is not None and a is not None:
                    shipped.append(f"{pattern} {round(100 * loss)} %: {miou(c['cm']) / base:.2f}x → "
                                   f"{miou(a['cm']) / base:.2f}x, {np.mean(c['psnr']):.2f} → {np.mean(a['psnr']):.2f} dB")
        if shipped:
            kept.append("with the erasure adapter against the shipped de-masker alone (mIoU kept, PSNR): "
                        + "; ".join(shipped))
        others = []
        for name in sorted({k[0] for k in cells if k[1] == bpp and k[0] not in ("sqgan", SHIPPED_DEMASKER)}):
            c = cells.get((name, bpp, PATTERNS[0][0], 0.1))
            if c is not None:
                others.append(f"{name} decodes {100 * c['decoded'] / c['n']:.0f} % of its files")
        rows = np.array(overhead[bpp], float)
        out.append(f"- **{bpp} bpp**: sqgan keeps of its loss-free mIoU ({base:.3f}) " + "; ".join(kept)
                   + (". At 10 % i.i.d. loss " + ", ".join(others) if others else "")
                   + f". Packets cost {100 * (rows[:, 1].sum() / rows[:, 0].sum() - 1):.1f} % over the plain stream.")
    return out


if __name__ == "__main__":
    main()
