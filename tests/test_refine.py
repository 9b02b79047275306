"""The refinement layer (chunk R): residual coding, its place in the container, and what it
buys in the codec on a real CamVid image."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sqgan_codec import bitstream, refine
from sqgan_codec.bitstream import Header, append_refinement, pack, unpack
from sqgan_codec.codec import Codec

from conftest import camvid_test_image
from sqgan_codec.errors import BitstreamError, TruncatedError



def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(255.0 ** 2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def test_low_pass_fit_is_least_squares_and_exact_on_its_own_range() -> None:
    rng = np.random.default_rng(0)
    grid = rng.normal(0, 20, (4, 5, 3)).astype(np.float32)
    smooth = refine.upsample(grid, 16, 60, 75)  # 4x5 cells cover 64x80, cropped
    assert np.allclose(refine.fit_low_pass(smooth, 16), grid, atol=1e-3)
    noisy = smooth + rng.normal(0, 10, smooth.shape).astype(np.float32)
    fit = refine.fit_low_pass(noisy, 16)
    err = np.sum((refine.upsample(fit, 16, 60, 75) - noisy) ** 2)
    for _ in range(5):  # any other grid fits worse
        other = fit + rng.normal(0, 0.5, fit.shape).astype(np.float32)
        assert np.sum((refine.upsample(other, 16, 60, 75) - noisy) ** 2) > err


def test_residual_symbols_round_trip_and_step_trades_bytes() -> None:
    rng = np.random.default_rng(1)
    original = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    decoded = np.clip(original.astype(int) + 30, 0, 255).astype(np.uint8)  # a brightness cast
    residual = refine.Residual(original, decoded, 32)
    sizes = {step: len(residual.encode(step)) for step in (2, 8, 32)}
    assert sizes[2] > sizes[8] > sizes[32]
    payload = residual.encode(8)
    correction = refine.decode_residual(payload, 90, 120)
    q = residual.symbols(8)
    expected = refine.upsample((q * 8.0).astype(np.float32) @ refine._YCC_TO_RGB.T, 32, 90, 120)
    assert np.allclose(correction, expected, atol=1e-4)
    assert psnr(refine.apply_residual(decoded, correction), original) > psnr(decoded, original) + 3
    for bad in (b"\x05\x08\x00", bytes([2, 8, 0, 0, 0]), bytes([5, 0, 0, 0, 0]), bytes([5, 8, 0, 99, 0])):
        with pytest.raises(BitstreamError):
            refine.decode_residual(bad, 90, 120)


def test_refinement_chunk_is_last_and_optional() -> None:
    header = Header(model_id=1, weights_hash=bytes(4), width=32, height=16)
    data = pack(header, [("S", b"s"), ("I", b"i")])
    full = append_refinement(data, b"rrrr")
    assert unpack(full).chunks == {"S": b"s", "I": b"i", "R": b"rrrr"}
    with pytest.raises(BitstreamError, match="already has a refinement"):
        append_refinement(full, b"r")
    assert unpack(pack(header, [("S", b"s"), ("R", b"r")])).chunks == {"S": b"s", "R": b"r"}
    with pytest.raises(BitstreamError, match="must be last"):
        pack(header, [("S", b"s"), ("R", b"r"), ("I", b"i")])
    with pytest.raises(BitstreamError, match="trailing data after the last chunk 'R'"):
        unpack(full + b"\x00")
    cut = unpack(full[:-3], allow_truncated=True)  # cut inside R: the token layers survive
    assert cut.truncated and cut.chunks == {"S": b"s", "I": b"i"}


@pytest.fixture(scope="module")
def street() -> np.ndarray:
    return camvid_test_image(100)


def test_refinement_raises_psnr_at_equal_rate(codec: Codec, street: np.ndarray) -> None:
    # the refinement layer belongs to the token streams (tune="semantic"; the default may send a coarse image)
    budget = 0.03 * street.shape[0] * street.shape[1] / 8
    plain = codec.encode(street, bpp=0.03, refine="off", tune="semantic")
    assert codec.encode(street, bpp=0.03, tune="semantic") == plain  # auto: no room beyond the tokens at 0.03
    refined = codec.encode(street, bpp=0.03, refine="on", tune="semantic")
    assert bitstream.CHUNK_REFINE in unpack(refined).chunks
    assert bitstream.CHUNK_REFINE not in unpack(plain).chunks
    assert 0.97 * budget <= len(refined) <= budget and len(plain) <= budget
    gains = [psnr(np.asarray(codec.decode(refined)), street) - psnr(np.asarray(codec.decode(plain)), street)]
    for other in (camvid_test_image(40), camvid_test_image(160)):  # the gain varies by image
        gains.append(psnr(np.asarray(codec.decode(codec.encode(other, bpp=0.03, refine="on", tune="semantic"))), other)
                     - psnr(np.asarray(codec.decode(codec.encode(other, bpp=0.03, refine="off", tune="semantic"))), other))
    assert min(gains) > 0 and np.mean(gains) > 0.4  # over the test set about +0.9 dB (docs/benchmarks.md)
    # the file cut before R is the token layers alone: refused unless asked for, then decoded
    # and flagged (no silent layer loss)
    size_r = len(unpack(refined).chunks["R"])
    cut = refined[: len(refined) - size_r - 4]
    with pytest.raises(TruncatedError, match="allow_partial=True"):
        codec.decode(cut)
    partial = codec.decode(cut, allow_partial=True)
    assert np.asarray(partial).shape == street.shape
    assert partial.info["sqgan_truncated"] and "refine" not in partial.info["sqgan_layers"]
    assert "image" in partial.info["sqgan_layers"]
    assert codec.decode(refined).info["sqgan_layers"][-1] == "refine"


def test_budgets_above_the_token_ceiling_are_filled(codec: Codec, street: np.ndarray) -> None:
    pixels = street.shape[0] * street.shape[1]
    ceiling = len(codec.encode(street, keep=1.0, ssm="vq", refine="off"))
    target = 1.6 * ceiling * 8 / pixels
    data = codec.encode(street, bpp=target, tune="semantic")  # the token layers' own rate control
    assert 0.97 * target <= len(data) * 8 / pixels <= target
    chunks = unpack(data).chunks
    assert "L" in chunks and "R" in chunks  # the exact map and a refinement fill the room
    # below the ceiling, auto keeps G_s's map
    assert "S" in unpack(codec.encode(street, bpp=0.5 * ceiling * 8 / pixels, tune="semantic")).chunks
