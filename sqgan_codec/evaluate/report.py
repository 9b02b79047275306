"""Rate/quality benchmark: classical and learned codecs at target bit rates, on a folder of images.

For every image, every classical codec × scale and every learned codec is coded at each target
bpp; each decoded image gets bpp, PSNR, MS-SSIM, an LPIPS-style distance and, given a
segmenter, the mIoU of its segmentation against ground truth (and against the segmentation of
the original). Per codec × scale × target the set gets an FID-style distance and a
dataset-level mIoU (summed confusion matrix). Outputs: ``results.csv`` (one row per image ×
codec × scale × target), ``summary.json``, ``bpp_vs_*.png`` and ``report.md``.

Learned codecs are :class:`LearnedCodec` objects: ``encode(rgb, target_bpp) -> bytes`` and
``decode(bytes) -> RGB array or PIL image``. A segmenter is any callable
``segment(rgb uint8 H×W×3) -> H×W class ids``.

CLI: ``python benchmarks/rate_quality.py --help``.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from ..classes import VOCABULARY as CAMVID11
from ..vocabulary import Vocabulary
from . import classical
from . import metrics as M

DEFAULT_TARGETS = (0.025, 0.05, 0.1)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")

# ----------------------------------------------------------------------------- plug-ins


@dataclass
class LearnedCodec:
    """A learned codec under test. ``decode`` may return an RGB array or a PIL image.

    ``encode_rates`` (optional): all targets of one image at once, e.g. sharing the network
    pass; the rows' ``encode_s`` are then that call's time divided by the number of targets.
    """

    name: str
    encode: Callable[[np.ndarray, float], bytes]
    decode: Callable[[bytes], Any]
    encode_rates: Callable[[np.ndarray, list[float]], list[bytes]] | None = None


def sqgan_learned(model: str = "sqgan-camvid11", device: str = "auto", name: str = "sqgan",
                  **options: Any) -> LearnedCodec:
    """The project's own codec: ``Codec().encode(img, bpp=t, **options)`` / ``.decode(data)``.

    Raises ImportError (or the codec's own error) while ``sqgan_codec.codec`` is not usable.
    """
    from sqgan_codec.codec import Codec

    codec = Codec(model=model, device=device)
    return LearnedCodec(name, lambda rgb, t: codec.encode(rgb, bpp=t, **options), codec.decode,
                        lambda rgb, ts: codec.encode_rates(rgb, ts, **options))


def sqgan_refine_learned(model: str = "sqgan-camvid11", device: str = "auto") -> LearnedCodec:
    """sqgan with ``refine="on"``: a quarter of every budget to the refinement layer (PSNR)."""
    return sqgan_learned(model, device, name="sqgan-refine", refine="on")


def resolve_learned(factories: dict[str, Callable[[], LearnedCodec]], names: list[str] | None = None,
                    log: Callable[[str], None] = print) -> list[LearnedCodec]:
    """Build the learned codecs; one that cannot be built is skipped with a message."""
    out = []
    for name in (list(factories) if names is None else names):
        if name not in factories:
            log(f"skipping learned codec {name!r}: unknown (known: {', '.join(factories) or 'none'})")
            continue
        try:
            out.append(factories[name]())
        except Exception as exc:  # noqa: BLE001  (not written yet, weights missing, ...)
            log(f"skipping learned codec {name!r}: {type(exc).__name__}: {exc}")
    return out


def resolve_segmenter(spec: str | Callable | None, log: Callable[[str], None] = print) -> Callable | None:
    """``None``/"none" → no segmentation metrics; a callable is used as is; a string goes to
    ``sqgan_codec.segmenters.get_segmenter`` ("bundled", "onnx:PATH", ...) and its ``.segment``."""
    if spec is None or spec == "none":
        return None
    if callable(spec):
        return spec
    try:
        from sqgan_codec.segmenters import get_segmenter

        seg = get_segmenter(spec)
    except Exception as exc:  # noqa: BLE001
        log(f"skipping segmentation metrics: segmenter {spec!r} unavailable ({type(exc).__name__}: {exc})")
        return None
    return getattr(seg, "segment", seg)


# ----------------------------------------------------------------------------- inputs


def find_images(image_dir: str | Path, label_dir: str | Path | None = "auto",
                limit: int | None = None, every: int = 1) -> list[tuple[Path, Path | None]]:
    """Sorted (image, label-or-None) pairs. ``label_dir="auto"`` uses a sibling ``<dir>annot``
    folder (CamVid layout) if there is one; labels are matched by file stem."""
    image_dir = Path(image_dir)
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise FileNotFoundError(f"no images in {image_dir}")
    if label_dir == "auto":
        sibling = image_dir.parent / (image_dir.name + "annot")
        label_dir = sibling if sibling.is_dir() else None
    labels: dict[str, Path] = {}
    if label_dir is not None:
        labels = {p.stem: p for p in sorted(Path(label_dir).iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    images = images[::max(1, every)]
    if limit:
        images = images[:limit]
    return [(p, labels.get(p.stem)) for p in images]


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def load_label(path: Path, vocabulary: Vocabulary = CAMVID11) -> np.ndarray:
    """A ground-truth label file's ids as class ids of ``vocabulary`` (void: its class count)."""
    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.ndim != 2:
        raise ValueError(f"{path}: label maps must be single-channel label ids")
    return vocabulary.map_labels(arr)


def _as_rgb(decoded: Any) -> np.ndarray:
    if isinstance(decoded, Image.Image):
        return np.asarray(decoded.convert("RGB")).copy()
    arr = np.asarray(decoded)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"decoder returned {arr.dtype} {arr.shape}, expected H×W×3 uint8")
    return arr


