"""The ``.sqg`` container: magic, a tiny header, typed chunks with CRC32.

Layout (docs/bitstream.md is the normative spec)::

    magic (8 bytes) | chunk | chunk | ...
    chunk = type (1 ASCII letter) | length (LEB128 varint) | payload | CRC32 (4 bytes, big-endian)

The container knows nothing about what the payloads mean; ``entropy`` and ``codec``
do. Standard library only, so inspecting a file never needs torch or numpy.
"""
from __future__ import annotations

import io
import math
import os
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Callable

from sqgan_codec.coarse import chunk_format  # chunk C's codec (VP8 before 4.0)
from sqgan_codec.errors import BitstreamError, TruncatedError, UnsupportedVersionError
from sqgan_codec.vocabulary import built_in

# PNG's trick: the high byte catches 7-bit transports, CR LF / LF catch newline
# conversion, ^Z stops `type` on Windows.
MAGIC = b"\x89SQG\r\n\x1a\n"
# The newest version this code reads and writes. A stream is written with the oldest version
# that holds its chunks: 1.0 without a refinement or coarse-image chunk (every 1.x reader
# decodes it), 2.0 with a refinement chunk, 3.0 with a coarse-image chunk, 4.0 with a
# coarse image coded in another format than VP8, 5.0 with patches of the coarse image over
# regions of interest, 6.0 with the semantic map coded exactly at a reduced scale, 7.0 with finer
# patches of that map over chosen cells (all critical:
# an older reader must refuse them rather than decode without them or misread them).
FORMAT_MAJOR = 7
FORMAT_MINOR = 0
BASE_VERSION = (1, 0)
REFINE_VERSION = (2, 0)
COARSE_VERSION = (3, 0)
COARSE_FORMAT_VERSION = (4, 0)
PATCHES_VERSION = (5, 0)
SCALED_MAP_VERSION = (6, 0)
MAP_DETAIL_VERSION = (7, 0)
KNOWN_MINOR = {1: 0, 2: 0, 3: 0, 4: 0, 5: 0, 6: 0, 7: 0}  # newest minor this reader knows, per major

CHUNK_HEADER = "H"
CHUNK_SEMANTIC = "S"             # masked VQ tokens of the semantic map (base layer)
CHUNK_SEMANTIC_LOSSLESS = "L"    # lossless semantic map, instead of S
CHUNK_SEMANTIC_SCALED = "M"      # the semantic map coded exactly at 1/2..1/16 scale, instead of S
CHUNK_MAP_DETAIL = "F"           # chunk M's map at a finer scale over chosen cells, right after M
CHUNK_IMAGE = "I"                # image tokens (enhancement layer)
CHUNK_REFINE = "R"               # low-pass colour residual (refinement layer), always last
CHUNK_COARSE = "C"               # coarse image (faithful thumbnail), first after the header
CHUNK_PATCHES = "P"              # finer coarse-image patches over regions of interest, right after C
SEMANTIC_CHUNKS = (CHUNK_SEMANTIC, CHUNK_SEMANTIC_LOSSLESS, CHUNK_SEMANTIC_SCALED)
# a stream is complete once it holds one of these (the rest are enhancement layers)
LAYER_CHUNKS = (CHUNK_COARSE, *SEMANTIC_CHUNKS)

MAX_VARINT_BYTES = 5             # enough for any uint32
MAX_DIMENSION = 1 << 20          # width/height limit in pixels
MAX_STRIDE_LOG2 = 8
MAX_HEADER_BYTES = 1024          # bounds what read_header will read from a pipe
WEIGHTS_HASH_BYTES = 4
CRC_BYTES = 4

COLOUR_MODES = ("RGB", "L")      # index = the 2-bit code in the flags byte
FLAG_COLOUR_MASK = 0b0000_0011
FLAG_ALPHA_DROPPED = 0b0000_0100
FLAG_RESERVED_MASK = 0b1111_1000

# Names of the id bytes, for to_dict(). The container accepts any 0..255: whether
# this installation can decode a given id is the codec's decision, not the container's.
# the header's class-set byte → vocabulary name (sqgan_codec/vocabularies/)
CLASS_SETS = {v.class_set: name for name, v in built_in().items()}
# the header's segmenter byte → name (the ids are sqgan_codec.segmenters.base's SEGMENTER_*)
SEGMENTER_BUNDLED, SEGMENTER_ONNX, SEGMENTER_LABELS = 0, 1, 2
SEGMENTERS = {SEGMENTER_BUNDLED: "bundled", SEGMENTER_ONNX: "onnx", SEGMENTER_LABELS: "labels"}
CODERS = {0: "constriction-range-v1"}


