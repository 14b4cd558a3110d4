"""The one internal record type every reader produces, so training and evaluation never see format quirks.

Boxes are ``float32 [N, 4]`` xyxy in absolute pixels with the 0-based, end-exclusive convention
(a box covering pixel columns 0..9 is ``x1=0, x2=10``), clipped inside the image with positive area.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class DatasetError(ValueError):
    """Nothing usable, a bad path or an unknown format; the message names the path and what was looked for."""


@dataclass(frozen=True, eq=False)
class ImageRecord:
    """One image and its ground truth, already validated against the real image.

    The arrays are made read-only so augmentation cannot silently edit the dataset in place (copy first).
    """

    image_id: int
    path: str
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.boxes.dtype != np.float32 or self.boxes.ndim != 2 or self.boxes.shape[1] != 4:
            raise ValueError(f"boxes must be float32 [N, 4], got {self.boxes.dtype} {self.boxes.shape}")
        if self.labels.dtype != np.int64 or self.labels.shape != (self.boxes.shape[0],):
            raise ValueError(f"labels must be int64 [{len(self.boxes)}], got {self.labels.dtype} {self.labels.shape}")
        self.boxes.flags.writeable = False
        self.labels.flags.writeable = False


@dataclass
class DetectionDataset:
    """A loaded split: records, class names, and the counted reasons for anything skipped or fixed."""

    name: str
    split: str
    source: str
    format: str
    class_names: list[str]
    records: list[ImageRecord]
    issues: collections.Counter = field(default_factory=collections.Counter)
    split_rule: str | None = None  # how the split was made when no split file defined it (VOC auto-split)
    class_ids: list[int] | None = None  # the dataset's own id per class (COCO category ids), when it has them
    labelled: bool = True  # False: images without annotations (parity on tensors and detections, no mAP)

    @property
    def num_boxes(self) -> int:
        return sum(len(r.labels) for r in self.records)

    def summary(self) -> str:
        """One line for logs: what was loaded and what was skipped or fixed."""
        text = (f"{self.format} dataset {self.name!r} split {self.split!r} from {self.source}: "
                f"{len(self.records)} images, {self.num_boxes} boxes, {len(self.class_names)} classes")
        if self.issues:
            describe = getattr(self.issues, "describe", None)
            text += "; " + ", ".join(describe(reason) if describe else f"{reason}: {n}"
                                     for reason, n in sorted(self.issues.items()))
        return text

    def to_coco(self) -> dict[str, Any]:
        """COCO ground-truth dict for pycocotools; category id = label + 1, annotation ids start at 1.

        Annotation ids must be positive: COCOeval treats a matched id of 0 as "unmatched".
        """
        images, annotations = [], []
        for rec in self.records:
            images.append({"id": int(rec.image_id), "file_name": rec.path, "width": rec.width, "height": rec.height})
            for box, label in zip(rec.boxes.tolist(), rec.labels.tolist(), strict=True):
                w, h = box[2] - box[0], box[3] - box[1]
                annotations.append({
                    "id": len(annotations) + 1, "image_id": int(rec.image_id), "category_id": int(label) + 1,
                    "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0,
                })
        categories = [{"id": i + 1, "name": name, "supercategory": "object"} for i, name in enumerate(self.class_names)]
        info = {"description": f"{self.name} {self.split}", "source": self.source, "format": self.format}
        return {"info": info, "images": images, "annotations": annotations, "categories": categories}
