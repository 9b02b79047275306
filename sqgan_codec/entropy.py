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


def class_context(ssm_keep: np.ndarray, ssm_indices: np.ndarray, code_class: np.ndarray,
                  unknown: int) -> np.ndarray:
    """Entropy-coding context of each image token: the class of the co-located semantic-map
    code (``code_class``, saved with the tables), or ``unknown`` (= the number of classes) where
    that code was masked. Integers only."""
    ctx = np.full(ssm_keep.shape, unknown, np.int64)
    ctx[ssm_keep] = code_class[ssm_indices[ssm_keep]]
    return ctx


def keep_patterns(keep: np.ndarray) -> np.ndarray:
    """The neighbour pattern of each keep bit: left + 2·above (0 outside the grid), as the coder reads it."""
    bits = np.asarray(keep, bool).astype(np.int64)
    return np.pad(bits, ((0, 0), (1, 0)))[:, :-1] + 2 * np.pad(bits, ((1, 0), (0, 0)))[:-1]


class TableCounter:
    """Counts the statistics of :class:`StreamTables` from example token grids, beside the coder
    that uses them (as CompressAI's ``update()`` sits beside ``compress()``)."""

    def __init__(self, contexts: int, num_codes: int):
        self.mask_counts = np.zeros((contexts, 4, 2), np.int64)
        self.index_counts = np.zeros((contexts, num_codes), np.int64)

    def add(self, keep: np.ndarray, indices: np.ndarray, class_context: np.ndarray) -> None:
        keep = np.asarray(keep, bool)
        ctx = np.asarray(class_context, np.int64)
        np.add.at(self.mask_counts, (ctx, keep_patterns(keep), keep.astype(np.int64)), 1)
        np.add.at(self.index_counts, (ctx[keep], np.asarray(indices)[keep]), 1)