# ---------------------------------------------------------------- varints

def encode_varint(n: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, least significant first, high bit = more follows."""
    if not 0 <= n <= 0xFFFF_FFFF:
        raise ValueError(f"varint out of range (0..2**32-1): {n}")
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def decode_varint(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """Decode the varint at ``buf[pos]``; return ``(value, position after it)``.

    Only the shortest encoding of a uint32 is accepted, so every value has exactly one
    byte form. Raises TruncatedError if ``buf`` ends inside it, BitstreamError otherwise.
    """
    value = 0
    for i in range(MAX_VARINT_BYTES):
        if pos + i >= len(buf):
            raise TruncatedError("stream ends inside a varint")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            if byte == 0 and i > 0:
                raise BitstreamError("non-canonical varint (ends in a zero byte)")
            if value > 0xFFFF_FFFF:
                raise BitstreamError("varint exceeds 32 bits")
            return value, pos + i + 1
    raise BitstreamError(f"varint longer than {MAX_VARINT_BYTES} bytes")


# ---------------------------------------------------------------- header

@dataclass(frozen=True)
class Header:
    """Everything needed to set up the decoder before reading any tokens.

    ``keep_ssm``/``keep_image`` are stored as ``round(r * 255)``; the constructor applies
    that quantisation, so a Header always equals what a file round trip gives back.
    ``version`` is the version a parsed stream declared; ``pack`` writes the oldest version
    that holds the stream's chunks (``BASE_VERSION`` or, with a refinement chunk,
    ``REFINE_VERSION``).
    """

    model_id: int
    weights_hash: bytes
    width: int
    height: int
    colour_mode: str = "RGB"
    alpha_dropped: bool = False
    latent_stride: int = 16
    class_set: int = 0
    segmenter_id: int = 0
    coder_id: int = 0
    keep_ssm: float = 0.0
    keep_image: float = 0.0
    version: tuple[int, int] = BASE_VERSION

    def __post_init__(self) -> None:
        if not 0 <= self.model_id <= 0xFFFF_FFFF:
            raise ValueError(f"model_id out of range: {self.model_id}")
        if not isinstance(self.weights_hash, bytes) or len(self.weights_hash) != WEIGHTS_HASH_BYTES:
            raise ValueError(f"weights_hash must be {WEIGHTS_HASH_BYTES} bytes")
        for name in ("width", "height"):
            if not 1 <= getattr(self, name) <= MAX_DIMENSION:
                raise ValueError(f"{name} out of range (1..{MAX_DIMENSION}): {getattr(self, name)}")
        if self.colour_mode not in COLOUR_MODES:
            raise ValueError(f"colour_mode must be one of {COLOUR_MODES}: {self.colour_mode!r}")
        stride = self.latent_stride
        if not (1 <= stride <= 1 << MAX_STRIDE_LOG2 and stride & (stride - 1) == 0):
            raise ValueError(f"latent_stride must be a power of two 1..{1 << MAX_STRIDE_LOG2}: {stride}")
        for name in ("class_set", "segmenter_id", "coder_id"):
            if not 0 <= getattr(self, name) <= 255:
                raise ValueError(f"{name} out of range (0..255): {getattr(self, name)}")
        for name in ("keep_ssm", "keep_image"):
            ratio = getattr(self, name)
            if not 0.0 <= ratio <= 1.0:
                raise ValueError(f"{name} out of range (0..1): {ratio}")
            object.__setattr__(self, name, round(ratio * 255) / 255)
        major, minor = self.version
        if not (1 <= major <= 15 and 0 <= minor <= 15):
            raise ValueError(f"version out of range: {self.version}")

    @property
    def grid(self) -> tuple[int, int]:
        """Latent grid ``(grid_h, grid_w)``: the image, padded up to whole stride cells."""
        return math.ceil(self.height / self.latent_stride), math.ceil(self.width / self.latent_stride)

    @property
    def padding(self) -> tuple[int, int]:
        """Replicate padding ``(pad_bottom, pad_right)`` that takes the image to the grid."""
        grid_h, grid_w = self.grid
        return grid_h * self.latent_stride - self.height, grid_w * self.latent_stride - self.width

    def to_dict(self) -> dict:
        """JSON-able summary (for ``sqgan info`` and reports)."""
        return {
            "version": f"{self.version[0]}.{self.version[1]}",
            "model": self.model_id,
            "weights_hash": self.weights_hash.hex(),
            "width": self.width,
            "height": self.height,
            "colour_mode": self.colour_mode,
            "alpha_dropped": self.alpha_dropped,
            "latent_stride": self.latent_stride,
            "grid": list(self.grid),
            "padding": list(self.padding),
            "class_set": CLASS_SETS.get(self.class_set, str(self.class_set)),
            "segmenter": SEGMENTERS.get(self.segmenter_id, str(self.segmenter_id)),
            "coder": CODERS.get(self.coder_id, str(self.coder_id)),
            "keep_ssm": round(self.keep_ssm, 4),
            "keep_image": round(self.keep_image, 4),
        }


def header_payload(header: Header, version: tuple[int, int] = BASE_VERSION) -> bytes:
    flags = COLOUR_MODES.index(header.colour_mode) | (FLAG_ALPHA_DROPPED if header.alpha_dropped else 0)
    return b"".join((
        bytes([version[0] << 4 | version[1], flags]),
        encode_varint(header.model_id),
        header.weights_hash,
        encode_varint(header.width),
        encode_varint(header.height),
        bytes([
            header.latent_stride.bit_length() - 1,
            header.class_set, header.segmenter_id, header.coder_id,
            round(header.keep_ssm * 255), round(header.keep_image * 255),
        ]),
    ))


def parse_header(payload: bytes) -> Header:
    """Decode an ``H`` payload. The version byte comes first and is checked first,
    because a newer major may lay out everything after it differently."""
    if not payload:
        raise BitstreamError("header chunk is empty")
    if len(payload) > MAX_HEADER_BYTES:
        raise BitstreamError(f"header chunk too long ({len(payload)} > {MAX_HEADER_BYTES} bytes)")
    major, minor = payload[0] >> 4, payload[0] & 0x0F
    if major > FORMAT_MAJOR:
        raise UnsupportedVersionError(
            f"format version {major}.{minor} is newer than this reader ({FORMAT_MAJOR}.{FORMAT_MINOR})")
    if major < 1:
        raise BitstreamError(f"invalid format version {major}.{minor}")
    newer_minor = minor > KNOWN_MINOR[major]
    try:
        flags = payload[1]
        model_id, pos = decode_varint(payload, 2)
        weights_hash = bytes(payload[pos:pos + WEIGHTS_HASH_BYTES])
        if len(weights_hash) != WEIGHTS_HASH_BYTES:
            raise TruncatedError
        width, pos = decode_varint(payload, pos + WEIGHTS_HASH_BYTES)
        height, pos = decode_varint(payload, pos)
        stride_log2, class_set, segmenter_id, coder_id, keep_ssm, keep_image = payload[pos:pos + 6]
        pos += 6
    except (IndexError, ValueError, TruncatedError):  # ValueError: short tuple unpacking
        raise BitstreamError("header chunk too short") from None
    except BitstreamError as exc:  # a malformed varint
        raise BitstreamError(f"header: {exc}") from None
    # Reserved bits and trailing bytes are how minor versions extend the header; in a
    # stream of our own version (or older) they can only mean damage.
    if not newer_minor and flags & FLAG_RESERVED_MASK:
        raise BitstreamError(f"reserved header flag bits set: 0x{flags:02x}")
    if not newer_minor and pos != len(payload):
        raise BitstreamError(f"{len(payload) - pos} unexpected byte(s) at the end of the header")
    colour_code = flags & FLAG_COLOUR_MASK
    if colour_code >= len(COLOUR_MODES):
        raise BitstreamError(f"unknown colour mode {colour_code}")
    if stride_log2 > MAX_STRIDE_LOG2:
        raise BitstreamError(f"latent stride log2 out of range (0..{MAX_STRIDE_LOG2}): {stride_log2}")
    try:
        return Header(
            model_id=model_id, weights_hash=weights_hash, width=width, height=height,
            colour_mode=COLOUR_MODES[colour_code], alpha_dropped=bool(flags & FLAG_ALPHA_DROPPED),
            latent_stride=1 << stride_log2, class_set=class_set, segmenter_id=segmenter_id,
            coder_id=coder_id, keep_ssm=keep_ssm / 255, keep_image=keep_image / 255,
            version=(major, minor),
        )
    except ValueError as exc:  # width/height limits
        raise BitstreamError(f"header: {exc}") from None


# ---------------------------------------------------------------- chunks

def _is_chunk_type(byte: int) -> bool:
    return 0x41 <= byte <= 0x5A or 0x61 <= byte <= 0x7A   # A-Z, a-z


def frame_chunk(kind: str, payload: bytes) -> bytes:
    type_byte = kind.encode("ascii")
    crc = zlib.crc32(payload, zlib.crc32(type_byte))
    return type_byte + encode_varint(len(payload)) + payload + crc.to_bytes(CRC_BYTES, "big")


def read_chunk(data: memoryview, pos: int) -> tuple[str, bytes, int]:
    """Read the chunk at ``data[pos]``; return ``(type, payload, position after it)``."""
    type_byte = data[pos]
    if not _is_chunk_type(type_byte):
        raise BitstreamError(f"invalid chunk type byte 0x{type_byte:02x} at offset {pos}")
    kind = chr(type_byte)
    try:
        length, start = decode_varint(data, pos + 1)
    except TruncatedError:
        raise TruncatedError(f"chunk {kind!r}: stream ends inside its length") from None
    except BitstreamError as exc:
        raise BitstreamError(f"chunk {kind!r}: length: {exc}") from None
    end = start + length
    if end + CRC_BYTES > len(data):
        raise TruncatedError(
            f"chunk {kind!r}: stream ends inside the chunk ({end + CRC_BYTES - len(data)} bytes missing)")
    payload = data[start:end]
    stored_crc = int.from_bytes(data[end:end + CRC_BYTES], "big")
    if zlib.crc32(payload, zlib.crc32(bytes([type_byte]))) != stored_crc:
        raise BitstreamError(f"chunk {kind!r}: CRC mismatch")
    return kind, bytes(payload), end + CRC_BYTES


def _check_chunk_order(kind: str, seen: dict[str, bytes]) -> None:
    """Raise unless critical chunk ``kind`` may follow the critical chunks in ``seen``
    (the header already read). Order: H, then C, then P, then S, L or M, then F, then I, then R (C or
    S/L/M present; P needs C; F comes right after M; I and R need S/L/M; R, when present, is last)."""
    if kind == CHUNK_HEADER:
        raise BitstreamError("duplicate header chunk 'H'")
    if kind == CHUNK_COARSE:
        if seen:
            raise BitstreamError("chunk 'C' must come first after the header")
    elif kind == CHUNK_PATCHES:
        if list(seen) != [CHUNK_COARSE]:
            raise BitstreamError("chunk 'P' must come right after the coarse-image chunk 'C'")
    elif kind in SEMANTIC_CHUNKS:
        if any(k in seen for k in SEMANTIC_CHUNKS):
            raise BitstreamError(f"chunk {kind!r}: the stream already has a semantic-map chunk")
    elif kind == CHUNK_MAP_DETAIL:
        if list(seen)[-1:] != [CHUNK_SEMANTIC_SCALED]:
            raise BitstreamError("chunk 'F' must come right after the reduced-map chunk 'M'")
    elif kind in (CHUNK_IMAGE, CHUNK_REFINE):
        if not any(k in seen for k in SEMANTIC_CHUNKS):
            raise BitstreamError(f"chunk {kind!r} comes before the semantic-map chunk (S, L or M)")
        if kind == CHUNK_IMAGE and CHUNK_REFINE in seen:
            raise BitstreamError("chunk 'I' after 'R': the refinement chunk must be last")
    else:
        raise BitstreamError(f"unknown critical chunk {kind!r}")


def _check_magic(data: bytes | memoryview) -> None:
    head = bytes(data[:len(MAGIC)])
    if head != MAGIC:
        if MAGIC.startswith(head):    # includes empty input
            raise TruncatedError("stream ends inside the magic number")
        raise BitstreamError("not an .sqg file (bad magic)")


# ---------------------------------------------------------------- public API

@dataclass
class Stream:
    """A parsed stream: the header, the critical payloads by type letter (ancillary
    chunks are skipped), and whether it was cut short (only with ``allow_truncated``)."""

    header: Header
    chunks: dict[str, bytes] = field(default_factory=dict)
    truncated: bool = False
    # a packet stream's reader fills this with what was lost (sqgan_codec.packets.PacketReport)
    packet_report: object | None = None


def pack(header: Header, chunks: list[tuple[str, bytes]]) -> bytes:
    """Serialise a stream: magic, ``H`` chunk, then ``chunks`` in the given order.

    ``chunks`` must hold an optional C first, then one of S/L/M (optional after C; F right after
    M), then at most one I, then at most one R (last); lowercase (ancillary) chunks may go
    anywhere before I.
    Raises BitstreamError for a list that would not parse, so the writer can never produce a
    file its own reader rejects.
    """
    seen: dict[str, bytes] = {}
    version = _version_for(chunks)
    framed = [MAGIC, frame_chunk(CHUNK_HEADER, header_payload(header, version))]
    for kind, payload in chunks:
        if len(kind) != 1 or not _is_chunk_type(ord(kind)):
            raise BitstreamError(f"chunk type must be one ASCII letter: {kind!r}")
        if CHUNK_REFINE in seen:
            raise BitstreamError(f"chunk {kind!r} after 'R': the refinement chunk must be last")
        if CHUNK_IMAGE in seen and kind != CHUNK_REFINE:
            raise BitstreamError(f"chunk {kind!r} after 'I': only 'R' may follow the image chunk")
        if kind.isupper():
            _check_chunk_order(kind, seen)
            seen[kind] = payload
        framed.append(frame_chunk(kind, bytes(payload)))
    if not any(k in seen for k in LAYER_CHUNKS):
        raise BitstreamError("a stream needs a coarse-image or a semantic-map chunk (C, S, L or M)")
    return b"".join(framed)


def _version_for(chunks: list[tuple[str, bytes]]) -> tuple[int, int]:
    """The oldest format version that holds these chunks."""
    kinds = dict(chunks)
    if CHUNK_MAP_DETAIL in kinds:
        return MAP_DETAIL_VERSION
    if CHUNK_SEMANTIC_SCALED in kinds:
        return SCALED_MAP_VERSION
    if CHUNK_PATCHES in kinds:
        return PATCHES_VERSION
    if CHUNK_COARSE in kinds:
        return COARSE_FORMAT_VERSION if chunk_format(kinds[CHUNK_COARSE]) else COARSE_VERSION
    return REFINE_VERSION if CHUNK_REFINE in kinds else BASE_VERSION


def append_refinement(data: bytes, payload: bytes) -> bytes:
    """A stream with the refinement chunk ``R`` appended (``data`` must not have one); its
    header is rewritten with the version that holds R, the other chunks are kept byte for byte."""
    stream = unpack(data)
    if CHUNK_REFINE in stream.chunks:
        raise BitstreamError("the stream already has a refinement chunk 'R'")
    _, _, header_end = read_chunk(memoryview(data), len(MAGIC))
    version = _version_for([*stream.chunks.items(), (CHUNK_REFINE, bytes(payload))])
    head = MAGIC + frame_chunk(CHUNK_HEADER, header_payload(stream.header, version))
    return head + bytes(data[header_end:]) + frame_chunk(CHUNK_REFINE, bytes(payload))


def unpack(data: bytes | bytearray | memoryview, *, allow_truncated: bool = False) -> Stream:
    """Parse and verify a whole stream.

    A stream may end after its coarse-image or semantic-map chunk (base layers only); that
    is complete, not truncated. If it ends anywhere else before its last chunk is whole, raise
    TruncatedError -- or, with ``allow_truncated``, return the complete chunks before the
    cut with ``truncated=True`` (the header itself must still be complete).
    """
    view = memoryview(data).cast("B")
    _check_magic(view)
    header: Header | None = None
    chunks: dict[str, bytes] = {}
    pos = len(MAGIC)
    try:
        while pos < len(view):
            if CHUNK_REFINE in chunks or (CHUNK_IMAGE in chunks and view[pos] != ord(CHUNK_REFINE)):
                last = CHUNK_REFINE if CHUNK_REFINE in chunks else CHUNK_IMAGE
                raise BitstreamError(f"{len(view) - pos} bytes of trailing data after the last chunk {last!r}")
            kind, payload, pos = read_chunk(view, pos)
            if header is None:
                if kind != CHUNK_HEADER:
                    raise BitstreamError(f"first chunk is {kind!r}, expected the header 'H'")
                header = parse_header(payload)
            elif kind.isupper():
                _check_chunk_order(kind, chunks)
                if kind == CHUNK_REFINE and header.version < REFINE_VERSION:
                    raise BitstreamError(f"chunk 'R' in a format {header.version[0]}.{header.version[1]} "
                                         f"stream (it needs {REFINE_VERSION[0]}.{REFINE_VERSION[1]})")
                if kind == CHUNK_COARSE and header.version < COARSE_VERSION:
                    raise BitstreamError(f"chunk 'C' in a format {header.version[0]}.{header.version[1]} "
                                         f"stream (it needs {COARSE_VERSION[0]}.{COARSE_VERSION[1]})")
                if kind == CHUNK_PATCHES and header.version < PATCHES_VERSION:
                    raise BitstreamError(f"chunk 'P' in a format {header.version[0]}.{header.version[1]} "
                                         f"stream (it needs {PATCHES_VERSION[0]}.{PATCHES_VERSION[1]})")
                if kind == CHUNK_MAP_DETAIL and header.version < MAP_DETAIL_VERSION:
                    raise BitstreamError(f"chunk 'F' in a format {header.version[0]}.{header.version[1]} "
                                         f"stream (it needs {MAP_DETAIL_VERSION[0]}.{MAP_DETAIL_VERSION[1]})")
                if kind == CHUNK_SEMANTIC_SCALED and header.version < SCALED_MAP_VERSION:
                    raise BitstreamError(f"chunk 'M' in a format {header.version[0]}.{header.version[1]} "
                                         f"stream (it needs {SCALED_MAP_VERSION[0]}.{SCALED_MAP_VERSION[1]})")
                if (kind == CHUNK_COARSE and chunk_format(payload)
                        and header.version < COARSE_FORMAT_VERSION):
                    raise BitstreamError(f"chunk 'C' codes its thumbnail in format {chunk_format(payload)}, "
                                         f"which a format {header.version[0]}.{header.version[1]} stream "
                                         f"cannot hold (it needs 4.0)")
                chunks[kind] = payload
            # else: ancillary, CRC-checked above and skipped
        if header is None:
            raise TruncatedError("stream ends before the header chunk")
        if not any(k in chunks for k in LAYER_CHUNKS):
            raise TruncatedError("stream ends before the coarse-image or semantic-map chunk")
    except TruncatedError:
        if not allow_truncated or header is None:
            raise
        return Stream(header, chunks, truncated=True)
    return Stream(header, chunks)


def read_header(source: bytes | bytearray | memoryview | str | os.PathLike | BinaryIO) -> Header:
    """Read and verify only the magic and the header chunk of a stream.

    ``source`` is the stream's bytes, a path, or a binary file object positioned at the
    start of the stream; at most the header's own bytes (plus, for a damaged stream, a
    few more) are read.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _read_header_from(io.BytesIO(source).read)
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as file:
            return _read_header_from(file.read)
    return _read_header_from(source.read)


