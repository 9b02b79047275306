"""Turn training checkpoints into shipped inference weights (fp16 safetensors) + registry entries.

    python -m sqgan_codec.train export-segmenter --checkpoint runs/segmenter/last.pt
    python -m sqgan_codec.train export-sqgan --checkpoint runs/sqgan/last.pt --data ../shared/data/camvid

The SQ-GAN export also measures the integer entropy tables (CompressAI's ``update()``): token
statistics of the trained model on training images, over the whole range of keep ratios.

A model's classes are the vocabulary its checkpoint was trained with (``--classes``): the export
records it (a vocabulary file of one's own is copied beside the weights) and names the models
after it unless ``--name`` says otherwise (``sqgan-camvid11``, ``segmenter-camvid11-lite0``,
``coarse-camvid11``). A new name gets the next free model id; a name already in the registry
keeps its id.
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

from ..entropy import TableCounter, class_context
from ..rate import keep_pair
from ..nets.blocks import one_hot_map, pixels_to_unit
from ..nets.samm import top_k_mask
from ..nets.sqgan import SQGAN, SQGANConfig
from ..registry import file_sha256, reload, weights_dir
from ..ssm_lossless import MAX_CLASSES as LOSSLESS_MAX_CLASSES
from ..vocabulary import BUILT_IN, Vocabulary, load as load_vocabulary, parse as parse_vocabulary
from .data import find_images, read_items
from .pseudo import fill_pseudo_labels

SEGMENTER_NAME = "segmenter-camvid11-lite0"
SQGAN_NAME = "sqgan-camvid11"
COARSE_NAME = "coarse-camvid11"
ERASURE_NAME = "erasure-camvid11"
MODEL_IDS = {SQGAN_NAME: 1, SEGMENTER_NAME: 2, COARSE_NAME: 3, ERASURE_NAME: 4}  # stable ids: never reuse a number
# what an SQ-GAN model's registry config names beside it: kept when the model is exported again
COMPANIONS = ("coarse_decoder", "coarse_decoder_priority", "erasure_adapter")


def default_names(vocab: Vocabulary) -> dict[str, str]:
    """The models of a vocabulary, by kind (camvid11: the shipped names)."""
    return {"sqgan": f"sqgan-{vocab.name}", "segmenter": f"segmenter-{vocab.name}-lite0",
            "coarse": f"coarse-{vocab.name}", "erasure": f"erasure-{vocab.name}"}


def add_arguments(sub: argparse._SubParsersAction) -> None:
    name_help = "registry name of the model (default: from its vocabulary, e.g. {})"
    p = sub.add_parser("export-segmenter", help="ship the segmenter checkpoint")
    p.add_argument("--checkpoint", default="runs/segmenter/last.pt")
    p.add_argument("--weights", default=None, help="weights folder (default: the registry's)")
    p.add_argument("--name", default=None, help=name_help.format(SEGMENTER_NAME))
    p = sub.add_parser("export-sqgan", help="ship the SQ-GAN checkpoint with entropy tables")
    p.add_argument("--checkpoint", default="runs/sqgan/last.pt")
    p.add_argument("--data", required=True)
    p.add_argument("--images", type=int, default=120, help="training images for the statistics")
    p.add_argument("--weights", default=None)
    p.add_argument("--name", default=None, help=name_help.format(SQGAN_NAME))
    p.add_argument("--segmenter", default=None, metavar="NAME",
                   help="the segmenter that makes this model's semantic maps (default: the registry's "
                        "default segmenter if it has the model's classes, else one that has)")
    p = sub.add_parser("export-coarse", help="ship the coarse decoder checkpoint beside its SQ-GAN model")
    p.add_argument("--checkpoint", default="runs/coarse/last.pt")
    p.add_argument("--weights", default=None)
    p.add_argument("--name", default=None, help=name_help.format(COARSE_NAME))
    p.add_argument("--priority", action="store_true",
                   help="ship it as the decoder of streams sent with a class priority (the model's "
                        "coarse_decoder_priority; default name coarse-<vocabulary>-priority); the "
                        "other streams keep the current coarse decoder")
    p = sub.add_parser("export-erasure", help="ship the erasure adapter beside its SQ-GAN model")
    p.add_argument("--checkpoint", default="runs/erasure/last.pt")
    p.add_argument("--weights", default=None)
    p.add_argument("--name", default=None, help=name_help.format(ERASURE_NAME))


def checkpoint_vocabulary(state: dict) -> Vocabulary:
    """The classes a checkpoint was trained on (checkpoints from before they were recorded: camvid11)."""
    return parse_vocabulary(state["vocabulary"]) if state.get("vocabulary") else load_vocabulary("camvid11")


def _vocabulary_ref(vocab: Vocabulary, out_dir: Path) -> str:
    """What a registry entry names its vocabulary by: a built-in name, or a JSON file written
    beside the weights (``<name>.json``)."""
    built_in = BUILT_IN / f"{vocab.name}.json"
    if built_in.is_file() and load_vocabulary(vocab.name).digest == vocab.digest:
        return vocab.name
    path = out_dir / f"{vocab.name}.json"
    if path.is_file() and load_vocabulary(path).digest != vocab.digest:
        raise SystemExit(f"{path} holds another vocabulary named {vocab.name!r}: rename yours")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(vocab.to_dict(), indent=1) + "\n")
    tmp.replace(path)
    return path.name


def _provenance(state: dict) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=False).stdout.strip()
    except OSError:
        commit = ""
    return {"steps": state.get("step"), "train_minutes": round(state.get("elapsed", 0) / 60, 1),
            "args": state.get("args"), "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "hardware": state.get("hardware") or f"{platform.machine()} CPU, torch {torch.__version__}",
            "code_commit": commit, "data": _data_note(state)}


def _data_note(state: dict) -> str:
    data = str((state.get("args") or {}).get("data") or "")
    if "camvid" in data.lower():
        return "CamVid (SegNet 11-class, 480x360) train+val; non-commercial research use"
    return f"{Path(data).name or data}: see that dataset's licence"


def model_id(reg: dict, name: str) -> int:
    """A model's stable id: its registry entry's, the shipped models' fixed ones, or the next free
    number (past every id in the registry and the fixed ones)."""
    if name in reg["models"]:
        return int(reg["models"][name]["id"])
    if name in MODEL_IDS:
        return MODEL_IDS[name]
    return max([*MODEL_IDS.values(), *(int(m["id"]) for m in reg["models"].values())]) + 1


def _write(out_dir: Path, name: str, kind: str, tensors: dict[str, torch.Tensor], meta: dict[str, str],
           config: dict, description: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.safetensors"
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
    tmp.replace(path)
    reg_path = out_dir / "registry.json"
    reg = json.loads(reg_path.read_text()) if reg_path.exists() else {"defaults": {}, "models": {}}
    kept = {k: v for k, v in reg["models"].get(name, {}).get("config", {}).items() if k in COMPANIONS}
    reg["models"][name] = {"id": model_id(reg, name), "kind": kind, "file": path.name,
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


def _class_meta(vocab: Vocabulary, out_dir: Path) -> dict[str, str]:
    """The weights' metadata naming their classes (checked against the registry on load)."""
    return {"classes": json.dumps(list(vocab.names)), "class_set": _vocabulary_ref(vocab, out_dir)}


