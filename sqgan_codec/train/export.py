"""Turn training checkpoints into shipped inference weights (fp16 safetensors) + registry entries.

    python -m sqgan_codec.train export-segmenter --checkpoint runs/segmenter/last.pt
    python -m sqgan_codec.train export-sqgan --checkpoint runs/sqgan/last.pt --data ../shared/data/camvid

The SQ-GAN export also measures the integer entropy tables (CompressAI's ``update()``): token
statistics of the trained model on training images, over the whole range of keep ratios.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ..classes import CLASS_NAMES, CLASS_SET_ID, NUM_CLASSES, VOID
from ..entropy import TableCounter, class_context
from ..rate import keep_pair
from ..nets.blocks import one_hot_map, pixels_to_unit
from ..nets.samm import top_k_mask
from ..nets.sqgan import SQGAN, SQGANConfig
from ..registry import file_sha256, reload, weights_dir
from .data import find_images, read_items
from .pseudo import fill_pseudo_labels

SEGMENTER_NAME = "segmenter-camvid11-lite0"
SQGAN_NAME = "sqgan-camvid11"
COARSE_NAME = "coarse-camvid11"
MODEL_IDS = {SQGAN_NAME: 1, SEGMENTER_NAME: 2, COARSE_NAME: 3}  # stable ids: never reuse a number


def add_arguments(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-segmenter", help="ship the segmenter checkpoint")
    p.add_argument("--checkpoint", default="runs/segmenter/last.pt")
    p.add_argument("--weights", default=None, help="weights folder (default: the registry's)")
    p = sub.add_parser("export-sqgan", help="ship the SQ-GAN checkpoint with entropy tables")
    p.add_argument("--checkpoint", default="runs/sqgan/last.pt")
    p.add_argument("--data", required=True)
    p.add_argument("--images", type=int, default=120, help="training images for the statistics")
    p.add_argument("--weights", default=None)
    p = sub.add_parser("export-coarse", help="ship the coarse decoder checkpoint beside its SQ-GAN model")
    p.add_argument("--checkpoint", default="runs/coarse/last.pt")
    p.add_argument("--weights", default=None)


def _provenance(state: dict) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=False).stdout.strip()
    except OSError:
        commit = ""
    return {"steps": state.get("step"), "train_minutes": round(state.get("elapsed", 0) / 60, 1),
            "args": state.get("args"), "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "hardware": state.get("hardware") or f"{platform.machine()} CPU, torch {torch.__version__}",
            "code_commit": commit,
            "data": "CamVid (SegNet 11-class, 480x360) train+val; non-commercial research use"}


def _write(out_dir: Path, name: str, kind: str, tensors: dict[str, torch.Tensor], meta: dict[str, str],
           config: dict, description: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.safetensors"
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
    tmp.replace(path)
    reg_path = out_dir / "registry.json"
    reg = json.loads(reg_path.read_text()) if reg_path.exists() else {"defaults": {}, "models": {}}
    kept = {k: v for k, v in reg["models"].get(name, {}).get("config", {}).items() if k == "coarse_decoder"}
    reg["models"][name] = {"id": MODEL_IDS[name], "kind": kind, "file": path.name,
                           "sha256": file_sha256(path), "config": {**config, **kept, "vocabulary": meta["class_set"]},
                           "description": description}
    reg["defaults"][kind] = reg["defaults"].get(kind, name)
    reg_path.write_text(json.dumps(reg, indent=2, sort_keys=True) + "\n")
    reload()
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB), registry updated")
    return path


def _fp16(state: dict[str, torch.Tensor], drop: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        if any(d in k for d in drop) or k.endswith("num_batches_tracked"):
            continue
        out[k] = v.half() if v.is_floating_point() else v
    return out


def export_segmenter(args: argparse.Namespace) -> Path:
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    config = {"num_classes": NUM_CLASSES, "input": "RGB 0..255, padded to a multiple of 32"}
    meta = {"config": json.dumps(config), "classes": json.dumps(CLASS_NAMES), "class_set": CLASS_SET_ID,
            "normalisation": "(x - 127) / 128", "provenance": json.dumps(_provenance(state))}
    return _write(Path(args.weights) if args.weights else weights_dir(), SEGMENTER_NAME, "segmenter",
                  _fp16(state["model"]), meta, config,
                  "EfficientNet-Lite0 (ImageNet init) + FPN head, trained on CamVid train+val")


@torch.no_grad()
def entropy_tables(model: SQGAN, images: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict[str, torch.Tensor]:
    """Integer token statistics of ``model`` over images, each at a random rate knob."""
    rng = np.random.default_rng(seed)
    cfg = model.config
    ssm_counts = TableCounter(1, cfg.ssm_codes)
    img_counts = TableCounter(NUM_CLASSES + 1, cfg.image_codes)  # class contexts + "masked"
    code_votes = np.zeros((cfg.ssm_codes, NUM_CLASSES), np.int64)
    records = []
    s = cfg.latent_stride
    for img, lab in zip(images, labels):
        h, w = img.shape[:2]
        gh, gw = -(-h // s), -(-w // s)
        img = np.pad(img, ((0, gh * s - h), (0, gw * s - w), (0, 0)), mode="edge")
        lab = np.pad(lab, ((0, gh * s - h), (0, gw * s - w)), mode="edge")
        rgb = pixels_to_unit(torch.from_numpy(img)[None])
        onehot = one_hot_map(torch.from_numpy(lab)[None].long(), NUM_CLASSES)
        lat_s, _, scores_s, _ = model.ssm.encode(onehot, 1.0)
        idx_s = model.ssm.quantizer.codes_to_indices(lat_s)[0].numpy()
        lat_x, _, scores_x = model.image.encode(rgb, onehot, 1.0)
        idx_x = model.image.quantizer.codes_to_indices(lat_x)[0].numpy()
        # majority ground-truth class of each cell votes for the class of its semantic-map code
        cells = lab.reshape(gh, s, gw, s).transpose(0, 2, 1, 3).reshape(gh, gw, -1)
        for y in range(gh):
            for x in range(gw):
                counts = np.bincount(cells[y, x], minlength=VOID + 1)[:NUM_CLASSES]
                if counts.sum():
                    code_votes[idx_s[y, x], counts.argmax()] += 1
        records.append((scores_s, idx_s, scores_x, idx_x, rng.random()))
    code_class = code_votes.argmax(1)
    for scores_s, idx_s, scores_x, idx_x, q in records:
        keep_s_ratio, keep_x_ratio = keep_pair(q)
        keep_s = top_k_mask(scores_s, keep_s_ratio)[0, 0].numpy()
        keep_x = top_k_mask(scores_x, keep_x_ratio)[0, 0].numpy()
        ssm_counts.add(keep_s, idx_s, np.zeros(idx_s.shape, np.int64))
        img_counts.add(keep_x, idx_x, class_context(keep_s, idx_s, code_class, NUM_CLASSES))
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a).astype(np.int32))  # noqa: E731
    return {"entropy.ssm.mask_counts": as_t(ssm_counts.mask_counts),
            "entropy.ssm.index_counts": as_t(ssm_counts.index_counts),
            "entropy.image.mask_counts": as_t(img_counts.mask_counts),
            "entropy.image.index_counts": as_t(img_counts.index_counts),
            "entropy.ssm.code_class": as_t(code_class)}


def export_sqgan(args: argparse.Namespace) -> Path:
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    config = SQGANConfig.from_dict(state.get("config", {}))
    model = SQGAN(config)
    model.load_state_dict(state["model"])
    model.eval()
    # statistics with the fp16-rounded weights the codec will actually run
    shipped = _fp16(model.state_dict(), drop=(".ema_",))
    model.load_state_dict({k: v.float() for k, v in shipped.items()}, strict=False)
    # CamVid's train split (or a plain image folder; maps it lacks are pseudo-labelled, cached
    # beside the checkpoint like the training run's)
    items = find_images(args.data, ["train"], exclude=Path(args.checkpoint).parent)
    pick = np.random.default_rng(0).permutation(len(items))[: args.images]
    keys, images, labels = read_items([items[i] for i in pick])
    labels = fill_pseudo_labels(keys, images, labels, Path(args.checkpoint).parent / "pseudo_labels")
    tables = entropy_tables(model, images, labels)
    from ..ssm_lossless import fill_void, fit_tables

    lossless = fit_tables(fill_void(lab) for lab in labels)  # for `--ssm lossless`
    tables["entropy.ssm_lossless.counts"] = torch.from_numpy(lossless.counts.astype(np.int32))
    meta = {"config": json.dumps(config.to_dict()), "classes": json.dumps(CLASS_NAMES),
            "class_set": CLASS_SET_ID, "provenance": json.dumps(_provenance(state)),
            "entropy_tables": f"counts over {len(pick)} CamVid train images at random keep ratios; "
                                f"lossless-map contexts over their label maps"}
    return _write(Path(args.weights) if args.weights else weights_dir(), SQGAN_NAME, "sqgan",
                  {**shipped, **tables}, meta, config.to_dict(),
                  "SQ-GAN for CamVid's 11 classes: G_s + G_x with SAMM, CPU-sized")


def _archive_coarse(out_dir: Path) -> None:
    """Keep the coarse decoder about to be replaced: streams name their coarse decoder by a tag
    of its weights, so the ones made for it must still find it. Its file and registry entry get
    the tag in their name (``coarse-camvid11-3892``)."""
    reg_path = out_dir / "registry.json"
    if not reg_path.exists():
        return
    reg = json.loads(reg_path.read_text())
    current = reg["models"].get(COARSE_NAME)
    if current is None or not (out_dir / current["file"]).exists():
        return
    tag = current["sha256"][:4]  # coarse.TAG_BYTES bytes, as hex
    name = f"{COARSE_NAME}-{tag}"
    if name in reg["models"]:
        return
    (out_dir / current["file"]).replace(out_dir / f"{name}.safetensors")
    reg["models"][name] = {**current, "file": f"{name}.safetensors",
                           "description": current["description"] + " (an earlier version, kept so that "
                                                                   "streams made for it still decode)"}
    reg_path.write_text(json.dumps(reg, indent=2, sort_keys=True) + "\n")
    reload()
    print(f"kept the previous coarse decoder as {name}")


def export_coarse(args: argparse.Namespace) -> Path:
    """The coarse decoder → fp16 weights; its SQ-GAN model's registry entry names it."""
    from ..nets.coarse import CoarseDecoder, CoarseDecoderConfig

    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    config = CoarseDecoderConfig.from_dict(state.get("config", {}))
    CoarseDecoder(config).load_state_dict(state["model"])  # fits the network
    sqgan_name = (state.get("args") or {}).get("sqgan", SQGAN_NAME)
    # runs from before the option trained on VP8 thumbnails
    thumbnail_format = (state.get("args") or {}).get("thumbnail_format", "vp8")
    meta = {"config": json.dumps(config.to_dict()), "classes": json.dumps(CLASS_NAMES),
            "class_set": CLASS_SET_ID, "sqgan": sqgan_name, "thumbnail_format": thumbnail_format,
            "provenance": json.dumps(_provenance(state))}
    out_dir = Path(args.weights) if args.weights else weights_dir()
    _archive_coarse(out_dir)
    path = _write(out_dir, COARSE_NAME, "coarse", _fp16(state["model"]), meta,
                  {**config.to_dict(), "sqgan": sqgan_name, "thumbnail_format": thumbnail_format},
                  f"Coarse decoder for {sqgan_name}: upsampled thumbnail + learned residual "
                  "from the generator's image and the semantic map")
    reg_path = out_dir / "registry.json"
    reg = json.loads(reg_path.read_text())
    reg["models"][sqgan_name]["config"]["coarse_decoder"] = COARSE_NAME
    reg_path.write_text(json.dumps(reg, indent=2, sort_keys=True) + "\n")
    reload()
    return path
