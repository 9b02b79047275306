"""Packet streams: a token stream cut into self-contained packets for links that lose data.

A lost packet of a plain ``.sqg`` stream loses the picture (the range coder cannot resume). A
packet stream codes every packet on its own, so any subset decodes: the token positions of a
lost packet decode as *masked*, which the decoder already fills (SQ-GAN's de-masking), and
only the loss of every copy of the header is fatal.

Layout (normative spec: docs/bitstream.md, "Packet streams")::

    file   = record record ...
    record = length | body | CRC-24 of the body (3 bytes, big-endian; CRC-32, 4 bytes, in format 1)
    length = 1 byte (body + CRC, < 255) or 255 and 2 bytes big-endian
    body   = tag (LEB128 varint: index·4 + kind) | ...

* kind 0, tokens: ``index`` is the packet's first position in the interleaved order of the
  latent grid, then the number of positions (varint), then one range-coded message
  (:func:`sqgan_codec.entropy.encode_token_grids`) of those positions as one row: the semantic
  map's keep bits and indices, then the image tokens' with the class context of the map tokens
  *of the same packet* (as in a plain stream: nothing depends on another packet). The CRC is
  seeded with the stream's identity (the CRC of the header payload and nonce), so a packet of
  another stream is refused like a damaged one.
* kind 2, header: a token packet (possibly of no positions) that also carries, after its tag,
  the packet-format version, the stream's header payload (the ``H`` chunk's, length-prefixed),
  a 2-byte nonce, the number of token packets (kinds 0 and 2), the number of map copies per
  token packet, whether there are image tokens, and the fragmented chunks (type, fragment
  count). Plain CRC32. The first token packet and the last carry it (a header-only packet is
  added when the last has no room), and ``protect_base`` > 2 adds header-only copies. Its CRC
  starts from the CRC's own initial value.
* kind 1, map copy: the map tokens of a token packet's positions alone; ``protect_base`` K sends
  K − 1 of each, ahead of the token packets. Seeded CRC.
* kind 3, chunk fragment: ``index`` is the fragment number, then the chunk type (1 byte) and the
  fragment's bytes (the refinement chunk ``R``, when a stream has one). Seeded CRC.

The interleaved order cuts the grid's rows into segments of :data:`SEGMENT` positions and
visits the segments with a golden-ratio stride: a packet's positions lie in short runs spread
over the whole image (a lost packet leaves scattered holes, not a missing region), while the
keep bits keep most of their left-neighbour context. The record's length is the link layer's
framing (a datagram's length): the channel simulator damages bodies and CRCs, never lengths.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from . import bitstream

if TYPE_CHECKING:  # numpy and the coder load only to code tokens: `sqgan info` reads headers without them
    import numpy as np

    from .entropy import StreamTables
from .errors import BitstreamError, UnsupportedVersionError

PACKET_VERSION = 2         # the format this writer writes; the reader also reads format 1
READ_VERSIONS = (1, 2)
KIND_TOKENS, KIND_MAP_COPY, KIND_HEADER, KIND_FRAGMENT = 0, 1, 2, 3
# Format 2 checks records with CRC-24 (OpenPGP's polynomial, as Bluetooth LE checks its link
# packets of up to 257 bytes with a 24-bit CRC): a byte less per packet than format 1's CRC-32,
# about 0.7 % of a stream of 150-byte packets; a damaged packet slips through once in 2^24.
CRC_BYTES = {1: 4, 2: 3}
_CRC24_POLY, _CRC24_INIT = 0x864CFB, 0xB704CE
NONCE_BYTES = 2
MIN_PACKET_BYTES = 48     # a header packet must fit
MAX_PACKET_BYTES = 65_507  # a UDP datagram's payload
MIN_HEADER_COPIES = 2
MAX_PROTECT = 8
SEGMENT = 16                # positions per run of the interleaved order
# Chunks a packet stream carries as fragments (the token layers S and I become token packets).
FRAGMENT_CHUNKS = (bitstream.CHUNK_REFINE,)
_GOLDEN = (math.sqrt(5) - 1) / 2


@dataclass(frozen=True)
class Layer:
    """One token layer on the latent grid: keep mask, indices and the tables that code it."""

    keep: np.ndarray
    indices: np.ndarray
    tables: StreamTables


# The image tokens' class context from the map tokens at the same positions (codec.class_context
# with the model's code→class table): (map keep, map indices) → context, all 1×n.
ContextOf = Callable[["np.ndarray", "np.ndarray"], "np.ndarray"]


@dataclass
class PacketReport:
    """What a packet stream's reader found: ``sent`` from the header, ``received`` counted."""

    records: int = 0
    damaged: int = 0                # CRC mismatch (bit errors, or a packet of another stream)
    duplicates: int = 0
    header_copies: int = 0
    unreadable_bytes: int = 0       # a tail whose record framing is broken
    packets_sent: int = 0
    packets_received: int = 0
    map_copies_received: int = 0
    positions: int = 0              # latent positions per layer
    tokens_lost: dict[str, int] = field(default_factory=dict)   # positions of lost packets
    chunks_lost: list[str] = field(default_factory=list)

    @property
    def lost(self) -> bool:
        return self.packets_received < self.packets_sent or bool(self.chunks_lost)

    def to_dict(self) -> dict[str, Any]:
        return {"records": self.records, "damaged": self.damaged, "duplicates": self.duplicates,
                "header_copies": self.header_copies, "unreadable_bytes": self.unreadable_bytes,
                "packets_sent": self.packets_sent, "packets_received": self.packets_received,
                "map_copies_received": self.map_copies_received, "positions": self.positions,
                "tokens_lost": dict(self.tokens_lost), "chunks_lost": list(self.chunks_lost), "lost": self.lost}

    def summary(self) -> str:
        return describe(self.to_dict())


