"""Finer patches of the reduced exact map over chosen cells (chunk F, format 7.0)."""
from __future__ import annotations

import numpy as np
import pytest

from sqgan_codec import bitstream, decide
from sqgan_codec.codec import Codec, EncodeOptions
from sqgan_codec.errors import BitstreamError
from sqgan_codec.rate import budget_of
from sqgan_codec.ssm_lossless import (
    cell_pixels, check_detail, decode_detail, detail_order, encode_detail, enlarge_map, reduce_map,
    reduced_shape,
)

from conftest import camvid_test_image


@pytest.fixture(scope="module")
def analysis(codec: Codec):
    return codec.analyse(camvid_test_image(1))


def _composite(labels, factor, scale, cells, num_classes):
    h, w = labels.shape
    fine = labels.astype(np.uint8) if scale == 1 else reduce_map(labels, scale, num_classes)
    small = reduce_map(labels, factor, num_classes)
    return small, fine, np.where(cell_pixels(cells, factor, scale, fine.shape), fine,
                                 cell_pixels(small, factor, scale, fine.shape))


@pytest.mark.parametrize("factor,scale", [(8, 2), (12, 1), (6, 3), (16, 4)])
def test_refined_cells_decode_exactly_and_the_rest_stays_the_cells(codec: Codec, analysis, factor, scale):
    labels = analysis.semantic_map[:349, :467]  # partial cells at the right and bottom edges
    h, w = labels.shape
    n = codec.num_classes
    fine, order = detail_order(labels, factor, scale, n)
    small = reduce_map(labels, factor, n)
    assert len(order) > 10 and len(np.unique(order)) == len(order)
    sizes = []
    for count in (0, 10, len(order)):
        cells = np.zeros(small.size, bool)
        cells[order[:count]] = True
        cells = cells.reshape(small.shape)
        payload = encode_detail(small, fine, factor, scale, cells, codec.lossless_tables)
        got_scale, got_fine, got_cells = decode_detail(payload, small, factor, h, w, codec.lossless_tables)
        _, _, expected = _composite(labels, factor, scale, cells, n)
        assert got_scale == scale and got_fine.shape == reduced_shape(h, w, scale)
        np.testing.assert_array_equal(got_cells, cells)
        np.testing.assert_array_equal(got_fine, expected)
        sizes.append(len(payload))
    assert sizes[0] < sizes[1] < sizes[2]
    # every cell refined: the map at 1/scale exactly
    np.testing.assert_array_equal(got_fine, fine)


def test_the_order_holds_the_cells_that_lose_something_and_priorities_rank_them():
    labels = np.zeros((64, 64), np.uint8)
    labels[32:, :] = 1                 # a large region on cell edges: its cells are right already
    labels[4:60, 21:23] = 2            # a pole, two pixels wide: every 8x8 cell's majority erases it
    labels[44:50, 40:60] = 3           # a blob that straddles two rows of cells
    pole = {r * 8 + 2 for r in range(8)}
    blob = {r * 8 + c for r in (5, 6) for c in (5, 6, 7)}
    fine, order = detail_order(labels, 8, 1, 4)
    np.testing.assert_array_equal(fine, labels)
    assert set(order.tolist()) == pole | blob
    for weights, first in (([1, 1, 16, 1], pole), ([1, 1, 0, 16], blob)):
        ranked = detail_order(labels, 8, 1, 4, np.array(weights, float))[1]
        assert set(ranked[:len(first)].tolist()) == first


def test_bad_detail_payloads_are_refused(codec: Codec, analysis):
    labels = analysis.semantic_map
    h, w = labels.shape
    small = reduce_map(labels, 8, codec.num_classes)
    fine, order = detail_order(labels, 8, 2, codec.num_classes)
    cells = np.zeros(small.size, bool)
    cells[order[:20]] = True
    payload = encode_detail(small, fine, 8, 2, cells.reshape(small.shape), codec.lossless_tables)
    for bad, message in [(b"", "empty"), (bytes([3]) + payload[1:], "1/3"), (bytes([8]) + payload[1:], "1/8"),
                         (payload + b"\x01\x02\x03\x04\x05", "after its last pixel")]:
        with pytest.raises(BitstreamError, match=message):
            decode_detail(bad, small, 8, h, w, codec.lossless_tables)
    with pytest.raises(ValueError, match="proper divisor"):
        check_detail(8, 3)
    rng = np.random.default_rng(0)
    for _ in range(20):  # random damage: an error or some map, never a crash
        broken = bytearray(payload)
        broken[rng.integers(1, len(broken))] ^= 1 << int(rng.integers(8))
        try:
            decode_detail(bytes(broken), small, 8, h, w, codec.lossless_tables)
        except BitstreamError:
            pass


