"""Tests for the lossless label-map coder (sqgan_codec.ssm_lossless)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sqgan_codec.classes import NUM_CLASSES
from sqgan_codec.errors import BitstreamError
from sqgan_codec.ssm_lossless import (
    MAX_CLASSES, LabelMapTables, contexts_for, decode_label_map, encode_label_map, fill_void, fit_tables,
)
from conftest import CAMVID, needs_camvid



NUM_CONTEXTS = contexts_for(NUM_CLASSES)


def blobs(shape: tuple[int, int], seed: int, count: int = 8, classes: int = NUM_CLASSES) -> np.ndarray:
    """A piecewise-constant map: a background class with random ellipses and rectangles."""
    rng = np.random.default_rng(seed)
    h, w = shape
    labels = np.full(shape, rng.integers(classes), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(count):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(1, h / 2 + 1), rng.uniform(1, w / 2 + 1)
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1 if rng.random() < 0.5 else \
            (abs(yy - cy) < ry) & (abs(xx - cx) < rx)
        labels[inside] = rng.integers(classes)
    return labels


def round_trip(labels: np.ndarray, tables: LabelMapTables) -> bytes:
    data = encode_label_map(labels, tables)
    out = decode_label_map(data, labels.shape, tables)
    assert out.dtype == np.uint8 and out.shape == labels.shape
    np.testing.assert_array_equal(out, labels)
    return data


def camvid_maps(split: str, count: int) -> list[np.ndarray]:
    from PIL import Image

    paths = sorted((CAMVID / f"{split}annot").glob("*.png"))[::40][:count]
    return [fill_void(np.asarray(Image.open(p))) for p in paths]


@pytest.fixture(scope="module")
def tables() -> LabelMapTables:
    return fit_tables(blobs((120, 160), seed) for seed in range(6))


@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (1, 37), (37, 1), (2, 2), (3, 17), (17, 3),
                                   (31, 45), (64, 33), (9, 130)])
@pytest.mark.parametrize("kind", ["blobs", "single", "noise"])
def test_round_trip_synthetic(tables, shape, kind):
    rng = np.random.default_rng([*shape, len(kind)])
    labels = {"blobs": lambda: blobs(shape, seed=int(rng.integers(1000))),
              "single": lambda: np.full(shape, rng.integers(NUM_CLASSES), np.uint8),
              "noise": lambda: rng.integers(0, NUM_CLASSES, shape).astype(np.uint8)}[kind]()
    data = round_trip(labels, tables)
    assert not data.endswith(b"\x00")  # trailing zeros are implied
    assert encode_label_map(labels, tables) == data  # deterministic


def test_round_trip_any_integer_dtype_and_empty_tables():
    empty = LabelMapTables(np.zeros((NUM_CONTEXTS, NUM_CLASSES), np.int32))
    labels = blobs((23, 41), seed=7)
    for dtype in (np.uint8, np.int32, np.int64):
        round_trip(labels.astype(dtype), empty)
    assert encode_label_map(np.zeros((0, 5), np.uint8), empty) == b""
    assert decode_label_map(b"", (0, 5), empty).shape == (0, 5)


def test_piecewise_constant_maps_are_cheap(tables):
    labels = blobs((240, 320), seed=123)
    bits = 8 * len(encode_label_map(labels, tables))
    assert bits < 0.05 * labels.size * math.log2(NUM_CLASSES)
    assert len(encode_label_map(np.full((120, 160), 3, np.uint8), tables)) < 16


def test_fuzzed_streams_decode_to_a_valid_map_or_raise(tables):
    labels = blobs((40, 56), seed=99)
    data = encode_label_map(labels, tables)
    rng = np.random.default_rng(0)
    outcomes = {"error": 0, "map": 0}
    for i in range(400):
        b = bytearray(data)
        kind = i % 5
        if kind == 0:
            b[rng.integers(len(b))] ^= 1 << int(rng.integers(8))
        elif kind == 1:
            for _ in range(int(rng.integers(2, 6))):
                b[rng.integers(len(b))] = int(rng.integers(256))
        elif kind == 2:
            b = b[:rng.integers(len(b))]
        elif kind == 3:
            b += rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        else:
            b = bytearray(rng.integers(0, 256, int(rng.integers(0, 2 * len(data))), dtype=np.uint8).tobytes())
        try:
            out = decode_label_map(bytes(b), labels.shape, tables)
        except BitstreamError:
            outcomes["error"] += 1
            continue
        outcomes["map"] += 1
        assert out.dtype == np.uint8 and out.shape == labels.shape and out.max() < NUM_CLASSES
    assert outcomes["error"] > 200  # most damage is detected


def test_tables_validation(tables):
    assert NUM_CONTEXTS == 3180  # the layout CamVid models ship with
    assert tables.counts.shape == (NUM_CONTEXTS, NUM_CLASSES) and tables.counts.size <= 50_000
    assert tables.counts.max() <= np.iinfo(np.int32).max
    good = np.zeros((NUM_CONTEXTS, NUM_CLASSES), np.int32)
    for bad in (good[:-1], good.astype(np.float32), good - 1, np.full_like(good, 2**31, np.int64)):
        with pytest.raises(ValueError):
            LabelMapTables(bad)
    unused = good.copy()
    unused[0, -1] = 1  # copy contexts have only 6 symbols
    with pytest.raises(ValueError):
        LabelMapTables(unused)


@pytest.mark.parametrize("classes", [2, 5, 6, 19])
def test_other_class_counts(classes):
    """Any vocabulary up to MAX_CLASSES: tables sized by the class count (at least the 6 copy
    symbols wide), which they carry; maps of that many classes round-trip, others are refused."""
    maps = [blobs((40, 56), seed, classes=classes) for seed in range(4)]
    tables = fit_tables(maps, classes)
    assert tables.num_classes == classes
    assert tables.counts.shape == (contexts_for(classes), max(classes, 6))
    for seed in (11, 12):
        round_trip(blobs((33, 71), seed, classes=classes), tables)
    with pytest.raises(ValueError):
        encode_label_map(np.full((4, 4), classes), tables)
    for unsupported in (1, MAX_CLASSES + 1):
        with pytest.raises(ValueError):
            fit_tables(maps, unsupported)
    wrong = np.zeros((contexts_for(classes), max(classes, 6) + 1), np.int32)
    with pytest.raises(ValueError):
        LabelMapTables(wrong)


def test_bad_label_maps_are_rejected(tables):
    for bad in (np.full((4, 4), NUM_CLASSES), np.full((4, 4), -1), np.zeros((2, 2, 2), np.uint8),
                np.zeros((3, 3), np.float32)):
        with pytest.raises(ValueError):
            encode_label_map(bad, tables)
        with pytest.raises(ValueError):
            fit_tables([bad])


def test_fill_void():
    labels = np.array([[11, 11, 2], [11, 5, 11], [11, 11, 11]], np.uint8)
    out = fill_void(labels)
    assert out.dtype == np.uint8 and out.max() < NUM_CLASSES
    assert out[0, 2] == 2 and out[1, 1] == 5
    assert set(np.unique(out)) <= {2, 5}
    assert (fill_void(np.full((3, 4), 11)) == 0).all()


@needs_camvid
def test_camvid_maps_round_trip_and_compress():
    tables = fit_tables(camvid_maps("train", 4))
    for labels in camvid_maps("test", 3):
        bits = 8 * len(round_trip(labels, tables))
        assert bits < 0.05 * labels.size * math.log2(NUM_CLASSES), bits
