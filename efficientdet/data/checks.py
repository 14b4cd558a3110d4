"""Validation shared by every reader, so bad data is skipped or fixed the same way and always counted.

Each reader turns its format into raw xyxy pixel boxes; these helpers decide what survives and record
why anything did not, under the issue names below (the keys of ``DetectionDataset.issues``).
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from efficientdet.data.records import DatasetError, DetectionDataset, ImageRecord
from runtime.preprocess import ImageError, read_image

LOG = logging.getLogger("efficientdet.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

MISSING_IMAGE = "missing image file skipped"
UNREADABLE_IMAGE = "unreadable image skipped"
SIZE_MISMATCH = "image size differs from annotation (used real size)"
MALFORMED_FILE = "malformed annotation file skipped"
MISSING_ANNOTATION = "missing annotation file skipped"
MALFORMED_ENTRY = "malformed annotation skipped"
MALFORMED_LINE = "malformed label line skipped"
NO_LABEL_FILE = "no label file (kept as negative)"
DUPLICATE_IMAGE = "duplicate image entry skipped"
ORPHAN_ANNOTATION = "annotation for unknown image skipped"
CROWD = "crowd annotation skipped"
UNKNOWN_CLASS = "unknown class skipped"
MALFORMED_BOX = "malformed box skipped"
ZERO_AREA = "zero-area box skipped"
INVERTED = "inverted box skipped"
OUTSIDE = "box outside image skipped"
CLIPPED = "box clipped to image"

_CLIP_TOLERANCE = 0.01
SHOWN = 3  # files named per reason in the summary line


class Issues(collections.Counter):
    """Counts per reason, and the files behind each count: a warning that says "missing image file skipped: 7"
    without naming one sent users hunting (issue 14). ``files[reason]`` lists every file, in order."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.files: dict[str, list[str]] = {}

    def note(self, reason: str, where: str | os.PathLike[str], count: int = 1) -> None:
        self[reason] += count
        self.files.setdefault(reason, []).append(str(where))

    def describe(self, reason: str) -> str:
        """``reason: N`` with the first files named (for a missing image: the path that was looked for)."""
        files = list(dict.fromkeys(self.files.get(reason, [])))
        if not files:
            return f"{reason}: {self[reason]}"
        more = f" and {len(files) - SHOWN} more" if len(files) > SHOWN else ""
        return f"{reason}: {self[reason]} ({', '.join(files[:SHOWN])}{more})"


def read_text(path: Path) -> str:
    """A dataset's config/list file as text; a :class:`DatasetError` naming it when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc


def image_size(path: str, annotated: tuple[int, int] | None, verify: bool,
               issues: collections.Counter) -> tuple[int, int] | None:
    """``(width, height)`` of the image file, or ``None`` (counted) when it is missing or unreadable.

    With ``verify`` the file is decoded and its real size wins over ``annotated``; without it the annotated
    size is trusted and only existence is checked (decoding is then needed only when no size is annotated).
    """
    if not os.path.isfile(path):
        note_issue(issues, MISSING_IMAGE, path)
        return None
    usable = annotated is not None and annotated[0] > 0 and annotated[1] > 0
    if usable and not verify:
        return annotated
    try:
        height, width = read_image(path).shape[:2]
    except ImageError:
        note_issue(issues, UNREADABLE_IMAGE, path)
        return None
    if annotated is not None and tuple(annotated) != (width, height):
        note_issue(issues, SIZE_MISMATCH, path)
    return width, height


def note_issue(issues: collections.Counter, reason: str, where: str | os.PathLike[str] | None,
               count: int = 1) -> None:
    """Count ``reason``, and remember ``where`` (the file) when ``issues`` is an :class:`Issues`."""
    if isinstance(issues, Issues) and where is not None:
        issues.note(reason, where, count)
    else:
        issues[reason] += count


def clean_boxes(boxes: np.ndarray, labels: np.ndarray, width: int, height: int,
                issues: collections.Counter, where: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Drop non-finite, empty, inverted and fully outside boxes; clip the rest into the image.

    ``boxes`` are xyxy pixels (0-based, end-exclusive). Returns ``float32 [N, 4]`` and ``int64 [N]``.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    labels = np.asarray(labels, np.int64).reshape(-1)
    keep = np.ones(len(boxes), bool)
    for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        if not np.isfinite([x1, y1, x2, y2]).all():
            reason = MALFORMED_BOX
        elif x2 < x1 or y2 < y1:
            reason = INVERTED
        elif x2 == x1 or y2 == y1:
            reason = ZERO_AREA
        elif x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
            reason = OUTSIDE
        else:
            over = max(-x1, -y1, x2 - width, y2 - height)
            if over > _CLIP_TOLERANCE:
                note_issue(issues, CLIPPED, where)
            continue
        note_issue(issues, reason, where)
        keep[i] = False
    boxes, labels = boxes[keep], labels[keep]
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    return boxes.astype(np.float32), labels


def make_record(image_id: int, path: str, annotated: tuple[int, int] | None, boxes: Sequence[Sequence[float]],
                labels: Sequence[int], verify: bool, issues: collections.Counter) -> ImageRecord | None:
    """Build a validated record, or ``None`` (counted) when the image itself is unusable."""
    size = image_size(path, annotated, verify, issues)
    if size is None:
        return None
    width, height = size
    clean, kept = clean_boxes(np.asarray(boxes, np.float64), np.asarray(labels, np.int64), width, height, issues,
                              where=path)
    return ImageRecord(int(image_id), os.path.abspath(path), int(width), int(height), clean, kept)


def remap_classes(dataset: DetectionDataset, class_names: Sequence[str]) -> DetectionDataset:
    """Re-index labels onto ``class_names`` by name (e.g. val onto train's classes); unknown names are skipped."""
    index = {name: i for i, name in enumerate(class_names)}
    lookup = np.array([index.get(name, -1) for name in dataset.class_names] + [-1], np.int64)
    if dataset.class_ids is not None:  # the dataset's own ids follow its classes onto the new order
        own = dict(zip(dataset.class_names, dataset.class_ids))
        dataset.class_ids = [own[n] for n in class_names] if all(n in own for n in class_names) else None
    records = []
    for rec in dataset.records:
        new = lookup[rec.labels] if len(rec.labels) else rec.labels
        known = new >= 0
        dataset.issues[UNKNOWN_CLASS] += int((~known).sum())
        records.append(ImageRecord(rec.image_id, rec.path, rec.width, rec.height, rec.boxes[known], new[known]))
    dataset.class_names = list(class_names)
    dataset.records = records
    return dataset


def finish(dataset: DetectionDataset, listed: int, class_names: Sequence[str] | None = None) -> DetectionDataset:
    """Optionally re-index onto ``class_names``, refuse a dataset with nothing usable, then log one summary.

    The summary is a warning when anything was skipped or fixed, so bad data is visible but never fatal.
    """
    if class_names is not None:
        remap_classes(dataset, class_names)
    kept = Issues({k: v for k, v in dataset.issues.items() if v})
    kept.files = {k: v for k, v in getattr(dataset.issues, "files", {}).items() if k in kept}
    dataset.issues = kept
    if not dataset.records:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(dataset.issues.items())) or "no reason recorded"
        raise DatasetError(f"no usable images in split {dataset.split!r} of {dataset.source}: "
                           f"{listed} listed, all skipped ({reasons})")
    if dataset.issues:
        LOG.warning("%s", dataset.summary())
    else:
        LOG.info("%s", dataset.summary())
    return dataset
