"""The codec's semantic vocabulary: CamVid's 11 classes (SegNet order).

Every semantic map in sqgan_codec holds these ids. ``VOID`` only ever appears in
ground-truth label files; segmenters never predict it.
"""
from __future__ import annotations

CLASS_NAMES: tuple[str, ...] = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
    "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
)
NUM_CLASSES = len(CLASS_NAMES)
VOID = 11
CLASS_SET_ID = "camvid11"

# SegNet's palette, for overlays.
CLASS_COLOURS: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
    (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)

# Task relevance used in training losses (high = must survive compression).
CLASS_RELEVANCE: tuple[float, ...] = (
    0.1,   # Sky
    0.4,   # Building
    1.0,   # Pole
    0.4,   # Road
    0.5,   # Pavement
    0.1,   # Tree
    1.0,   # SignSymbol
    0.7,   # Fence
    0.7,   # Car
    1.0,   # Pedestrian
    1.0,   # Bicyclist
)


def class_id(name: str) -> int:
    """Class id for a name, case-insensitive (``"pedestrian"`` → 9)."""
    lowered = {n.lower(): i for i, n in enumerate(CLASS_NAMES)}
    try:
        return lowered[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown class {name!r}; known: {', '.join(CLASS_NAMES)}") from None
