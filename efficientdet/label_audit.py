"""Label audit: where a trained model and a dataset's boxes disagree confidently, so a person can look.

Why it exists: BCCD carries 15 images (of 364) with no RBC box although red cells fill them; every cell the
model finds there is scored as a false positive, which cost the reference Lite0 0.7 point of test mAP@.5
(issue 10). It went unnoticed until session 17 looked at the test images by eye, and users' own datasets have
the same kind of holes. A model that is right most of the time finds them: on such an image it reports many
confident detections of a class that has no box at all.

The audit compares predictions with the ground truth per image and class, with the IoU matching of
COCO's mAP@.5 (a detection matches the unmatched box of its class it overlaps most, best score first):

* ``class_unlabelled`` -- at least ``min_count`` confident detections of a class that has no box in the
  image (the BCCD case; the strongest signal, listed in ``flagged.txt``);
* ``unlabelled`` -- confident detections that match no box of their class (an object nobody boxed, or a
  false positive; counted per image to rank them);
* ``unconfirmed`` -- boxes that no detection of their class overlaps at any score the post-processing
  keeps, with the class of a confident detection that covers the box instead, if any (a wrong class,
  a box around nothing, or a miss of the model).

It reads only predictions and records, so it works with any model the project can run. It flags, it
never edits: the dataset stays as it is, and what to do with a flagged image is the user's call.
``label_audit_report.py`` turns the findings into the JSON, Markdown, image list and drawings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from efficientdet.data.records import DetectionDataset, ImageRecord
from runtime.iou import iou_matrix
from runtime.postprocess import Detections


@dataclass(frozen=True)
class AuditSettings:
    """``score``: what counts as confident. ``iou``: COCO's mAP@.5 match. ``min_count``: confident detections
    of an unboxed class before an image is flagged (one stray detection is common)."""

    score: float = 0.5
    iou: float = 0.5
    min_count: int = 3


@dataclass(frozen=True)
class ImageFindings:
    """What one image's labels and the model disagree on (boxes in original-image pixels)."""

    split: str
    path: str
    unlabelled: tuple[tuple[int, float, tuple[float, ...]], ...]  # (class id, score, box) confident, no match
    unconfirmed: tuple[tuple[int, int | None, tuple[float, ...]], ...]  # (class id, confident other class, box)
    class_unlabelled: tuple[int, ...]  # classes with >= min_count confident detections and no box
    labels: tuple[int, ...]  # the class of each box of the image, for counts per class

    @property
    def weight(self) -> int:
        """How much there is to look at: the ranking key."""
        return len(self.unlabelled) + len(self.unconfirmed)


def _match(gt: np.ndarray, det: np.ndarray, iou: float) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching of ``det`` (sorted best first) to ``gt``: matched flags for both."""
    det_ok, gt_ok = np.zeros(len(det), bool), np.zeros(len(gt), bool)
    if len(det) and len(gt):
        ious = iou_matrix(det.astype(np.float64), gt.astype(np.float64))
        for i in range(len(det)):
            free = np.where(gt_ok, -1.0, ious[i])
            j = int(free.argmax())
            if free[j] >= iou:
                det_ok[i] = gt_ok[j] = True
    return det_ok, gt_ok


def _covering_class(box: np.ndarray, boxes: np.ndarray, classes: np.ndarray, iou: float) -> int | None:
    """The class of the detection among ``boxes`` that overlaps ``box`` most, if that overlap reaches ``iou``."""
    if not len(boxes):
        return None
    overlap = iou_matrix(box[None].astype(np.float64), boxes.astype(np.float64))[0]
    j = int(overlap.argmax())
    return int(classes[j]) if overlap[j] >= iou else None


def _rounded(box: np.ndarray) -> tuple[float, ...]:
    return tuple(round(float(v), 1) for v in box)


def audit_image(record: ImageRecord, det: Detections, split: str, settings: AuditSettings) -> ImageFindings:
    """Findings for one image; ``det`` are its detections in original-image pixels, as evaluation keeps them."""
    order = np.argsort(-det.scores, kind="stable")
    boxes, scores, classes = det.boxes[order], det.scores[order], det.class_ids[order].astype(int)
    confident = scores >= settings.score
    unlabelled, unconfirmed, class_unlabelled = [], [], []
    for c in sorted(set(classes.tolist()) | set(record.labels.tolist())):
        gt = record.boxes[record.labels == c]
        sure = (classes == c) & confident
        det_ok, _ = _match(gt, boxes[sure], settings.iou)
        _, gt_ok = _match(gt, boxes[classes == c], settings.iou)  # a box counts as found at any kept score
        unlabelled += [(c, float(s), _rounded(b)) for s, b in zip(scores[sure][~det_ok], boxes[sure][~det_ok])]
        if len(gt) == 0 and int(sure.sum()) >= settings.min_count:
            class_unlabelled.append(c)
        other = (classes != c) & confident
        unconfirmed += [(c, _covering_class(b, boxes[other], classes[other], settings.iou), _rounded(b))
                        for b in gt[~gt_ok]]
    return ImageFindings(split, record.path, tuple(unlabelled), tuple(unconfirmed), tuple(class_unlabelled),
                         tuple(int(c) for c in record.labels))


def audit(dataset: DetectionDataset, predictions: Sequence[Detections],
          settings: AuditSettings = AuditSettings()) -> list[ImageFindings]:
    """Findings for every image of a labelled split, predictions aligned with ``dataset.records``."""
    if not dataset.labelled:
        raise ValueError(f"{dataset.source}: the audit needs labelled images (split {dataset.split!r} has none)")
    if len(predictions) != len(dataset.records):
        raise ValueError(f"{len(predictions)} predictions for {len(dataset.records)} images")
    return [audit_image(r, d, dataset.split, settings) for r, d in zip(dataset.records, predictions)]


def rank(findings: Sequence[ImageFindings]) -> list[ImageFindings]:
    """Images with anything to look at, an unboxed class first, then by how much there is (ties by path)."""
    return sorted((f for f in findings if f.weight), key=lambda f: (-len(f.class_unlabelled), -f.weight, f.path))