def export_segmenter(args: argparse.Namespace) -> Path:
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    vocab = checkpoint_vocabulary(state)
    out_dir = Path(args.weights) if args.weights else weights_dir()
    name = getattr(args, "name", None) or default_names(vocab)["segmenter"]
    config = {"num_classes": vocab.num_classes, "input": "RGB 0..255, padded to a multiple of 32"}
    meta = {"config": json.dumps(config), **_class_meta(vocab, out_dir),
            "normalisation": "(x - 127) / 128", "provenance": json.dumps(_provenance(state))}
    return _write(out_dir, name, "segmenter", _fp16(state["model"]), meta, config,
                  f"EfficientNet-Lite0 (ImageNet init) + FPN head for the {vocab.name} classes, trained on "
                  f"{_data_note(state).split(';')[0]}")


@torch.no_grad()
def entropy_tables(model: SQGAN, images: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict[str, torch.Tensor]:
    """Integer token statistics of ``model`` over images (labels: class ids, void = the class
    count), each at a random rate knob."""
    rng = np.random.default_rng(seed)
    cfg = model.config
    classes = cfg.num_classes
    ssm_counts = TableCounter(1, cfg.ssm_codes)
    img_counts = TableCounter(classes + 1, cfg.image_codes)  # class contexts + "masked"
    code_votes = np.zeros((cfg.ssm_codes, classes), np.int64)
    records = []
    s = cfg.latent_stride
    for img, lab in zip(images, labels):
        h, w = img.shape[:2]
        gh, gw = -(-h // s), -(-w // s)
        img = np.pad(img, ((0, gh * s - h), (0, gw * s - w), (0, 0)), mode="edge")
        lab = np.pad(lab, ((0, gh * s - h), (0, gw * s - w)), mode="edge")
        rgb = pixels_to_unit(torch.from_numpy(img)[None])
        onehot = one_hot_map(torch.from_numpy(lab)[None].long(), classes)
        lat_s, _, scores_s, _ = model.ssm.encode(onehot, 1.0)
        idx_s = model.ssm.quantizer.codes_to_indices(lat_s)[0].numpy()
        lat_x, _, scores_x = model.image.encode(rgb, onehot, 1.0)
        idx_x = model.image.quantizer.codes_to_indices(lat_x)[0].numpy()
        # majority ground-truth class of each cell votes for the class of its semantic-map code
        cells = lab.reshape(gh, s, gw, s).transpose(0, 2, 1, 3).reshape(gh, gw, -1)
        for y in range(gh):
            for x in range(gw):
                counts = np.bincount(cells[y, x], minlength=classes + 1)[:classes]
                if counts.sum():
                    code_votes[idx_s[y, x], counts.argmax()] += 1
        records.append((scores_s, idx_s, scores_x, idx_x, rng.random()))
    code_class = code_votes.argmax(1)
    for scores_s, idx_s, scores_x, idx_x, q in records:
        keep_s_ratio, keep_x_ratio = keep_pair(q)
        keep_s = top_k_mask(scores_s, keep_s_ratio)[0, 0].numpy()
        keep_x = top_k_mask(scores_x, keep_x_ratio)[0, 0].numpy()
        ssm_counts.add(keep_s, idx_s, np.zeros(idx_s.shape, np.int64))
        img_counts.add(keep_x, idx_x, class_context(keep_s, idx_s, code_class, classes))
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a).astype(np.int32))  # noqa: E731
    return {"entropy.ssm.mask_counts": as_t(ssm_counts.mask_counts),
            "entropy.ssm.index_counts": as_t(ssm_counts.index_counts),
            "entropy.image.mask_counts": as_t(img_counts.mask_counts),
            "entropy.image.index_counts": as_t(img_counts.index_counts),
            "entropy.ssm.code_class": as_t(code_class)}


