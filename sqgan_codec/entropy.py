"""Entropy coding of token grids (keep-mask + VQ indices) with constriction's range coder.

Every probability comes from integer count tables saved with the weights, turned into
float64 ratios by the same numpy arithmetic on every machine, so a stream encoded on CUDA
decodes to the same tokens on CPU with any thread count. No network output is ever used
as a probability.

Coding order of one stream: all keep bits in raster order, then the indices of kept
positions in raster order.
- Keep bit at (y, x): context = (class context, keep bit left, keep bit above); adaptive
  integer counts initialised from the table, so the model follows the image's keep ratio.
- Index: a static categorical per class context.
The class context of a token is an integer the decoder already has (for the image stream:
the class of the co-located semantic-map code, or ``unknown`` where that code was masked).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .errors import BitstreamError

# Adaptive keep-bit model: initial pseudo-count mass and the total that triggers halving.
_PRIOR_MASS = 24
_MAX_TOTAL = 1024


@dataclass(frozen=True)
class StreamTables:
    """Integer statistics of one token stream.

    mask_counts: int [contexts, 4, 2]: counts of (drop, keep) per class context and neighbour
        pattern (left + 2·above). index_counts: int [contexts, num_codes].
    """

    mask_counts: np.ndarray
    index_counts: np.ndarray

    def __post_init__(self) -> None:
        if self.mask_counts.shape[0] != self.index_counts.shape[0] or self.mask_counts.shape[1:] != (4, 2):
            raise ValueError("inconsistent entropy tables")
        if (self.mask_counts < 0).any() or (self.index_counts < 0).any():
            raise ValueError("entropy tables must be non-negative counts")

    @property
    def contexts(self) -> int:
        return self.mask_counts.shape[0]

    @property
    def num_codes(self) -> int:
        return self.index_counts.shape[1]

    def index_probabilities(self) -> np.ndarray:
        return self._index_probabilities

    @cached_property
    def _index_probabilities(self) -> np.ndarray:  # computed once: every pack of a rate search uses it
        counts = self.index_counts.astype(np.float64) + 1.0  # every code stays codable
        probs = counts / counts.sum(axis=1, keepdims=True)
        probs.flags.writeable = False  # shared by every caller
        return probs


class _KeepModel:
    """Adaptive binary counts per (context, neighbour pattern), integer-only state.

    Plain Python ints (not numpy) because the coder walks one position at a time: per-element
    numpy calls cost more than the arithmetic. ``c / total`` of two exact ints is the same
    correctly rounded float64 that numpy gives, so streams are unchanged.
    """

    def __init__(self, tables: StreamTables):
        prior = tables.mask_counts.astype(np.int64) + 1
        scaled = np.maximum((prior * _PRIOR_MASS) // prior.sum(axis=2, keepdims=True), 1)
        self.counts: list[list[list[int]]] = scaled.tolist()

    def probability(self, ctx: int, pattern: int) -> tuple[float, float]:
        drop, keep = self.counts[ctx][pattern]
        total = drop + keep
        return drop / total, keep / total

    def update(self, ctx: int, pattern: int, bit: int) -> None:
        c = self.counts[ctx][pattern]
        c[bit] += 1
        if c[0] + c[1] > _MAX_TOTAL:
            c[0], c[1] = max(c[0] // 2, 1), max(c[1] // 2, 1)


def _check_contexts(class_context: np.ndarray, shape: tuple[int, int], tables: StreamTables) -> np.ndarray:
    ctx = np.asarray(class_context, dtype=np.int64)
    if ctx.shape != shape or ctx.min(initial=0) < 0 or ctx.max(initial=0) >= tables.contexts:
        raise ValueError("class context grid does not fit the token grid or the tables")
    return ctx


def _models():
    import constriction

    return constriction, constriction.stream.model.Categorical(perfect=False)


def encode_tokens(keep: np.ndarray, indices: np.ndarray, class_context: np.ndarray,
                  tables: StreamTables) -> bytes:
    """Range-code one token grid. keep: bool h×w; indices: int h×w (read where kept)."""
    constriction, categorical = _models()
    keep = np.asarray(keep, dtype=bool)
    h, w = keep.shape
    ctx = _check_contexts(class_context, (h, w), tables)
    model = _KeepModel(tables)
    bits = keep.astype(np.int32).tolist()
    contexts = ctx.tolist()
    probs = []
    for y in range(h):
        row, above, row_ctx = bits[y], bits[y - 1] if y else None, contexts[y]
        for x in range(w):
            pattern = (row[x - 1] if x else 0) + 2 * (above[x] if y else 0)
            probs.append(model.probability(row_ctx[x], pattern))
            model.update(row_ctx[x], pattern, row[x])
    encoder = constriction.stream.queue.RangeEncoder()
    encoder.encode(keep.reshape(-1).astype(np.int32), categorical, np.array(probs, np.float64).reshape(-1, 2))
    kept = np.asarray(indices).reshape(-1)[keep.reshape(-1)].astype(np.int32)
    if kept.size:
        if kept.min() < 0 or kept.max() >= tables.num_codes:
            raise ValueError("token index out of the codebook")
        encoder.encode(kept, categorical, tables.index_probabilities()[ctx.reshape(-1)[keep.reshape(-1)]])
    # trailing zero bytes are implied: the decoder pads them back
    return encoder.get_compressed().astype("<u4").tobytes().rstrip(b"\x00")


def decode_tokens(data: bytes, shape: tuple[int, int], class_context: np.ndarray,
                  tables: StreamTables) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_tokens`: (keep bool h×w, indices int64 h×w, 0 where dropped)."""
    constriction, categorical = _models()
    h, w = shape
    ctx = _check_contexts(class_context, (h, w), tables)
    padded = bytes(data) + b"\x00" * (-len(data) % 4)
    words = np.frombuffer(padded, dtype="<u4").astype(np.uint32)
    try:
        decoder = constriction.stream.queue.RangeDecoder(words)
        model = _KeepModel(tables)
        bits = [[0] * w for _ in range(h)]
        contexts = ctx.tolist()
        prob = np.empty((1, 2), np.float64)
        for y in range(h):
            row, above, row_ctx = bits[y], bits[y - 1] if y else None, contexts[y]
            for x in range(w):
                pattern = (row[x - 1] if x else 0) + 2 * (above[x] if y else 0)
                prob[0] = model.probability(row_ctx[x], pattern)
                bit = int(decoder.decode(categorical, prob)[0])
                row[x] = bit
                model.update(row_ctx[x], pattern, bit)
        keep = np.array(bits, dtype=bool).reshape(h, w)
        indices = np.zeros(h * w, np.int64)
        n = int(keep.sum())
        if n:
            probs = tables.index_probabilities()[ctx.reshape(-1)[keep.reshape(-1)]]
            indices[keep.reshape(-1)] = decoder.decode(categorical, probs)
    except (ValueError, RuntimeError, AssertionError, OverflowError) as exc:  # constriction's errors
        raise BitstreamError(f"token stream cannot be decoded ({exc})") from None
    return keep, indices.reshape(h, w)