# ----------------------------------------------------------------------------- the run


@dataclass
class BenchConfig:
    targets: tuple[float, ...] = DEFAULT_TARGETS
    codecs: tuple[str, ...] = classical.CODECS
    scales: tuple[int, ...] = classical.SCALES
    lpips: bool = True
    lpips_scale: int = 2  # LPIPS-style on 2×2 area-downsampled images (CPU cost; see metrics)
    lpips_dtype: str = "bfloat16"  # its VGG convolutions (≤ 0.2 % off float32, ~2× faster)
    fid: bool = True
    workers: int = 1  # processes over images (fork); each uses one torch thread
    threads: int = 1  # torch threads when workers == 1
    # per-image cache of the original's and the classical codecs' results: re-running the
    # benchmark after retraining recomputes only the learned codecs. ``cache_tag`` must name
    # everything else the cached numbers depend on (the segmenter's weights).
    cache_dir: str | None = None
    cache_tag: str = ""

    def cache_key(self) -> str:
        import hashlib

        # float32 LPIPS-style leaves the key as it was before the dtype option (old caches stay valid)
        dtype = [] if self.lpips_dtype == "float32" else [self.lpips_dtype]
        blob = json.dumps([sorted(self.codecs), sorted(self.scales), sorted(self.targets), self.lpips,
                           self.lpips_scale, *dtype, self.fid, self.cache_tag, _CACHE_VERSION])
        return hashlib.sha1(blob.encode()).hexdigest()[:12]


_CACHE_VERSION = 1


@dataclass
class _Context:
    config: BenchConfig
    pairs: list[tuple[Path, Path | None]]
    learned: list[LearnedCodec]
    segment: Callable | None
    lpips: M.LpipsVggStyle | None
    fid: M.EffnetFeatures | None
    vocabulary: Vocabulary = CAMVID11  # the segmenter's classes: ground truth is read in them


_CTX: _Context | None = None  # set in the parent before workers fork


@dataclass
class _ImageOutcome:
    rows: list[dict]
    cms: dict[tuple, np.ndarray] = field(default_factory=dict)
    feats: dict[tuple, np.ndarray] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)