def _segmenter_for(vocab: Vocabulary, wanted: str | None, out_dir: Path) -> str | None:
    """The segmenter an exported model names (None: the registry's default, of the same classes)."""
    from .. import registry

    reg_path = out_dir / "registry.json"
    reg = json.loads(reg_path.read_text()) if reg_path.exists() else {"defaults": {}, "models": {}}

    def classes_of(name: str) -> str | None:  # the digest of a segmenter's vocabulary
        spec = reg["models"].get(name)
        if spec is None or spec["kind"] != "segmenter":
            return None
        return registry.load_vocabulary_ref(spec["config"].get("vocabulary", "camvid11"), out_dir).digest

    if wanted:
        if classes_of(wanted) != vocab.digest:
            raise SystemExit(f"--segmenter {wanted}: not a segmenter of the {vocab.name} classes in {reg_path}")
        return None if reg["defaults"].get("segmenter") == wanted else wanted
    default = reg["defaults"].get("segmenter")
    if default and classes_of(default) == vocab.digest:
        return None
    same = [n for n in reg["models"] if classes_of(n) == vocab.digest]
    if not same:
        print(f"note: no segmenter of the {vocab.name} classes in {reg_path}: encode with "
              f"--segmenter labels:DIR or onnx:MODEL, or export one and name it here (--segmenter)")
        return None
    return same[0]


def export_sqgan(args: argparse.Namespace) -> Path:
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    vocab = checkpoint_vocabulary(state)
    out_dir = Path(args.weights) if args.weights else weights_dir()
    name = getattr(args, "name", None) or default_names(vocab)["sqgan"]
    config = SQGANConfig.from_dict(state.get("config", {}))
    if config.num_classes != vocab.num_classes:
        raise SystemExit(f"{args.checkpoint}: {config.num_classes} classes in the network, "
                         f"{vocab.num_classes} in its vocabulary {vocab.name}")
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
    keys, images, labels = read_items([items[i] for i in pick], vocab)
    labels = fill_pseudo_labels(keys, images, labels, Path(args.checkpoint).parent / "pseudo_labels",
                                vocabulary=vocab)
    tables = entropy_tables(model, images, labels)
    from ..ssm_lossless import fill_void, fit_tables

    lossless_note = "no lossless-map tables (too many classes)"
    if 2 <= vocab.num_classes <= LOSSLESS_MAX_CLASSES:  # for `--ssm lossless`
        lossless = fit_tables((fill_void(lab, vocab.num_classes) for lab in labels), vocab.num_classes)
        tables["entropy.ssm_lossless.counts"] = torch.from_numpy(lossless.counts.astype(np.int32))
        lossless_note = "lossless-map contexts over their label maps"
    segmenter = _segmenter_for(vocab, getattr(args, "segmenter", None), out_dir)
    meta = {"config": json.dumps(config.to_dict()), **_class_meta(vocab, out_dir),
            "provenance": json.dumps(_provenance(state)),
            "entropy_tables": f"counts over {len(pick)} training images at random keep ratios; {lossless_note}"}
    return _write(out_dir, name, "sqgan", {**shipped, **tables}, meta,
                  {**config.to_dict(), **({"segmenter": segmenter} if segmenter else {})},
                  f"SQ-GAN for the {vocab.name} classes ({vocab.num_classes}): G_s + G_x with SAMM, CPU-sized")


