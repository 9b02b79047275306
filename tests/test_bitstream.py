"""Tests for the .sqg container (sqgan_codec.bitstream).

Streams are also built here by hand (``frame``), independently of the module's writer,
so the tests check the documented byte format, not just pack/unpack symmetry.
"""
from __future__ import annotations

import dataclasses
import io
import random
import zlib

import pytest

from sqgan_codec import bitstream as bs
from sqgan_codec.bitstream import (
    BASE_VERSION, REFINE_VERSION, FORMAT_MAJOR, FORMAT_MINOR, MAGIC, Header, Stream, decode_varint, encode_varint, pack,
    read_header, unpack,
)
from sqgan_codec.errors import BitstreamError, SqganError, TruncatedError, UnsupportedVersionError

HASH = bytes.fromhex("a1b2c3d4")


def make_header(**overrides) -> Header:
    fields = dict(model_id=3, weights_hash=HASH, width=480, height=360, keep_ssm=0.25, keep_image=0.6)
    fields.update(overrides)
    return Header(**fields)


def frame(kind: str | bytes, payload: bytes) -> bytes:
    """A chunk built straight from the spec: type, LEB128 length, payload, CRC32 BE."""
    type_byte = kind.encode() if isinstance(kind, str) else kind
    return type_byte + encode_varint(len(payload)) + payload + \
        zlib.crc32(type_byte + payload).to_bytes(4, "big")


def header_payload(version_byte: int = 0x10, flags: int = 0, extra: bytes = b"") -> bytes:
    """The H payload of make_header() (480x360, stride 16), built by hand."""
    return bytes([version_byte, flags, 3]) + HASH + encode_varint(480) + encode_varint(360) + \
        bytes([4, 0, 0, 0, 64, 153]) + extra


@pytest.fixture
def stream_bytes() -> bytes:
    return pack(make_header(), [("S", b"semantic tokens"), ("I", b"image tokens, a few more")])


# ---------------------------------------------------------------- varints