def write_cache(path: Path, out: "_ImageOutcome") -> None:
    """Classical results of one image as npz (rows as JSON, arrays by index; no pickle)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"rows": np.array(json.dumps(out.rows)),
              "keys": np.array(json.dumps([["cms", *k] for k in out.cms] + [["feats", *k] for k in out.feats]))}
    for i, value in enumerate(list(out.cms.values()) + list(out.feats.values())):
        arrays[f"a{i}"] = np.asarray(value)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def read_cache(path: Path) -> tuple[list[dict], dict, dict]:
    with np.load(path, allow_pickle=False) as z:
        rows = json.loads(str(z["rows"]))
        cms: dict[tuple, np.ndarray] = {}
        feats: dict[tuple, np.ndarray] = {}
        for i, (kind, *key) in enumerate(json.loads(str(z["keys"]))):
            (cms if kind == "cms" else feats)[tuple(key)] = z[f"a{i}"]
    return rows, cms, feats


def _image_metrics(ctx: _Context, ref: np.ndarray, dec: np.ndarray, ref_feats, gt, ref_pred, row: dict,
                   key: tuple, out: _ImageOutcome) -> None:
    row["psnr"] = M.psnr(ref, dec)
    row["ms_ssim"] = M.ms_ssim(ref, dec)
    if ctx.lpips is not None:
        row["lpips_vgg_style"] = ctx.lpips.distance_from_features(ref_feats, ctx.lpips.features(dec))
    if ctx.fid is not None:
        out.feats[key] = ctx.fid(dec)
    if ctx.segment is not None:
        pred = np.asarray(ctx.segment(dec))
        classes, void = ctx.vocabulary.num_classes, ctx.vocabulary.void
        agree = M.confusion_matrix(ref_pred, pred, classes, void)
        row["seg_agree_miou"] = M.miou(agree)
        if gt is not None:
            cm = M.confusion_matrix(gt, pred, classes, void)
            out.cms[key] = cm
            row["miou"], row["pixel_acc"] = M.miou(cm), M.pixel_accuracy(cm)


def _evaluate_image(index: int) -> _ImageOutcome:
    ctx = _CTX
    assert ctx is not None
    cfg = ctx.config
    path, label_path = ctx.pairs[index]
    ref = load_rgb(path)
    gt = load_label(label_path, ctx.vocabulary) if label_path is not None else None
    if gt is not None and gt.shape != ref.shape[:2]:
        raise ValueError(f"{label_path}: size {gt.shape} differs from image {ref.shape[:2]}")
    out = _ImageOutcome(rows=[])
    cpu0 = time.process_time()
    cache_path = None
    if cfg.cache_dir:
        cache_path = Path(cfg.cache_dir) / f"{path.stem}-{cfg.cache_key()}.npz"
        if cache_path.exists():
            out.rows, out.cms, out.feats = read_cache(cache_path)
            ref_feats = ctx.lpips.features(ref) if ctx.lpips is not None else None
            ref_pred = np.asarray(ctx.segment(ref)) if ctx.segment is not None else None
            t_learned, t_metrics = _evaluate_learned(ctx, path, ref, ref_feats, gt, ref_pred, out)
            out.timing = {"classical_coding_s": 0.0, "metrics_s": t_metrics, "learned_coding_s": t_learned,
                          "cpu_s": time.process_time() - cpu0, "cached": 1.0}
            return out
    t_metrics = 0.0
    t0 = time.perf_counter()
    ref_feats = ctx.lpips.features(ref) if ctx.lpips is not None else None
    ref_pred = None
    base = {"image": path.name, "codec": "original", "kind": "original", "scale": 1, "target_bpp": None,
            "status": "ok"}
    if ctx.fid is not None:
        out.feats[("original", 1, None)] = ctx.fid(ref)
    if ctx.segment is not None:
        ref_pred = np.asarray(ctx.segment(ref))
        if ref_pred.shape != ref.shape[:2]:
            raise ValueError(f"segmenter returned {ref_pred.shape} for a {ref.shape[:2]} image")
        if gt is not None:
            cm = M.confusion_matrix(gt, ref_pred, ctx.vocabulary.num_classes, ctx.vocabulary.void)
            out.cms[("original", 1, None)] = cm
            base["miou"], base["pixel_acc"] = M.miou(cm), M.pixel_accuracy(cm)
    out.rows.append(base)
    t_metrics += time.perf_counter() - t0

    t_coding = 0.0
    for codec in cfg.codecs:
        for scale in cfg.scales:
            t0 = time.perf_counter()
            try:
                results = classical.code_at_bpps(ref, codec, scale, cfg.targets)
                error = None
            except Exception as exc:  # noqa: BLE001  (one codec failing must not stop the run)
                results, error = {float(t): None for t in cfg.targets}, f"error: {type(exc).__name__}: {exc}"
            t_coding += time.perf_counter() - t0
            seen: dict[bytes, tuple[dict, tuple]] = {}
            for target, res in results.items():
                row = {"image": path.name, "codec": codec, "kind": "classical", "scale": scale,
                       "target_bpp": target}
                key = (codec, scale, target)
                if res is None:
                    row["status"] = error or "unreachable"
                    out.rows.append(row)
                    continue
                row.update(status="ok", quality=res.quality, bytes=res.nbytes, bpp=res.bpp,
                           encode_s=res.encode_s, decode_s=res.decode_s)
                t0 = time.perf_counter()
                if res.data in seen:  # same file for two targets: reuse its metrics
                    prev_row, prev_key = seen[res.data]
                    for k in ("psnr", "ms_ssim", "lpips_vgg_style", "miou", "pixel_acc", "seg_agree_miou"):
                        if k in prev_row:
                            row[k] = prev_row[k]
                    for d in (out.cms, out.feats):
                        if prev_key in d:
                            d[key] = d[prev_key]
                else:
                    _image_metrics(ctx, ref, res.rgb, ref_feats, gt, ref_pred, row, key, out)
                    seen[res.data] = (row, key)
                t_metrics += time.perf_counter() - t0
                out.rows.append(row)

    if cache_path is not None:
        write_cache(cache_path, out)
        out.rows, out.cms, out.feats = list(out.rows), dict(out.cms), dict(out.feats)
    t_learned, t_learned_metrics = _evaluate_learned(ctx, path, ref, ref_feats, gt, ref_pred, out)
    out.timing = {"classical_coding_s": t_coding, "metrics_s": t_metrics + t_learned_metrics,
                  "learned_coding_s": t_learned, "cpu_s": time.process_time() - cpu0}
    return out


def _evaluate_learned(ctx: _Context, path: Path, ref: np.ndarray, ref_feats, gt, ref_pred,
                      out: _ImageOutcome) -> tuple[float, float]:
    cfg = ctx.config
    t_learned = t_metrics = 0.0
    h, w = ref.shape[:2]
    targets = [float(t) for t in cfg.targets]
    for lc in ctx.learned:
        coded: list[bytes] | None = None
        if lc.encode_rates is not None:
            try:
                t0 = time.perf_counter()
                coded = [bytes(d) for d in lc.encode_rates(ref, targets)]
                shared_encode_s = (time.perf_counter() - t0) / len(targets)
                t_learned += shared_encode_s * len(targets)
            except Exception:  # noqa: BLE001  (per target below, so each row gets its error)
                coded = None
        for i, target in enumerate(targets):
            row = {"image": path.name, "codec": lc.name, "kind": "learned", "scale": 1, "target_bpp": target}
            key = (lc.name, 1, target)
            try:
                if coded is not None:
                    data, encode_s = coded[i], shared_encode_s
                else:
                    t0 = time.perf_counter()
                    data = bytes(lc.encode(ref, target))
                    encode_s = time.perf_counter() - t0
                    t_learned += encode_s
                t1 = time.perf_counter()
                dec = _as_rgb(lc.decode(data))
                t2 = time.perf_counter()
                t_learned += t2 - t1
                if dec.shape != ref.shape:
                    raise ValueError(f"decoded size {dec.shape} differs from input {ref.shape}")
                row.update(status="ok", bytes=len(data), bpp=len(data) * 8 / (w * h), encode_s=encode_s,
                           decode_s=t2 - t1)
                t0 = time.perf_counter()
                _image_metrics(ctx, ref, dec, ref_feats, gt, ref_pred, row, key, out)
                t_metrics += time.perf_counter() - t0
            except Exception as exc:  # noqa: BLE001
                row["status"] = f"error: {type(exc).__name__}: {exc}"
            out.rows.append(row)
    return t_learned, t_metrics


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


@dataclass
class BenchResult:
    rows: list[dict]
    summary: dict


def run_benchmark(pairs: list[tuple[Path, Path | None]], config: BenchConfig | None = None,
                  learned: list[LearnedCodec] | None = None, segment: Callable | None = None,
                  log: Callable[[str], None] = print, notes: list[str] | None = None) -> BenchResult:
    """Evaluate every codec on every (image, label) pair; see the module docstring.

    ``notes``: messages already logged by the caller (skipped plug-ins), kept in the summary.
    The classes are the segmenter's (``segment``, a :class:`~sqgan_codec.segmenters.Segmenter`'s
    method, says which), else CamVid's.
    """
    global _CTX
    import torch

    cfg = config or BenchConfig()
    skipped: list[str] = list(notes or [])

    def note(msg: str) -> None:
        skipped.append(msg)
        log(msg)

    torch.set_num_threads(1 if cfg.workers > 1 else max(1, cfg.threads))
    avail = classical.available_codecs()
    codecs = []
    for c in cfg.codecs:
        if c not in avail:
            note(f"skipping classical codec {c!r}: unknown (known: {', '.join(classical.CODECS)})")
        elif avail[c]:
            note(f"skipping classical codec {c!r}: {avail[c]}")
        else:
            codecs.append(c)
    cfg = BenchConfig(**{**asdict(cfg), "codecs": tuple(codecs),
                         "targets": tuple(sorted(float(t) for t in cfg.targets))})
    lp = fid = None
    if cfg.lpips:
        try:
            lp = M.LpipsVggStyle(scale=cfg.lpips_scale, dtype=cfg.lpips_dtype)
        except (M.MetricUnavailable, ImportError) as exc:
            note(f"skipping lpips_vgg_style: {exc}")
    if cfg.fid:
        try:
            fid = M.EffnetFeatures()
        except (M.MetricUnavailable, ImportError) as exc:
            note(f"skipping fid_effnet_style: {exc}")
    if segment is None:
        note("no segmenter: mIoU columns are empty")
    elif not any(lab is not None for _, lab in pairs):
        note("no ground-truth labels: only seg_agree_miou (decoded vs original segmentation) is reported")
    vocabulary = getattr(getattr(segment, "__self__", None), "vocabulary", CAMVID11)
    _CTX = _Context(cfg, list(pairs), list(learned or []), segment, lp, fid, vocabulary)

    outcomes: list[_ImageOutcome] = []
    start = time.perf_counter()
    n = len(pairs)

    def progress(i: int, o: _ImageOutcome) -> None:
        el = time.perf_counter() - start
        t = o.timing
        log(f"[{i + 1}/{n}] {pairs[i][0].name}: coding {t['classical_coding_s']:.1f}s, "
            f"metrics {t['metrics_s']:.1f}s, learned {t['learned_coding_s']:.1f}s; "
            f"elapsed {el / 60:.1f} min, eta {el / (i + 1) * (n - i - 1) / 60:.1f} min")

    try:
        if cfg.workers > 1 and n > 1:
            import multiprocessing as mp

            with mp.get_context("fork").Pool(min(cfg.workers, n), initializer=_init_worker) as pool:
                for i, o in enumerate(pool.imap(_evaluate_image, range(n))):
                    outcomes.append(o)
                    progress(i, o)
        else:
            for i in range(n):
                outcomes.append(_evaluate_image(i))
                progress(i, outcomes[-1])
    finally:
        _CTX = None
    wall = time.perf_counter() - start
    rows = [r for o in outcomes for r in o.rows]
    summary = summarise(outcomes, cfg, [lc.name for lc in (learned or [])], n, wall, vocabulary)
    summary["skipped"] = skipped
    summary["segmenter"] = None if segment is None else getattr(segment, "__qualname__", repr(segment))
    if lp is not None:
        summary["lpips_vgg_style_sources"] = lp.sources
    return BenchResult(rows, summary)


# ----------------------------------------------------------------------------- aggregation


def _mean(values) -> float | None:
    v = [x for x in values if x is not None and np.isfinite(x)]
    return float(np.mean(v)) if v else None


def summarise(outcomes: list[_ImageOutcome], cfg: BenchConfig, learned: list[str], n_images: int,
              wall_s: float, vocabulary: Vocabulary = CAMVID11) -> dict:
    groups: dict[tuple, dict] = {}
    orig_feats = [o.feats[("original", 1, None)] for o in outcomes if ("original", 1, None) in o.feats]
    for o in outcomes:
        for r in o.rows:
            key = (r["codec"], r["scale"], r["target_bpp"])
            g = groups.setdefault(key, {"kind": r["kind"], "rows": [], "cm": None, "feats": []})
            g["rows"].append(r)
        for key, cm in o.cms.items():
            g = groups[key]
            g["cm"] = cm.copy() if g["cm"] is None else g["cm"] + cm
        for key, f in o.feats.items():
            groups[key]["feats"].append(f)

    out_groups = []
    original = None
    for (codec, scale, target), g in groups.items():
        ok = [r for r in g["rows"] if r.get("status") == "ok"]
        entry: dict[str, Any] = {"codec": codec, "kind": g["kind"], "scale": scale, "target_bpp": target,
                                 "n_images": len(g["rows"]), "n_coded": len(ok),
                                 "coverage": len(ok) / max(1, len(g["rows"]))}
        if g["cm"] is not None:
            iou = M.iou_from_confusion(g["cm"])
            entry["miou"] = M.miou(g["cm"])
            entry["pixel_acc"] = M.pixel_accuracy(g["cm"])
            entry["per_class_iou"] = {name: (None if np.isnan(v) else float(v)) for name, v in zip(vocabulary.names, iou)}
        if codec == "original":
            original = entry
            continue
        for col in ("bpp", "psnr", "ms_ssim", "lpips_vgg_style", "seg_agree_miou", "encode_s", "decode_s"):
            entry[f"{col}_mean"] = _mean(r.get(col) for r in ok)
        entry["bpp_max"] = max((r["bpp"] for r in ok), default=None)
        if target is not None:
            entry["n_over_target"] = sum(1 for r in ok if r["bpp"] > target + 1e-12)
        if g["feats"] and len(orig_feats) >= 2:
            entry["fid_effnet_style"] = M.frechet_distance(np.stack(g["feats"]), np.stack(orig_feats))
        errors = sorted({r["status"] for r in g["rows"] if r.get("status", "ok").startswith("error")})
        if errors:
            entry["errors"] = errors[:5]
        out_groups.append(entry)

    times = {k: [o.timing[k] for o in outcomes]
             for k in ("classical_coding_s", "metrics_s", "learned_coding_s", "cpu_s")}
    return {
        "n_images": n_images,
        "config": asdict(cfg) | {"learned": learned},
        "versions": classical.codec_versions(),
        "original": original,
        "groups": out_groups,
        "timing": {
            "wall_s": wall_s,
            "wall_s_per_image": wall_s / max(1, n_images),
            "cached_images": sum(1 for o in outcomes if o.timing.get("cached")),
            **{f"{k}_per_image": float(np.mean(v)) if v else None for k, v in times.items()},
            "note": ("*_s_per_image: wall seconds per image inside one single-threaded worker; cpu_s_per_image: "
                     "that worker's CPU time (less sensitive to other load on the machine)"),
        },
        "metric_notes": {
            "psnr": "RGB, peak 255, mean over images",
            "ms_ssim": "own implementation, RGB channel mean, 5 scales, standard weights; see metrics.py",
            "lpips_vgg_style": ("LPIPS-v0.1 linear heads on HED (BSDS500-fine-tuned) VGG16 features, "
                                f"images {cfg.lpips_scale}x area-downsampled, convolutions in {cfg.lpips_dtype}; "
                                "NOT comparable to published LPIPS"),
            "fid_effnet_style": ("Frechet distance of 320-d pooled EfficientNet-Lite0 stride-32 features, decoded "
                                 "set vs all originals; NOT comparable to published FID; few samples (<320) "
                                 "make it biased: compare only within one image set"),
            "miou": "dataset-level (summed confusion), 11 CamVid classes, void ignored",
            "coverage": "share of images where the codec reached the target; means are over those images",
        },
    }


def default_workers() -> int:
    return max(1, min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def eprint(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
