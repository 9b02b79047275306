"""Class vocabularies: the names, colours and relevance of a model's semantic classes, and how a
dataset's label ids map onto them. A vocabulary is data (a JSON file), like the weights it
belongs to; ``camvid11`` and ``cityscapes19`` ship in ``sqgan_codec/vocabularies/``. A registry
entry names its model's (``config.vocabulary``): a built-in name, or a ``.json`` file beside the weights.

File format::

    {"name": "camvid11", "class_set": 0, "ignore": 11, "description": "...",
     "classes": [{"name": "Sky", "colour": [128, 128, 128], "relevance": 0.1, "label_ids": [0]}, ...]}

- ``class_set``: the byte the stream header records (0 camvid11, 1 cityscapes19; a vocabulary of
  your own takes one of 128–255), so a stream is never decoded with another vocabulary.
- ``label_ids``: the ids in the dataset's label files that mean this class (default: the class's
  position); ``ignore``: the label id of unlabelled pixels; any id not listed is ignored too.
- ``relevance``: the weight of the class in training losses (high: must survive compression).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy only where labels are mapped: `sqgan info` reads headers without it
    import numpy as np

BUILT_IN = Path(__file__).resolve().parent / "vocabularies"
MAX_CLASSES = 254  # class ids and the void id fit in a uint8 map
MAX_LABEL_ID = 65535  # 16-bit label files


class VocabularyError(ValueError):
    """A vocabulary file that cannot be used (the message says what is wrong)."""


@dataclass(frozen=True)
class Vocabulary:
    name: str
    class_set: int
    names: tuple[str, ...]
    colours: tuple[tuple[int, int, int], ...]
    relevance: tuple[float, ...]
    label_ids: tuple[tuple[int, ...], ...]
    ignore: int
    description: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def void(self) -> int:
        """The id of ignored pixels in mapped label maps (one past the last class)."""
        return self.num_classes

    def class_id(self, name: str) -> int:
        """Class id for a name, case-insensitive."""
        lowered = {n.lower(): i for i, n in enumerate(self.names)}
        try:
            return lowered[name.strip().lower()]
        except KeyError:
            raise ValueError(f"unknown class {name!r}; known: {', '.join(self.names)}") from None

    def label_lookup(self) -> np.ndarray:
        """uint8 table over label ids 0..65535: the class id, or ``void`` for the rest."""
        import numpy as np

        table = np.full(MAX_LABEL_ID + 1, self.void, np.uint8)
        for cls, ids in enumerate(self.label_ids):
            table[list(ids)] = cls
        return table

    def map_labels(self, raw: np.ndarray) -> np.ndarray:
        """A dataset's label file (ids) → class ids, ``void`` where ignored."""
        import numpy as np

        arr = np.asarray(raw)
        if arr.dtype.kind not in "iu" or (arr.size and (arr.min() < 0 or arr.max() > MAX_LABEL_ID)):
            raise VocabularyError(f"label ids must be integers in 0..{MAX_LABEL_ID}")
        return self.label_lookup()[arr.astype(np.int64)]

    def to_dict(self) -> dict:
        return {"name": self.name, "class_set": self.class_set, "ignore": self.ignore,
                "description": self.description,
                "classes": [{"name": n, "colour": list(c), "relevance": r, "label_ids": list(i)}
                            for n, c, r, i in zip(self.names, self.colours, self.relevance, self.label_ids)]}

    @property
    def digest(self) -> str:
        """sha256 (16 hex digits) of what the networks depend on: names, order, label mapping."""
        core = {"names": self.names, "label_ids": self.label_ids, "ignore": self.ignore}
        return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:16]


def parse(data: dict, source: str = "vocabulary") -> Vocabulary:
    """A validated :class:`Vocabulary` from the file's JSON object."""
    def bad(why: str) -> VocabularyError:
        return VocabularyError(f"{source}: {why}")

    if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
        raise bad("expected an object with a 'classes' list")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise bad("'name' must be a non-empty string")
    classes = data["classes"]
    if not 1 <= len(classes) <= MAX_CLASSES:
        raise bad(f"{len(classes)} classes (1..{MAX_CLASSES} allowed)")
    class_set = data.get("class_set")
    if not isinstance(class_set, int) or isinstance(class_set, bool) or not 0 <= class_set <= 255:
        raise bad("'class_set' must be an integer 0..255 (the header's class-set byte)")
    ignore = data.get("ignore", len(classes))
    if not isinstance(ignore, int) or not 0 <= ignore <= MAX_LABEL_ID:
        raise bad(f"'ignore' must be a label id 0..{MAX_LABEL_ID}")
    names, colours, relevance, label_ids, seen_ids = [], [], [], [], {}
    for i, c in enumerate(classes):
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not c["name"].strip():
            raise bad(f"class {i} needs a non-empty 'name'")
        if c["name"].strip().lower() in (n.lower() for n in names):
            raise bad(f"class name {c['name']!r} appears twice")
        colour = c.get("colour")
        if (not isinstance(colour, list) or len(colour) != 3
                or not all(isinstance(v, int) and 0 <= v <= 255 for v in colour)):
            raise bad(f"class {c['name']!r}: 'colour' must be three integers 0..255")
        rel = c.get("relevance", 1.0)
        if not isinstance(rel, (int, float)) or isinstance(rel, bool) or not (math.isfinite(rel) and rel >= 0):
            raise bad(f"class {c['name']!r}: 'relevance' must be a finite number ≥ 0")
        ids = c.get("label_ids", [i])
        if (not isinstance(ids, list) or not ids
                or not all(isinstance(v, int) and 0 <= v <= MAX_LABEL_ID for v in ids)):
            raise bad(f"class {c['name']!r}: 'label_ids' must be a list of ids 0..{MAX_LABEL_ID}")
        for v in ids:
            if v == ignore or v in seen_ids:
                raise bad(f"label id {v} of {c['name']!r} is the ignore id or another class's")
            seen_ids[v] = i
        names.append(c["name"].strip())
        colours.append(tuple(colour))
        relevance.append(float(rel))
        label_ids.append(tuple(ids))
    return Vocabulary(name=name.strip(), class_set=class_set, names=tuple(names), colours=tuple(colours),
                      relevance=tuple(relevance), label_ids=tuple(label_ids), ignore=ignore,
                      description=str(data.get("description", "")))


def load(name_or_path: str | Path) -> Vocabulary:
    """A built-in vocabulary by name (``camvid11``, ``cityscapes19``) or a vocabulary file."""
    path = Path(name_or_path)
    if not path.suffix and (BUILT_IN / f"{name_or_path}.json").is_file():
        path = BUILT_IN / f"{name_or_path}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in BUILT_IN.glob("*.json")))
        raise VocabularyError(f"no vocabulary {str(name_or_path)!r} (built in: {known}; or a JSON file)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VocabularyError(f"{path}: cannot be read as JSON ({exc})") from None
    return parse(data, str(path))


def built_in() -> dict[str, Vocabulary]:
    return {p.stem: load(p) for p in sorted(BUILT_IN.glob("*.json"))}