@pytest.mark.parametrize("value, encoded", [
    (0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02"),
    (16383, b"\xff\x7f"), (16384, b"\x80\x80\x01"), (2**32 - 1, b"\xff\xff\xff\xff\x0f"),
])
def test_varint_known_values(value, encoded):
    assert encode_varint(value) == encoded
    assert decode_varint(b"junk" + encoded + b"more", 4) == (value, 4 + len(encoded))


@pytest.mark.parametrize("raw, error", [
    (b"\x80\x80\x80\x80\x80\x01", BitstreamError),   # six bytes
    (b"\xff\xff\xff\xff\x1f", BitstreamError),       # 2**35 - 1: beyond 32 bits
    (b"\x80\x00", BitstreamError),                   # overlong zero
    (b"\x80\x80", TruncatedError),
    (b"", TruncatedError),
])
def test_varint_rejects(raw, error):
    with pytest.raises(error):
        decode_varint(raw, 0)


def test_encode_varint_range():
    with pytest.raises(ValueError):
        encode_varint(-1)
    with pytest.raises(ValueError):
        encode_varint(2**32)


# ---------------------------------------------------------------- header and round trips

def test_round_trip(stream_bytes):
    stream = unpack(stream_bytes)
    assert stream == Stream(make_header(), {"S": b"semantic tokens", "I": b"image tokens, a few more"})
    assert stream.truncated is False
    assert read_header(stream_bytes) == make_header()


def test_round_trip_every_header_field():
    header = Header(model_id=70000, weights_hash=b"\x00\xff\x10\x01", width=1 << 20, height=1,
                    colour_mode="L", alpha_dropped=True, latent_stride=256, class_set=7,
                    segmenter_id=2, coder_id=9, keep_ssm=1.0, keep_image=0.0)
    data = pack(header, [("L", b"\x00" * 200), ("I", b"\x01" * 20000)])
    stream = unpack(data)
    assert stream.header == header
    assert stream.chunks == {"L": b"\x00" * 200, "I": b"\x01" * 20000}


def test_writer_matches_hand_built_bytes(stream_bytes):
    expected = MAGIC + frame("H", header_payload()) + frame("S", b"semantic tokens") + \
        frame("I", b"image tokens, a few more")
    assert stream_bytes == expected


def test_keep_ratios_are_quantised_to_bytes():
    header = make_header(keep_ssm=0.4, keep_image=1 / 3)
    assert header.keep_ssm == 102 / 255 and header.keep_image == 85 / 255
    assert unpack(pack(header, [("S", b"")])).header == header


def test_grid_and_padding():
    header = make_header(width=480, height=360)
    assert header.grid == (23, 30)
    assert header.padding == (8, 0)
    assert make_header(width=1, height=1, latent_stride=1).grid == (1, 1)
    assert make_header(width=33, height=16, latent_stride=16).padding == (0, 15)


def test_to_dict():
    info = make_header().to_dict()
    assert info["version"] == "1.0"
    assert info["model"] == 3 and info["weights_hash"] == "a1b2c3d4"
    assert (info["width"], info["height"], info["grid"], info["padding"]) == (480, 360, [23, 30], [8, 0])
    assert info["colour_mode"] == "RGB" and info["class_set"] == "camvid11"
    assert info["segmenter"] == "bundled" and info["coder"] == "constriction-range-v1"
    import json
    json.dumps(info)


@pytest.mark.parametrize("overrides", [
    dict(width=0), dict(height=(1 << 20) + 1), dict(weights_hash=b"abc"), dict(colour_mode="CMYK"),
    dict(latent_stride=12), dict(latent_stride=512), dict(keep_ssm=1.5), dict(class_set=256),
    dict(model_id=-1), dict(version=(0, 0)),
])
def test_header_constructor_validates(overrides):
    with pytest.raises(ValueError):
        make_header(**overrides)


# ---------------------------------------------------------------- overhead

def container_overhead(payload_size: int) -> int:
    payload = b"\x00" * payload_size
    return len(pack(make_header(), [("S", payload), ("I", payload)])) - 2 * payload_size


def test_overhead_480x360():
    # magic 8 + H chunk (6 framing + 17 header) + S and I framing (6 each): 43 bytes.
    assert container_overhead(100) == 43 <= 44
    # Each chunk's length varint grows by a byte at 128 B and again at 16 KiB.
    assert container_overhead(1000) == 45
    assert container_overhead(20000) == 47


# ---------------------------------------------------------------- chunk rules

def test_base_layer_only_is_complete():
    data = pack(make_header(), [("S", b"base")])
    assert unpack(data) == Stream(make_header(), {"S": b"base"}, truncated=False)


def test_unknown_ancillary_chunk_is_skipped():
    data = MAGIC + frame("H", header_payload()) + frame("t", b"a comment") + frame("S", b"s") + \
        frame("x", b"") + frame("I", b"i")
    assert unpack(data).chunks == {"S": b"s", "I": b"i"}
    # ...and pack writes them where it is told to.
    assert pack(make_header(), [("t", b"a comment"), ("S", b"s"), ("x", b""), ("I", b"i")]) == data


def test_damaged_ancillary_chunk_is_still_an_error():
    chunk = bytearray(frame("t", b"a comment"))
    chunk[-1] ^= 1
    with pytest.raises(BitstreamError, match="chunk 't': CRC mismatch"):
        unpack(MAGIC + frame("H", header_payload()) + bytes(chunk) + frame("S", b"s"))


@pytest.mark.parametrize("chunks, message", [
    ([("H", b""), ("S", b"")], "unknown critical|duplicate header"),
    ([("S", b""), ("Q", b"")], "unknown critical chunk 'Q'"),
    ([("S", b""), ("S", b"")], "already has a semantic-map"),
    ([("S", b""), ("L", b"")], "already has a semantic-map"),
    ([("I", b""), ("S", b"")], "before the semantic-map"),
    ([("S", b""), ("I", b""), ("I", b"")], "trailing data"),
    ([("S", b""), ("I", b""), ("t", b"")], "trailing data"),
])
def test_chunk_order_rules(chunks, message):
    data = MAGIC + frame("H", header_payload()) + b"".join(frame(k, p) for k, p in chunks)
    with pytest.raises(BitstreamError, match=message):
        unpack(data)
    with pytest.raises(BitstreamError):
        pack(make_header(), chunks)


@pytest.mark.parametrize("data, message", [
    (b"GIF89a" + bytes(40), "bad magic"),
    (MAGIC.replace(b"\r\n", b"\n") + frame("H", header_payload()), "bad magic"),   # text-mode damage
    (MAGIC + frame("S", b"") + frame("H", header_payload()), "first chunk is 'S'"),
    (MAGIC + frame("t", b"") + frame("H", header_payload()), "first chunk is 't'"),
    (MAGIC + frame(b"7", b""), "invalid chunk type byte 0x37"),
    (MAGIC + b"H\x80\x80\x80\x80\x80\x01", "longer than 5 bytes"),
    (MAGIC + frame("H", header_payload()) + frame("S", b"") + b"\n", "invalid chunk type byte 0x0a"),
])
def test_malformed_streams(data, message):
    with pytest.raises(BitstreamError, match=message):
        unpack(data)


def test_crc_mismatch_names_the_chunk(stream_bytes):
    damaged = bytearray(stream_bytes)
    damaged[-6] ^= 0x20   # inside the I payload
    with pytest.raises(BitstreamError, match="chunk 'I': CRC mismatch"):
        unpack(bytes(damaged))


@pytest.mark.parametrize("payload, error, message", [
    (header_payload(flags=0b11), BitstreamError, "colour mode"),
    (header_payload(flags=0b1000), BitstreamError, "reserved header flag"),
    (header_payload(extra=b"\x00"), BitstreamError, "unexpected byte"),
    (header_payload()[:-1], BitstreamError, "too short"),
    (bytes([0x10, 0, 0x83, 0x00]) + header_payload()[3:], BitstreamError, "header: non-canonical varint"),
    (b"", BitstreamError, "empty"),
    (header_payload(version_byte=0x00), BitstreamError, "invalid format version"),
    (bytes([0x10, 0, 3]) + HASH + b"\x00" + encode_varint(360) + bytes(6), BitstreamError, "width"),
    (bytes([0x10, 0, 3]) + HASH + encode_varint((1 << 20) + 1) + b"\x01" + bytes(6), BitstreamError,
     "width"),
    (header_payload()[:-6] + bytes([9, 0, 0, 0, 0, 0]), BitstreamError, "stride log2"),
    (header_payload() + bytes(bs.MAX_HEADER_BYTES), BitstreamError, "too long"),
])
def test_bad_header_values(payload, error, message):
    data = MAGIC + frame("H", payload) + frame("S", b"")
    with pytest.raises(error, match=message):
        unpack(data)
    with pytest.raises(error, match=message):
        read_header(data)


# ---------------------------------------------------------------- versioning

def test_newer_major_is_rejected_before_reading_the_rest():
    future = (FORMAT_MAJOR + 1) << 4
    data = MAGIC + frame("H", bytes([future]) + b"a layout from the future") + frame("S", b"")
    with pytest.raises(UnsupportedVersionError, match=f"{FORMAT_MAJOR + 1}.0 is newer"):
        unpack(data)
    with pytest.raises(UnsupportedVersionError):
        read_header(data)


def test_newer_minor_with_extra_header_fields_is_accepted():
    payload = header_payload(version_byte=0x13, flags=0b1000_0000, extra=b"new fields \x00\xff")
    data = MAGIC + frame("H", payload) + frame("S", b"s")
    stream = unpack(data)
    assert stream.header == dataclasses.replace(make_header(), version=(1, 3))
    assert stream.header.to_dict()["version"] == "1.3"
    assert read_header(data).version == (1, 3)
    # Re-packing writes the layout this module knows.
    assert unpack(pack(stream.header, [("S", b"s")])).header.version == BASE_VERSION
    assert unpack(pack(stream.header, [("S", b"s"), ("R", b"r")])).header.version == REFINE_VERSION
    assert unpack(pack(stream.header, [("C", b"c"), ("S", b"s")])).header.version == bs.COARSE_FORMAT_VERSION
    assert unpack(pack(stream.header, [("C", b"c"), ("P", b"p"), ("S", b"s")])).header.version == bs.PATCHES_VERSION
    assert unpack(pack(stream.header, [("C", b"c"), ("M", b"\x08m")])).header.version == bs.SCALED_MAP_VERSION
    assert unpack(pack(stream.header, [("C", b"c"), ("M", b"\x08m"), ("F", b"\x02f")])).header.version == \
        (FORMAT_MAJOR, FORMAT_MINOR)


def test_map_detail_chunk_comes_right_after_the_reduced_map():
    header = make_header()
    with pytest.raises(BitstreamError, match="right after the reduced-map chunk"):
        pack(header, [("S", b"s"), ("F", b"\x02f")])
    with pytest.raises(BitstreamError, match="right after the reduced-map chunk"):
        pack(header, [("F", b"\x02f"), ("M", b"\x08m")])
    stream = unpack(pack(header, [("M", b"\x08m"), ("F", b"\x02f"), ("I", b"i")]))
    assert list(stream.chunks) == ["M", "F", "I"]
    # a format 6.0 stream cannot hold F: a reader refuses it rather than misread the map
    old = MAGIC + frame("H", header_payload(version_byte=0x60)) + frame("M", b"\x08m") + frame("F", b"\x02f")
    with pytest.raises(BitstreamError, match="needs 7.0"):
        unpack(old)


# ---------------------------------------------------------------- read_header sources

def test_read_header_from_path_and_file_object(tmp_path, stream_bytes):
    path = tmp_path / "image.sqg"
    path.write_bytes(stream_bytes)
    assert read_header(path) == make_header()
    assert read_header(str(path)) == make_header()
    with open(path, "rb") as file:
        assert read_header(file) == make_header()
        header_end = len(MAGIC) + len(frame("H", header_payload()))
        assert file.tell() == header_end   # read only the header
    assert read_header(bytearray(stream_bytes)) == make_header()


def test_read_header_handles_short_reads(stream_bytes):
    class Trickle(io.RawIOBase):
        """Returns at most one byte per read, as a pipe might."""

        def __init__(self, data: bytes):
            self.data, self.pos = data, 0

        def readable(self):
            return True

        def read(self, n=-1):
            chunk = self.data[self.pos:self.pos + min(n, 1)]
            self.pos += len(chunk)
            return chunk

    assert read_header(Trickle(stream_bytes)) == make_header()


def test_read_header_needs_only_the_header(stream_bytes):
    header_end = len(MAGIC) + len(frame("H", header_payload()))
    assert read_header(stream_bytes[:header_end]) == make_header()
    for cut in range(header_end):
        with pytest.raises(TruncatedError):
            read_header(stream_bytes[:cut])


# ---------------------------------------------------------------- damage: flips, truncations, fuzz

def chunk_ends(data: bytes) -> list[int]:
    """Offsets just after each chunk of an undamaged stream."""
    ends, pos = [], len(MAGIC)
    while pos < len(data):
        length, start = decode_varint(data, pos + 1)
        pos = start + length + 4
        ends.append(pos)
    return ends


def test_every_single_byte_flip_is_detected(stream_bytes):
    original = unpack(stream_bytes)
    survived = 0
    for pos in range(len(stream_bytes)):
        for mask in (1, 2, 4, 8, 16, 32, 64, 128, 0xFF):
            damaged = bytearray(stream_bytes)
            damaged[pos] ^= mask
            try:
                stream = unpack(bytes(damaged))
            except BitstreamError:
                continue
            assert stream == original, f"flip 0x{mask:02x} at {pos} changed the data silently"
            survived += 1
    assert survived == 0


def test_every_truncation(stream_bytes):
    header_end, semantic_end, image_end = chunk_ends(stream_bytes)
    full = unpack(stream_bytes)
    for cut in range(len(stream_bytes)):
        prefix = stream_bytes[:cut]
        if cut == semantic_end:   # a valid base-layer-only stream
            assert unpack(prefix) == Stream(full.header, {"S": full.chunks["S"]}, truncated=False)
            continue
        with pytest.raises(TruncatedError):
            unpack(prefix)
        if cut < header_end:
            with pytest.raises(TruncatedError):
                unpack(prefix, allow_truncated=True)
            continue
        stream = unpack(prefix, allow_truncated=True)
        assert stream.truncated and stream.header == full.header
        expected = {"S": full.chunks["S"]} if cut > semantic_end else {}
        assert stream.chunks == expected
    assert image_end == len(stream_bytes)


def mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        op = rng.choice(("flip", "set", "insert", "delete", "truncate", "duplicate"))
        pos = rng.randrange(len(out) + 1)
        if op == "flip" and pos < len(out):
            out[pos] ^= 1 << rng.randrange(8)
        elif op == "set" and pos < len(out):
            out[pos] = rng.randrange(256)
        elif op == "insert":
            out[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == "delete":
            del out[pos:pos + rng.randint(1, 8)]
        elif op == "truncate":
            del out[pos:]
        elif op == "duplicate":
            out[pos:pos] = out[rng.randrange(len(out) + 1):][:rng.randint(1, 40)]
    return bytes(out)


def test_fuzz_mutated_streams_fail_cleanly():
    rng = random.Random(20240517)
    seeds = [
        pack(make_header(), [("S", b"s" * 40), ("I", bytes(range(256)))]),
        pack(make_header(colour_mode="L", width=7, height=9), [("t", b"note"), ("L", b"\x01" * 150)]),
        MAGIC + frame("H", header_payload(version_byte=0x11, extra=b"xyz")) + frame("S", b"")
        + frame("I", b"\x00"),
    ]
    outcomes = {"valid": 0, "error": 0}
    for i in range(3000):
        data = mutate(seeds[i % len(seeds)], rng)
        for allow_truncated in (False, True):
            try:
                stream = unpack(data, allow_truncated=allow_truncated)
            except SqganError:
                outcomes["error"] += 1
            else:
                outcomes["valid"] += 1
                assert isinstance(stream.header, Header)
        try:
            read_header(data)
        except SqganError:
            pass
    # Every mutation ended in a clean error or a parse; both happened.
    assert outcomes["error"] > 5000 and outcomes["valid"] > 0


def test_fuzz_with_valid_crcs_reaches_the_parsers():
    """CRCs stop most fuzzed bytes at the framing; re-frame mutated header payloads and
    chunk sequences so the header parser and the order rules see them too."""
    rng = random.Random(7)
    kinds = "HSLIRQhtz"
    parsed = rejected = 0
    for i in range(3000):
        payload = mutate(header_payload(version_byte=rng.choice((0x10, 0x12))), rng)
        if i % 10 == 0:
            payload = bytes(rng.randrange(256) for _ in range(rng.randrange(30)))
        tail = b"".join(frame(rng.choice(kinds), b"p" * rng.randrange(3)) for _ in range(rng.randrange(5)))
        data = MAGIC + frame("H", payload) + tail
        try:
            stream = unpack(data, allow_truncated=bool(i % 2))
        except SqganError:
            rejected += 1
            continue
        parsed += 1
        assert set(stream.chunks) <= {"S", "L", "I", "R"}
        assert read_header(data) == stream.header
    # both sides of the parsers were reached: some mutants parse, most are refused
    assert parsed >= 30 and rejected >= 300, (parsed, rejected)


def test_refinement_chunk_needs_format_2() -> None:
    """R is critical: a stream declaring 1.x (which 1.x readers decode) may not carry it."""
    data = MAGIC + frame("H", header_payload()) + frame("S", b"s") + frame("R", b"r")
    with pytest.raises(BitstreamError, match="chunk 'R' in a format 1.0 stream"):
        unpack(data)
    ok = MAGIC + frame("H", header_payload(version_byte=0x20)) + frame("S", b"s") + frame("R", b"r")
    assert unpack(ok).chunks == {"S": b"s", "R": b"r"}
    plain = pack(make_header(), [("S", b"s"), ("I", b"i")])
    refined = bs.append_refinement(plain, b"rr")
    assert unpack(plain).header.version == (1, 0) and unpack(refined).header.version == (2, 0)
    assert refined.endswith(plain[len(plain) - len(frame("S", b"s")) - len(frame("I", b"i")):] + frame("R", b"rr"))
