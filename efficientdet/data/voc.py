"""Pascal VOC reader (Annotations/*.xml, JPEGImages/, ImageSets/Main/{split}.txt).

Coordinates: VOC boxes are 1-based and inclusive (``xmin=1, xmax=10`` covers the first ten columns).
They become our 0-based end-exclusive xyxy as ``(xmin - 1, ymin - 1, xmax, ymax)``, so widths are
``xmax - xmin + 1``. A box with ``xmax <= xmin`` or ``ymax <= ymin`` in the file is a point or line
annotation (e.g. BCCD's ``504,337,504,337``), not a region, and is skipped as zero-area.
"""

from __future__ import annotations

import collections
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from efficientdet.data import checks
from efficientdet.data.records import DatasetError, DetectionDataset

_BOX_KEYS = ("xmin", "ymin", "xmax", "ymax")


@dataclass
class _Annotation:
    stem: str
    filename: str
    size: tuple[int, int] | None
    objects: list[tuple[str, list[float]]]


def is_voc_root(path: Path) -> bool:
    return (path / "Annotations").is_dir() and (path / "JPEGImages").is_dir() and (path / "ImageSets" / "Main").is_dir()


def find_voc_root(path: Path) -> Path | None:
    """``path`` itself if it is a VOC tree, else its only VOC subdirectory (e.g. ``bccd/BCCD``), else ``None``."""
    if is_voc_root(path):
        return path
    found = sorted(p for p in path.iterdir() if p.is_dir() and is_voc_root(p)) if path.is_dir() else []
    if len(found) > 1:
        raise DatasetError(f"{path} holds several VOC trees ({', '.join(p.name for p in found)}); pass one of them")
    return found[0] if found else None


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
        issues[checks.MALFORMED_FILE] += 1
        return None
    width, height = _float(_text(root, "size/width")), _float(_text(root, "size/height"))
    size = (int(width), int(height)) if width and height else None
    objects = []
    for obj in root.iter("object"):
        name = _text(obj, "name")
        box = [_float(_text(obj, f"bndbox/{k}")) for k in _BOX_KEYS]
        if not name:
            issues[checks.MALFORMED_ENTRY] += 1
        elif any(v is None for v in box):
            issues[checks.MALFORMED_BOX] += 1
        else:
            objects.append((name, box))
    return _Annotation(stem, _text(root, "filename") or "", size, objects)


def _image_path(root: Path, ann: _Annotation) -> Path:
    images = root / "JPEGImages"
    if ann.filename and (images / ann.filename).is_file():
        return images / ann.filename
    for ext in checks.IMAGE_EXTENSIONS:
        for candidate in (images / f"{ann.stem}{ext}", images / f"{ann.stem}{ext.upper()}"):
            if candidate.is_file():
                return candidate
    return images / (ann.filename or f"{ann.stem}.jpg")


def _to_pixels(box: list[float], issues: collections.Counter) -> list[float] | None:
    xmin, ymin, xmax, ymax = box
    if xmax < xmin or ymax < ymin:
        issues[checks.INVERTED] += 1
        return None
    if xmax == xmin or ymax == ymin:
        issues[checks.ZERO_AREA] += 1
        return None
    return [xmin - 1, ymin - 1, xmax, ymax]


def split_ids(root: Path, split: str) -> list[str]:
    """Image ids listed for ``split`` (first token per line; blank lines ignored)."""
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        available = sorted(p.stem for p in split_file.parent.glob("*.txt") if "_" not in p.stem)
        raise DatasetError(f"no images found in split {split!r} of {root}: looked for {split_file}; "
                           f"available splits: {', '.join(available) or 'none'}")
    ids = [line.split()[0] for line in checks.read_text(split_file).splitlines() if line.strip()]
    if not ids:
        raise DatasetError(f"no images found in split {split!r} of {root}: {split_file} lists no image ids")
    return sorted(dict.fromkeys(ids))


def load_voc(path: str | Path, split: str = "train", verify_images: bool = True, name: str | None = None,
             class_names: Sequence[str] | None = None) -> DetectionDataset:
    """Load one split; class names are the sorted unique (whitespace-stripped) object names in that split."""
    path = Path(path).resolve()
    root = find_voc_root(path)
    if root is None:
        raise DatasetError(f"{path} is not a Pascal VOC dataset: looked for Annotations/, JPEGImages/ and "
                           "ImageSets/Main/ in it or in exactly one subdirectory")
    ids = split_ids(root, split)
    issues: collections.Counter = collections.Counter()
    parsed: list[tuple[int, _Annotation]] = []
    for image_id, stem in enumerate(ids):
        xml_path = root / "Annotations" / f"{stem}.xml"
        if not xml_path.is_file():
            issues[checks.MISSING_ANNOTATION] += 1
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
            box = _to_pixels(raw, issues)
            if box is not None:
                boxes.append(box)
                labels.append(label_of[obj_name])
        rec = checks.make_record(image_id, str(_image_path(root, ann)), ann.size, boxes, labels, verify_images, issues)
        if rec is not None:
            records.append(rec)
    dataset = DetectionDataset(name or path.name, split, str(root), "voc", names, records, issues)
    return checks.finish(dataset, len(ids), class_names)
