"""Encode options: how to spend the bits of one image (validated once, shared by the codec, the
rate and mode decisions, the jobs and the CLI)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from . import packets
from .classes import VOCABULARY as CAMVID11
from .decide import TUNES
from .vocabulary import Vocabulary

# The priority key that weighs every class not named (``--priority all=0,Pedestrian=1``).
ALL_CLASSES = "all"
SSM_MODES = ("auto", "vq", "lossless")
SPLIT_MODES = ("fixed", "search")
REFINE_MODES = ("auto", "on", "off")
# how the encoder ranks image tokens: SAMM's learned scores, or the segmenter's gradient (importance.py)
IMPORTANCES = ("samm", "gradient")


@dataclass(frozen=True)
class EncodeOptions:
    """How to spend the bits of one image. See :meth:`Codec.encode`."""

    bpp: float | None = None
    keep: float | None = None
    max_bytes: int | None = None
    priority: Mapping[str, float] | None = None
    roi: Sequence[tuple[int, int, int, int]] = ()
    ssm: str = "auto"
    split: str = "fixed"
    refine: str = "auto"
    tune: str = "balanced"
    packet_bytes: int | None = None
    protect_base: int = 1
    importance: str = "samm"

    def __post_init__(self) -> None:
        if self.bpp is not None and self.keep is not None:
            raise ValueError("give bpp or keep, not both")
        if self.bpp is not None and not self.bpp > 0:
            raise ValueError("bpp must be positive")
        if self.keep is not None and not 0 <= self.keep <= 1:
            raise ValueError("keep must be in [0, 1]")
        if self.max_bytes is not None and self.max_bytes < 1:
            raise ValueError("max_bytes must be a positive number of bytes")
        if self.ssm not in SSM_MODES:
            raise ValueError(f"ssm must be one of {SSM_MODES}")
        if self.split not in SPLIT_MODES:
            raise ValueError(f"split must be one of {SPLIT_MODES}")
        if self.refine not in REFINE_MODES:
            raise ValueError(f"refine must be one of {REFINE_MODES}")
        if self.tune not in TUNES:
            raise ValueError(f"tune must be one of {TUNES}")
        if self.importance not in IMPORTANCES:
            raise ValueError(f"importance must be one of {IMPORTANCES}")
        if self.priority:
            if any(not (v >= 0 and math.isfinite(v)) for v in self.priority.values()):
                raise ValueError("priorities must be finite and non-negative")
        if self.packet_bytes is not None and not (
                packets.MIN_PACKET_BYTES <= self.packet_bytes <= packets.MAX_PACKET_BYTES):
            raise ValueError(f"packet_bytes must be {packets.MIN_PACKET_BYTES}..{packets.MAX_PACKET_BYTES}")
        if not 1 <= self.protect_base <= packets.MAX_PROTECT:
            raise ValueError(f"protect_base must be 1..{packets.MAX_PROTECT}")
        for box in self.roi:
            if len(box) != 4 or box[2] <= 0 or box[3] <= 0:
                raise ValueError(f"a region of interest is x,y,w,h with w, h > 0: {box}")

    def check_classes(self, vocabulary: Vocabulary) -> None:
        """ValueError when a priority names a class the model's vocabulary does not have."""
        known = {n.lower() for n in vocabulary.names} | {ALL_CLASSES}
        unknown = [k for k in self.priority or {} if k.strip().lower() not in known]
        if unknown:
            raise ValueError(f"unknown class name(s) {unknown} in priority; classes of {vocabulary.name}: "
                             f"{', '.join(vocabulary.names)}")

    @property
    def rate_controlled(self) -> bool:
        return self.bpp is not None or self.max_bytes is not None


def parse_priority(text: str, vocabulary: Vocabulary = CAMVID11) -> dict[str, float]:
    """``"Pedestrian=4,SignSymbol=4,Sky=0"`` → {name: weight} for the classes of ``vocabulary``
    (the model's); names are matched case-insensitively; ``all=W`` weighs the classes not named
    (default 1), e.g. ``"all=0,Pedestrian=1"``."""
    names = vocabulary.names
    lookup = {n.lower(): n for n in (*names, ALL_CLASSES)}
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name.strip().lower() not in lookup:
            raise ValueError(f"bad priority {part!r}: expected CLASS=WEIGHT with CLASS one of "
                             f"{', '.join(names)} (or all=WEIGHT for the classes not named)")
        try:
            out[lookup[name.strip().lower()]] = float(value)
        except ValueError:
            raise ValueError(f"bad priority weight in {part!r}") from None
    return out


