"""Token-grid entropy coding: round trips, and the streams of the documented coding model."""
from __future__ import annotations

import numpy as np
import pytest

from sqgan_codec.entropy import StreamTables, decode_tokens, encode_tokens
from sqgan_codec.errors import BitstreamError


def _random_case(rng: np.random.Generator, h: int, w: int, keep_ratio: float):
    contexts, codes = int(rng.integers(1, 14)), int(rng.integers(2, 1100))
    tables = StreamTables(rng.integers(0, 5000, (contexts, 4, 2)), rng.integers(0, 300, (contexts, codes)))
    keep = rng.random((h, w)) < keep_ratio
    return keep, rng.integers(0, codes, (h, w)), rng.integers(0, contexts, (h, w)), tables


@pytest.mark.parametrize("keep_ratio", [0.0, 0.05, 0.5, 0.97, 1.0])
def test_round_trip(keep_ratio: float) -> None:
    rng = np.random.default_rng(int(keep_ratio * 100))
    for h, w in [(1, 1), (1, 17), (9, 1), (23, 30), (40, 57)]:
        keep, indices, ctx, tables = _random_case(rng, h, w, keep_ratio)
        data = encode_tokens(keep, indices, ctx, tables)
        got_keep, got_indices = decode_tokens(data, (h, w), ctx, tables)
        assert (got_keep == keep).all()
        assert (got_indices[keep] == indices[keep]).all() and (got_indices[~keep] == 0).all()


def _reference_encode(keep: np.ndarray, indices: np.ndarray, ctx: np.ndarray, tables: StreamTables) -> bytes:
    """The coding model as entropy.py's docstring states it, written independently with numpy:
    keep bits in raster order under adaptive counts per (class context, left + 2·above) that
    start from the table scaled to a mass of 24 and halve above 1024; then the kept indices
    under the per-context static categorical (counts + 1)."""
    import constriction

    prior = tables.mask_counts.astype(np.int64) + 1
    counts = np.maximum(prior * 24 // prior.sum(axis=2, keepdims=True), 1)
    h, w = keep.shape
    bits = keep.astype(np.int32)
    probs = np.zeros((h * w, 2))
    for y in range(h):
        for x in range(w):
            c = counts[ctx[y, x], (bits[y, x - 1] if x else 0) + 2 * (bits[y - 1, x] if y else 0)]
            probs[y * w + x] = c / c.sum()
            c[bits[y, x]] += 1
            if c.sum() > 1024:
                c[:] = np.maximum(c // 2, 1)
    model = constriction.stream.model.Categorical(perfect=False)
    encoder = constriction.stream.queue.RangeEncoder()
    encoder.encode(bits.reshape(-1), model, probs)
    index_probs = tables.index_counts + 1.0
    index_probs /= index_probs.sum(axis=1, keepdims=True)
    flat_keep = keep.reshape(-1)
    if flat_keep.any():
        encoder.encode(indices.reshape(-1)[flat_keep].astype(np.int32), model,
                       index_probs[ctx.reshape(-1)[flat_keep]])
    return encoder.get_compressed().astype("<u4").tobytes().rstrip(b"\x00")


def test_streams_follow_the_documented_model() -> None:
    """Guards the format: an optimisation of the coder must not change a single byte."""
    rng = np.random.default_rng(7)
    for trial in range(40):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        keep, indices, ctx, tables = _random_case(rng, h, w, float(rng.random()))
        assert encode_tokens(keep, indices, ctx, tables) == _reference_encode(keep, indices, ctx, tables), trial
    # a long run of one context and pattern, so that the adaptive counts halve many times
    keep = np.random.default_rng(1).random((60, 80)) < 0.9
    tables = StreamTables(np.ones((1, 4, 2), np.int64), np.ones((1, 16), np.int64))
    zeros = np.zeros(keep.shape, np.int64)
    data = encode_tokens(keep, zeros, zeros, tables)
    assert data == _reference_encode(keep, zeros, zeros, tables)
    assert (decode_tokens(data, keep.shape, zeros, tables)[0] == keep).all()


def test_bad_inputs() -> None:
    rng = np.random.default_rng(3)
    keep, indices, ctx, tables = _random_case(rng, 8, 8, 0.5)
    with pytest.raises(ValueError, match="class context"):
        encode_tokens(keep, indices, ctx[:4], tables)
    bad = indices.copy()
    bad[keep] = tables.num_codes
    with pytest.raises(ValueError, match="codebook"):
        encode_tokens(keep, bad, ctx, tables)
    with pytest.raises(BitstreamError):
        decode_tokens(b"\xff" * 3, (200, 200), np.zeros((200, 200), np.int64), tables)