def test_a_stream_with_chunk_f_decodes_the_refined_map_and_its_tokens(codec: Codec, analysis):
    cells = decide.map_detail(codec, analysis, 8, 2, 40)
    data = codec.pack(analysis, 0.0, 0.3, ssm="lossless", map_scale=8, map_detail=cells)
    stream = bitstream.unpack(data)
    assert list(stream.chunks) == ["M", "F", "I"] and stream.header.version == bitstream.MAP_DETAIL_VERSION
    h, w = analysis.semantic_map.shape
    _, _, refined = _composite(analysis.semantic_map, 8, 2, cells[1], codec.num_classes)
    image, decoded_map = codec.decode_with_map(data)
    np.testing.assert_array_equal(decoded_map, enlarge_map(refined, 2, h, w))
    grids = codec.decode_tokens(data)
    kept = grids.image_keep
    assert kept.mean() == pytest.approx(0.3, abs=0.02)
    np.testing.assert_array_equal(grids.image_indices[kept], analysis.image_indices[kept])
    # the rate search and finalise read the map's coding back from the stream
    assert decide.map_coding(codec, stream)[2] == 8
    np.testing.assert_array_equal(decide.map_coding(codec, stream)[3][1], cells[1])
    with pytest.raises(ValueError, match="map_scale above 1"):
        codec.pack(analysis, 0.0, 0.0, ssm="lossless", map_detail=cells)


def test_a_prioritised_stream_fits_its_budget_and_its_map_share(codec: Codec, analysis):
    for bpp in (0.025, 0.05):
        options = EncodeOptions(bpp=bpp, priority={"Pedestrian": 4})
        budget = budget_of(analysis, options)
        data = codec.encode(camvid_test_image(1), bpp=bpp, priority={"Pedestrian": 4})
        assert decide.FILL * budget <= len(data) <= budget
        chunks = bitstream.unpack(data).chunks
        map_bytes = sum(len(chunks.get(k, b"")) + decide.CHUNK_FRAMING
                        for k in (bitstream.CHUNK_SEMANTIC_SCALED, bitstream.CHUNK_MAP_DETAIL))
        assert bitstream.CHUNK_MAP_DETAIL in chunks and map_bytes <= decide.PRIORITY_MAP_SHARE * budget + 16


def test_the_coarse_decoder_trains_on_the_maps_chunk_f_decodes(codec: Codec, analysis):
    """Training's refined maps (``train coarse --detail-maps``) are what a chunk-F stream gives the
    networks: each cell of the 1/F map either kept as sent (blocks, not smoothed) or refined at 1/2."""
    torch = pytest.importorskip("torch")
    from sqgan_codec.nets.blocks import one_hot_map
    from sqgan_codec.train.coarse import TRAINED_DETAIL_SCALE, TRAINED_DETAIL_SCALES, detail_map

    n, scale = codec.num_classes, TRAINED_DETAIL_SCALE
    labels = analysis.semantic_map[:224, :224]
    onehot = one_hot_map(torch.from_numpy(labels.astype(np.int64))[None], n)
    rng = np.random.default_rng(0)
    for factor in TRAINED_DETAIL_SCALES:
        base = enlarge_map(reduce_map(labels, factor, n), factor, 224, 224)
        refined = enlarge_map(reduce_map(labels, scale, n), scale, 224, 224)
        drawn = [detail_map(onehot, factor, rng).argmax(1)[0].numpy() for _ in range(4)]
        for out in drawn:
            changed = 0
            for y in range(0, 224, factor):
                for x in range(0, 224, factor):
                    cell = (slice(y, y + factor), slice(x, x + factor))
                    if not np.array_equal(out[cell], base[cell]):
                        np.testing.assert_array_equal(out[cell], refined[cell])
                        changed += 1
            assert changed > 0  # some cells refined, and they are nearer the labels than the blocks
            assert (out == labels).mean() > (base == labels).mean()
        assert len({d.tobytes() for d in drawn}) > 1  # a random share of the cells worth refining
