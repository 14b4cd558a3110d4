"""YOLO txt reader: ``cls cx cy w h`` lines normalised to the image size, one .txt per image.

Two layouts: a ``data.yaml`` (``names`` plus ``train``/``val``/``test`` image dirs or list files, relative
to ``path:`` or the yaml's directory, as Ultralytics resolves them), or ``classes.txt`` with
``images/{split}/`` and ``labels/{split}/``. An image's label file is its path with the last ``images``
directory replaced by ``labels`` and the suffix by ``.txt``; an image without one is a negative.
Because labels are normalised, images are always decoded for their size, even without ``verify_images``.
"""

from __future__ import annotations

import collections
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from efficientdet.data import checks
from efficientdet.data.records import DatasetError, DetectionDataset, ImageRecord
from efficientdet.data.simple_yaml import parse_simple_yaml

YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml")


def find_yolo_config(root: Path) -> Path | None:
    """The data.yaml or classes.txt that marks ``root`` as a YOLO dataset, if any."""
    for name in (*YAML_NAMES, "classes.txt"):
        if (root / name).is_file():
            return root / name
    return None


def _names(raw: Any, where: Path) -> list[str]:
    if isinstance(raw, list) and raw:
        return [str(n).strip() for n in raw]
    if isinstance(raw, dict) and raw:
        if sorted(raw) != list(range(len(raw))):
            raise DatasetError(f"'names' in {where} must map ids 0..{len(raw) - 1} to names, got ids {sorted(raw)}")
        return [str(raw[i]).strip() for i in range(len(raw))]
    raise DatasetError(f"{where} has no usable 'names' (a list, or a mapping of class id to name)")


def _resolve(base: Path, entry: str) -> Path:
    path = Path(entry)
    if path.is_absolute():
        return path
    resolved = (base / path).resolve()
    if not resolved.exists() and entry.startswith("../"):
        resolved = (base / entry[3:]).resolve()
    return resolved


def _images_in(source: Path) -> list[Path]:
    if source.is_file() and source.suffix == ".txt":
        lines = [ln.strip() for ln in checks.read_text(source).splitlines() if ln.strip()]
        return [_resolve(source.parent, ln) for ln in lines]
    if source.is_dir():
        return [p for p in source.rglob("*") if p.suffix.lower() in checks.IMAGE_EXTENSIONS and p.is_file()]
    return []


def _split_sources(config: Path, split: str) -> tuple[list[str], list[Path], list[Path] | None]:
    """(class names, image sources, explicit labels dirs or None) for ``split``."""
    root = config.parent
    if config.name == "classes.txt":
        names = [ln.strip() for ln in checks.read_text(config).splitlines() if ln.strip()]
        if not names:
            raise DatasetError(f"{config} lists no class names")
        return names, [root / "images" / split], [root / "labels" / split]
    data = parse_simple_yaml(checks.read_text(config))
    names = _names(data.get("names"), config)
    base = _resolve(root, str(data["path"])) if data.get("path") else root
    base = base if base.is_dir() else root
    key = "valid" if split == "val" and "val" not in data and "valid" in data else split
    entries = data.get(key)
    if not entries:
        available = [k for k in ("train", "val", "valid", "test") if data.get(k)]
        raise DatasetError(f"no images found in split {split!r} of {config}: no {split!r} key; "
                           f"available splits: {', '.join(available) or 'none'}")
    entries = entries if isinstance(entries, list) else [entries]
    return names, [_resolve(base, str(e)) for e in entries], None


def label_path(image: Path, labels_dir: Path | None = None, images_dir: Path | None = None) -> Path:
    """The label file Ultralytics would use for ``image`` (or the mirror path under an explicit labels dir)."""
    if labels_dir is not None and images_dir is not None:
        return (labels_dir / image.relative_to(images_dir)).with_suffix(".txt")
    parts = list(image.parts)
    if "images" in parts[:-1]:
        i = len(parts) - 2 - parts[-2::-1].index("images")
        parts[i] = "labels"
    return Path(*parts).with_suffix(".txt")


def _parse_line(tokens: list[str]) -> tuple[int, list[float]] | None:
    if len(tokens) != 5:
        return None
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        return None
    if not all(map(math.isfinite, values)) or not values[0].is_integer():
        return None
    return int(values[0]), values[1:]


def _read_labels(path: Path, width: int, height: int, num_classes: int,
                 issues: collections.Counter) -> tuple[list[list[float]], list[int]]:
    boxes, labels = [], []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError):
        checks.note_issue(issues, checks.MALFORMED_FILE, path)
        return boxes, labels
    for line in lines:
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        parsed = _parse_line(tokens)
        if parsed is None:
            checks.note_issue(issues, checks.MALFORMED_LINE, path)
            continue
        cls, (cx, cy, w, h) = parsed
        if not 0 <= cls < num_classes:
            checks.note_issue(issues, checks.UNKNOWN_CLASS, path)
            continue
        boxes.append([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height])
        labels.append(cls)
    return boxes, labels


def load_yolo(path: str | Path, split: str = "train", verify_images: bool = True, name: str | None = None,
              class_names: Sequence[str] | None = None) -> DetectionDataset:
    """Load one split of a YOLO dataset; ``path`` is its directory, data.yaml or classes.txt."""
    path = Path(path).resolve()
    config = path if path.is_file() else find_yolo_config(path)
    if config is None:
        raise DatasetError(f"{path} is not a YOLO dataset: looked for {', '.join(YAML_NAMES)} or classes.txt")
    names, sources, labels_dirs = _split_sources(config, split)
    images = sorted({p for s in sources for p in _images_in(s)}, key=str)
    if not images:
        raise DatasetError(f"no images found in split {split!r} of {config.parent}; looked for "
                           f"{', '.join(checks.IMAGE_EXTENSIONS)} files in {', '.join(map(str, sources))}")
    issues: collections.Counter = checks.Issues()
    records = []
    for image_id, image in enumerate(images):
        size = checks.image_size(str(image), None, verify_images, issues)
        if size is None:
            continue
        labels_file = label_path(image, labels_dirs[0], sources[0]) if labels_dirs else label_path(image)
        boxes: list[list[float]] = []
        labels: list[int] = []
        if labels_file.is_file():
            boxes, labels = _read_labels(labels_file, size[0], size[1], len(names), issues)
        else:
            checks.note_issue(issues, checks.NO_LABEL_FILE, image)
        clean, kept = checks.clean_boxes(np.asarray(boxes, np.float64), np.asarray(labels, np.int64),
                                         size[0], size[1], issues)
        records.append(ImageRecord(image_id, os.path.abspath(image), size[0], size[1], clean, kept))
    dataset = DetectionDataset(name or config.parent.name, split, str(config), "yolo", names, records, issues)
    return checks.finish(dataset, len(images), class_names)
