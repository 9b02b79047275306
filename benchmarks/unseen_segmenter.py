"""Do sqgan's mIoU gains hold for segmenters its training never saw?

SQ-GAN's semantic-consistency loss trains the decoder against the bundled segmenter, which
also scores the benchmark: a decoder could learn textures that only that network reads.
Two segmenters that sqgan's training never saw score originals, sqgan and the best classical
codecs here:

* a per-pixel MLP on colour at several blur scales and position, trained in this script on
  CamVid train (no shared weights, architecture or training run with the bundled one; weak);
* a CNN (``benchmarks/assets/unseen-segmenter-lite0.safetensors``): the bundled segmenter's
  architecture from ImageNet weights, trained separately (CamVid train only, another seed,
  a third of the steps) and never used by sqgan's training. It shares the architecture and
  the ImageNet initialisation, so it is the stronger reader but the less independent one.

    python benchmarks/unseen_segmenter.py --data ../shared/data/camvid --every 6 --out docs/bench/unseen.md
    python benchmarks/unseen_segmenter.py --export-cnn runs/unseen-seg/last.pt   # write the CNN asset

What matters is each codec's score relative to the originals under each segmenter.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import emit  # noqa: E402

from sqgan_codec.classes import NUM_CLASSES, VOID  # noqa: E402
from sqgan_codec.codec import Codec  # noqa: E402
from sqgan_codec.evaluate import classical  # noqa: E402
from sqgan_codec.evaluate.metrics import confusion_matrix, miou  # noqa: E402

SIGMAS = (0, 2, 6, 16)
CNN_ASSET = Path(__file__).resolve().parent / "assets" / "unseen-segmenter-lite0.safetensors"
CNN_TRAIN_COMMAND = ("python -m sqgan_codec.train segmenter --data ../shared/data/camvid --splits train "
                     "--minutes 30 --seed 7 --threads 1 --out runs/unseen-seg")
CLASSICAL = (("webp", 4), ("avif", 4), ("jxl", 4), ("hevc", 2), ("jpeg2000", 1))


def features(rgb: np.ndarray) -> np.ndarray:
    """H×W×F float32: Lab colour at several blur scales, gradient energy, and position."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32) / 255.0
    feats = []
    for s in SIGMAS:
        feats.append(lab if s == 0 else cv2.GaussianBlur(lab, (0, 0), s))
    grey = lab[..., 0]
    grad = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    for s in (2, 8):
        feats.append(cv2.GaussianBlur(grad, (0, 0), s)[..., None])
    h, w = grey.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    feats += [(yy / h)[..., None], (xx / w)[..., None]]
    return np.concatenate(feats, axis=-1)


class PixelMLP(nn.Module):
    def __init__(self, nf: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(nf, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                                 nn.Linear(128, NUM_CLASSES))

    def segment(self, rgb: np.ndarray) -> np.ndarray:
        f = torch.from_numpy(features(rgb))
        with torch.inference_mode():
            return self.net(f.reshape(-1, f.shape[-1])).argmax(1).reshape(f.shape[:2]).numpy().astype(np.uint8)


def train(root: Path, seconds: float, seed: int = 0) -> PixelMLP:
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for path in sorted((root / "train").glob("*.png")):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        gt = np.asarray(Image.open(root / "trainannot" / path.name))
        f = features(rgb)
        idx = rng.choice(gt.size, 3000, replace=False)
        xs.append(f.reshape(-1, f.shape[-1])[idx])
        ys.append(gt.reshape(-1)[idx])
    x = torch.from_numpy(np.concatenate(xs))
    y = torch.from_numpy(np.concatenate(ys)).long()
    counts = torch.bincount(y[y != VOID], minlength=NUM_CLASSES).float()
    weight = (counts.sum() / (counts + 1)) ** 0.5
    torch.manual_seed(seed)
    model = PixelMLP(x.shape[1])
    opt = torch.optim.Adam(model.net.parameters(), lr=3e-3)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        idx = torch.randint(0, len(x), (4096,))
        loss = nn.functional.cross_entropy(model.net(x[idx]), y[idx], weight=weight / weight.mean(),
                                           ignore_index=VOID)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def export_cnn(checkpoint: str) -> None:
    """fp16 weights of a segmenter training run, with where they came from, as the CNN asset."""
    import json

    from safetensors.torch import save_file

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    tensors = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state["model"].items()}
    meta = {"steps": str(state.get("step")), "train_minutes": f"{state.get('elapsed', 0) / 60:.1f}",
            "args": json.dumps(state.get("args")), "command": CNN_TRAIN_COMMAND,
            "purpose": "benchmark only: a segmenter sqgan's training never saw",
            "data": "CamVid train (non-commercial research use)"}
    CNN_ASSET.parent.mkdir(parents=True, exist_ok=True)
    tmp = CNN_ASSET.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(CNN_ASSET)
    print(f"wrote {CNN_ASSET} ({CNN_ASSET.stat().st_size / 1e6:.1f} MB, {meta['steps']} steps)")


def load_cnn(path: Path):
    """The CNN asset inside a BundledSegmenter (same padding and arg-max), or None if absent."""
    if not path.is_file():
        return None, {}
    from safetensors import safe_open
    from safetensors.torch import load_file

    from sqgan_codec.segmenters.bundled import BundledSegmenter

    seg = BundledSegmenter(device="cpu")
    seg.net.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    return seg, meta


