"""Label audit: where a trained model and a dataset's boxes disagree confidently, so a person can look.

Why it exists: BCCD carries 15 images (of 364) with no RBC box although red cells fill them; every cell the
model finds there is scored as a false positive, which cost the reference Lite0 0.7 point of test mAP@.5
(issue 10). Nobody had noticed in months of work, and users' own datasets have the same kind of holes. A
model that is right most of the time finds them: on such an image it reports many confident detections of
a class that has no box at all.

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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from efficientdet.data.exclude import image_name
from efficientdet.data.records import DetectionDataset, ImageRecord
from runtime.draw import ascii_label
from runtime.iou import iou_matrix
from runtime.postprocess import Detections
from runtime.preprocess import read_image


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


def audit_image(record: ImageRecord, det: Detections, split: str, settings: AuditSettings) -> ImageFindings:
    """Findings for one image; ``det`` are its detections in original-image pixels, as evaluation keeps them."""
    order = np.argsort(-det.scores, kind="stable")
    boxes, scores, classes = det.boxes[order], det.scores[order], det.class_ids[order].astype(int)
    confident = scores >= settings.score
    unlabelled, unconfirmed, class_unlabelled = [], [], []
    for c in sorted(set(classes.tolist()) | set(record.labels.tolist())):
        gt = record.boxes[record.labels == c]
        mine = classes == c
        det_ok, _ = _match(gt, boxes[mine & confident], settings.iou)
        _, gt_ok = _match(gt, boxes[mine], settings.iou)
        for s, b in zip(scores[mine & confident][~det_ok], boxes[mine & confident][~det_ok]):
            unlabelled.append((c, float(s), tuple(round(float(v), 1) for v in b)))
        if len(gt) == 0 and int((mine & confident).sum()) >= settings.min_count:
            class_unlabelled.append(c)
        others = boxes[confident & ~mine], classes[confident & ~mine]
        for b in gt[~gt_ok]:
            cover = iou_matrix(b[None].astype(np.float64), others[0].astype(np.float64))[0] if len(others[0]) else []
            best = int(np.argmax(cover)) if len(cover) and max(cover) >= settings.iou else None
            unconfirmed.append((c, None if best is None else int(others[1][best]),
                                tuple(round(float(v), 1) for v in b)))
    return ImageFindings(split, record.path, tuple(unlabelled), tuple(unconfirmed), tuple(class_unlabelled))


def audit(dataset: DetectionDataset, predictions: Sequence[Detections],
          settings: AuditSettings = AuditSettings()) -> list[ImageFindings]:
    """Findings for every image of a labelled split, predictions aligned with ``dataset.records``."""
    if not dataset.labelled:
        raise ValueError(f"{dataset.source}: the audit needs labelled images (split {dataset.split!r} has none)")
    if len(predictions) != len(dataset.records):
        raise ValueError(f"{len(predictions)} predictions for {len(dataset.records)} images")
    return [audit_image(r, d, dataset.split, settings) for r, d in zip(dataset.records, predictions)]


def summarise(findings: Sequence[ImageFindings], class_names: Sequence[str], settings: AuditSettings,
              top: int = 20, root: str | Path | None = None) -> dict[str, Any]:
    """JSON-ready summary: counts, the flagged images and the ``top`` images with the most to look at; images
    are named relative to the dataset folder ``root``."""
    def name(c: int | None) -> str | None:
        return None if c is None else class_names[c]

    ranked = sorted((f for f in findings if f.weight), key=lambda f: (-len(f.class_unlabelled), -f.weight, f.path))
    return {
        "settings": {"score": settings.score, "iou": settings.iou, "min_count": settings.min_count},
        "images": len(findings),
        "images_with_findings": len(ranked),
        "unlabelled_detections": sum(len(f.unlabelled) for f in findings),
        "unconfirmed_boxes": sum(len(f.unconfirmed) for f in findings),
        "unlabelled_by_class": _per_class((c for f in findings for c, _, _ in f.unlabelled), class_names),
        "unconfirmed_by_class": _per_class((c for f in findings for c, _, _ in f.unconfirmed), class_names),
        "class_unlabelled": [{"split": f.split, "image": image_name(f.path, root),
                              "classes": [name(c) for c in f.class_unlabelled],
                              "confident_detections": len(f.unlabelled)}
                             for f in ranked if f.class_unlabelled],
        "top": [{"split": f.split, "image": image_name(f.path, root),
                 "unlabelled": [{"class": name(c), "score": round(s, 3), "box": list(b)} for c, s, b in f.unlabelled],
                 "unconfirmed": [{"class": name(c), "covered_by": name(o), "box": list(b)}
                                 for c, o, b in f.unconfirmed]}
                for f in ranked[:top]],
    }


def _per_class(ids: Any, class_names: Sequence[str]) -> dict[str, int]:
    counts = np.bincount(np.fromiter(ids, int), minlength=len(class_names))
    return {n: int(k) for n, k in zip(class_names, counts)}


def markdown(summary: dict[str, Any], command: str) -> str:
    """The short table a person reads first."""
    s = summary["settings"]
    lines = [f"# Label audit\n\nCommand: `{command}`\n",
             f"{summary['images']} images; a detection is confident at score >= {s['score']}, matches a box at "
             f"IoU >= {s['iou']}. {summary['unlabelled_detections']} confident detections match no box "
             f"({_by_class(summary['unlabelled_by_class'])}), {summary['unconfirmed_boxes']} boxes have no "
             f"detection of their class ({_by_class(summary['unconfirmed_by_class'])}).\n",
             f"## Images with a class the model finds ({s['min_count']}+ times) but no box has\n"]
    if summary["class_unlabelled"]:
        lines += ["| split | image | classes | confident unmatched detections |", "|---|---|---|---:|"]
        lines += [f"| {r['split']} | {r['image']} | {', '.join(r['classes'])} | {r['confident_detections']} |"
                  for r in summary["class_unlabelled"]]
    else:
        lines.append("None.")
    lines += ["\n## Most to look at\n", "| split | image | unmatched detections | boxes not found (found as) |",
              "|---|---|---|---|"]
    for r in summary["top"]:
        det = _counts(d["class"] for d in r["unlabelled"])
        gt = _counts(f"{d['class']} ({d['covered_by']})" if d["covered_by"] else d["class"] for d in r["unconfirmed"])
        lines.append(f"| {r['split']} | {r['image']} | {det} | {gt} |")
    return "\n".join(lines) + "\n"


def image_list(summary: dict[str, Any]) -> str:
    """``flagged.txt``: the images with a class the model finds but no box has, one file name per line with
    its split and classes as a comment (the format ``--exclude-images`` reads)."""
    s = summary["settings"]
    lines = [f"# audit-labels: images with a class found {s['min_count']}+ times at score >= {s['score']} "
             "that no box has; check each before leaving it out (--exclude-images)"]
    lines += [f"{r['image']}  # {r['split']}: {', '.join(r['classes'])}" for r in summary["class_unlabelled"]]
    return "\n".join(lines) + "\n"


def _by_class(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for n, k in counts.items())


def _counts(names: Any) -> str:
    names = list(names)
    return ", ".join(f"{n} ×{names.count(n)}" for n in sorted(set(names))) or "-"


def draw_findings(record: ImageRecord, findings: ImageFindings, class_names: Sequence[str]) -> np.ndarray:
    """The image with its boxes (thin green), confident detections no box matches (red, ``class? score``) and
    boxes no detection confirms (orange, ``class: no det``)."""
    image = read_image(record.path)
    for b in record.boxes:
        cv2.rectangle(image, (int(b[0]), int(b[1])), (int(b[2]), int(b[3])), (0, 150, 0), 1)
    marks = [(b, (0, 0, 255), f"{class_names[c]}? {s:.2f}") for c, s, b in findings.unlabelled]
    marks += [(b, (0, 140, 255), f"{class_names[c]}: no det") for c, _, b in findings.unconfirmed]
    for b, colour, text in marks:
        x1, y1 = int(b[0]), int(b[1])
        cv2.rectangle(image, (x1, y1), (int(b[2]), int(b[3])), colour, 2)
        cv2.putText(image, ascii_label(text), (x1 + 2, max(y1 - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1,
                    cv2.LINE_AA)
    return image
