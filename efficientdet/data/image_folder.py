"""A folder of unlabelled images as a dataset: what a parity gate needs when no labelled data of the
model's classes is at hand (an imported COCO model, a customer's camera frames).

The gate then compares raw outputs and detections with the FP32 model on these images; mAP is not
measured, and every report says so (``map`` None, int8 verdicts "not measurable" unless accepted).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from . import checks
from .records import DatasetError, DetectionDataset, ImageRecord


def load_image_folder(folder: str | Path, class_names: list[str]) -> DetectionDataset:
    """Every readable image directly in ``folder`` (sorted by name); unreadable files are skipped and counted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in checks.IMAGE_EXTENSIONS and p.is_file())
    issues = checks.Issues()
    records = []
    for path in files:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None or image.size == 0:
            issues.note("unreadable image skipped", path)
            continue
        records.append(ImageRecord(len(records) + 1, str(path), int(image.shape[1]), int(image.shape[0]),
                                   np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)))
    if not records:
        raise DatasetError(f"no readable images ({', '.join(checks.IMAGE_EXTENSIONS)}) in {folder}")
    return DetectionDataset(folder.name, "images", str(folder), "image folder", list(class_names), records, issues,
                            labelled=False)
