"""The shipped models' semantic vocabulary: CamVid's 11 classes (SegNet order), read from
``vocabularies/camvid11.json`` (see :mod:`.vocabulary`).

Every semantic map of the shipped models holds these ids. ``VOID`` only ever appears in
ground-truth label files; segmenters never predict it.
"""
from __future__ import annotations

from .vocabulary import load

VOCABULARY = load("camvid11")
CLASS_NAMES: tuple[str, ...] = VOCABULARY.names
NUM_CLASSES = VOCABULARY.num_classes
VOID = VOCABULARY.void
CLASS_SET_ID = VOCABULARY.name
CLASS_COLOURS: tuple[tuple[int, int, int], ...] = VOCABULARY.colours  # SegNet's palette, for overlays
CLASS_RELEVANCE: tuple[float, ...] = VOCABULARY.relevance  # training-loss weights (high: must survive)


def class_id(name: str) -> int:
    """Class id for a name, case-insensitive (``"pedestrian"`` → 9)."""
    return VOCABULARY.class_id(name)