def describe(report: dict[str, Any]) -> str:
    """One line from :meth:`PacketReport.to_dict` (as ``image.info["sqgan_packets"]`` holds it)."""
    parts = [f"token packets {report['packets_received']}/{report['packets_sent']}"]
    parts += [f"{k} tokens lost {n}/{report['positions']}" for k, n in report["tokens_lost"].items() if n]
    parts += [f"{report['damaged']} damaged"] if report["damaged"] else []
    parts += [f"lost chunk(s) {', '.join(report['chunks_lost'])}"] if report["chunks_lost"] else []
    return "; ".join(parts)


@dataclass
class Received:
    """A packet stream as read: header, token grids (lost positions masked; ``image`` None
    when the stream has no image tokens), whole chunks, and what was lost."""

    header: bitstream.Header
    map_keep: np.ndarray
    map_indices: np.ndarray
    image_keep: np.ndarray | None
    image_indices: np.ndarray | None
    chunks: dict[str, bytes]
    report: PacketReport


def interleave(height: int, width: int) -> np.ndarray:
    """The order packets visit a ``height``×``width`` grid (raster indices): rows cut into runs
    of :data:`SEGMENT`, runs visited with the golden ratio's stride (made coprime to their
    number). Integers only: the same on every machine."""
    import numpy as np

    runs = [(y * width + x, min(SEGMENT, width - x)) for y in range(height) for x in range(0, width, SEGMENT)]
    m = len(runs)
    step = max(1, int(m * _GOLDEN))
    while math.gcd(step, m) != 1:
        step += 1
    order = [runs[(k * step) % m] for k in range(m)]
    return np.concatenate([np.arange(start, start + n, dtype=np.int64) for start, n in order])


def frame_record(record: bytes) -> bytes:
    """A record (body + CRC) with its length in front, as a file holds it."""
    n = len(record)
    return (bytes([n]) if n < 255 else b"\xff" + n.to_bytes(2, "big")) + record


def _crc24_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        c = byte << 16
        for _ in range(8):
            c = (c << 1) ^ _CRC24_POLY if c & 0x800000 else c << 1
        table.append(c & 0xFFFFFF)
    return tuple(table)


_CRC24_TABLE = _crc24_table()


