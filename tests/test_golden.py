"""Conformance: streams written by earlier versions of the codec still decode, to the same tokens.

``tests/golden/*.sqg`` were written from the bundled synthetic sample (format 1.0: tokens only,
and 2.0: with a refinement layer, by commit 9b7c637; 3.0: a coarse image alone, and with map and
tokens through coarse-camvid11, by the release that introduced them; 4.0: an AV1 coarse image;
5.0: patches over a region of interest; 6.0: the map coded exactly at 1/8 (its decoded map checked too);
``p1_*``: a packet stream of packet format 1); ``expected.json`` holds
what that code decoded: the SHA-256 of the token grids (and of the thumbnail), and the mean
pixel value. Later releases add streams (``tests/golden/add_streams.py``, which never rewrites
one): a coarse image through the coarse decoder alone, an exactly coded map, a grey image. The streams name the weights they were made with: if the
shipped SQ-GAN weights are ever replaced, these files must be regenerated (and the old weights
kept available for old streams, or the break documented).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from sqgan_codec import bitstream, coarse, packets
from sqgan_codec.codec import Codec

GOLDEN = Path(__file__).resolve().parent / "golden"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_stream_decodes_as_it_did(codec: Codec, name: str) -> None:
    data = (GOLDEN / f"{name}.sqg").read_bytes()
    expected = EXPECTED[name]
    assert len(data) == expected["bytes"]
    if packets.is_packet_stream(data):
        assert f"packets {packets.read_header(data)[1]['version']}" == expected["version"]
    else:
        assert ".".join(map(str, bitstream.unpack(data).header.version)) == expected["version"]
    assert codec.token_digest(data) == expected["tokens_sha256"]
    if "thumbnail_sha256" in expected:  # the coarse image decodes bit-exactly
        stream = bitstream.unpack(data)
        small = coarse.decode_small(stream.chunks["C"], stream.header.width, stream.header.height)
        assert hashlib.sha256(small.tobytes()).hexdigest() == expected["thumbnail_sha256"]
    if "thumbnail_mean" in expected:  # AV1: the samples are exact, RGB conversion within a level
        stream = bitstream.unpack(data)
        small = coarse.decode_small(stream.chunks["C"], stream.header.width, stream.header.height)
        assert np.abs(small.reshape(-1, 3).mean(0) - expected["thumbnail_mean"]).max() < 0.5
    if "map_sha256" in expected:  # an exactly coded map decodes bit-exactly
        assert hashlib.sha256(codec.decode_with_map(data)[1].tobytes()).hexdigest() == expected["map_sha256"]
    image = np.asarray(codec.decode(data))
    assert abs(float(image.mean()) - expected["pixel_mean"]) < 0.05
