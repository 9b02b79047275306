"""Lossless range coding of semantic label maps (H×W class ids ``0 .. C-1``, C the model's class
count, 2 to :data:`MAX_CLASSES`; the tables say which C they are laid out for).

Every probability comes from an integer count table (:class:`LabelMapTables`, saved with the
weights), turned into float64 ratios by the same numpy arithmetic on every machine, so any
machine decodes the exact map. No probability depends on a network output.

Coding order. Rows top to bottom; each row in five passes over its columns (coarse to fine,
like a binary subdivision), so that each pass is one vectorised coder call and later passes
see the row's earlier passes on both sides:

====  ================  ===========================================================
pass  columns x         the five known neighbours, in priority order
====  ================  ===========================================================
0     x ≡ 0 (mod 16)    a[x], a[x-1], a[x+1], aa[x], a[x+2]
1     x ≡ 8 (mod 16)    c[x-8], c[x+8], a[x], a[x-1], a[x+1]
2     x ≡ 4 (mod 8)     c[x-4], c[x+4], a[x], a[x-1], a[x+1]
3     x ≡ 2 (mod 4)     c[x-2], c[x+2], a[x], a[x-1], a[x+1]
4     x odd             c[x-1], c[x+1], a[x], a[x-1], a[x+1]
====  ================  ===========================================================

``c`` is the current row, ``a`` the row above, ``aa`` the row two above. A neighbour outside
the map has the value ``NONE`` (= C), which no pixel can copy.

Symbols. The five neighbours fall into groups of equal labels, numbered in order of first
appearance (their *partition pattern*, one of 52). A pixel is coded as the number of the
group holding its label (0..4), or 5 = escape when no neighbour has its label; an escape is
followed by the label itself. Contexts (static, from the table):

- copy symbol: (pass, partition pattern, label of the first neighbour) → 5·52·(C+1)
  categoricals over 6 symbols (3120 for CamVid's 11 classes);
- escaped label: (pass, label of the first neighbour) → 5·(C+1) categoricals over the C labels.

Within a pass: the copy symbols of the pass in column order, then the escaped labels of the
pass in column order. On piecewise-constant maps almost every pixel copies a neighbour with
probability close to 1, so nearly all bits go to boundary pixels. Trailing zero bytes of the
stream are dropped; the decoder pads them back. The map's shape is not in the stream.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from itertools import combinations
from typing import Iterable

import numpy as np

from . import entropy
from .classes import NUM_CLASSES  # the default class count (camvid11)
from .errors import BitstreamError

# Contexts look neighbourhoods up in tables of (C+1)^5 entries: 3.2 million for 19 classes.
MAX_CLASSES = 19
_K = 5  # neighbours per pixel
_ESCAPE = _K  # copy symbol meaning "no neighbour has this label"
_NUM_SYMBOLS = _K + 1
_PAD = 8  # columns of NONE on each side of a row (largest horizontal offset)
_MAX_COUNT = 2**31 - 1  # counts are stored as int32
_ESCAPED = 255  # copied-label marker of the escape symbol; other values ≥ C are invalid

# (columns start, step, neighbour offsets (dy, dx)) per pass
_PASSES: tuple[tuple[int, int, tuple[tuple[int, int], ...]], ...] = (
    (0, 16, ((-1, 0), (-1, -1), (-1, 1), (-2, 0), (-1, 2))),
    (8, 16, ((0, -8), (0, 8), (-1, 0), (-1, -1), (-1, 1))),
    (4, 8, ((0, -4), (0, 4), (-1, 0), (-1, -1), (-1, 1))),
    (2, 4, ((0, -2), (0, 2), (-1, 0), (-1, -1), (-1, 1))),
    (1, 2, ((0, -1), (0, 1), (-1, 0), (-1, -1), (-1, 1))),
)


def _partition_tables() -> tuple[int, np.ndarray, np.ndarray]:
    """Partition patterns of the 5 neighbours as restricted growth strings (g[0] = 0,
    g[j] ≤ max(g[:j]) + 1). Returns (pattern count, pattern id per 10-bit pairwise-equality
    code, group number per (pattern, neighbour))."""
    pairs = list(combinations(range(_K), 2))
    patterns: list[tuple[int, ...]] = [(0,)]
    for _ in range(_K - 1):
        patterns = [p + (g,) for p in patterns for g in range(max(p) + 2)]
    lut = np.zeros(1 << len(pairs), np.int16)  # codes no neighbourhood can produce stay 0
    for pid, rgs in enumerate(patterns):
        lut[sum(1 << b for b, (i, j) in enumerate(pairs) if rgs[i] == rgs[j])] = pid
    return len(patterns), lut, np.array(patterns, np.uint8)


_NUM_PATTERNS, _PATTERN_OF_CODE, _GROUP = _partition_tables()
_PAIR_I, _PAIR_J = (np.array(v) for v in zip(*combinations(range(_K), 2)))


def contexts_for(num_classes: int) -> int:
    """Rows of the count table for ``num_classes`` labels: copy contexts, then escape contexts."""
    return len(_PASSES) * (_NUM_PATTERNS + 1) * (num_classes + 1)


class _Alphabet:
    """Context layout for maps of ``num_classes`` labels (NONE = num_classes)."""

    def __init__(self, num_classes: int):
        if not 2 <= num_classes <= MAX_CLASSES:
            raise ValueError(f"the lossless map coder takes 2..{MAX_CLASSES} classes, not {num_classes}")
        self.num_classes = num_classes
        self.none = num_classes
        self.labels = num_classes + 1  # first-neighbour label context, NONE included
        self.width = max(num_classes, _NUM_SYMBOLS)  # table columns: copy symbols or labels
        self.digit = self.labels ** np.arange(_K - 1, -1, -1, dtype=np.int64)  # neighbours → one integer
        self.pass_contexts = _NUM_PATTERNS * self.labels
        self.copy_contexts = len(_PASSES) * self.pass_contexts
        self.contexts = contexts_for(num_classes)

    @functools.cached_property
    def neighbourhoods(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per neighbourhood integer v = Σ nb[i]·(C+1)^(4-i): (copy context within a pass [v],
        group number of each neighbour [v, 5], label copied by each symbol [v, 6]).

        Lookups keep the per-row work to a few numpy calls (decode speed). Built once per class
        count (~40 ms for 11 classes)."""
        digits = np.indices((self.labels,) * _K, dtype=np.uint8).reshape(_K, -1)
        code = np.zeros(digits.shape[1], np.int16)
        for b, (i, j) in enumerate(zip(_PAIR_I, _PAIR_J)):
            code |= (digits[i] == digits[j]).astype(np.int16) << b
        pattern = _PATTERN_OF_CODE[code]
        context = pattern.astype(np.int32) * self.labels + digits[0]
        group = _GROUP[pattern]
        copied = np.full((digits.shape[1], _NUM_SYMBOLS), self.none, np.uint8)  # NONE: no such group
        rows = np.arange(digits.shape[1])
        for j in range(_K - 1, -1, -1):  # the first neighbour of each group writes last
            copied[rows, group[:, j]] = digits[j]
        copied[:, _ESCAPE] = _ESCAPED
        return context, group, copied

    def neighbourhood(self, nb: np.ndarray) -> np.ndarray:
        """One integer per pixel for its 5 neighbour labels nb [5, n] (each in 0..NONE)."""
        return self.digit @ nb

    def copy_symbols(self, nb: np.ndarray, v: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Group number of each pixel's label among its neighbours, _ESCAPE where none has it."""
        match = nb == labels[None, :]
        j = match.argmax(axis=0)
        group = self.neighbourhoods[1][v, j]
        return np.where(match.any(axis=0), group, _ESCAPE)

    def escape_contexts(self, nb0: np.ndarray, p: int) -> np.ndarray:
        """Escape context of pass p, counted from the first escape row of the table."""
        return p * self.labels + nb0

    def check(self, labels: np.ndarray) -> np.ndarray:
        arr = np.asarray(labels)
        if arr.ndim != 2 or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise ValueError(f"a label map must be a 2-D integer array, got {arr.dtype} {arr.shape}")
        if arr.size and (arr.min() < 0 or arr.max() >= self.num_classes):
            raise ValueError(f"label map values must lie in 0..{self.num_classes - 1}")
        return arr.astype(np.int64)


@functools.cache
def _alphabet(num_classes: int) -> _Alphabet:
    return _Alphabet(num_classes)


@dataclass(frozen=True)
class LabelMapTables:
    """Integer statistics of label maps of C classes, int [contexts_for(C), max(C, 6)].

    Rows ``0 .. 5·52·(C+1)-1``: copy symbols, row (pass·52 + pattern)·(C+1) + first-neighbour
    label, counts in the first 6 columns, the other columns zero. Then the escaped labels, row
    5·52·(C+1) + pass·(C+1) + first-neighbour label, counts in the first C columns. Counts fit
    int32 so the table can be saved as one weights tensor (CamVid's 11 classes: [3180, 11]).
    The class count is read off the shape.
    """

    counts: np.ndarray

    def __post_init__(self) -> None:
        counts = np.asarray(self.counts)
        rows = counts.shape[0] if counts.ndim == 2 else 0
        classes, rest = divmod(rows, contexts_for(0))
        classes -= 1
        if (counts.ndim != 2 or rest or not 2 <= classes <= MAX_CLASSES
                or counts.shape[1] != max(classes, _NUM_SYMBOLS) or not np.issubdtype(counts.dtype, np.integer)):
            raise ValueError(f"label-map tables must be integer [contexts_for(C), max(C, 6)] for "
                             f"2..{MAX_CLASSES} classes C, got {counts.dtype} {list(counts.shape)}")
        a = _alphabet(classes)
        if counts.min() < 0 or counts.max() > _MAX_COUNT:
            raise ValueError("label-map tables must be non-negative counts that fit int32")
        if counts[:a.copy_contexts, _NUM_SYMBOLS:].any() or counts[a.copy_contexts:, classes:].any():
            raise ValueError("label-map tables have counts in unused columns")
        counts = counts.astype(np.int64)
        counts.flags.writeable = False
        object.__setattr__(self, "counts", counts)

    @property
    def num_classes(self) -> int:
        return self.counts.shape[0] // contexts_for(0) - 1

    def probabilities(self) -> tuple[np.ndarray, np.ndarray]:
        """(copy [passes, 52·(C+1), 6], escape [5·(C+1), C]) float64; every symbol stays codable."""
        a = _alphabet(self.num_classes)
        copy = self.counts[:a.copy_contexts, :_NUM_SYMBOLS].astype(np.float64) + 1.0
        escape = self.counts[a.copy_contexts:, :a.num_classes].astype(np.float64) + 1.0
        copy = (copy / copy.sum(axis=1, keepdims=True)).reshape(len(_PASSES), a.pass_contexts, _NUM_SYMBOLS)
        return copy, escape / escape.sum(axis=1, keepdims=True)


class _Layout:
    """Flat indices into a NONE-padded copy of an h×w map: 2 rows above, _PAD columns each side."""

    def __init__(self, h: int, w: int, none: int):
        self.h, self.w, self.none = h, w, none
        self.stride = w + 2 * _PAD
        self.columns: list[np.ndarray] = []  # columns of each pass
        self.neighbours: list[np.ndarray] = []  # [5, n] flat neighbour indices for row 0
        self.targets: list[np.ndarray] = []  # [n] flat pixel indices for row 0
        for start, step, offsets in _PASSES:
            xs = np.arange(start, w, step, dtype=np.int64)
            base = 2 * self.stride + _PAD + xs
            self.columns.append(xs)
            self.targets.append(base)
            shifts = np.array([dy * self.stride + dx for dy, dx in offsets], np.int64)
            self.neighbours.append(base[None, :] + shifts[:, None])

    def visits(self, todo: np.ndarray | None = None):
        """Coding order: (pass, flat neighbour indices [5, n], flat pixel indices [n]) of each row's
        passes, the pixels limited to ``todo`` (flat bool over the padded map) where given."""
        for y in range(self.h):
            shift = y * self.stride
            for p in range(len(_PASSES)):
                if not self.columns[p].size:
                    continue
                neighbours, targets = self.neighbours[p] + shift, self.targets[p] + shift
                if todo is not None:
                    sel = todo[targets]
                    if not sel.any():
                        continue
                    neighbours, targets = neighbours[:, sel], targets[sel]
                yield p, neighbours, targets

    def padded(self, labels: np.ndarray | None = None) -> np.ndarray:
        buf = np.full((self.h + 2, self.stride), self.none, np.int64)
        if labels is not None:
            buf[2:, _PAD:_PAD + self.w] = labels
        return buf


def fit_tables(label_maps: Iterable[np.ndarray], num_classes: int = NUM_CLASSES) -> LabelMapTables:
    """Count every copy symbol and escaped label of the example maps (void-free class ids
    ``0 .. num_classes-1``)."""
    a = _alphabet(num_classes)
    counts = np.zeros((a.contexts, a.width), np.int64)
    context_of = a.neighbourhoods[0]
    for labels in label_maps:
        arr = a.check(labels)
        layout = _Layout(*arr.shape, a.none)
        flat = layout.padded(arr).ravel()
        rows = np.arange(layout.h, dtype=np.int64)[:, None] * layout.stride
        for p in range(len(_PASSES)):
            if not layout.columns[p].size or not layout.h:
                continue
            nb = flat[layout.neighbours[p][:, None, :] + rows[None]].reshape(_K, -1)
            truth = flat[layout.targets[p][None, :] + rows].reshape(-1)
            v = a.neighbourhood(nb)
            sym = a.copy_symbols(nb, v, truth)
            esc = sym == _ESCAPE
            index = np.concatenate([
                (p * a.pass_contexts + context_of[v]) * a.width + sym,
                (a.copy_contexts + a.escape_contexts(nb[0, esc], p)) * a.width + truth[esc]])
            counts += np.bincount(index, minlength=counts.size).reshape(counts.shape)
    big = counts.max(axis=1, keepdims=True)
    scale = np.maximum(-(-big // _MAX_COUNT), 1)  # ceil; rows over the int32 limit shrink
    return LabelMapTables((counts // scale).astype(np.int32))


def encode_label_map(labels: np.ndarray, tables: LabelMapTables) -> bytes:
    """Range-code one label map (h×w ints in 0..C-1, C the tables' class count); the shape is
    not stored."""
    encoder = entropy.range_encoder()
    _encode_map(encoder, labels, tables)
    return entropy.finish(encoder)


def _encode_map(encoder, labels: np.ndarray, tables: LabelMapTables, known: np.ndarray | None = None) -> None:
    """Append a label map's pixels to ``encoder``, all of them or (``known``: bool h×w) those the
    decoder does not know already; known pixels are contexts like decoded ones."""
    categorical = entropy.categorical()
    a = _alphabet(tables.num_classes)
    arr = a.check(labels)
    layout = _Layout(*arr.shape, a.none)
    flat = layout.padded(arr).ravel()
    todo = None if known is None else ~layout.padded(np.asarray(known, bool)).ravel().astype(bool)
    copy_p, escape_p = tables.probabilities()
    context_of = a.neighbourhoods[0]
    for p, neighbours, targets in layout.visits(todo):
        nb = flat[neighbours]
        truth = flat[targets]
        v = a.neighbourhood(nb)
        sym = a.copy_symbols(nb, v, truth)
        encoder.encode(sym.astype(np.int32), categorical, copy_p[p][context_of[v]])
        esc = sym == _ESCAPE
        if esc.any():
            encoder.encode(truth[esc].astype(np.int32), categorical, escape_p[a.escape_contexts(nb[0, esc], p)])


def decode_label_map(data: bytes, shape: tuple[int, int], tables: LabelMapTables) -> np.ndarray:
    """Inverse of :func:`encode_label_map`: uint8 h×w. Raises BitstreamError on bad data."""
    h, w = (int(v) for v in shape)
    if h < 0 or w < 0:
        raise ValueError(f"bad label-map shape {shape}")
    decoder = entropy.range_decoder(data, "label-map stream")
    out = _decode_map(decoder, (h, w), tables)
    if not decoder.maybe_exhausted():
        raise BitstreamError("label-map stream has data after its last pixel")
    return out


def _decode_map(decoder, shape: tuple[int, int], tables: LabelMapTables, prior: np.ndarray | None = None,
                known: np.ndarray | None = None) -> np.ndarray:
    """Read a label map of ``shape`` from ``decoder`` (inverse of :func:`_encode_map`: the pixels
    where ``known`` is set are ``prior``'s). Raises BitstreamError on bad data."""
    categorical = entropy.categorical()
    h, w = shape
    a = _alphabet(tables.num_classes)
    layout = _Layout(h, w, a.none)
    buf = layout.padded(prior)
    flat = buf.ravel()
    todo = None if known is None else ~layout.padded(np.asarray(known, bool)).ravel().astype(bool)
    copy_p, escape_p = tables.probabilities()
    context_of, _, copied = a.neighbourhoods
    try:
        for p, neighbours, targets in layout.visits(todo):
            nb = flat[neighbours]
            v = a.neighbourhood(nb)
            sym = decoder.decode(categorical, copy_p[p][context_of[v]])
            values = copied[v, sym]
            esc = values == _ESCAPED
            if esc.any():
                values[esc] = decoder.decode(categorical, escape_p[a.escape_contexts(nb[0, esc], p)])
            if values.max() >= a.num_classes:
                raise BitstreamError("label-map stream copies a neighbour that does not exist")
            flat[targets] = values
    except entropy.CODER_ERRORS as exc:
        raise BitstreamError(f"label-map stream cannot be decoded ({exc})") from None
    return buf[2:, _PAD:_PAD + w].astype(np.uint8)


def fill_void(labels: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Replace void (CamVid's 11, or any id ≥ ``num_classes``) by a nearby class, growing the
    classes into the void one pixel a step. Turns ground-truth maps into maps a segmenter could
    have produced, to fit tables and measure on. An all-void map becomes class 0."""
    out = np.array(labels, dtype=np.int64)
    hole = (out < 0) | (out >= num_classes)
    while hole.any():
        if hole.all():
            out[...] = 0
            break
        for axis, step in ((1, 1), (0, 1), (1, -1), (0, -1)):  # from left, above, right, below
            src = np.roll(out, step, axis=axis)
            src_hole = np.roll(hole, step, axis=axis)
            edge = [slice(None)] * 2
            edge[axis] = 0 if step == 1 else -1
            src_hole[tuple(edge)] = True  # nothing wraps around the border
            take = hole & ~src_hole
            out[take] = src[take]
            hole &= ~take
    return out.astype(np.uint8)


# ---------------------------------------------------------------- the map at a reduced scale
# A semantic map coded exactly at 1/factor of its size (chunk M): each factor×factor block
# holds its majority class. The coder and its tables are the full-size map's (the statistics of
# a reduced map are close: tables fitted at the reduced scale saved ~10 %).
MAP_SCALES = tuple(range(2, 17))


def reduced_shape(height: int, width: int, factor: int) -> tuple[int, int]:
    """(rows, columns) of a map reduced by ``factor`` (partial blocks at the right and bottom count)."""
    return -(-int(height) // factor), -(-int(width) // factor)


def reduce_map(labels: np.ndarray, factor: int, num_classes: int) -> np.ndarray:
    """The class of most pixels in each factor×factor block (uint8, :func:`reduced_shape`), the
    lowest id on ties. Partial blocks are edge-padded."""
    if factor not in MAP_SCALES:
        raise ValueError(f"map scale must be one of {MAP_SCALES}, not {factor}")
    arr = np.asarray(labels)
    h, w = arr.shape
    rows, cols = reduced_shape(h, w, factor)
    padded = np.pad(arr, ((0, rows * factor - h), (0, cols * factor - w)), mode="edge")
    blocks = padded.reshape(rows, factor, cols, factor).transpose(0, 2, 1, 3).reshape(rows, cols, -1)
    counts = np.stack([(blocks == c).sum(-1) for c in range(num_classes)], -1)
    return counts.argmax(-1).astype(np.uint8)


def enlarge_map(small: np.ndarray, factor: int, height: int, width: int) -> np.ndarray:
    """A reduced map back at ``height``×``width`` (each cell repeated over its block)."""
    return np.ascontiguousarray(np.repeat(np.repeat(small, factor, 0), factor, 1)[:height, :width])


def scaled_payload(factor: int, data: bytes) -> bytes:
    """Chunk M's payload: the scale factor (one byte), then the reduced map's lossless code."""
    return bytes([factor]) + data


def parse_scaled(payload: bytes) -> tuple[int, bytes]:
    """(factor, lossless code) of a chunk M payload; BitstreamError for an unknown factor."""
    if not payload:
        raise BitstreamError("chunk 'M' is empty")
    if payload[0] not in MAP_SCALES:
        raise BitstreamError(f"chunk 'M': map scale 1/{payload[0]} is not one of "
                             f"1/{MAP_SCALES[0]} .. 1/{MAP_SCALES[-1]}")
    return payload[0], bytes(payload[1:])


# ---------------------------------------------------------------- finer patches over chosen cells
# Chunk F: over chosen cells of a chunk-M map (1/F), the exact map at a finer scale 1/G (G divides
# F). A cell's majority erases thin objects (poles, people, signs); refining the cells where that
# costs the most keeps their shape at a fraction of a finer map's bits. The payload: G (one byte),
# then one range-coded message: a flag per cell (adaptive binary counts, :class:`entropy.AdaptiveBits`), then
# the flagged cells' pixels at 1/G by the lossless coder above, every other pixel known from the
# cells (and a context like a decoded one).
_FLAG_PRIOR = (7, 1)  # initial (not flagged, flagged) counts of every flag context
_FLAG_MAX_TOTAL = 1 << 12


def check_detail(factor: int, detail: int) -> None:
    """ValueError unless 1/``detail`` can refine a map at 1/``factor`` (a proper divisor)."""
    if factor not in MAP_SCALES or not 1 <= detail < factor or factor % detail:
        raise ValueError(f"a map at 1/{factor} cannot be refined at 1/{detail} (it takes a proper divisor)")


def cell_pixels(cells: np.ndarray, factor: int, detail: int, shape: tuple[int, int]) -> np.ndarray:
    """A per-cell array spread over the pixels of its cell at 1/``detail`` (``shape``)."""
    return enlarge_map(cells, factor // detail, *shape)


def refine_cells(small: np.ndarray, fine: np.ndarray, factor: int, detail: int, cells: np.ndarray) -> np.ndarray:
    """The map at 1/``detail`` chunk F decodes: ``fine`` over the flagged ``cells`` (bool, on the
    grid of ``small``, the map at 1/``factor``), ``small``'s cells elsewhere."""
    inside = cell_pixels(np.asarray(cells, bool), factor, detail, fine.shape)
    return np.where(inside, fine, cell_pixels(small, factor, detail, fine.shape)).astype(np.uint8)


def detail_order(labels: np.ndarray, factor: int, detail: int, num_classes: int,
                 class_weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(the map at 1/``detail``, the cells worth refining, best first, as flat indices into the
    1/``factor`` grid). A cell's worth: what refining it adds to the map's mean IoU over the
    classes (each mislabelled pixel over its classes' union), each class weighted by
    ``class_weights`` (priorities; default 1); cells where the cells' map is already exact are left out."""
    check_detail(factor, detail)
    arr = np.asarray(labels)
    fine = arr.astype(np.uint8) if detail == 1 else reduce_map(arr, detail, num_classes)
    small = reduce_map(arr, factor, num_classes)
    base = cell_pixels(small, factor, detail, fine.shape)
    wrong = fine != base
    union = np.bincount(fine.ravel(), minlength=num_classes) + np.bincount(base.ravel(), minlength=num_classes)
    union = union - np.bincount(fine[~wrong].ravel(), minlength=num_classes)  # |A ∪ B| = |A| + |B| - |A ∩ B|
    weight = np.ones(num_classes) if class_weights is None else np.asarray(class_weights, np.float64)[:num_classes]
    per_class = weight / np.maximum(union, 1)
    gain = np.where(wrong, per_class[fine] + per_class[base], 0.0)
    k = factor // detail
    rows, cols = small.shape
    padded = np.zeros((rows * k, cols * k))
    padded[:gain.shape[0], :gain.shape[1]] = gain
    score = padded.reshape(rows, k, cols, k).sum((1, 3)).ravel()
    order = np.argsort(-score, kind="stable")
    return fine, order[score[order] > 0]


class _FlagModel(entropy.AdaptiveBits):
    """Adaptive binary counts of the cell flags. Context: the flags left and above, and whether
    the cell's 3×3 neighbourhood of cells holds more than one class."""

    def __init__(self, small: np.ndarray):
        super().__init__([list(_FLAG_PRIOR) for _ in range(8)], _FLAG_MAX_TOTAL)
        pad = np.pad(small, 1, mode="edge")
        rows, cols = small.shape
        windows = np.stack([pad[dy:dy + rows, dx:dx + cols] for dy in range(3) for dx in range(3)])
        self.mixed = (windows != small[None]).any(0).astype(np.int64).tolist()

    def context(self, flags: list[list[int]], y: int, x: int) -> int:
        return (flags[y][x - 1] if x else 0) + 2 * (flags[y - 1][x] if y else 0) + 4 * self.mixed[y][x]


def encode_detail(small: np.ndarray, fine: np.ndarray, factor: int, detail: int, cells: np.ndarray,
                  tables: LabelMapTables) -> bytes:
    """Chunk F's payload: the map ``fine`` (at 1/``detail``) over the flagged ``cells`` (bool,
    the shape of ``small``, the map at 1/``factor`` that chunk M sends)."""
    check_detail(factor, detail)
    cells = np.asarray(cells, bool)
    if cells.shape != small.shape:
        raise ValueError("cell flags must have the reduced map's shape")
    model, flags = _FlagModel(small), cells.astype(np.int64).tolist()
    probs = np.empty((cells.size, 2), np.float64)
    for y, row in enumerate(flags):
        for x, bit in enumerate(row):
            ctx = model.context(flags, y, x)
            probs[y * len(row) + x] = model.probability(ctx)
            model.update(ctx, bit)
    encoder = entropy.range_encoder()
    encoder.encode(cells.ravel().astype(np.int32), entropy.categorical(), probs)
    if cells.any():
        _encode_map(encoder, refine_cells(small, fine, factor, detail, cells), tables,
                    known=~cell_pixels(cells, factor, detail, fine.shape))
    return bytes([detail]) + entropy.finish(encoder)


def decode_detail(payload: bytes, small: np.ndarray, factor: int, height: int, width: int,
                  tables: LabelMapTables) -> tuple[int, np.ndarray, np.ndarray]:
    """(G, the map at 1/G, the refined cells) of chunk F's payload over the chunk-M map ``small``
    (at 1/``factor`` of a ``height``×``width`` image). Raises BitstreamError on bad data."""
    if not payload:
        raise BitstreamError("chunk 'F' is empty")
    detail = payload[0]
    try:
        check_detail(factor, detail)
    except ValueError as exc:
        raise BitstreamError(f"chunk 'F': {exc}") from None
    decoder = entropy.range_decoder(bytes(payload[1:]), "map-detail stream")
    categorical = entropy.categorical()
    rows, cols = small.shape
    model, flags = _FlagModel(small), [[0] * cols for _ in range(rows)]
    prob = np.empty((1, 2), np.float64)
    try:
        for y in range(rows):
            for x in range(cols):
                ctx = model.context(flags, y, x)
                prob[0] = model.probability(ctx)
                bit = int(decoder.decode(categorical, prob)[0])
                flags[y][x] = bit
                model.update(ctx, bit)
    except entropy.CODER_ERRORS as exc:
        raise BitstreamError(f"map-detail stream cannot be decoded ({exc})") from None
    cells = np.array(flags, dtype=bool).reshape(rows, cols)
    shape = reduced_shape(height, width, detail)
    base = cell_pixels(small, factor, detail, shape)
    fine = base.astype(np.uint8)
    if cells.any():
        fine = _decode_map(decoder, shape, tables, prior=base, known=~cell_pixels(cells, factor, detail, shape))
    if not decoder.maybe_exhausted():
        raise BitstreamError("map-detail stream has data after its last pixel")
    return detail, fine, cells


def decode_reduced(m_payload: bytes, f_payload: bytes | None, height: int, width: int, tables: LabelMapTables
                   ) -> tuple[int, np.ndarray, tuple[int, np.ndarray, np.ndarray] | None]:
    """Chunk M (and F, where the stream has one) of a ``height``×``width`` image: (F, the map at
    1/F, None or chunk F's (G, the map at 1/G, the refined cells)). Raises BitstreamError."""
    factor, code = parse_scaled(m_payload)
    small = decode_label_map(code, reduced_shape(height, width, factor), tables)
    detail = None if f_payload is None else decode_detail(f_payload, small, factor, height, width, tables)
    return factor, small, detail