def crc24(data: bytes | bytearray | memoryview, crc: int = _CRC24_INIT) -> int:
    """CRC-24/OPENPGP (RFC 4880, section 6.1) of ``data``, continuing from register ``crc``."""
    table = _CRC24_TABLE
    for byte in bytes(data):
        crc = ((crc << 8) & 0xFFFFFF) ^ table[(crc >> 16) ^ byte]
    return crc


def _crc(version: int, data: bytes | bytearray | memoryview, seed: int | None) -> int:
    """The record check of packet format ``version``; ``seed`` None: a header packet's (the
    CRC's initial value), else a stream's identity (:func:`_identity`)."""
    if version == 1:
        return zlib.crc32(data, seed or 0)
    return crc24(data, _CRC24_INIT if seed is None else seed)


def _frame(body: bytes, seed: int | None, version: int = PACKET_VERSION) -> bytes:
    return frame_record(body + _crc(version, body, seed).to_bytes(CRC_BYTES[version], "big"))


def _framed_size(body_len: int) -> int:
    n = body_len + CRC_BYTES[PACKET_VERSION]
    return n + (1 if n < 255 else 3)


def _identity(header_payload: bytes, nonce: bytes, version: int = PACKET_VERSION) -> int:
    """The CRC seed of a stream's packets other than its header packets."""
    return _crc(version, header_payload + nonce, None)


class _Coder:
    """Codes runs of the interleaved order: the map's tokens, then the image's."""

    def __init__(self, map_layer: Layer, image_layer: Layer | None, context_of: ContextOf, order: np.ndarray):
        self.map = (map_layer.keep.reshape(-1)[order], map_layer.indices.reshape(-1)[order], map_layer.tables)
        self.image = None if image_layer is None else (
            image_layer.keep.reshape(-1)[order], image_layer.indices.reshape(-1)[order], image_layer.tables)
        self.context_of = context_of

    def tokens(self, start: int, count: int, with_image: bool = True, shortest: bool = False) -> bytes:
        import numpy as np

        from .entropy import encode_token_grids

        if count == 0:
            return b""
        sel = slice(start, start + count)
        mk, mi, mt = self.map
        rows = [(mk[None, sel], mi[None, sel], np.zeros((1, count), np.int64), mt)]
        if with_image and self.image is not None:
            ik, ii, it = self.image
            rows.append((ik[None, sel], ii[None, sel], self.context_of(mk[None, sel], mi[None, sel]), it))
        return encode_token_grids(rows, shortest=shortest)


def _runs(coder: _Coder, n: int, caps: Callable[[int], int]) -> list[tuple[int, int, bytes]]:
    """(start, count, coded) of the token packets: greedily as many positions per packet as fit
    ``caps(packet number)`` bytes of body (galloping, then bisection on the count)."""
    def size(start: int, count: int) -> tuple[int, bytes]:
        coded = coder.tokens(start, count, shortest=True)
        head = bitstream.encode_varint(start * 4) + bitstream.encode_varint(count)
        return len(head) + len(coded), coded

    out, start, guess = [], 0, n
    while start < n:
        cap, remaining = caps(len(out)), n - start
        used, best = size(start, 1)
        if used > cap:
            raise ValueError("packets this small cannot hold one token position")
        lo, hi = 1, min(remaining, max(2, guess))
        while True:  # gallop: grow hi while it still fits
            used, trial = size(start, hi)
            if used > cap:
                break
            lo, best = hi, trial
            if hi == remaining:
                break
            hi = min(remaining, hi * 2)
        while hi - lo > 1:  # the largest count that fits lies in [lo, hi)
            mid = (lo + hi) // 2
            used, trial = size(start, mid)
            if used <= cap:
                lo, best = mid, trial
            else:
                hi = mid
        out.append((start, lo, best))
        start += lo
        guess = lo
    return out