def _read_header_from(read: Callable[[int], bytes]) -> Header:
    def read_up_to(n: int) -> bytes:
        parts, missing = [], n
        while missing > 0:          # raw streams and pipes may return short reads
            part = read(missing)
            if not part:
                break
            parts.append(part)
            missing -= len(part)
        return b"".join(parts)

    # Magic, type byte and the longest length varint; the header payload is longer than
    # any spare varint bytes, so a valid stream is never over-read.
    buf = read_up_to(len(MAGIC) + 1 + MAX_VARINT_BYTES)
    _check_magic(buf)
    pos = len(MAGIC)
    if len(buf) == pos:
        raise TruncatedError("stream ends before the header chunk")
    if buf[pos] != ord(CHUNK_HEADER):
        if not _is_chunk_type(buf[pos]):
            raise BitstreamError(f"invalid chunk type byte 0x{buf[pos]:02x} at offset {pos}")
        raise BitstreamError(f"first chunk is {chr(buf[pos])!r}, expected the header 'H'")
    try:
        length, start = decode_varint(buf, pos + 1)
    except TruncatedError:
        raise TruncatedError("chunk 'H': stream ends inside its length") from None
    if length > MAX_HEADER_BYTES:
        raise BitstreamError(f"header chunk too long ({length} > {MAX_HEADER_BYTES} bytes)")
    buf += read_up_to(max(0, start + length + CRC_BYTES - len(buf)))
    _, payload, _ = read_chunk(memoryview(buf), pos)
    return parse_header(payload)
