"""Regions of interest as finer patches of the coarse image (chunk P, format 5.0)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sqgan_codec import bitstream, coarse
from sqgan_codec.cli import main as cli
from sqgan_codec.codec import Codec, EncodeOptions
from sqgan_codec.errors import BitstreamError

from conftest import camvid_test_image

BOX = (256, 96, 192, 160)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


def _header(width: int = 480, height: int = 360) -> bitstream.Header:
    return bitstream.Header(model_id=1, weights_hash=b"\x01\x02\x03\x04", width=width, height=height)


def _av1_chunk() -> bytes:
    return bytes([coarse.RENDER_UPSAMPLE | coarse.FORMAT_AV1 << 4, 4]) + b"c" * 20


def test_patch_payload_round_trips_and_hostile_ones_are_refused():
    patches = [coarse.Patch(256, 96, 192, 160, 2, b"f" * 300), coarse.Patch(0, 0, 16, 16, 1, b"g")]
    data = coarse.patches_payload(patches)
    assert coarse.parse_patches(data, 480, 360) == patches
    for bad, message in [
        (data[:-1], "past the end"),
        (data + b"x", "after the last patch"),
        (b"", "empty"),
        (bytes([coarse.FORMAT_VP8 << 4 | 1]) + data[1:], "unknown thumbnail format"),
        (bytes([coarse.FORMAT_AV1 << 4 | 0]), "0 patches"),
        (coarse.patches_payload([coarse.Patch(400, 96, 192, 160, 2, b"f")]), "not inside"),
        (coarse.patches_payload([coarse.Patch(0, 0, 15, 160, 2, b"f")]), "under 16"),
        (data[:1] + b"\xff" * 8, "malformed number"),
    ]:
        with pytest.raises(BitstreamError, match=message):
            coarse.parse_patches(bad, 480, 360)
    with pytest.raises(ValueError):
        coarse.patches_payload([])


def test_patch_chunk_comes_right_after_c_and_makes_a_format_5_stream():
    p = coarse.patches_payload([coarse.Patch(0, 0, 32, 32, 2, b"f")])
    data = bitstream.pack(_header(), [("C", _av1_chunk()), ("P", p), ("S", b"s"), ("I", b"i")])
    stream = bitstream.unpack(data)
    assert stream.header.version == bitstream.PATCHES_VERSION and list(stream.chunks) == ["C", "P", "S", "I"]
    with pytest.raises(BitstreamError, match="right after the coarse-image chunk"):
        bitstream.pack(_header(), [("P", p), ("S", b"s")])
    with pytest.raises(BitstreamError, match="right after the coarse-image chunk"):
        bitstream.pack(_header(), [("C", _av1_chunk()), ("S", b"s"), ("P", p)])
    # a P chunk inside a stream that declares format 4.0 is damage: 4.0 readers do not know it
    old = bitstream.pack(_header(), [("C", _av1_chunk())])
    assert bitstream.unpack(old).header.version == bitstream.COARSE_FORMAT_VERSION
    with pytest.raises(BitstreamError, match="needs 5.0"):
        bitstream.unpack(old + bitstream.frame_chunk("P", p))


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return [camvid_test_image(i) for i in (0, 94, 188)]


@pytest.mark.slow
def test_roi_patch_makes_the_box_more_faithful_at_the_same_size(codec: Codec, frames, tmp_path):
    x, y, w, h = BOX
    gains = []
    for rgb in frames:
        analysis = codec.analyse(rgb)
        plain = codec.encode_analysis(analysis, EncodeOptions(bpp=0.03))
        boxed = codec.encode_analysis(analysis, EncodeOptions(bpp=0.03, roi=(BOX,)))
        budget = round(0.03 * rgb.shape[0] * rgb.shape[1] / 8)
        assert len(boxed) <= budget and len(plain) <= budget
        chunks = bitstream.unpack(boxed).chunks
        assert "P" in chunks and "P" not in bitstream.unpack(plain).chunks
        [patch] = coarse.parse_patches(chunks["P"], rgb.shape[1], rgb.shape[0])
        assert (patch.x, patch.y, patch.width, patch.height) == BOX
        dec_plain = np.asarray(codec.decode(plain).convert("RGB"))
        dec_boxed = np.asarray(codec.decode(boxed).convert("RGB"))
        gains.append(psnr(rgb[y:y + h, x:x + w], dec_boxed[y:y + h, x:x + w])
                     - psnr(rgb[y:y + h, x:x + w], dec_plain[y:y + h, x:x + w]))
    assert min(gains) > 0.5 and np.mean(gains) > 1.0, gains
    # `sqgan info` shows the patch
    path = tmp_path / "boxed.sqg"
    path.write_bytes(boxed)
    out = CliRunner().invoke(cli, ["info", "--json", str(path)])
    assert out.exit_code == 0, out.output
    [row] = json.loads(out.output)["coarse"]["patches"]
    assert (row["x"], row["y"], row["width"], row["height"]) == BOX
    assert json.loads(out.output)["coarse"]["decoder"] == codec.coarse_decoder_name()  # the one it names


def test_boxes_too_small_or_outside_the_image_send_no_patch(codec: Codec, frames):
    rgb = frames[0]
    analysis = codec.analyse(rgb)
    for roi in [((10, 10, 8, 200),), ((600, 10, 50, 50),)]:
        data = codec.encode_analysis(analysis, EncodeOptions(bpp=0.03, roi=roi))
        assert "P" not in bitstream.unpack(data).chunks
    # a box reaching past the edge is clipped to the image
    data = codec.encode_analysis(analysis, EncodeOptions(bpp=0.03, roi=((400, 300, 200, 200),)))
    [patch] = coarse.parse_patches(bitstream.unpack(data).chunks["P"], rgb.shape[1], rgb.shape[0])
    assert (patch.x, patch.y, patch.width, patch.height) == (400, 300, 80, 60)
    assert np.asarray(codec.decode(data)).shape == rgb.shape


def test_roi_ranks_the_map_only_where_the_stream_has_no_coarse_image(codec: Codec, frames):
    import torch

    analysis = codec.analyse(frames[0])
    balanced = codec._ranked(analysis, EncodeOptions(bpp=0.03, roi=(BOX,)))
    semantic = codec._ranked(analysis, EncodeOptions(bpp=0.03, tune="semantic", roi=(BOX,)))
    # the default sends the box as a patch: the map's few bytes keep the whole frame's ranking
    assert torch.equal(balanced.ssm_scores, analysis.ssm_scores)
    assert not torch.equal(balanced.image_scores, analysis.image_scores)
    assert not torch.equal(semantic.ssm_scores, analysis.ssm_scores)
    # a priority still ranks the map under any tune
    prioritised = codec._ranked(analysis, EncodeOptions(bpp=0.03, roi=(BOX,), priority={"Pedestrian": 4}))
    assert not torch.equal(prioritised.ssm_scores, analysis.ssm_scores) or \
        not (codec.block_classes(analysis)[..., codec.vocabulary.class_id("Pedestrian")] > 0).any()


def test_prioritised_classes_send_their_large_objects_as_patches(codec: Codec):
    from types import SimpleNamespace

    from sqgan_codec import decide

    smap = np.zeros((360, 480), np.uint8)  # Sky
    ped, car = codec.vocabulary.class_id("Pedestrian"), codec.vocabulary.class_id("Car")
    smap[100:160, 100:140] = ped           # 2,400 px: 1.4 % of the image
    smap[300:305, 10:15] = ped             # 25 px: too small for a patch
    smap[200:300, 300:460] = car
    analysis = SimpleNamespace(semantic_map=smap)
    boxes = decide.patch_boxes(codec, analysis, EncodeOptions(bpp=0.03, priority={"Pedestrian": 4}))
    assert boxes == ((84, 84, 72, 92),)    # grown by 16 pixels each way
    # a box first, then the objects; weights of 1 or less patch nothing
    roi = (0, 0, 50, 50)
    assert decide.patch_boxes(codec, analysis, EncodeOptions(bpp=0.03, roi=(roi,), priority={"Car": 4, "all": 2})) \
        == (roi, (284, 184, 192, 132))
    assert decide.patch_boxes(codec, analysis, EncodeOptions(bpp=0.03, priority={"Pedestrian": 1, "Car": 0.5})) == ()
    # at most MAX_PATCHES in all, the largest objects first
    many = np.zeros((360, 480), np.uint8)
    for i in range(10):
        many[10 + 34 * i: 40 + 34 * i, 10: 40 + 10 * i] = ped
    boxes = decide.patch_boxes(codec, SimpleNamespace(semantic_map=many), EncodeOptions(bpp=0.03, priority={"Pedestrian": 4}))
    assert len(boxes) == coarse.MAX_PATCHES and boxes[0][2] > boxes[-1][2]


def test_a_damaged_patch_frame_is_a_clear_error(codec: Codec):
    from sqgan_codec.errors import BitstreamError

    data = (Path(__file__).resolve().parent / "golden" / "v5_coarse_roi_0.05.sqg").read_bytes()
    stream = bitstream.unpack(data)
    [patch] = coarse.parse_patches(stream.chunks["P"], stream.header.width, stream.header.height)
    other = coarse.Thumbnail(np.zeros((64, 64, 3), np.uint8), 1).frame(50)  # a frame of another size
    for frame, message in [(bytes(len(patch.frame)), "sequence header"), (other, "expected")]:
        bad = coarse.patches_payload([patch._replace(frame=frame)])
        damaged = bitstream.pack(stream.header, [("C", stream.chunks["C"]), ("P", bad)])
        with pytest.raises(BitstreamError, match=f"patch chunk, patch 1: .*{message}"):
            codec.decode(damaged)


def test_encode_json_reports_the_patches_sent(tmp_path):
    from sqgan_codec.demo import sample_path

    runner = CliRunner()
    rows = []
    for extra in ([], ["--roi", "256,96,192,160"], ["--roi", "256,96,192,160", "--tune", "semantic"]):
        out = runner.invoke(cli, ["encode", str(sample_path()), "-o", str(tmp_path / f"s{len(rows)}.sqg"),
                                  "--bpp", "0.03", "--json", "--quiet", *extra])
        assert out.exit_code == 0, out.output
        rows.append(json.loads(out.output.strip().splitlines()[-1])["patches"])
    assert rows == [0, 1, 0]  # a token stream ranks the box's tokens instead


def test_boxes_covering_most_of_the_image_send_no_patch(codec: Codec, frames):
    from sqgan_codec import decide

    rgb = frames[0]
    analysis = codec.analyse(rgb)
    whole = codec.encode_analysis(analysis, EncodeOptions(bpp=0.03, roi=((0, 0, 480, 360),)))
    assert "P" not in bitstream.unpack(whole).chunks
    half = (0, 0, 240, 360)  # at the limit
    assert 240 * 360 / (480 * 360) <= decide.MAX_PATCH_AREA
    assert "P" in bitstream.unpack(codec.encode_analysis(analysis, EncodeOptions(bpp=0.03, roi=(half,)))).chunks


def test_a_thumbnail_that_does_not_fit_beside_the_patches_is_sent_without_them(codec: Codec, frames):
    from sqgan_codec import decide

    rgb = frames[0]
    analysis = codec.analyse(rgb)
    overhead = len(decide.with_coarse(codec, analysis, None, b"", 0)) + decide.CHUNK_FRAMING
    crowded = []
    for room in range(40, 200, 2):  # rooms where a patch fits and then no thumbnail does beside it
        patches = decide.roi_patches(rgb, (BOX,), room, {})
        if patches is not None and decide.thumbnail_within(rgb, room - len(patches) - decide.CHUNK_FRAMING) is None \
                and decide.thumbnail_within(rgb, room) is not None:
            crowded.append(room)
    assert crowded
    for room in crowded[:3]:
        data = decide.build(codec, analysis, overhead + room, lambda: b"", 0, "coarse", boxes=(BOX,))
        assert data is not None and "P" not in bitstream.unpack(data).chunks and len(data) <= overhead + room
