"""The semantic map coded exactly at a reduced scale (chunk M, format 6.0)."""
from __future__ import annotations

import numpy as np
import pytest

from sqgan_codec import bitstream, decide
from sqgan_codec.codec import Codec, EncodeOptions
from sqgan_codec.errors import BitstreamError
from sqgan_codec.rate import budget_of
from sqgan_codec.ssm_lossless import (
    MAP_SCALES, enlarge_map, parse_scaled, reduce_map, reduced_shape, scaled_payload,
)

from conftest import camvid_test_image


def _header(width: int = 480, height: int = 360) -> bitstream.Header:
    return bitstream.Header(model_id=1, weights_hash=b"\x01\x02\x03\x04", width=width, height=height)


def test_reduce_takes_each_blocks_majority():
    labels = np.zeros((6, 7), np.uint8)
    labels[0:2, 0:3] = 2           # 6 of the first 3x3 block's 9 pixels
    labels[3:6, 3] = 5             # a thin object: 3 of the next block's 9, lost
    labels[:, 6] = 1               # the partial last column: edge-padded, all 1
    small = reduce_map(labels, 3, 6)
    assert small.shape == reduced_shape(6, 7, 3) == (2, 3)
    np.testing.assert_array_equal(small, [[2, 0, 1], [0, 0, 1]])
    tie = np.array([[1, 0], [0, 1]], np.uint8)
    assert reduce_map(tie, 2, 2)[0, 0] == 0  # the lowest id on ties, as on every machine
    big = enlarge_map(small, 3, 6, 7)
    assert big.shape == (6, 7) and big[5, 6] == 1 and big[0, 0] == 2
    with pytest.raises(ValueError, match="map scale"):
        reduce_map(labels, 1, 6)


def test_chunk_m_payloads_round_trip_and_bad_ones_are_refused():
    assert parse_scaled(scaled_payload(8, b"abc")) == (8, b"abc")
    for bad, message in [(b"", "empty"), (bytes([1]) + b"x", "1/1 is not"), (bytes([17]), "1/17 is not")]:
        with pytest.raises(BitstreamError, match=message):
            parse_scaled(bad)
    assert MAP_SCALES[0] == 2 and MAP_SCALES[-1] == 16


def test_chunk_m_makes_a_format_6_stream_that_older_versions_cannot_hold():
    data = bitstream.pack(_header(), [("C", bytes([0x10, 4]) + b"c" * 20), ("M", scaled_payload(8, b"m")), ("I", b"i")])
    stream = bitstream.unpack(data)
    assert stream.header.version == bitstream.SCALED_MAP_VERSION == (6, 0)
    assert list(stream.chunks) == ["C", "M", "I"]
    with pytest.raises(BitstreamError, match="already has a semantic-map chunk"):
        bitstream.pack(_header(), [("S", b"s"), ("M", scaled_payload(8, b"m"))])
    old = bitstream.pack(_header(), [("C", bytes([0x10, 4]) + b"c" * 20)])  # a format 4.0 stream
    with pytest.raises(BitstreamError, match="needs 6.0"):
        bitstream.unpack(old + bitstream.frame_chunk("M", scaled_payload(8, b"m")))


@pytest.fixture(scope="module")
def analysis(codec: Codec):
    return codec.analyse(camvid_test_image(0))


def test_a_scaled_map_decodes_to_the_encoders_map_reduced_and_its_tokens_exactly(codec: Codec, analysis):
    data = codec.pack(analysis, 0.0, 0.3, ssm="lossless", map_scale=8)
    stream = bitstream.unpack(data)
    assert bitstream.CHUNK_SEMANTIC_SCALED in stream.chunks and "S" not in stream.chunks
    h, w = analysis.semantic_map.shape
    expected = enlarge_map(reduce_map(analysis.semantic_map, 8, codec.num_classes), 8, h, w)
    _, decoded_map = codec.decode_with_map(data)
    np.testing.assert_array_equal(decoded_map, expected)
    grids = codec.decode_tokens(data)
    assert grids.map_keep is None and grids.image_keep.mean() == pytest.approx(0.3, abs=0.02)
    kept = grids.image_keep
    np.testing.assert_array_equal(grids.image_indices[kept], analysis.image_indices[kept])
    # finer scales cost more bytes and keep more of the map
    sizes = [len(codec.pack(analysis, 0.0, 0.0, ssm="lossless", map_scale=f)) for f in (4, 8, 16)]
    assert sizes[0] > sizes[1] > sizes[2]
    with pytest.raises(ValueError, match="ssm='lossless'"):
        codec.pack(analysis, 0.0, 0.0, map_scale=8)


