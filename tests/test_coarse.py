"""The coarse-image layer (chunk C), the encoder's mode decision and the domain check."""
from __future__ import annotations

import argparse
import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sqgan_codec import bitstream, coarse, decide, rate
from sqgan_codec.codec import Codec, EncodeOptions
from sqgan_codec.errors import BitstreamError, UnfamiliarImageWarning

from conftest import PHOTOS, camvid_test_image

SAMPLE = Path(__file__).resolve().parents[1] / "sqgan_codec" / "samples" / "street.png"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


@pytest.fixture(scope="module")
def street() -> np.ndarray:
    return camvid_test_image(40)


# ------------------------------------------------------------------ the thumbnail coder

def test_vp8_thumbnail_decodes_to_what_libwebp_decodes(street):
    h, w = street.shape[:2]
    thumb = coarse.Thumbnail(street, 4, coarse.FORMAT_VP8)
    payload = thumb.encode(30)
    small = coarse.decode_small(payload, w, h)
    assert small.shape == (-(-h // 4), -(-w // 4), 3)
    # the same frame in its own RIFF wrapper, decoded by Pillow directly: identical pixels
    buf = io.BytesIO()
    thumb.small.save(buf, "WEBP", quality=30, method=6)
    assert np.array_equal(np.asarray(Image.open(buf).convert("RGB")), small)
    # the wrapper is not stored: the payload is 2 bytes plus the VP8 frame
    assert len(payload) == len(buf.getvalue()) - 20 + 2


@pytest.mark.parametrize("scale, speed", [(1, coarse.AV1_SEARCH_SPEED), (3, coarse.AV1_SPEED), (8, 8)])
def test_av1_thumbnail_decodes_to_what_libavif_decodes(street, scale, speed):
    h, w = street.shape[:2]
    thumb = coarse.Thumbnail(street, scale)
    assert thumb.format == coarse.FORMAT_AV1
    payload = thumb.encode(30, speed=speed)
    small = coarse.decode_small(payload, w, h)
    assert small.shape == (-(-h // scale), -(-w // scale), 3)
    # the same picture as the AVIF file Pillow writes, decoded by Pillow: identical pixels
    buf = io.BytesIO()
    thumb.small.save(buf, "AVIF", quality=30, speed=speed, subsampling="4:2:0", max_threads=1, range="full")
    assert np.array_equal(np.asarray(Image.open(buf).convert("RGB")), small)
    # the AVIF boxes are not stored: the payload is much smaller than the file
    assert len(payload) <= len(buf.getvalue()) - 200
    # the presets code the same quality at about the same size
    assert len(thumb.frame(30, coarse.AV1_SPEED)) < 1.15 * len(thumb.frame(30))


def test_av1_thumbnail_is_more_faithful_than_vp8_at_the_same_size(street):
    h, w = street.shape[:2]
    gains = []
    for scale in (2, 4):
        sizes = {}
        for fmt in (coarse.FORMAT_VP8, coarse.FORMAT_AV1):
            thumb = coarse.Thumbnail(street, scale, fmt)
            q = thumb.fit(600)
            frame = thumb.final_frame(q, lambda f: 2 + len(f) <= 600) or thumb.frame(q)
            payload = coarse.payload(coarse.RENDER_UPSAMPLE, scale, frame, fmt=fmt)
            assert len(payload) <= 600
            sizes[fmt] = psnr(coarse.upsample(coarse.decode_small(payload, w, h), w, h), street)
        gains.append(sizes[coarse.FORMAT_AV1] - sizes[coarse.FORMAT_VP8])
    assert min(gains) > 0.1, gains


def test_the_sent_frame_is_the_same_coded_one_by_one_or_several_at_once(street):
    """The sent frame's search codes frames on several threads (libaom releases the GIL): the
    same frame as with one thread, at every budget, and the same frames as coding them alone."""
    import torch

    threads = torch.get_num_threads()
    try:
        for room, scale in ((250, 8), (600, 4), (1500, 3)):
            chosen = {}
            for n in (1, 3):
                torch.set_num_threads(n)
                thumb = coarse.Thumbnail(street, scale)
                q = thumb.fit(room)
                assert q is not None
                chosen[n] = thumb.final_frame(q, lambda f: 2 + len(f) <= room, lambda f: 2 + len(f) >= 0.97 * room)
                assert chosen[n] is not None and 2 + len(chosen[n]) <= room
            assert chosen[1] == chosen[3], room
        torch.set_num_threads(3)
        thumb = coarse.Thumbnail(street, 3)
        thumb.code_ahead([(q, coarse.AV1_SPEED, None) for q in (20, 21, 22)] + [(20, coarse.AV1_SPEED, 5)])
        alone = coarse.Thumbnail(street, 3)
        assert [thumb.frame(q, coarse.AV1_SPEED) for q in (20, 21, 22)] == [alone.frame(q, coarse.AV1_SPEED) for q in (20, 21, 22)]
        assert thumb.sharpened(20, 5) == alone.sharpened(20, 5) != alone.frame(20, coarse.AV1_SPEED)
    finally:
        torch.set_num_threads(threads)


def test_thumbnail_fit_is_the_best_quality_that_fits(street):
    thumb = coarse.Thumbnail(street, 6)
    room = 300
    q = thumb.fit(room)
    assert q is not None and 2 + len(thumb.frame(q)) <= room
    assert q == coarse.MAX_QUALITY or 2 + len(thumb.frame(q + 1)) > room
    assert thumb.fit(10) is None


@pytest.mark.parametrize("fmt, damage, message", [
    (coarse.FORMAT_VP8, lambda p: p[:8], "too short"),
    (coarse.FORMAT_VP8, lambda p: bytes([7]) + p[1:], "unknown render mode"),
    (coarse.FORMAT_AV1, lambda p: bytes([0x20]) + p[1:], "unknown thumbnail format"),
    (coarse.FORMAT_VP8, lambda p: p[:1] + bytes([5]) + p[2:], "invalid scale"),
    (coarse.FORMAT_VP8, lambda p: p[:1] + bytes([1]) + p[2:], "invalid scale 1 for a vp8"),
    (coarse.FORMAT_VP8, lambda p: p[:2] + b"\x00" * 10 + p[12:], "not a VP8 key frame"),
    (coarse.FORMAT_AV1, lambda p: p[:2] + b"\x32\x00" + p[2:], "does not start with a sequence header"),
    (coarse.FORMAT_AV1, lambda p: p[:2] + p[2:4] + b"\x00" + p[5:], "not a reduced still picture"),
    (coarse.FORMAT_AV1, lambda p: p[:-40], "cannot be decoded"),
])
def test_damaged_coarse_payloads_are_refused(street, fmt, damage, message):
    h, w = street.shape[:2]
    payload = coarse.Thumbnail(street, 4, fmt).encode(20)
    with pytest.raises(BitstreamError, match=message):
        coarse.decode_small(damage(payload), w, h)


@pytest.mark.parametrize("fmt", [coarse.FORMAT_VP8, coarse.FORMAT_AV1])
def test_a_thumbnail_for_another_size_is_refused_before_decoding(street, fmt):
    h, w = street.shape[:2]
    payload = coarse.Thumbnail(street, 4, fmt).encode(20)
    with pytest.raises(BitstreamError, match="expected"):
        coarse.decode_small(payload, w * 8, h * 8)
    if fmt == coarse.FORMAT_AV1:  # the sequence header states the size; a huge claim is refused
        huge = np.zeros((4096, 4096, 3), np.uint8)
        big = coarse.Thumbnail(huge, 16).encode(0)  # 256x256: the header alone says so
        with pytest.raises(BitstreamError, match="256x256, expected"):
            coarse.decode_small(big, w, h)
        return
    # a frame header that claims a huge picture is caught from its header alone
    frame = bytearray(payload[2:])
    frame[6:10] = struct.pack("<HH", 16383, 16383)
    with pytest.raises(BitstreamError, match="16383x16383"):
        coarse.decode_small(payload[:2] + bytes(frame), w, h)


# ------------------------------------------------------------------ container

def _header() -> bitstream.Header:
    return bitstream.Header(model_id=1, weights_hash=b"\x01\x02\x03\x04", width=64, height=48)


def test_coarse_chunk_makes_a_format_3_stream_that_may_end_after_it():
    data = bitstream.pack(_header(), [("C", b"\x00" + b"c" * 19)])  # a VP8 thumbnail
    stream = bitstream.unpack(data)
    assert stream.header.version == bitstream.COARSE_VERSION and not stream.truncated
    both = bitstream.pack(_header(), [("C", b"\x00" + b"c" * 19), ("S", b"s"), ("I", b"i")])
    assert list(bitstream.unpack(both).chunks) == ["C", "S", "I"]
    cut = bitstream.unpack(both[:-3], allow_truncated=True)
    assert cut.truncated and list(cut.chunks) == ["C", "S"]
    # streams without C keep the versions older readers know
    assert bitstream.unpack(bitstream.pack(_header(), [("S", b"s")])).header.version == bitstream.BASE_VERSION


def test_coarse_chunk_order_and_version_rules():
    with pytest.raises(BitstreamError, match="first after the header"):
        bitstream.pack(_header(), [("S", b"s"), ("C", b"c")])
    with pytest.raises(BitstreamError, match="before the semantic-map chunk"):
        bitstream.pack(_header(), [("C", b"c"), ("I", b"i")])
    # a C chunk inside a stream that declares an older version is damage, not a new layer
    old = bitstream.pack(_header(), [("S", b"s")])
    forged = old + bitstream.frame_chunk("C", b"c")
    with pytest.raises(BitstreamError):
        bitstream.unpack(forged)
    header_end = bitstream.read_chunk(memoryview(old), len(bitstream.MAGIC))[2]
    forged = old[:header_end] + bitstream.frame_chunk("C", b"c") + old[header_end:]
    with pytest.raises(BitstreamError, match="needs 3.0"):
        bitstream.unpack(forged)


def test_an_av1_coarse_chunk_makes_a_format_4_stream_and_needs_one():
    av1 = bytes([coarse.FORMAT_AV1 << 4, 4]) + b"c" * 20
    vp8 = bytes([coarse.FORMAT_VP8 << 4, 4]) + b"c" * 20
    assert bitstream.unpack(bitstream.pack(_header(), [("C", av1)])).header.version == bitstream.COARSE_FORMAT_VERSION
    old = bitstream.pack(_header(), [("C", vp8)])
    assert bitstream.unpack(old).header.version == bitstream.COARSE_VERSION
    # a format-3.0 stream whose C chunk names AV1 is damage (3.0 readers would misread it)
    header_end = bitstream.read_chunk(memoryview(old), len(bitstream.MAGIC))[2]
    forged = old[:header_end] + bitstream.frame_chunk("C", av1)
    with pytest.raises(BitstreamError, match="needs 4.0"):
        bitstream.unpack(forged)


# ------------------------------------------------------------------ codec

def test_coarse_only_stream_is_faithful(codec: Codec, street):
    analysis = codec.analyse(street)
    thumb, quality = decide.thumbnail_within(street, 500)
    data = decide.with_coarse(codec, analysis, None, thumb.encode(quality), 0)
    assert len(data) <= 540 and list(bitstream.unpack(data).chunks) == ["C"]
    out = np.asarray(codec.decode(data))
    tokens = np.asarray(codec.decode(codec.encode(street, bpp=0.025, tune="semantic")))
    # the thumbnail alone is much nearer the picture than what the tokens paint at this size
    assert psnr(out, street) > psnr(tokens, street) + 1.5
    image, semantic_map = codec.decode_with_map(data)
    assert semantic_map is None and image.size == (street.shape[1], street.shape[0])
    with pytest.raises(BitstreamError, match="no semantic-map layer"):
        codec.decode_semantic_map(data)


@pytest.mark.parametrize("tune", ["balanced", "perceptual"])
@pytest.mark.parametrize("bpp", [0.025, 0.05, 0.1])
def test_rate_control_with_candidates_never_goes_over(codec: Codec, street, bpp, tune):
    h, w = street.shape[:2]
    decision = codec.encode_with_decision(street, bpp=bpp, tune=tune)
    budget = bpp * w * h / 8
    assert len(decision.data) <= budget
    assert len(decision.data) >= 0.97 * budget, decision.to_dict()
    if tune == "balanced":  # a familiar image: the map exact at the finest scale that pays, no candidate decoded
        assert decision.scores == {} and decision.mode.startswith("scaled"), decision.to_dict()
        factor = int(decision.mode[6:].split("-")[0])
        chunk = bitstream.unpack(decision.data).chunks[bitstream.CHUNK_SEMANTIC_SCALED]
        assert chunk[0] == factor and len(chunk) <= decide.BALANCED_MAP_SHARE * budget
        finer = [f for f in decide.BALANCED_MAP_SCALES if f < factor]
        if finer:  # the next finer scale would cost more than the share
            analysis = codec.analyse(street)
            assert len(codec.pack(analysis, 0, 0, ssm="lossless", map_scale=max(finer))) > \
                decide.BALANCED_MAP_SHARE * budget
    else:  # the best-scoring of the candidates built
        assert len(decision.scores) >= 3 and decision.scores[decision.mode] == max(decision.scores.values())
    out = np.asarray(codec.decode(decision.data))
    assert out.shape == street.shape


def test_semantic_tune_is_the_token_codec(codec: Codec, street):
    decision = codec.encode_with_decision(street, bpp=0.05, tune="semantic")
    assert decision.mode == "tokens"
    assert bitstream.CHUNK_COARSE not in bitstream.unpack(decision.data).chunks
    with pytest.raises(ValueError, match="tune"):
        EncodeOptions(bpp=0.05, tune="pretty")


def test_learned_render_needs_the_coarse_decoder_it_was_made_for(codec: Codec, street):
    if not codec.coarse_tag():
        pytest.skip("this installation ships no coarse decoder")
    analysis = codec.analyse(street)
    thumb, quality = decide.thumbnail_within(street, 600)
    learned = decide.with_coarse(codec, analysis, None,
                                  thumb.encode(quality, coarse.RENDER_LEARNED, codec.coarse_tag()), 0)
    assert np.asarray(codec.decode(learned)).shape == street.shape
    other = bytes(b ^ 0xFF for b in codec.coarse_tag())
    forged = decide.with_coarse(codec, analysis, None, thumb.encode(quality, coarse.RENDER_LEARNED, other), 0)
    from sqgan_codec.errors import ModelMismatchError

    with pytest.raises(ModelMismatchError, match="coarse decoder"):
        codec.decode(forged)


def test_bundled_sample_keeps_every_objects_colour(codec: Codec):
    """The first picture a new user sees: at 0.025 bpp each object (a connected region of one
    class in the original's semantic map, ≥ 0.5 % of the frame) keeps its mean colour."""
    rgb = np.asarray(Image.open(SAMPLE).convert("RGB"))
    out = np.asarray(codec.decode(codec.encode(rgb, bpp=0.025)).convert("RGB")).astype(np.float64)
    import cv2

    labels = codec.segmenter.segment(rgb)
    worst = 0.0
    for c in np.unique(labels):
        n, comp = cv2.connectedComponents((labels == c).astype(np.uint8))
        for k in range(1, n):
            region = comp == k
            if region.mean() < 0.005:
                continue
            diff = np.abs(out[region].mean(0) - rgb[region].astype(np.float64).mean(0)).max()
            worst = max(worst, diff)
    assert worst < 25, f"an object's mean colour moved by {worst:.0f} levels"


@pytest.mark.slow
def test_unfamiliar_image_is_reported_and_coded_from_the_thumbnail(codec: Codec, street):
    assert not codec.encode_with_decision(street, bpp=0.05).unfamiliar  # a CamVid test frame
    photos = sorted(PHOTOS.glob("*.png")) if PHOTOS.is_dir() else []
    if not photos:
        pytest.skip("photos not beside the repo")
    rgb = np.asarray(Image.open(photos[0]).convert("RGB"))
    # a photo recoloured into colours no street has: nothing like the training domain
    rgb = np.ascontiguousarray(rgb[..., ::-1])
    decision = codec.encode_with_decision(rgb, bpp=0.05)
    assert decision.unfamiliar and decision.mode != "tokens", decision.to_dict()
    with pytest.warns(UnfamiliarImageWarning, match="unlike what the model was trained on"):
        codec.encode(rgb, bpp=0.05)
    # only the pixels count there: what is sent is no further from the image than the thumbnail
    # alone (the candidate as the decision saw it) by more than the slack
    analysis = codec.analyse(rgb)
    budget = 0.05 * rgb.shape[0] * rgb.shape[1] / 8
    alone = decide.build(codec, analysis, budget, lambda: b"", 0, "coarse")
    sent = psnr(np.asarray(codec.decode(decision.data)), rgb)
    assert sent >= psnr(np.asarray(codec.decode(alone)), rgb) - decide.UNFAMILIAR_PSNR_SLACK, decision.to_dict()


def test_the_sent_thumbnail_is_coded_again_more_faithfully_within_the_budget(codec: Codec, street):
    analysis = codec.analyse(street)
    for bpp in (0.025, 0.1):
        budget = bpp * street.shape[0] * street.shape[1] / 8
        quick = decide.build(codec, analysis, budget, lambda: b"", 0, "coarse")
        sent = decide.finalise(codec, analysis, quick, budget, 0)
        assert len(sent) <= budget and bitstream.unpack(sent).header.version == bitstream.COARSE_FORMAT_VERSION
        assert psnr(np.asarray(codec.decode(sent)), street) > psnr(np.asarray(codec.decode(quick)), street) + 0.1
    assert codec.thumbnail_format(coarse.RENDER_UPSAMPLE) == coarse.FORMAT_AV1
    # a mixed stream's token layers take the room its final thumbnail leaves: within 3 %
    for bpp in (0.025, 0.05, 0.1):
        budget = bpp * street.shape[0] * street.shape[1] / 8
        mixed = decide.build(codec, analysis, budget, lambda: b"", 0, "mixed-25")
        sent = decide.finalise(codec, analysis, mixed, budget, 0)
        assert decide.FILL * budget <= len(sent) <= budget
        assert list(bitstream.unpack(sent).chunks)[:2] == ["C", "S"]


def test_decode_many_mixes_modes_like_one_by_one(codec: Codec, street):
    analysis = codec.analyse(street)
    options = EncodeOptions(bpp=0.05)
    budget = rate.budget_of(analysis, options)
    streams = decide.candidates(codec, analysis, budget, rate.token_stream(codec, analysis, options, 0), 0)
    assert {"tokens", "coarse"} <= set(streams)
    names = list(streams)
    together = codec.decode_many([streams[n] for n in names])
    for name, image in zip(names, together):
        alone = np.asarray(codec.decode(streams[name])).astype(int)
        assert np.abs(np.asarray(image).astype(int) - alone).max() <= 1, name


def test_a_retrained_coarse_decoder_keeps_old_streams_decodable(tmp_path, monkeypatch):
    """Shipping a new coarse decoder (export-coarse) keeps the one it replaces under a tagged
    name: streams made for the old one decode with it, to the same pixels; new streams name the
    new one."""
    import json
    import shutil

    import torch
    from safetensors.torch import load_file

    from sqgan_codec import registry
    from sqgan_codec.train import export

    src = registry.weights_dir()
    for p in src.iterdir():
        if p.suffix in (".json", ".safetensors"):
            shutil.copy(p, tmp_path / p.name)
    golden = Path(__file__).resolve().parent / "golden" / "v3_mixed_0.05.sqg"
    old_stream = golden.read_bytes()
    before = np.asarray(Codec(device="cpu").decode(old_stream))
    state = {k: v.float() for k, v in load_file(str(src / "coarse-camvid11.safetensors")).items()}
    head = [k for k in state if k.endswith("weight")][-1]
    state[head] = state[head] * 1.5  # "retrained": other weights, another tag
    config = json.loads((src / "registry.json").read_text())["models"]["coarse-camvid11"]["config"]
    ckpt = tmp_path / "last.pt"
    torch.save({"model": state, "step": 1, "elapsed": 60.0, "config": {k: v for k, v in config.items() if k != "sqgan"},
                "args": {"sqgan": "sqgan-camvid11"}}, ckpt)
    monkeypatch.setenv(registry.WEIGHTS_ENV, str(tmp_path))
    registry.reload()
    try:
        before_names = set(json.loads((tmp_path / "registry.json").read_text())["models"])
        shipped_tag = registry.get("coarse-camvid11").sha256[:4]
        export.export_coarse(argparse.Namespace(checkpoint=str(ckpt), weights=str(tmp_path)))
        reg = json.loads((tmp_path / "registry.json").read_text())["models"]
        kept = f"coarse-camvid11-{shipped_tag}"
        assert set(reg) - before_names == {kept} and (tmp_path / f"{kept}.safetensors").exists()
        codec = Codec(device="cpu")
        old_tag = bytes.fromhex(shipped_tag)
        archived = {bytes.fromhex(n[-4:]) for n in reg if n.startswith("coarse-camvid11-") and n != "coarse-camvid11-priority"}
        assert codec.coarse_tag() not in archived
        assert set(codec.coarse_entries()) == archived | {codec.coarse_tag(), codec.coarse_tag(priority=True)}
        assert not torch.equal(codec.coarse_decoder().state_dict()[head],
                               codec.coarse_decoder(old_tag).state_dict()[head])
        assert np.array_equal(np.asarray(codec.decode(old_stream)), before)  # the old decoder, found by tag
        street = camvid_test_image(0)
        new = codec.encode(street, bpp=0.05, tune="perceptual")
        stream = bitstream.unpack(new)
        if "C" in stream.chunks and coarse.parse(stream.chunks["C"], 480, 360)[0] == coarse.RENDER_LEARNED:
            assert coarse.parse(stream.chunks["C"], 480, 360)[2] == codec.coarse_tag()
    finally:
        monkeypatch.delenv(registry.WEIGHTS_ENV)
        registry.reload()


def test_streams_sent_with_a_priority_name_the_priority_coarse_decoder(tmp_path, monkeypatch):
    """``export-coarse --priority`` ships a second coarse decoder beside the current one: streams
    sent with a class priority name it and decode with it, the others keep the current one, and
    a later export of the current decoder keeps the priority one named."""
    import json
    import shutil

    import torch
    from safetensors.torch import load_file

    from sqgan_codec import registry
    from sqgan_codec.train import export

    src = registry.weights_dir()
    for p in src.iterdir():
        if p.suffix in (".json", ".safetensors"):
            shutil.copy(p, tmp_path / p.name)
    reg_path = tmp_path / "registry.json"
    reg = json.loads(reg_path.read_text())
    reg["models"]["sqgan-camvid11"]["config"].pop("coarse_decoder_priority", None)  # start from none named
    reg_path.write_text(json.dumps(reg))
    state = {k: v.float() for k, v in load_file(str(src / "coarse-camvid11.safetensors")).items()}
    head = [k for k in state if k.endswith("weight")][-1]
    state[head] = state[head] * 1.5  # another decoder: other weights, another tag
    config = json.loads((src / "registry.json").read_text())["models"]["coarse-camvid11"]["config"]
    ckpt = tmp_path / "last.pt"
    torch.save({"model": state, "step": 1, "elapsed": 60.0, "config": {k: v for k, v in config.items() if k != "sqgan"},
                "args": {"sqgan": "sqgan-camvid11", "thumbnail_format": config.get("thumbnail_format", "vp8")}}, ckpt)
    monkeypatch.setenv(registry.WEIGHTS_ENV, str(tmp_path))
    registry.reload()
    try:
        plain_codec = Codec(device="cpu")
        default_tag = plain_codec.coarse_tag()
        assert plain_codec.coarse_tag(priority=True) == default_tag  # none shipped: the current one
        export.export_coarse(argparse.Namespace(checkpoint=str(ckpt), weights=str(tmp_path), priority=True))
        reg = json.loads((tmp_path / "registry.json").read_text())["models"]
        assert reg["sqgan-camvid11"]["config"]["coarse_decoder"] == "coarse-camvid11"
        assert reg["sqgan-camvid11"]["config"]["coarse_decoder_priority"] == "coarse-camvid11-priority"
        codec = Codec(device="cpu")
        priority_tag = codec.coarse_tag(priority=True)
        assert codec.coarse_tag() == default_tag != priority_tag and priority_tag in codec.coarse_entries()
        street = camvid_test_image(0)
        tags = {}
        for key, priority in (("plain", None), ("priority", {"Pedestrian": 4})):
            data = codec.encode(street, bpp=0.03, priority=priority)
            chunk = coarse.parse(bitstream.unpack(data).chunks["C"], 480, 360)
            assert chunk.render == coarse.RENDER_LEARNED
            tags[key] = chunk.tag
            if priority:  # decoded by the decoder it names: another picture than the current one gives
                decoded = np.asarray(codec.decode(data)).astype(int)
                with codec.coarse_decoder_swapped(priority_tag, default_tag):
                    assert np.abs(np.asarray(codec.decode(data)).astype(int) - decoded).mean() > 0.5
                assert np.array_equal(np.asarray(codec.decode(data)).astype(int), decoded)  # its own again
        assert tags == {"plain": default_tag, "priority": priority_tag}
        # shipping the current decoder again keeps the priority one named beside it
        state[head] = state[head] * 0.5
        torch.save({"model": state, "step": 2, "elapsed": 60.0, "config": {k: v for k, v in config.items() if k != "sqgan"},
                    "args": {"sqgan": "sqgan-camvid11"}}, ckpt)
        export.export_coarse(argparse.Namespace(checkpoint=str(ckpt), weights=str(tmp_path)))
        assert json.loads((tmp_path / "registry.json").read_text())["models"]["sqgan-camvid11"]["config"][
            "coarse_decoder_priority"] == "coarse-camvid11-priority"
    finally:
        monkeypatch.delenv(registry.WEIGHTS_ENV)
        registry.reload()


def test_an_unfamiliar_image_runs_the_token_networks_only_when_a_token_is_sent(codec: Codec):
    """The domain check comes from the segmenter's pass; on an image it flags, G_s and G_x wait
    until a stream needs tokens (the coarse image alone needs none), and the streams are the
    same as with the tokens computed up front."""
    rgb = np.asarray(Image.open(SAMPLE).convert("RGB"))  # synthetic: unlike CamVid
    lazy = codec.analyse(rgb)
    assert lazy.cache["confidence"] < decide.UNFAMILIAR_CONFIDENCE and not lazy.tokens_computed
    eager = codec.analyse(rgb, lazy=False)
    assert eager.tokens_computed
    with pytest.warns(UnfamiliarImageWarning):
        sent = codec.encode_analysis(lazy, bpp=0.05)
    assert not lazy.tokens_computed and "C" in bitstream.unpack(sent).chunks
    with pytest.warns(UnfamiliarImageWarning):
        assert codec.encode_analysis(eager, bpp=0.05) == sent
    semantic = codec.encode_analysis(lazy, bpp=0.05, tune="semantic")
    assert lazy.tokens_computed and semantic == codec.encode_analysis(eager, bpp=0.05, tune="semantic")
    np.testing.assert_array_equal(lazy.image_indices, eager.image_indices)


@pytest.mark.parametrize("bpp", [0.025, 0.05, 0.1])
def test_a_thumbnail_only_stream_fills_its_budget(codec: Codec, bpp):
    """AV1's quality steps are ~5 % of the size apart; a stream of the coarse image alone (an
    unfamiliar image: the bundled synthetic sample) still ends within 3 % of its budget."""
    rgb = np.asarray(Image.open(SAMPLE).convert("RGB"))
    budget = bpp * rgb.shape[0] * rgb.shape[1] / 8
    decision = codec.encode_with_decision(rgb, bpp=bpp)
    assert decision.unfamiliar and list(bitstream.unpack(decision.data).chunks) == ["C"], decision.to_dict()
    assert 0.97 * budget <= len(decision.data) <= budget
