"""Fast checks of the evaluation package (classical codecs at a rate, metrics, harness)."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from sqgan_codec.evaluate import classical
from sqgan_codec.evaluate import metrics as M
from conftest import CAMVID

TEST_IMAGE = CAMVID / "test" / "0001TP_008550.png"

needs_camvid = pytest.mark.skipif(not TEST_IMAGE.is_file(), reason="CamVid test data (../shared) not present")


@pytest.fixture(scope="module")
def camvid_rgb() -> np.ndarray:
    with Image.open(TEST_IMAGE) as im:
        return np.asarray(im.convert("RGB")).copy()


def _synthetic(h=96, w=128, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 2, y * 2, (x + y)], -1).astype(np.float64)
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- classical


@needs_camvid
@pytest.mark.parametrize("codec", ["jpeg", "webp"])
@pytest.mark.parametrize("scale,target", [(1, 0.1), (2, 0.05), (4, 0.025)])
def test_bisection_lands_at_or_below_target(camvid_rgb, codec, scale, target):
    res = classical.code_at_bpp(camvid_rgb, codec, scale, target)
    assert res is not None
    h, w = camvid_rgb.shape[:2]
    assert res.bpp == pytest.approx(res.nbytes * 8 / (w * h))
    assert res.bpp <= target
    assert res.bpp > 0.6 * target  # the search found a large file, not just any small one
    assert res.rgb.shape == camvid_rgb.shape and res.rgb.dtype == np.uint8
    # one grid step up must overshoot, unless the top setting already fits
    spec = classical._SPECS[codec]
    q = int(res.quality)
    if q < spec.hi:
        bigger = classical.encode(classical.downscale(Image.fromarray(camvid_rgb), scale), codec, q + 1)
        assert len(bigger) * 8 / (w * h) > target


@needs_camvid
def test_unreachable_target_gives_none(camvid_rgb):
    assert classical.code_at_bpp(camvid_rgb, "jpeg", 1, 0.005) is None


def test_multi_target_shares_search_and_decodes_full_size():
    rgb = _synthetic()
    out = classical.code_at_bpps(rgb, "jpeg", 2, [2.0, 0.5, 1.0])
    assert list(out) == [0.5, 1.0, 2.0]
    qualities = [r.quality for r in out.values() if r is not None]
    assert qualities == sorted(qualities)
    for t, r in out.items():
        if r is not None:
            assert r.bpp <= t and r.rgb.shape == rgb.shape


def test_unknown_codec_rejected():
    with pytest.raises(ValueError):
        classical.code_at_bpp(_synthetic(), "gif", 1, 0.1)


# ----------------------------------------------------------------------------- PSNR / MS-SSIM


def test_psnr_and_ms_ssim_sanity():
    pytest.importorskip("torch")
    rgb = _synthetic(200, 240)
    rng = np.random.default_rng(1)
    mild = np.clip(rgb + rng.normal(0, 5, rgb.shape), 0, 255).astype(np.uint8)
    strong = np.clip(rgb + rng.normal(0, 25, rgb.shape), 0, 255).astype(np.uint8)
    assert M.psnr(rgb, rgb) == math.inf
    assert M.ms_ssim(rgb, rgb) == pytest.approx(1.0, abs=1e-6)
    assert M.psnr(rgb, mild) > M.psnr(rgb, strong)
    assert 1.0 > M.ms_ssim(rgb, mild) > M.ms_ssim(rgb, strong) > 0.0
    # known value: every sample off by one level → MSE 1 → 20·log10(255) dB
    low = np.minimum(rgb, 254)
    assert M.psnr(low, low + 1) == pytest.approx(20 * math.log10(255))


def test_ms_ssim_small_images_use_truncated_window():
    pytest.importorskip("torch")
    rgb = _synthetic(40, 52)  # 5th scale is 2×3: window truncated, still defined
    noisy = np.clip(rgb + 10, 0, 255).astype(np.uint8)
    v = M.ms_ssim(rgb, noisy)
    assert 0.0 < v < 1.0
    with pytest.raises(ValueError):
        M.ms_ssim(rgb[:10, :10], rgb[:10, :10])


# ----------------------------------------------------------------------------- mIoU


def test_miou_on_known_confusion():
    gt = np.array([[0, 0, 1, 1], [2, 2, 11, 11]], dtype=np.uint8)  # void (11) ignored
    pred = np.array([[0, 1, 1, 1], [2, 0, 5, 6]], dtype=np.uint8)
    cm = M.confusion_matrix(gt, pred)
    assert cm.sum() == 6
    assert cm[0, 0] == 1 and cm[0, 1] == 1 and cm[1, 1] == 2 and cm[2, 2] == 1 and cm[2, 0] == 1
    iou = M.iou_from_confusion(cm)
    # class 0: tp 1, fp 1, fn 1 → 1/3; class 1: tp 2, fp 1 → 2/3; class 2: tp 1, fn 1 → 1/2
    assert iou[0] == pytest.approx(1 / 3) and iou[1] == pytest.approx(2 / 3) and iou[2] == pytest.approx(1 / 2)
    assert np.isnan(iou[3:]).all()  # absent classes (5, 6 predicted only on void pixels) do not count
    assert M.miou(cm) == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert M.pixel_accuracy(cm) == pytest.approx(4 / 6)
    assert M.miou(M.confusion_matrix(gt, np.where(gt == 11, 0, gt))) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        M.confusion_matrix(gt, np.full_like(gt, 11))


# ----------------------------------------------------------------------------- Fréchet distance


def test_frechet_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 320))  # fewer samples than dimensions, as with CamVid
    assert M.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    b = a + 3.0
    assert M.frechet_distance(a, b) == pytest.approx(9.0 * 320, rel=1e-6)  # pure mean shift
    c = rng.normal(size=(50, 320)) * 2
    assert M.frechet_distance(a, c) > M.frechet_distance(a, rng.normal(size=(50, 320)))


# ----------------------------------------------------------------------------- harness


@needs_camvid
def test_harness_end_to_end(tmp_path):
    pytest.importorskip("matplotlib")
    import io

    from sqgan_codec.evaluate import report as R
    from sqgan_codec.evaluate import writers as W

    def segment(rgb):  # toy segmenter: sky above the middle, road below
        ids = np.full(rgb.shape[:2], 3, np.uint8)
        ids[: rgb.shape[0] // 2] = 0
        return ids

    def enc(rgb, target):
        buf = io.BytesIO()
        Image.fromarray(rgb).resize((120, 90), Image.Resampling.LANCZOS).save(buf, "JPEG", quality=5)
        return buf.getvalue()

    def dec(data):
        return Image.open(io.BytesIO(data)).resize((480, 360), Image.Resampling.BICUBIC)

    pairs = R.find_images(CAMVID / "test", "auto", limit=1)
    assert pairs[0][1] is not None
    cfg = R.BenchConfig(targets=(0.05, 0.1), codecs=("jpeg",), scales=(4,), lpips=False, fid=False)
    result = R.run_benchmark(pairs, cfg, [R.LearnedCodec("toy", enc, dec)], segment, log=lambda m: None)
    paths = W.write_all(result, tmp_path)
    rows = list(csv.DictReader(open(paths["csv"])))
    assert {r["codec"] for r in rows} == {"original", "jpeg", "toy"}
    assert len(rows) == 1 + 2 + 2
    for r in rows:
        if r["codec"] == "jpeg":
            assert r["status"] == "ok" and float(r["bpp"]) <= float(r["target_bpp"])
            assert r["miou"] != "" and float(r["psnr"]) > 15
    summary = json.loads(paths["json"].read_text())
    assert summary["original"]["miou"] is not None
    assert "bpp_vs_miou" in paths and paths["bpp_vs_miou"].is_file()
    text = paths["markdown"].read_text()
    assert "| jpeg | 1/4 |" in text
    # each class's IoU on the originals and on the learned codec's decodes at every target
    toy = {g["target_bpp"]: g for g in summary["groups"] if g["codec"] == "toy"}
    sky = f"| Sky | {summary['original']['per_class_iou']['Sky']:.3f} | {toy[0.05]['per_class_iou']['Sky']:.3f} | " \
          f"{toy[0.1]['per_class_iou']['Sky']:.3f} |"
    assert "| class | originals | toy ≤ 0.05 | toy ≤ 0.1 |" in text and sky in text
    # the report quotes what produced it: one command, or a run merged into an earlier one
    assert "Command: `python x.py --a`." in W.markdown(dict(summary, command="python x.py --a"))
    assert "Commands: `a`, then `b`." in W.markdown(dict(summary, command=["a", "b"]))


def test_missing_plugins_are_skipped_with_message():
    from sqgan_codec.evaluate import report as R

    msgs = []

    def boom():
        raise ImportError("No module named 'sqgan_codec.codec'")

    assert R.resolve_learned({"sqgan": boom}, log=msgs.append) == []
    assert "skipping learned codec 'sqgan'" in msgs[0]
    assert R.resolve_segmenter("none") is None


def test_missing_weight_package_makes_metric_unavailable():
    with pytest.raises(M.MetricUnavailable):
        M.dist_file("surely-not-an-installed-distribution", "weights/v0.1/vgg.pth")


@pytest.mark.slow
@needs_camvid
def test_lpips_style_bfloat16_tracks_float32(camvid_rgb):
    """The benchmark's bfloat16 LPIPS-style must rank and size distances like float32 does."""
    try:
        exact = M.LpipsVggStyle(scale=2)
        fast = M.LpipsVggStyle(scale=2, dtype="bfloat16")
    except M.MetricUnavailable as exc:
        pytest.skip(str(exc))
    decoded = [classical.code_at_bpp(camvid_rgb, "jpeg", 2, t).rgb for t in (0.05, 0.2)]
    d32 = [exact(camvid_rgb, d) for d in decoded]
    d16 = [fast(camvid_rgb, d) for d in decoded]
    assert d32[0] > d32[1] > 0.01  # more bits, closer
    assert d16 == pytest.approx(d32, rel=0.01)
    assert fast(camvid_rgb, camvid_rgb) < 1e-3
    with pytest.raises(ValueError):
        M.LpipsVggStyle(dtype="float16")


def test_classical_cache_round_trips_without_pickle(tmp_path):
    """The per-image cache of classical results is npz + JSON (loaded with allow_pickle=False)
    and gives back exactly the rows, confusion matrices and features written."""
    from sqgan_codec.evaluate import report as R

    out = R._ImageOutcome(rows=[{"image": "a.png", "codec": "jpeg", "scale": 4, "target_bpp": 0.05,
                                 "psnr": 21.5, "status": "ok", "quality": None}])
    out.cms[("original", 1, None)] = np.arange(121, dtype=np.int64).reshape(11, 11)
    out.cms[("jpeg", 4, 0.05)] = np.eye(11, dtype=np.int64)
    out.feats[("jpeg", 4, 0.05)] = np.linspace(0, 1, 7, dtype=np.float32)
    path = tmp_path / "a-key.npz"
    R.write_cache(path, out)
    rows, cms, feats = R.read_cache(path)
    assert rows == out.rows
    assert cms.keys() == out.cms.keys() and all(np.array_equal(cms[k], out.cms[k]) for k in cms)
    assert np.array_equal(feats[("jpeg", 4, 0.05)], out.feats[("jpeg", 4, 0.05)])
    assert not list(tmp_path.glob("*.tmp*"))