def _class_iou(a: np.ndarray, b: np.ndarray, cid: int) -> float:
    return float(((a == cid) & (b == cid)).sum() / max(((a == cid) | (b == cid)).sum(), 1))


def test_a_priority_refines_the_map_where_its_class_is(codec: Codec, analysis):
    budget = budget_of(analysis, EncodeOptions(bpp=0.05))
    plain = decide.balanced_mode(codec, analysis, budget, 0)
    assert "+" not in plain  # no priority: no chunk F
    ranked = codec._ranked(analysis, EncodeOptions(bpp=0.05, priority={"Pole": 4}))
    prioritised = decide.balanced_mode(codec, ranked, budget, 0)
    assert "+" in prioritised
    # a weight of 1 or below is no priority
    assert decide.balanced_mode(codec, codec._ranked(analysis, EncodeOptions(bpp=0.05, priority={"Sky": 0.5})),
                                budget, 0) == plain
    pole = codec.vocabulary.class_id("Pole")
    image = camvid_test_image(0)
    maps = {}
    for key, priority in (("plain", None), ("Pole", {"Pole": 4})):
        data = codec.encode(image, bpp=0.05, priority=priority)
        assert len(data) <= budget
        maps[key] = codec.decode_with_map(data)[1]
        assert (bitstream.CHUNK_MAP_DETAIL in bitstream.unpack(data).chunks) == (priority is not None)
    # the decoded map keeps far more of the prioritised class (against the encoder's map)
    truth = analysis.semantic_map
    assert _class_iou(maps["Pole"], truth, pole) > _class_iou(maps["plain"], truth, pole) + 0.1


def test_the_scaled_map_mode_fits_its_budget(codec: Codec, analysis):
    for bpp in (0.025, 0.05):
        budget = budget_of(analysis, EncodeOptions(bpp=bpp))
        data = decide.build(codec, analysis, budget, lambda: b"", 0, "scaled8-5")
        assert data is not None and len(data) <= budget
        data = decide.finalise(codec, analysis, data, budget, 0)
        assert decide.FILL * budget <= len(data) <= budget
        assert list(bitstream.unpack(data).chunks) == ["C", "M", "I"]
        assert np.asarray(codec.decode(data)).shape == analysis.loaded.rgb.shape


def test_beside_a_scaled_map_the_thumbnail_is_at_most_half_size(codec: Codec, analysis):
    from sqgan_codec import coarse

    budget = budget_of(analysis, EncodeOptions(bpp=0.1))
    h, w = analysis.semantic_map.shape
    scales = {}
    for mode in ("coarse+learned", "scaled8-0"):
        data = decide.build(codec, analysis, budget, lambda: b"", 0, mode)
        scales[mode] = coarse.parse(bitstream.unpack(data).chunks["C"], w, h).scale
    assert scales["coarse+learned"] == 1 and scales["scaled8-0"] >= decide.SCALED_FINEST_THUMBNAIL == 2


def test_the_networks_see_block_edges_smoothed_with_no_new_class():
    import torch

    from sqgan_codec.nets.blocks import smooth_block_map

    small = torch.tensor([[[0, 3], [3, 3]]])
    out = smooth_block_map(small, 8, 16, 13, 5)
    assert out.shape == (1, 16, 13) and set(out.unique().tolist()) == {0, 3}
    assert out[0, 0, 0] == 0 and out[0, 15, 12] == 3
    # the corner block's class no longer fills its square: its edge runs between the blocks' centres
    assert 20 < int((out[0] == 0).sum()) < 64
