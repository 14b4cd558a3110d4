"""Pascal VOC reader: XML annotations beside a folder of images, in the layouts people have.

Layouts (here or in exactly one subfolder): the classic ``Annotations/`` + ``JPEGImages/`` (+
``ImageSets/Main/{split}.txt``), and ``images/`` + ``annotations/`` or ``annots/`` side by side. Without
split files the images are split deterministically (:func:`auto_split`: seeded, 80/10/10 by default), the
user's folder is never written to, and the split is reported so it can be written down next to a run
(``python -m efficientdet split`` writes the lists as files).

Coordinates: VOC boxes are 1-based and inclusive (``xmin=1, xmax=10`` covers the first ten columns).
They become our 0-based end-exclusive xyxy as ``(xmin - 1, ymin - 1, xmax, ymax)``, so widths are
``xmax - xmin + 1``. A box with ``xmax <= xmin`` or ``ymax <= ymin`` in the file is a point or line
annotation (e.g. BCCD's ``504,337,504,337``), not a region, and is skipped as zero-area.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from efficientdet.data import checks
from efficientdet.data.records import DatasetError, DetectionDataset

_BOX_KEYS = ("xmin", "ymin", "xmax", "ymax")
LOG = logging.getLogger("efficientdet.data")


@dataclass
class _Annotation:
    stem: str
    filename: str
    size: tuple[int, int] | None
    objects: list[tuple[str, list[float]]]


# (annotations folder, images folder) pairs recognised as a VOC tree, classic layout first.
LAYOUTS = (("Annotations", "JPEGImages"), ("annotations", "images"), ("annots", "images"))
SPLIT_RATIOS = (0.8, 0.1, 0.1)  # train, val, test of an auto-split
SPLIT_SEED = 0


@dataclass(frozen=True)
class VocTree:
    root: Path
    annotations: Path
    images: Path

    @property
    def split_dir(self) -> Path:
        return self.root / "ImageSets" / "Main"


def _tree(path: Path) -> VocTree | None:
    """The classic folder names identify a VOC tree by themselves; ``annotations/`` + ``images/`` only when the
    annotations are XML files (a COCO folder has the same names, with a json inside)."""
    for ann, img in LAYOUTS:
        if (path / ann).is_dir() and (path / img).is_dir() and (ann == "Annotations"
                                                                or any((path / ann).glob("*.xml"))):
            return VocTree(path, path / ann, path / img)
    return None


def is_voc_root(path: Path) -> bool:
    return _tree(path) is not None


def find_voc_tree(path: Path) -> VocTree | None:
    """``path`` itself if it is a VOC tree, else its only VOC subdirectory (e.g. ``bccd/BCCD``), else ``None``."""
    tree = _tree(path)
    if tree is not None:
        return tree
    found = [t for t in (_tree(p) for p in sorted(path.iterdir()) if p.is_dir()) if t] if path.is_dir() else []
    if len(found) > 1:
        raise DatasetError(f"{path} holds several VOC trees ({', '.join(t.root.name for t in found)}); pass one")
    return found[0] if found else None


def find_voc_root(path: Path) -> Path | None:
    tree = find_voc_tree(path)
    return tree.root if tree else None


def auto_split(stems: Sequence[str], split: str, ratios: Sequence[float] = SPLIT_RATIOS,
               seed: int = SPLIT_SEED) -> list[str]:
    """The ids of ``split`` (train, val, test or trainval) in a seeded split of ``stems``.

    Each id's place comes from a hash of the seed and its name, not from the order files were listed, so
    the same folder always splits the same way, on every machine, and adding images moves few others.
    """
    if len(ratios) != 3 or any(r < 0 for r in ratios) or not 0.999 < sum(ratios) < 1.001:
        raise DatasetError(f"split ratios must be three numbers >= 0 (train, val, test) adding up to 1, got {ratios}")
    order = sorted(stems, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
    n_train = round(ratios[0] * len(order))
    n_val = round(ratios[1] * len(order))
    parts = {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
    parts["trainval"] = parts["train"] + parts["val"]
    if split not in parts:
        raise DatasetError(f"split {split!r} does not exist in an automatic split (no ImageSets/Main/*.txt): "
                           "use train, val, test or trainval")
    return sorted(parts[split])


def _text(node: ET.Element, key: str) -> str | None:
    child = node.find(key)
    return child.text.strip() if child is not None and child.text is not None else None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _parse(xml_path: Path, stem: str, issues: collections.Counter) -> _Annotation | None:
    try:
        root = ET.parse(xml_path).getroot()
    except (OSError, ET.ParseError):
        checks.note_issue(issues, checks.MALFORMED_FILE, xml_path)
        return None
    width, height = _float(_text(root, "size/width")), _float(_text(root, "size/height"))
    size = (int(width), int(height)) if width and height else None
    objects = []
    for obj in root.iter("object"):
        name = _text(obj, "name")
        box = [_float(_text(obj, f"bndbox/{k}")) for k in _BOX_KEYS]
        if not name:
            checks.note_issue(issues, checks.MALFORMED_ENTRY, xml_path)
        elif any(v is None for v in box):
            checks.note_issue(issues, checks.MALFORMED_BOX, xml_path)
        else:
            objects.append((name, box))
    return _Annotation(stem, _text(root, "filename") or "", size, objects)


def _image_path(images: Path, ann: _Annotation) -> Path:
    if ann.filename and (images / ann.filename).is_file():
        return images / ann.filename
    for ext in checks.IMAGE_EXTENSIONS:
        for candidate in (images / f"{ann.stem}{ext}", images / f"{ann.stem}{ext.upper()}"):
            if candidate.is_file():
                return candidate
    return images / (ann.filename or f"{ann.stem}.jpg")


def _to_pixels(box: list[float], issues: collections.Counter, where: Path) -> list[float] | None:
    xmin, ymin, xmax, ymax = box
    if xmax < xmin or ymax < ymin:
        checks.note_issue(issues, checks.INVERTED, where)
        return None
    if xmax == xmin or ymax == ymin:
        checks.note_issue(issues, checks.ZERO_AREA, where)
        return None
    return [xmin - 1, ymin - 1, xmax, ymax]


def split_files(tree: VocTree) -> list[Path]:
    """The split lists of a tree (``ImageSets/Main/{split}.txt``; per-class lists such as ``cat_train.txt`` aside)."""
    return sorted(p for p in tree.split_dir.glob("*.txt") if "_" not in p.stem) if tree.split_dir.is_dir() else []


def split_ids(tree: VocTree, split: str) -> tuple[list[str], str | None]:
    """Image ids of ``split`` (first token per line; blank lines ignored), and how the split was made when it
    was not read from a file (``None`` when it was)."""
    split_file = tree.split_dir / f"{split}.txt"
    if not split_files(tree):
        stems = sorted(p.stem for p in tree.annotations.glob("*.xml"))
        train, val, test = (round(r * 100) for r in SPLIT_RATIOS)
        rule = (f"automatic split {train}/{val}/{test} (seed {SPLIT_SEED}) of the {len(stems)} annotation files in "
                f"{tree.annotations}: it has no ImageSets/Main/*.txt")
        return auto_split(stems, split), rule
    if not split_file.is_file():
        available = [p.stem for p in split_files(tree)]
        raise DatasetError(f"no images found in split {split!r} of {tree.root}: looked for {split_file}; "
                           f"available splits: {', '.join(available) or 'none'}")
    ids = [line.split()[0] for line in checks.read_text(split_file).splitlines() if line.strip()]
    if not ids:
        raise DatasetError(f"no images found in split {split!r} of {tree.root}: {split_file} lists no image ids")
    return sorted(dict.fromkeys(ids)), None


def load_voc(path: str | Path, split: str = "train", verify_images: bool = True, name: str | None = None,
             class_names: Sequence[str] | None = None) -> DetectionDataset:
    """Load one split; class names are the sorted unique (whitespace-stripped) object names in that split."""
    path = Path(path).resolve()
    tree = find_voc_tree(path)
    if tree is None:
        raise DatasetError(f"{path} is not a Pascal VOC dataset: looked for "
                           f"{' or '.join(f'{a}/ + {i}/' for a, i in LAYOUTS)} (XML annotations beside the images) "
                           "in it or in exactly one subdirectory")
    ids, rule = split_ids(tree, split)
    if rule:
        LOG.info("%s split %r: %s", path.name, split, rule)
    issues: collections.Counter = checks.Issues()
    parsed: list[tuple[int, _Annotation]] = []
    for image_id, stem in enumerate(ids):
        xml_path = tree.annotations / f"{stem}.xml"
        if not xml_path.is_file():
            issues.note(checks.MISSING_ANNOTATION, xml_path)
            continue
        ann = _parse(xml_path, stem, issues)
        if ann is not None:
            parsed.append((image_id, ann))
    names = sorted({obj_name for _, ann in parsed for obj_name, _ in ann.objects})
    label_of = {n: i for i, n in enumerate(names)}
    records = []
    for image_id, ann in parsed:
        boxes, labels = [], []
        for obj_name, raw in ann.objects:
            box = _to_pixels(raw, issues, tree.annotations / f"{ann.stem}.xml")
            if box is not None:
                boxes.append(box)
                labels.append(label_of[obj_name])
        rec = checks.make_record(image_id, str(_image_path(tree.images, ann)), ann.size, boxes, labels,
                                 verify_images, issues)
        if rec is not None:
            records.append(rec)
    dataset = DetectionDataset(name or path.name, split, str(tree.root), "voc", names, records, issues,
                               split_rule=rule)
    return checks.finish(dataset, len(ids), class_names)
