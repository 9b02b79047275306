"""A packet channel simulator: erasures (i.i.d. or bursty), bit errors, reproducible by seed.

It sends any file through the same channel: a packet stream (:mod:`.packets`) packet by
packet, any other file (a JPEG, a WebP, a plain ``.sqg``) cut into ``packet_bytes`` pieces.

* Erasures: i.i.d. with probability ``loss``, or with ``burst`` > 1 a Gilbert–Elliott channel
  (a good state that delivers and a bad state that loses) with mean loss ``loss`` and mean
  burst length ``burst`` packets.
* Bit errors: a binary symmetric channel flips each bit of a delivered packet with
  probability ``ber``. A packet stream's damaged packets are delivered damaged (the reader's
  CRC finds and drops them; their record length is the link's framing and is never damaged);
  a damaged piece of another file is dropped, as a link layer's own CRC would.

What arrives is written in order: a packet stream's surviving records, another file's
surviving pieces concatenated (what a receiver that does not know about losses would save).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import packets


@dataclass
class ChannelReport:
    packets: int
    lost: int
    damaged: int
    dropped_damaged: int
    packet_stream: bool

    def to_dict(self) -> dict:
        return {"packets": self.packets, "lost": self.lost, "damaged": self.damaged,
                "dropped_damaged": self.dropped_damaged, "packet_stream": self.packet_stream}


def erasures(n: int, loss: float, burst: float, rng: np.random.Generator) -> np.ndarray:
    """Which of ``n`` packets are lost: i.i.d. (``burst`` ≤ 1) or Gilbert–Elliott bursts of
    mean length ``burst`` with stationary loss rate ``loss``."""
    if not 0.0 <= loss <= 1.0:
        raise ValueError(f"loss must be in [0, 1]: {loss}")
    if burst < 1.0:
        raise ValueError(f"mean burst length must be ≥ 1 packet: {burst}")
    if burst == 1.0 or loss in (0.0, 1.0):
        return rng.random(n) < loss
    leave_bad = 1.0 / burst
    enter_bad = min(1.0, loss * leave_bad / (1.0 - loss))
    lost = np.zeros(n, bool)
    bad = rng.random() < loss  # start in the stationary distribution
    draws = rng.random(n)
    for i in range(n):
        lost[i] = bad
        bad = draws[i] >= leave_bad if bad else draws[i] < enter_bad
    return lost


def flip_bits(data: bytes, ber: float, rng: np.random.Generator) -> bytes:
    """``data`` through a binary symmetric channel with bit error rate ``ber``."""
    if not 0.0 <= ber <= 0.5:
        raise ValueError(f"bit error rate must be in [0, 0.5]: {ber}")
    bits = len(data) * 8
    count = rng.binomial(bits, ber) if bits and ber else 0
    if not count:
        return data
    out = bytearray(data)
    for b in rng.choice(bits, size=count, replace=False):
        out[b // 8] ^= 0x80 >> (b % 8)
    return bytes(out)


def transmit(data: bytes, *, loss: float = 0.0, burst: float = 1.0, ber: float = 0.0, seed: int = 0,
             packet_bytes: int | None = None) -> tuple[bytes, ChannelReport]:
    """Send ``data`` through the channel; returns what arrives and what happened to it.
    ``packet_bytes`` cuts a file that is not a packet stream (required for one)."""
    rng = np.random.default_rng(seed)
    is_packets = packets.is_packet_stream(data)
    if is_packets:
        units, tail = packets.split_records(data)  # a broken tail (never our writer's) travels as it is
    else:
        tail = 0
        if not packet_bytes or packet_bytes < 1:
            raise ValueError("not a packet stream: give the packet size to cut it into (packet_bytes)")
        units = [data[i:i + packet_bytes] for i in range(0, len(data), packet_bytes)]
    lost = erasures(len(units), loss, burst, rng)
    out, damaged, dropped = [], 0, 0
    for unit, gone in zip(units, lost):
        if gone:
            continue
        arrived = flip_bits(unit, ber, rng)
        if arrived != unit:
            damaged += 1
            if not is_packets:
                dropped += 1
                continue
        out.append(packets.frame_record(arrived) if is_packets else arrived)
    if tail:
        out.append(bytes(data[len(data) - tail:]))
    return b"".join(out), ChannelReport(len(units), int(lost.sum()), damaged, dropped, is_packets)