class AdaptiveBits:
    """Adaptive binary counts, one (0, 1) pair per context, halved when a pair's total passes
    ``max_total``: the keep bits of the token streams and the cell flags of chunk F.

    Plain Python ints (not numpy) because the coders walk one position at a time: per-element
    numpy calls cost more than the arithmetic. ``c / total`` of two exact ints is the same
    correctly rounded float64 that numpy gives, so streams are unchanged.
    """

    def __init__(self, counts: list[list[int]], max_total: int):
        self.counts, self.max_total = counts, max_total

    def probability(self, ctx: int) -> tuple[float, float]:
        off, on = self.counts[ctx]
        total = off + on
        return off / total, on / total

    def update(self, ctx: int, bit: int) -> None:
        c = self.counts[ctx]
        c[bit] += 1
        if c[0] + c[1] > self.max_total:
            c[0], c[1] = max(c[0] // 2, 1), max(c[1] // 2, 1)


def _keep_model(tables: StreamTables) -> AdaptiveBits:
    """The keep bits' counts, context ``4 × class context + neighbour pattern``, started from
    the tables' counts scaled to :data:`_PRIOR_MASS`."""
    prior = tables.mask_counts.astype(np.int64) + 1
    scaled = np.maximum((prior * _PRIOR_MASS) // prior.sum(axis=2, keepdims=True), 1)
    return AdaptiveBits(scaled.reshape(-1, 2).tolist(), _MAX_TOTAL)


def _check_contexts(class_context: np.ndarray, shape: tuple[int, int], tables: StreamTables) -> np.ndarray:
    ctx = np.asarray(class_context, dtype=np.int64)
    if ctx.shape != shape or ctx.min(initial=0) < 0 or ctx.max(initial=0) >= tables.contexts:
        raise ValueError("class context grid does not fit the token grid or the tables")
    return ctx


# ---------------------------------------------------------------- the range coder, shared
# by the token streams, the lossless map coder and the refinement layer: one byte convention
# (little-endian 32-bit words, trailing zero bytes implied) and one error translation.
CODER_ERRORS = (ValueError, RuntimeError, AssertionError, OverflowError)  # constriction on bad data


def categorical(probabilities: np.ndarray | None = None):
    """A categorical model: fixed ``probabilities``, or (None) a family whose probabilities are
    given per symbol. constriction is imported on use."""
    import constriction

    if probabilities is None:
        return constriction.stream.model.Categorical(perfect=False)
    return constriction.stream.model.Categorical(probabilities, perfect=False)


def range_encoder():
    import constriction

    return constriction.stream.queue.RangeEncoder()


def finish(encoder) -> bytes:
    """The encoder's message; trailing zero bytes are implied (:func:`range_decoder` pads them back)."""
    return encoder.get_compressed().astype("<u4").tobytes().rstrip(b"\x00")


def range_decoder(data: bytes, what: str):
    """A range decoder over ``data``; BitstreamError naming ``what`` if constriction refuses it."""
    import constriction

    raw = bytes(data)
    words = np.frombuffer(raw + b"\x00" * (-len(raw) % 4), dtype="<u4").astype(np.uint32)
    try:
        return constriction.stream.queue.RangeDecoder(words)
    except CODER_ERRORS as exc:
        raise BitstreamError(f"{what} cannot be decoded ({exc})") from None


def _encode_grid(encoder, categorical, keep: np.ndarray, indices: np.ndarray, class_context: np.ndarray,
                 tables: StreamTables) -> None:
    """Append one token grid's keep bits, then its kept indices, to a range encoder."""
    keep = np.asarray(keep, dtype=bool)
    h, w = keep.shape
    ctx = _check_contexts(class_context, (h, w), tables)
    model = _keep_model(tables)
    bits = keep.astype(np.int32).tolist()
    contexts = ctx.tolist()
    probs = []
    for y in range(h):
        row, above, row_ctx = bits[y], bits[y - 1] if y else None, contexts[y]
        for x in range(w):
            i = 4 * row_ctx[x] + (row[x - 1] if x else 0) + 2 * (above[x] if y else 0)
            probs.append(model.probability(i))
            model.update(i, row[x])
    encoder.encode(keep.reshape(-1).astype(np.int32), categorical, np.array(probs, np.float64).reshape(-1, 2))
    kept = np.asarray(indices).reshape(-1)[keep.reshape(-1)].astype(np.int32)
    if kept.size:
        if kept.min() < 0 or kept.max() >= tables.num_codes:
            raise ValueError("token index out of the codebook")
        encoder.encode(kept, categorical, tables.index_probabilities()[ctx.reshape(-1)[keep.reshape(-1)]])


def encode_token_grids(grids: list[tuple[np.ndarray, np.ndarray, np.ndarray, StreamTables]], *,
                       shortest: bool = False) -> bytes:
    """Range-code token grids one after the other in one message: (keep, indices, class
    context, tables) each; decode them in the same order with :class:`TokenDecoder`.

    ``shortest``: also drop final bytes as long as the message still decodes to the same
    tokens (the decoder reads missing bytes as zeros; saves a byte or two of the coder's flush,
    which counts in small packets)."""
    family, encoder = categorical(), range_encoder()
    for keep, indices, ctx, tables in grids:
        _encode_grid(encoder, family, keep, indices, ctx, tables)
    data = finish(encoder)
    while shortest and data and _decodes_to(data[:-1].rstrip(b"\x00"), grids):
        data = data[:-1].rstrip(b"\x00")
    return data


def _decodes_to(data: bytes, grids: list[tuple[np.ndarray, np.ndarray, np.ndarray, StreamTables]]) -> bool:
    try:
        decoder = TokenDecoder(data)
        for keep, indices, ctx, tables in grids:
            k, i = decoder.grid(np.shape(keep), ctx, tables)
            keep = np.asarray(keep, bool)
            if not (np.array_equal(k, keep) and np.array_equal(i[keep], np.asarray(indices)[keep])):
                return False
    except BitstreamError:
        return False
    return True


def encode_tokens(keep: np.ndarray, indices: np.ndarray, class_context: np.ndarray,
                  tables: StreamTables) -> bytes:
    """Range-code one token grid. keep: bool h×w; indices: int h×w (read where kept)."""
    return encode_token_grids([(keep, indices, class_context, tables)])


class TokenDecoder:
    """Reads the grids of one :func:`encode_token_grids` message in order (the class context
    of a later grid may depend on an earlier one's tokens)."""

    def __init__(self, data: bytes):
        self._categorical = categorical()
        self._decoder = range_decoder(data, "token stream")

    def grid(self, shape: tuple[int, int], class_context: np.ndarray,
             tables: StreamTables) -> tuple[np.ndarray, np.ndarray]:
        """The next grid: (keep bool h×w, indices int64 h×w, 0 where dropped)."""
        h, w = shape
        ctx = _check_contexts(class_context, (h, w), tables)
        categorical, decoder = self._categorical, self._decoder
        try:
            model = _keep_model(tables)
            bits = [[0] * w for _ in range(h)]
            contexts = ctx.tolist()
            prob = np.empty((1, 2), np.float64)
            for y in range(h):
                row, above, row_ctx = bits[y], bits[y - 1] if y else None, contexts[y]
                for x in range(w):
                    i = 4 * row_ctx[x] + (row[x - 1] if x else 0) + 2 * (above[x] if y else 0)
                    prob[0] = model.probability(i)
                    bit = int(decoder.decode(categorical, prob)[0])
                    row[x] = bit
                    model.update(i, bit)
            keep = np.array(bits, dtype=bool).reshape(h, w)
            indices = np.zeros(h * w, np.int64)
            if keep.any():
                probs = tables.index_probabilities()[ctx.reshape(-1)[keep.reshape(-1)]]
                indices[keep.reshape(-1)] = decoder.decode(categorical, probs)
        except CODER_ERRORS as exc:
            raise BitstreamError(f"token stream cannot be decoded ({exc})") from None
        return keep, indices.reshape(h, w)


def decode_tokens(data: bytes, shape: tuple[int, int], class_context: np.ndarray,
                  tables: StreamTables) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_tokens`: (keep bool h×w, indices int64 h×w, 0 where dropped)."""
    return TokenDecoder(data).grid(shape, class_context, tables)
