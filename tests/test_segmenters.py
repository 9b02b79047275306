"""Segmenters: interface, bundled (random weights from a temporary registry), ONNX, labels."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from _segmenter_support import SEG_NAME, make_registry, seg_weights_dir, temp_registry, write_conv_model  # noqa: F401
from sqgan_codec import classes, registry, segmenters
from sqgan_codec.errors import ImageInputError, ModelMismatchError, SegmenterError, SqganError
from sqgan_codec.segmenters import Segmenter, get_segmenter
from sqgan_codec.segmenters.onnx import available_backends, load_class_map, parse_class_map

SKY, ROAD, CAR = classes.class_id("Sky"), classes.class_id("Road"), classes.class_id("Car")


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def assert_map(ids: np.ndarray, h: int, w: int) -> None:
    assert isinstance(ids, np.ndarray) and ids.dtype == np.uint8 and ids.shape == (h, w)
    assert ids.flags.c_contiguous
    assert int(ids.max()) < classes.NUM_CLASSES


# ----------------------------------------------------------------------------- interface


class Constant(Segmenter):
    name = "constant"
    segmenter_id = 99

    def segment(self, rgb, *, name=None):
        return np.full(rgb.shape[:2], 3, np.uint8)


def test_interface_default_segment_many_and_abstract():
    with pytest.raises(TypeError):
        Segmenter()  # abstract
    seg = Constant()
    maps = seg.segment_many([rgb(4, 5), rgb(7, 3)], names=["a.png", "b.png"])
    assert [m.shape for m in maps] == [(4, 5), (7, 3)]
    with pytest.raises(ValueError):
        seg.segment_many([rgb(4, 5)], names=["a", "b"])


def test_package_import_does_not_import_torch():
    code = ("import sys, sqgan_codec.segmenters, sqgan_codec.segmenters.onnx, "
            "sqgan_codec.segmenters.labels; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("spec", ["", "magic", "onnx", "onnx:", "labels:", 3])
def test_bad_specs(spec):
    with pytest.raises(SegmenterError):
        get_segmenter(spec)


def test_class_map_only_with_onnx(tmp_path):
    (tmp_path / "l.png").write_bytes(b"")
    with pytest.raises(SegmenterError, match="class map"):
        get_segmenter(f"labels:{tmp_path / 'l.png'}", class_map="cityscapes19")


# ----------------------------------------------------------------------------- bundled


def test_bundled_shapes_and_odd_sizes(temp_registry):
    seg = get_segmenter("bundled", device="cpu")
    assert seg.segmenter_id == 0 and SEG_NAME in seg.name
    assert get_segmenter("bundled", device="cpu") is seg  # cached
    for h, w in [(37, 53), (1, 1), (64, 32), (5, 90)]:
        img = rgb(h, w)
        before = img.copy()
        assert_map(seg.segment(img), h, w)
        assert np.array_equal(img, before)


def test_bundled_segment_many_batches_like_single(temp_registry):
    seg = get_segmenter("bundled", device="cpu")
    imgs = [rgb(40, 60, 1), rgb(33, 33, 2), rgb(40, 60, 3)]
    many = seg.segment_many(imgs)
    assert [m.shape for m in many] == [(40, 60), (33, 33), (40, 60)]
    for img, m in zip(imgs, many):
        single = seg.segment(img)
        assert (single == m).mean() > 0.99  # batched float maths may differ in the last bit
    assert seg.segment_many([]) == []


def test_bundled_rejects_bad_arrays(temp_registry):
    seg = get_segmenter("bundled", device="cpu")
    for bad in [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8),
                np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8)]:
        with pytest.raises(ImageInputError):
            seg.segment(bad)


def test_bundled_damaged_or_missing_weights(tmp_path, monkeypatch):
    folder = make_registry(tmp_path / "w", seed=1)
    monkeypatch.setenv(registry.WEIGHTS_ENV, str(folder))
    registry.reload()
    segmenters.clear_cache()
    try:
        data = bytearray((folder / "seg.safetensors").read_bytes())
        data[-1] ^= 0xFF
        (folder / "seg.safetensors").write_bytes(bytes(data))
        with pytest.raises(ModelMismatchError, match="damaged"):
            get_segmenter("bundled", device="cpu")
        (folder / "seg.safetensors").unlink()
        with pytest.raises(ModelMismatchError, match="missing"):
            get_segmenter("bundled", device="cpu")
        with pytest.raises(ModelMismatchError, match="unknown model"):
            get_segmenter("bundled:nope", device="cpu")
        (folder / "registry.json").write_text(json.dumps({"defaults": {}, "models": {}}))
        registry.reload()
        with pytest.raises(ModelMismatchError, match="no default segmenter"):
            get_segmenter("bundled", device="cpu")
    finally:
        registry.reload()
        segmenters.clear_cache()


# ----------------------------------------------------------------------------- ONNX

# Tiny model: label 0 = R, label 1 = G, label 2 = B, label 3 = constant 100 (inputs 0..255).
W = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]], np.float32)
B = np.array([0, 0, 0, 100], np.float32)
MAP = {"input_size": None, "scale": 255, "mean": [0, 0, 0], "std": [1, 1, 1],
       "labels": {"0": "sky", "1": "Road", "2": "ignore", "3": "Car"}}

BACKENDS = [pytest.param(b, marks=pytest.mark.skipif(b not in available_backends(),
                                                     reason=f"{b} is not installed"))
            for b in ("onnxruntime", "opencv")]


def solid(h, w, colour):
    return np.broadcast_to(np.array(colour, np.uint8), (h, w, 3)).copy()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fixed", [False, True])
def test_onnx_mapping(tmp_path, backend, fixed):
    from sqgan_codec.segmenters.onnx import OnnxSegmenter

    model = write_conv_model(tmp_path / "m.onnx", W, B, fixed_hw=(32, 64) if fixed else None)
    cm = dict(MAP, input_size=[32, 64] if fixed and backend == "opencv" else None)
    seg = OnnxSegmenter(model, cm, backend=backend, device="cpu")
    assert seg.segmenter_id == 1
    for h, w in [(37, 53), (1, 1), (64, 64)]:
        assert_map(seg.segment(solid(h, w, (255, 0, 0))), h, w)
        assert (seg.segment(solid(h, w, (255, 0, 0))) == SKY).all()
        assert (seg.segment(solid(h, w, (0, 255, 0))) == ROAD).all()
        # blue's own label is ignored: the best mapped label (constant 100) wins
        assert (seg.segment(solid(h, w, (0, 0, 255))) == CAR).all()
    # a picture with four large blocks: block centres get their colour's class
    img = np.zeros((96, 128, 3), np.uint8)
    img[:48, :64] = (255, 0, 0)
    img[:48, 64:] = (0, 255, 0)
    img[48:, :64] = (0, 0, 255)
    ids = seg.segment(img)
    assert_map(ids, 96, 128)
    assert ids[20, 30] == SKY and ids[20, 100] == ROAD and ids[70, 30] == CAR and ids[70, 100] == CAR


def test_onnx_via_spec_and_sibling_class_map(tmp_path):
    if not available_backends():
        pytest.skip("neither onnxruntime nor OpenCV's dnn module is installed")
    model = write_conv_model(tmp_path / "m.onnx", W, B)
    with pytest.raises(SegmenterError, match="needs a class map"):
        get_segmenter(f"onnx:{model}")
    (tmp_path / "m.json").write_text(json.dumps(MAP))
    seg = get_segmenter(f"onnx:{model}", device="cpu")
    assert (seg.segment(solid(9, 9, (0, 255, 0))) == ROAD).all()
    other = tmp_path / "other.json"
    other.write_text(json.dumps(dict(MAP, labels={"0": "Pole", "1": "Road", "2": "Car", "3": "Car"})))
    seg = get_segmenter(f"onnx:{model}", class_map=str(other), device="cpu")
    assert (seg.segment(solid(9, 9, (255, 0, 0))) == classes.class_id("Pole")).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_onnx_channel_mismatch(tmp_path, backend):
    from sqgan_codec.segmenters.onnx import OnnxSegmenter

    model = write_conv_model(tmp_path / "m.onnx", W, B)
    three = dict(MAP, labels={"0": "Sky", "1": "Road", "2": "Car"})
    with pytest.raises(SegmenterError, match="4 label channels but class map .* 3 labels"):
        OnnxSegmenter(model, three, backend=backend).segment(solid(8, 8, (1, 2, 3)))
    cityscapes = load_class_map("cityscapes19")
    with pytest.raises(SegmenterError, match="19 labels"):
        OnnxSegmenter(model, cityscapes, backend=backend).segment(solid(8, 8, (1, 2, 3)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_onnx_bad_files(tmp_path, backend):
    from sqgan_codec.segmenters.onnx import OnnxSegmenter

    with pytest.raises(SegmenterError, match="no such"):
        OnnxSegmenter(tmp_path / "missing.onnx", MAP, backend=backend)
    with pytest.raises(SegmenterError, match="folder"):
        OnnxSegmenter(tmp_path, MAP, backend=backend)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf at all \xff\xfe")
    with pytest.raises(SegmenterError, match="not an ONNX model"):
        OnnxSegmenter(junk, MAP, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_onnx_torch_export(tmp_path, backend):
    """A model exported by torch.onnx (needs the test-only `onnx` package)."""
    pytest.importorskip("onnx")
    import torch

    from sqgan_codec.segmenters.onnx import OnnxSegmenter

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 1)
            with torch.no_grad():
                self.conv.weight.copy_(torch.from_numpy(W).reshape(4, 3, 1, 1))
                self.conv.bias.copy_(torch.from_numpy(B))

        def forward(self, x):
            return torch.nn.functional.max_pool2d(self.conv(x), 4)

    path = tmp_path / "t.onnx"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Net().eval(), (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}})
    seg = OnnxSegmenter(path, MAP, backend=backend)
    assert (seg.segment(solid(45, 70, (0, 255, 0))) == ROAD).all()
    assert (seg.segment(solid(45, 70, (10, 10, 10))) == CAR).all()


def test_upsample_argmax_matches_torch():
    import torch
    import torch.nn.functional as F

    from sqgan_codec.segmenters.onnx import upsample_argmax

    scores = np.random.default_rng(0).standard_normal((5, 7, 9)).astype(np.float32)
    up = F.interpolate(torch.from_numpy(scores)[None], size=(64, 96), mode="bilinear",
                       align_corners=False)[0]
    expected = up[:, :50, :70].argmax(0).numpy()
    got = upsample_argmax(scores, (64, 96), (50, 70))
    assert (got == expected).mean() > 0.999


def test_cityscapes_map():
    cm = load_class_map("cityscapes19")
    assert cm.num_labels == 19 and all(c >= 0 for c in cm.labels)
    names = [classes.CLASS_NAMES[c] for c in cm.labels]
    assert names[0] == "Road" and names[10] == "Sky" and names[11] == "Pedestrian"
    assert names[13:17] == ["Car"] * 4 and names[12] == names[17] == names[18] == "Bicyclist"
    assert set(names) == set(classes.CLASS_NAMES)  # every codec class is reachable
    assert cm.scale == 1 and cm.mean == pytest.approx((0.485, 0.456, 0.406))


@pytest.mark.parametrize("change, message", [
    ({"labels": {"0": "Sky", "1": "Lamppost"}}, "unknown class 'Lamppost'"),
    ({"labels": {"0": "Sky", "2": "Road"}}, "missing: 1"),
    ({"labels": {"0": "ignore"}}, "maps no label"),
    ({"labels": {"x": "Sky"}}, "not an integer"),
    ({"labels": {}}, "needs \"labels\""),
    ({"scale": 100}, "scale"),
    ({"std": [1, 0, 1]}, "positive"),
    ({"input_size": [32]}, "input_size"),
    ({"input-size": [32, 32]}, "unknown key"),
])
def test_class_map_errors(change, message):
    with pytest.raises(SegmenterError, match=message):
        parse_class_map(dict(MAP, **change))


def test_class_map_files(tmp_path):
    with pytest.raises(SegmenterError, match="no such class map"):
        load_class_map(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SegmenterError, match="not valid JSON"):
        load_class_map(bad)


# ----------------------------------------------------------------------------- labels


def save_labels(path, ids, mode="L"):
    im = Image.fromarray(np.asarray(ids, np.uint8))
    if mode == "P":
        im.putpalette([c for col in classes.CLASS_COLOURS for c in col])  # L -> P, same indices
        assert im.mode == "P"
    im.save(path)
    return path


@pytest.mark.parametrize("mode", ["L", "P"])
def test_labels_file(tmp_path, mode):
    ids = np.random.default_rng(0).integers(0, 11, (30, 40)).astype(np.uint8)
    path = save_labels(tmp_path / "l.png", ids, mode)
    seg = get_segmenter(f"labels:{path}")
    assert seg.segmenter_id == 2
    out = seg.segment(rgb(30, 40))
    assert_map(out, 30, 40)
    assert np.array_equal(out, ids)
    with pytest.raises(SegmenterError, match="40x30 but the image is 41x30"):
        seg.segment(rgb(30, 41))


def test_labels_out_of_range_and_void(tmp_path):
    ids = np.full((10, 12), 3, np.uint8)
    ids[2, 2] = 17
    with pytest.raises(SegmenterError, match="outside .* 17"):
        get_segmenter(f"labels:{save_labels(tmp_path / 'a.png', ids)}").segment(rgb(10, 12))
    ids[2, 2] = classes.VOID
    ids[5:, :] = 8
    ids[0, 0] = 255
    path = save_labels(tmp_path / "b.png", ids)
    out = get_segmenter(f"labels:{path}").segment(rgb(10, 12))
    assert out[2, 2] == 3 and out[0, 0] == 3 and (out[5:] == 8).all()
    from sqgan_codec.segmenters.labels import LabelsSegmenter

    with pytest.raises(SegmenterError, match="void"):
        LabelsSegmenter(path, void="error").segment(rgb(10, 12))
    allvoid = save_labels(tmp_path / "c.png", np.full((10, 12), classes.VOID))
    with pytest.raises(SegmenterError, match="void everywhere"):
        get_segmenter(f"labels:{allvoid}").segment(rgb(10, 12))


def test_labels_fill_without_opencv_matches():
    from sqgan_codec.segmenters.labels import grow_fill, fill_nearest

    rng = np.random.default_rng(1)
    ids = rng.integers(0, 11, (20, 25)).astype(np.uint8)
    holes = np.zeros_like(ids, bool)
    holes[5:15, 5:15] = True
    for fill in (fill_nearest(ids, holes), grow_fill(ids, holes)):
        assert np.array_equal(fill[~holes], ids[~holes])
        assert fill[5, 10] == ids[4, 10] and fill[10, 5] == ids[10, 4]


def test_labels_folder_and_bad_files(tmp_path):
    folder = tmp_path / "labels"
    folder.mkdir()
    ids = np.random.default_rng(0).integers(0, 11, (8, 9)).astype(np.uint8)
    save_labels(folder / "street.png", ids)
    seg = get_segmenter(f"labels:{folder}")
    assert np.array_equal(seg.segment(rgb(8, 9), name="/some/where/street.jpg"), ids)
    maps = seg.segment_many([rgb(8, 9)], names=["street.png"])
    assert np.array_equal(maps[0], ids)
    with pytest.raises(SegmenterError, match="no such label file"):
        seg.segment(rgb(8, 9), name="other.jpg")
    with pytest.raises(SegmenterError, match="needs the image's file name"):
        seg.segment(rgb(8, 9))
    with pytest.raises(SegmenterError, match="no such label"):
        get_segmenter(f"labels:{tmp_path / 'none.png'}")
    colour = tmp_path / "colour.png"
    Image.fromarray(rgb(8, 9)).save(colour)
    with pytest.raises(SegmenterError, match="colour image"):
        get_segmenter(f"labels:{colour}").segment(rgb(8, 9))
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"nope")
    with pytest.raises(SegmenterError, match="not an image"):
        get_segmenter(f"labels:{junk}").segment(rgb(8, 9))
    assert issubclass(SegmenterError, SqganError)