def _ratio_sentence(ratios: dict[str, float], targets: list[float], label: str) -> str:
    parts = []
    for t in targets:
        best_name = max((n for n in ratios if n.endswith(f"@{t}") and not n.startswith("sqgan")),
                        key=lambda n: ratios[n], default=None)
        if best_name is None or f"sqgan@{t}" not in ratios:
            continue
        parts.append(f"at {t} bpp sqgan keeps {ratios[f'sqgan@{t}']:.2f} × of the originals' mIoU, the best "
                     f"classical codec ({best_name.split('@')[0]}) {ratios[best_name]:.2f} ×")
    return f"Under the {label}: " + "; ".join(parts) + "."


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="../shared/data/camvid")
    p.add_argument("--every", type=int, default=6)
    p.add_argument("--targets", default="0.025,0.05")
    p.add_argument("--train-seconds", type=float, default=90)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    p.add_argument("--cnn", default=str(CNN_ASSET), help="weights of the unseen CNN segmenter ('' to skip)")
    p.add_argument("--export-cnn", default=None, metavar="CHECKPOINT",
                   help="write a segmenter training checkpoint as the CNN asset and exit")
    a = p.parse_args()
    if a.export_cnn:
        export_cnn(a.export_cnn)
        return
    torch.set_num_threads(a.threads)
    root = Path(a.data)
    unseen = train(root, a.train_seconds)
    cnn, cnn_meta = load_cnn(Path(a.cnn)) if a.cnn else (None, {})
    segmenters = {"bundled": None, "unseen": unseen} | ({"cnn": cnn} if cnn is not None else {})
    codec = Codec(device="cpu")
    bundled = codec.segmenter
    segmenters["bundled"] = bundled
    targets = [float(t) for t in a.targets.split(",")]
    names = ["original"] + [f"sqgan@{t}" for t in targets] + \
        [f"{c} 1/{s}@{t}" for t in targets for c, s in CLASSICAL]
    cms = {(n, seg): np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64) for n in names for seg in segmenters}
    bpps: dict[str, list[float]] = {n: [] for n in names}
    paths = sorted((root / "test").glob("*.png"))[:: a.every]
    for i, path in enumerate(paths):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        gt = np.asarray(Image.open(root / "testannot" / path.name))
        pixels = gt.size
        decoded = {"original": (rgb, 24.0)}
        for t in targets:
            data = codec.encode(rgb, bpp=t)
            decoded[f"sqgan@{t}"] = (np.asarray(codec.decode(data).convert("RGB")), 8 * len(data) / pixels)
            for c, s in CLASSICAL:
                res = classical.code_at_bpp(rgb, c, s, t)
                if res is not None:
                    decoded[f"{c} 1/{s}@{t}"] = (res.rgb, res.bpp)
        for name, (img, bpp) in decoded.items():
            for seg_name, seg in segmenters.items():
                cms[(name, seg_name)] += confusion_matrix(gt, seg.segment(img))
            bpps[name].append(bpp)
        print(f"[{i + 1}/{len(paths)}] {path.name}", file=sys.stderr)
    ref = {seg: miou(cms[("original", seg)]) for seg in segmenters}
    labels = {"bundled": "bundled", "unseen": "MLP (unseen)", "cnn": "CNN (unseen)"}
    lines = ["# Segmenters training never saw", "",
             f"Command: `python benchmarks/unseen_segmenter.py --data {a.data} --every {a.every} "
             f"--targets {a.targets} --train-seconds {a.train_seconds:g}` ({len(paths)} CamVid test images, "
             f"every {a.every}th; dataset-level mIoU against ground truth, void ignored).", "",
             "*MLP*: a per-pixel MLP on Lab colour at 4 blur scales, gradient energy and position, trained "
             "in the script on CamVid train for the seconds above; it shares nothing with the bundled "
             "segmenter that sqgan's semantic loss used (and is weak)."]
    if cnn is not None:
        lines += ["", f"*CNN*: `{Path(a.cnn).name}`, the bundled segmenter's architecture trained separately "
                  f"from ImageNet weights on CamVid train only ({cnn_meta.get('steps', '?')} steps, "
                  f"{cnn_meta.get('train_minutes', '?')} min, seed 7: `{cnn_meta.get('command', CNN_TRAIN_COMMAND)}`), "
                  "never seen by sqgan's training; it shares the architecture and the ImageNet "
                  "initialisation with the bundled one."]
    head = "| decoded by | mean bpp |" + "".join(f" mIoU {labels[s]} | ratio |" for s in segmenters)
    lines += ["", head, "|---|---|" + "---|---|" * len(segmenters)]
    ratios: dict[str, dict[str, float]] = {s: {} for s in segmenters}
    for name in names:
        if not bpps[name]:
            continue
        row = f"| {name} | {np.mean(bpps[name]):.4f} |"
        for seg_name in segmenters:
            m = miou(cms[(name, seg_name)])
            ratios[seg_name][name] = m / ref[seg_name]
            row += f" {m:.3f} | {m / ref[seg_name]:.2f} |"
        lines.append(row)
    lines.append("")
    for seg_name in segmenters:
        lines.append(_ratio_sentence(ratios[seg_name], targets, f"{labels[seg_name]} segmenter"))
        lines.append("")
    emit(lines, a.out)


if __name__ == "__main__":
    main()