def write(header: bitstream.Header, version: tuple[int, int], map_layer: Layer, image_layer: Layer | None,
          context_of: ContextOf, chunks: dict[str, bytes], *, packet_bytes: int, protect_base: int = 1) -> bytes:
    """A packet stream of one image; ``chunks`` of :data:`FRAGMENT_CHUNKS` go as fragments.
    Records are at most ``packet_bytes`` long. The header goes ``max(2, protect_base)`` times,
    the map ``protect_base`` times (see the module doc for where)."""
    if not MIN_PACKET_BYTES <= packet_bytes <= MAX_PACKET_BYTES:
        raise ValueError(f"packet size must be {MIN_PACKET_BYTES}..{MAX_PACKET_BYTES} bytes: {packet_bytes}")
    if not 1 <= protect_base <= MAX_PROTECT:
        raise ValueError(f"protect_base must be 1..{MAX_PROTECT}: {protect_base}")
    unknown = [k for k in chunks if k not in FRAGMENT_CHUNKS]
    if unknown:
        raise ValueError(f"chunk(s) {unknown} cannot travel in packets (only {FRAGMENT_CHUNKS})")
    hp = bitstream.header_payload(header, version)
    gh, gw = header.grid
    order = interleave(gh, gw)
    coder = _Coder(map_layer, image_layer, context_of, order)
    room = packet_bytes - _framed_size(0)

    def header_fields(packets: int, nonce: bytes) -> bytes:
        return b"".join((bytes([PACKET_VERSION, len(hp)]), hp, nonce, bitstream.encode_varint(packets),
                         bytes([(protect_base - 1) | (image_layer is not None) << 4 | len(chunks) << 5]),
                         *(k.encode("ascii") + bitstream.encode_varint(-(-len(v) // fragment_room) or 1)
                           for k, v in chunks.items())))

    fragment_room = room - 4  # a fragment's tag (≤ 3 bytes) and type
    reserve = len(header_fields(1 << 20, b"\0" * NONCE_BYTES)) + 1  # the packet count's varint at its longest
    if reserve + 4 > room:
        raise ValueError(f"packets of {packet_bytes} bytes cannot hold the header")
    # the packet that will carry the second header copy (the middle one), from the size of all
    # tokens coded as one message; header room is reserved in it and in the first
    estimate = len(coder.tokens(0, order.size)) + 4 * (order.size // 64 + 1)
    middle = max(1, -(-(estimate + 2 * reserve) // room) // 2)
    runs = _runs(coder, order.size, lambda i: room - reserve if i in (0, middle) else room)
    nonce = (zlib.crc32(b"".join(c for _, _, c in runs) + b"".join(chunks.values())) & 0xFFFF).to_bytes(NONCE_BYTES, "big")
    seed = _identity(hp, nonce)

    def token_body(kind: int, start: int, count: int, coded: bytes, fields: bytes = b"") -> bytes:
        return bitstream.encode_varint(start * 4 + kind) + fields + bitstream.encode_varint(count) + coded

    # the second header copy rides in the packet reserved for it, else in the last if it has
    # room, else in a header-only packet; protect_base > 2 adds header-only copies
    fields = header_fields(len(runs), nonce)
    second = middle if middle < len(runs) else len(runs) - 1
    if second == 0 or len(token_body(KIND_HEADER, *runs[second], fields)) > room:
        second = None
    extra = max(MIN_HEADER_COPIES, protect_base) - 1 - (second is not None)
    records = []
    for i, (start, count, coded) in enumerate(runs):
        if i in (0, second):
            records.append(_frame(token_body(KIND_HEADER, start, count, coded, fields), None))
        else:
            records.append(_frame(token_body(KIND_TOKENS, start, count, coded), seed))
    header_only = _frame(token_body(KIND_HEADER, 0, 0, b"", fields), None)
    map_copies = [_frame(token_body(KIND_MAP_COPY, start, count, coder.tokens(start, count, with_image=False, shortest=True)), seed)
                  for start, count, _ in runs] * (protect_base - 1)
    fragments = [_frame(bitstream.encode_varint(i * 4 + KIND_FRAGMENT) + kind.encode("ascii")
                        + data[j:j + fragment_room], seed)
                 for kind, data in chunks.items()
                 for i, j in enumerate(range(0, max(len(data), 1), fragment_room))]
    body = records[:1] + map_copies + records[1:-1] + fragments + records[-1:] if len(records) > 1 else records + map_copies + fragments
    # header-only copies spread evenly through the rest
    out, rest = body[:1], body[1:]
    marks = [round(len(rest) * (j + 1) / (extra + 1)) for j in range(max(extra, 0))]
    for k, r in enumerate(rest):
        out += [header_only] * marks.count(k)
        out.append(r)
    out += [header_only] * marks.count(len(rest))
    return b"".join(out)


def split_records(data: bytes | bytearray | memoryview) -> tuple[list[bytes], int]:
    """The records (body + CRC) of a packet stream and the number of trailing bytes whose
    framing is broken."""
    view = memoryview(data).cast("B")
    records, pos = [], 0
    while pos < len(view):
        length, start = view[pos], pos + 1
        if length == 255:
            if pos + 3 > len(view):
                break
            length, start = int.from_bytes(view[pos + 1:pos + 3], "big"), pos + 3
        if length <= min(CRC_BYTES.values()) or start + length > len(view):
            break
        records.append(bytes(view[start:start + length]))
        pos = start + length
    return records, len(view) - pos


def _crc_ok(record: bytes, seed: int | None, version: int) -> bool:
    n = CRC_BYTES[version]
    return len(record) > n and _crc(version, record[:-n], seed) == int.from_bytes(record[-n:], "big")


def _header_of(record: bytes) -> tuple[dict[str, Any], int] | None:
    """The plan of an intact header packet and the offset of its token count, else None.
    Raises for a packet-format version this reader does not know. The version is the one whose
    check the record passes (newest first), and the packet must say the same."""
    if len(record) < 8 or record[0] & 3 != KIND_HEADER:
        return None
    version = next((v for v in sorted(READ_VERSIONS, reverse=True) if _crc_ok(record, None, v)), None)
    if version is None:
        return None
    body = record[:-CRC_BYTES[version]]
    try:
        _, pos = bitstream.decode_varint(body, 0)
        if body[pos] not in READ_VERSIONS:
            raise UnsupportedVersionError(
                f"packet format version {body[pos]} (this reader knows {', '.join(map(str, READ_VERSIONS))})")
        if body[pos] != version:
            return None
        n = body[pos + 1]
        pos += 2
        hp, nonce = bytes(body[pos:pos + n]), bytes(body[pos + n:pos + n + NONCE_BYTES])
        if len(hp) != n or len(nonce) != NONCE_BYTES:
            return None
        count, pos = bitstream.decode_varint(body, pos + n + NONCE_BYTES)
        flags = body[pos]
        map_copies, has_image, chunk_count = flags & 0x0F, flags >> 4 & 1, flags >> 5
        pos += 1
        fragments: dict[str, int] = {}
        for _ in range(chunk_count):
            kind = chr(body[pos])
            fragments[kind], pos = bitstream.decode_varint(body, pos + 1)
    except UnsupportedVersionError:
        raise
    except (IndexError, ValueError, BitstreamError):
        return None
    if map_copies >= MAX_PROTECT or any(k not in FRAGMENT_CHUNKS for k in fragments):
        return None
    return {"version": version, "payload": hp, "nonce": nonce, "packets": count, "map_copies": map_copies,
            "image": bool(has_image), "fragments": fragments}, pos


def is_packet_stream(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` is a packet stream rather than a plain one: an intact header packet, or
    records that frame it whole (a packet stream that lost every header copy)."""
    if bytes(data[:len(bitstream.MAGIC)]) == bitstream.MAGIC:
        return False
    records, tail = split_records(data)
    try:
        return any(_header_of(r) is not None for r in records) or (bool(records) and not tail)
    except UnsupportedVersionError:
        return True


def read_header(data: bytes | bytearray | memoryview) -> tuple[bitstream.Header, dict[str, Any]]:
    """The header of a packet stream (from the first intact copy) and its packet plan; raises
    BitstreamError when every copy is lost or damaged. No token is decoded."""
    records, _ = split_records(data)
    for record in records:
        found = _header_of(record)
        if found is not None:
            return bitstream.parse_header(found[0]["payload"]), found[0]
    raise BitstreamError("packet stream: every copy of the header packet is lost or damaged "
                         "(nothing can be decoded without it)")


def read(data: bytes | bytearray | memoryview, map_tables: StreamTables, image_tables: StreamTables,
         context_of: ContextOf) -> Received:
    """Decode every packet that arrived. Lost or damaged packets leave their positions masked
    (keep False); duplicates, reordering, packets of other streams and a broken tail are
    tolerated and counted. The header's size must be checked (pixel limit) before this."""
    import numpy as np

    from .entropy import TokenDecoder

    header, plan = read_header(data)
    records, tail = split_records(data)
    version = plan["version"]
    seed = _identity(plan["payload"], plan["nonce"], version)
    gh, gw = header.grid
    n = gh * gw
    order = interleave(gh, gw)
    report = PacketReport(records=len(records), unreadable_bytes=tail, positions=n, packets_sent=plan["packets"])
    map_keep, map_indices = np.zeros(n, bool), np.zeros(n, np.int64)
    image_keep, image_indices = np.zeros(n, bool), np.zeros(n, np.int64)
    map_covered, image_covered = np.zeros(n, bool), np.zeros(n, bool)
    seen: set[tuple[int, int, int]] = set()
    pieces: dict[str, dict[int, bytes]] = {k: {} for k in plan["fragments"]}
    for record in records:
        body = record[:-CRC_BYTES[version]]
        try:
            tag, pos = bitstream.decode_varint(body, 0)
            kind, index = tag & 3, tag >> 2
            if kind == KIND_HEADER:
                found = _header_of(record)
                if found is None or found[0] != plan:
                    raise BitstreamError("damaged header packet or one of another stream")
                report.header_copies += 1
                pos = found[1]
            elif not _crc_ok(record, seed, version):
                raise BitstreamError("CRC mismatch")
            if kind == KIND_FRAGMENT:
                chunk = chr(body[pos])
                if chunk not in pieces or index >= plan["fragments"][chunk]:
                    raise BitstreamError("fragment outside the plan")
                if index in pieces[chunk]:
                    report.duplicates += 1
                pieces[chunk][index] = bytes(body[pos + 1:])
                continue
            count, pos = bitstream.decode_varint(body, pos)
            if count == 0:
                continue  # a header-only packet
            key = (kind == KIND_MAP_COPY, index, count)
            if key in seen:
                report.duplicates += 1
                continue
            sel = slice(index, index + count)
            if index + count > n:
                raise BitstreamError("token packet outside the grid")
            # nothing is decoded twice (at most two passes over the grid, whatever the file holds)
            covered = map_covered if kind == KIND_MAP_COPY else image_covered
            if covered[sel].all():
                report.duplicates += 1
                continue
            if covered[sel].any():
                raise BitstreamError("token packet overlapping another")
            decoder = TokenDecoder(body[pos:])
            mk, mi = decoder.grid((1, count), np.zeros((1, count), np.int64), map_tables)
            where = order[sel]
            if kind == KIND_MAP_COPY:
                report.map_copies_received += 1
            else:
                if plan["image"]:
                    ik, ii = decoder.grid((1, count), context_of(mk, mi), image_tables)
                    image_keep[where], image_indices[where] = ik[0], ii[0]
                image_covered[sel] = True
                report.packets_received += 1
            if not map_covered[sel].any():  # a map copy and its token packet carry the same map tokens
                map_keep[where], map_indices[where] = mk[0], mi[0]
                map_covered[sel] = True
            seen.add(key)
        except (BitstreamError, IndexError):
            report.damaged += 1  # bit errors, another stream's packet, or a hostile body
    report.tokens_lost = {"map": int(n - map_covered.sum())}
    if plan["image"]:
        report.tokens_lost["image"] = int(n - image_covered.sum())
    chunks = {}
    for chunk, got in pieces.items():
        if len(got) == plan["fragments"][chunk]:
            chunks[chunk] = b"".join(got[i] for i in range(len(got)))
        else:
            report.chunks_lost.append(chunk)
    grid = (gh, gw)
    return Received(header, map_keep.reshape(grid), map_indices.reshape(grid),
                    image_keep.reshape(grid) if plan["image"] else None,
                    image_indices.reshape(grid) if plan["image"] else None, chunks, report)