def _archive_coarse(out_dir: Path, coarse_name: str = COARSE_NAME) -> None:
    """Keep the coarse decoder about to be replaced: streams name their coarse decoder by a tag
    of its weights, so the ones made for it must still find it. Its file and registry entry get
    the tag in their name (``coarse-camvid11-3892``)."""
    reg_path = out_dir / "registry.json"
    if not reg_path.exists():
        return
    reg = json.loads(reg_path.read_text())
    current = reg["models"].get(coarse_name)
    if current is None or not (out_dir / current["file"]).exists():
        return
    tag = current["sha256"][:4]  # coarse.TAG_BYTES bytes, as hex
    name = f"{coarse_name}-{tag}"
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
    vocab = checkpoint_vocabulary(state)
    config = CoarseDecoderConfig.from_dict(state.get("config", {}))
    CoarseDecoder(config).load_state_dict(state["model"])  # fits the network
    sqgan_name = (state.get("args") or {}).get("sqgan", SQGAN_NAME)
    # runs from before the option trained on VP8 thumbnails
    thumbnail_format = (state.get("args") or {}).get("thumbnail_format", "vp8")
    out_dir = Path(args.weights) if args.weights else weights_dir()
    priority = bool(getattr(args, "priority", False))
    name = getattr(args, "name", None) or default_names(vocab)["coarse"] + ("-priority" if priority else "")
    meta = {"config": json.dumps(config.to_dict()), **_class_meta(vocab, out_dir),
            "sqgan": sqgan_name, "thumbnail_format": thumbnail_format,
            "provenance": json.dumps(_provenance(state))}
    _archive_coarse(out_dir, name)
    path = _write(out_dir, name, "coarse", _fp16(state["model"]), meta,
                  {**config.to_dict(), "sqgan": sqgan_name, "thumbnail_format": thumbnail_format},
                  f"Coarse decoder for {sqgan_name}: upsampled thumbnail + learned residual "
                  "from the generator's image and the semantic map"
                  + ("; renders the streams sent with a class priority" if priority else ""))
    _name_companion(out_dir, sqgan_name, "coarse_decoder_priority" if priority else "coarse_decoder", name)
    return path


def _name_companion(out_dir: Path, sqgan_name: str, key: str, name: str) -> None:
    """Name model ``name`` in the SQ-GAN entry's config under ``key`` (one of :data:`COMPANIONS`)."""
    reg_path = out_dir / "registry.json"
    reg = json.loads(reg_path.read_text())
    reg["models"][sqgan_name]["config"][key] = name
    reg_path.write_text(json.dumps(reg, indent=2, sort_keys=True) + "\n")
    reload()


def export_erasure(args: argparse.Namespace) -> Path:
    """The erasure adapter → fp16 weights; its SQ-GAN model's registry entry names it. It records
    the SHA-256 of the weights it was trained on: a decoder applies it to those only. No earlier
    adapter is kept: streams do not name it (it changes only how lost positions are filled)."""
    from ..nets.adapter import ErasureAdapterConfig

    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    vocab = checkpoint_vocabulary(state)
    config = ErasureAdapterConfig.from_dict(state.get("config", {}))
    run_args = state.get("args") or {}
    sqgan_name, base = run_args.get("sqgan", SQGAN_NAME), run_args.get("sqgan_sha256")
    if not base:
        raise SystemExit(f"{args.checkpoint} does not record the SQ-GAN weights it was trained on")
    out_dir = Path(args.weights) if args.weights else weights_dir()
    name = getattr(args, "name", None) or default_names(vocab)["erasure"]
    meta = {"config": json.dumps(config.to_dict()), **_class_meta(vocab, out_dir), "sqgan": sqgan_name,
            "sqgan_sha256": base, "provenance": json.dumps(_provenance(state))}
    path = _write(out_dir, name, "erasure", _fp16(state["adapter"]), meta,
                  {**config.to_dict(), "sqgan": sqgan_name, "sqgan_sha256": base},
                  f"Erasure adapter for {sqgan_name}: its de-masker tuned to fill the positions of lost "
                  "packets (applied only to packet streams that lost image tokens)")
    _name_companion(out_dir, sqgan_name, "erasure_adapter", name)
    return path
