"""Decode-side probes: can the decoder, without training, draw a prioritised class so segmenters
read it as well as the stream's own map holds it? (docs/bench/priority.md: with the class
prioritised the map holds it at the originals' level, the decodes do not.)

    python benchmarks/render_probes.py --data ../shared/data/camvid --split val --every 3 --out docs/bench/render_probes.md

Each frame is coded once with ``--priority CLASS=4`` at 0.03 bpp and decoded; each probe changes
only the decoded pixels:

* *G_x alone*: the SPADE generator's render of the image tokens on the decoded map, without the
  coarse decoder that adds it to the thumbnail (the same map the coarse decoder sees);
* *unmixed colours*: the thumbnail's colours unmixed under the decoded map (per thumbnail pixel,
  a least-squares colour per class over a 5x5 window of cover fractions), the difference from the
  bicubic thumbnail added to the decode on the class's pixels (dilated 2 px): the map's shapes
  in the image's own colours;
* *raw patches*: inside the patches' boxes the patched thumbnail itself instead of the learned
  render: what the finer thumbnail alone gives a segmenter;
* *object colours*: each object of the class in the decoded map (8-connected, ≥ 16 px) shifted
  to the original's mean colour, quantised to 5 bits a channel (side information of 15 bits an
  object, not counted);
* *segmenter steps*: 8 Adam steps on the decoded pixels (lr 3 levels) towards the decoded map
  under the bundled segmenter's cross-entropy, with a penalty on 8x8 mean-colour change.

Frames and IoU pooling as in benchmarks/priority.py (the frames with more than 200 of the class's
pixels, 1 in ``--every``); read by the bundled segmenter and by the unseen CNN.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import emit, parse_run_args  # noqa: E402
from priority import CLASSES, MIN_PIXELS, colour_error, iou  # noqa: E402
from unseen_segmenter import CNN_ASSET, load_cnn  # noqa: E402

from sqgan_codec import bitstream, coarse  # noqa: E402
from sqgan_codec.codec import Codec  # noqa: E402
from sqgan_codec.evaluate.metrics import confusion_matrix, psnr  # noqa: E402
from sqgan_codec.nets.blocks import one_hot_map, unit_to_pixels  # noqa: E402

PROBES = ("decode", "G_x alone", "unmixed colours", "raw patches", "object colours", "segmenter steps")


def _box(x: torch.Tensor, r: int) -> torch.Tensor:
    k = 2 * r + 1
    return F.avg_pool2d(F.pad(x, (r, r, r, r), mode="replicate"), k, 1) * k * k


def unmixed(small: np.ndarray, labels: np.ndarray, n: int, r: int = 2, ridge: float = 0.05) -> np.ndarray:
    """Full-size colours of each pixel's class, unmixed from the thumbnail ``small`` under the map
    ``labels``: per thumbnail pixel, least squares of the window's colours on its cover fractions
    (ridge towards the class's cover-weighted mean), bilinearly enlarged, gathered by label."""
    H, W = labels.shape
    h, w = small.shape[:2]
    t = torch.from_numpy(small.astype(np.float64)).permute(2, 0, 1)[None]
    lab = torch.from_numpy(labels.astype(np.int64))
    cover = F.interpolate(F.one_hot(lab, n).permute(2, 0, 1)[None].double(), size=(h, w), mode="area")
    ff = _box((cover[:, :, None] * cover[:, None]).reshape(1, n * n, h, w), r).reshape(n, n, h, w)
    ft = _box((cover[:, :, None] * t[:, None]).reshape(1, n * 3, h, w), r).reshape(n, 3, h, w)
    weight = _box(cover, r)[0]
    mean = torch.where((weight > 1e-3)[:, None], ft / weight.clamp_min(1e-6)[:, None],
                       (_box(t, r)[0] / (2 * r + 1) ** 2)[None])
    a = ff.permute(2, 3, 0, 1) + ridge * torch.eye(n, dtype=torch.float64)
    b = ft.permute(2, 3, 0, 1) + ridge * mean.permute(2, 3, 0, 1)
    colours = torch.linalg.solve(a, b).clamp(0, 255).permute(2, 3, 0, 1).reshape(1, n * 3, h, w)
    big = F.interpolate(colours, size=(H, W), mode="bilinear", align_corners=False).reshape(n, 3, H, W)
    return big.permute(1, 0, 2, 3).gather(1, lab[None, None].expand(3, 1, H, W))[:, 0].permute(1, 2, 0).numpy()


def object_colours(decoded: np.ndarray, rgb: np.ndarray, labels: np.ndarray, cid: int, bits: int = 5) -> np.ndarray:
    """The decode with each object of class ``cid`` in ``labels`` shifted to the original's mean
    colour there, quantised to ``bits`` a channel (what 3 × ``bits`` bits of side information give)."""
    out = decoded.astype(np.float64)
    count, objects = cv2.connectedComponents((labels == cid).astype(np.uint8), connectivity=8)
    step = 256 / 2 ** bits
    for j in range(1, count):
        m = objects == j
        if m.sum() >= 16:
            out[m] += (np.floor(rgb[m].mean(0) / step) + 0.5) * step - out[m].mean(0)
    return out


def segmenter_steps(net: torch.nn.Module, decoded: np.ndarray, labels: np.ndarray, steps: int = 8,
                    lr: float = 3.0, keep_colour: float = 1.0) -> np.ndarray:
    """``steps`` Adam steps on the decoded pixels (0-255) lowering the segmenter ``net``'s
    cross-entropy against ``labels``, with ``keep_colour`` × the change of 8x8 mean colours."""
    x0 = torch.from_numpy(decoded.astype(np.float32)).permute(2, 0, 1)[None]
    h, w = labels.shape
    pad = (0, (-w) % 32, 0, (-h) % 32)
    target = torch.from_numpy(labels.astype(np.int64))[None]
    low0 = F.avg_pool2d(x0, 8, ceil_mode=True)
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    for _ in range(steps):
        logits = net(F.pad(x, pad, mode="reflect"))[:, :, :h, :w]
        colour = ((F.avg_pool2d(x, 8, ceil_mode=True) - low0) ** 2).mean() / 255.0 ** 2 * 1e4
        loss = F.cross_entropy(logits, target) + keep_colour * colour
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(0, 255)
    return x.detach()[0].permute(1, 2, 0).numpy()


def generator_alone(codec: Codec, data: bytes) -> np.ndarray | None:
    """G_x's render of a stream's image tokens on its decoded map (the input the coarse decoder
    gets besides the thumbnail), or None for a stream without image tokens. A probe, so it
    reads the codec's internals rather than adding a public entry point for one experiment."""
    parsed = codec._decode_tokens(data, "all")
    codec._render_maps([parsed])
    if parsed.padded_map is None or parsed.image_indices is None:
        return None
    onehot = one_hot_map(torch.from_numpy(codec._network_map(parsed)[None]).long(), codec.num_classes)
    with torch.no_grad():
        rgb = codec.net.image.decode_indices(torch.from_numpy(parsed.image_indices)[None],
                                             torch.from_numpy(parsed.image_keep)[None, None], onehot)
    h, w = parsed.header.height, parsed.header.width
    return unit_to_pixels(rgb[0].clamp(-1, 1)).permute(1, 2, 0).numpy()[:h, :w].astype(np.float64)


def probes(codec: Codec, net: torch.nn.Module, rgb: np.ndarray, data: bytes, cid: int) -> dict[str, np.ndarray]:
    image, labels = codec.decode_with_map(data)
    decoded = np.asarray(image.convert("RGB"))
    out = {p: decoded.astype(np.float64) for p in PROBES}
    generated = generator_alone(codec, data)
    if generated is not None:
        out["G_x alone"] = generated
    stream = bitstream.unpack(data)
    hd, thumbnail, patches = (stream.header, stream.chunks.get(bitstream.CHUNK_COARSE),
                              stream.chunks.get(bitstream.CHUNK_PATCHES))
    if labels is None or thumbnail is None:
        return out
    small = coarse.decode_small(thumbnail, hd.width, hd.height)
    up = coarse.upsample(small, hd.width, hd.height)
    colours = unmixed(small, labels, codec.num_classes).astype(np.float32)
    if patches is not None:  # the patches are finer than any unmixing
        colours = coarse.paste_patches(colours, patches, hd.width, hd.height)
        patched = coarse.paste_patches(up.copy(), patches, hd.width, hd.height)
        boxes = np.zeros(labels.shape, bool)
        for p in coarse.parse_patches(patches, hd.width, hd.height):
            boxes[p.y:p.y + p.height, p.x:p.x + p.width] = True
        out["raw patches"] = np.where(boxes[..., None], patched, decoded)
        up = patched
    near = cv2.dilate((labels == cid).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    out["unmixed colours"] = decoded + (colours - up) * near[..., None]
    out["object colours"] = object_colours(decoded, rgb, labels, cid)
    out["segmenter steps"] = segmenter_steps(net, decoded, labels)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="../shared/data/camvid")
    p.add_argument("--split", default="val")
    p.add_argument("--every", type=int, default=3)
    p.add_argument("--bpp", type=float, default=0.03)
    p.add_argument("--classes", default=",".join(CLASSES))
    a = parse_run_args(p)
    root = Path(a.data)
    codec = Codec(device="cpu")
    net = codec.segmenter.net.float().eval().requires_grad_(False)  # the bundled segmenter, to differentiate
    unseen, _ = load_cnn(CNN_ASSET)
    readers = {"bundled": codec.segmenter, **({"unseen CNN": unseen} if unseen is not None else {})}
    n = codec.num_classes
    paths = sorted((root / a.split).glob("*.png"))
    truth = {q.name: np.asarray(Image.open(root / f"{a.split}annot" / q.name)) for q in paths}
    classes = [c.strip() for c in a.classes.split(",") if c.strip()]
    lines = ["# Decode-side probes on prioritised classes", "",
             f"Command: `python benchmarks/render_probes.py --data {a.data} --split {a.split} --every {a.every} "
             f"--bpp {a.bpp}` (`--priority CLASS=4`, CamVid {a.split} frames with more than {MIN_PIXELS} pixels of "
             f"the class, 1 in {a.every}; the probes are described in the script's docstring). Per probe: the "
             "class's IoU read by the bundled segmenter / the unseen CNN, the other classes' mIoU (bundled), "
             "PSNR, and the colour error inside the class (0-255, as in docs/bench/priority.md).", "",
             "| class | images | " + " | ".join(PROBES) + " |", "|---|---|" + "---|" * len(PROBES)]
    for name in classes:
        cid = codec.vocabulary.class_id(name)
        chosen = [q for q in paths if (truth[q.name] == cid).sum() > MIN_PIXELS][:: a.every]
        cms = {(r, k): np.zeros((n, n), np.int64) for r in readers for k in PROBES}
        psnrs = {k: [] for k in PROBES}
        colour = {k: np.zeros(2) for k in PROBES}
        for q in chosen:
            rgb = np.asarray(Image.open(q).convert("RGB"))
            data = codec.encode(rgb, bpp=a.bpp, priority={name: 4.0})
            for k, pixels in probes(codec, net, rgb, data, cid).items():
                pixels = np.clip(np.round(pixels), 0, 255).astype(np.uint8)
                psnrs[k].append(psnr(rgb, pixels))
                colour[k] += colour_error(pixels.astype(np.float64), rgb.astype(np.float64), truth[q.name] == cid)
                for r, seg in readers.items():
                    cms[r, k] += confusion_matrix(truth[q.name], seg.segment(pixels))
        cells = []
        for k in PROBES:
            ious = {r: iou(cms[r, k]) for r in readers}
            cells.append(" / ".join(f"{ious[r][cid]:.3f}" for r in readers)
                         + f", others {np.delete(ious['bundled'], cid).mean():.3f}, {np.mean(psnrs[k]):.2f} dB, "
                         f"colour {colour[k][0] / max(colour[k][1], 1):.2f}")
        lines.append(f"| {name} | {len(chosen)} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    emit(lines, a.out)


if __name__ == "__main__":
    main()
