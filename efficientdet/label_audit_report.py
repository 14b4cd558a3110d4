"""The label audit's outputs: ``audit.json``, ``audit.md``, ``flagged.txt`` (an image list ``--exclude-images``
reads) and the images with the most to look at, drawn. Images are named relative to the dataset folder, so
the files read the same on every machine."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from efficientdet.data.exclude import image_name
from efficientdet.data.records import ImageRecord
from efficientdet.label_audit import AuditSettings, ImageFindings, rank
from runtime.draw import ascii_label
from runtime.preprocess import read_image


def _per_class(ids: Iterable[int], class_names: Sequence[str]) -> dict[str, int]:
    counts = np.bincount(np.fromiter(ids, int), minlength=len(class_names))
    return {n: int(k) for n, k in zip(class_names, counts)}


def _split_counts(findings: Sequence[ImageFindings], class_names: Sequence[str]) -> dict[str, Any]:
    """Per class: boxes, confident detections no box matches, images with any, boxes no detection confirms."""
    return {"images": len(findings),
            "boxes": _per_class((c for f in findings for c in f.labels), class_names),
            "unlabelled": _per_class((c for f in findings for c, _, _ in f.unlabelled), class_names),
            "images_with_unlabelled": _per_class((c for f in findings for c in {c for c, _, _ in f.unlabelled}),
                                                 class_names),
            "unconfirmed": _per_class((c for f in findings for c, _, _ in f.unconfirmed), class_names)}


def summarise(findings: Sequence[ImageFindings], class_names: Sequence[str], settings: AuditSettings,
              top: int = 20, root: str | Path | None = None) -> dict[str, Any]:
    """JSON-ready summary: counts per split and class, the flagged images and the ``top`` images with the most
    to look at (:func:`rank`); images are named relative to the dataset folder ``root``."""
    def name(c: int | None) -> str | None:
        return None if c is None else class_names[c]

    ranked = rank(findings)
    splits = list(dict.fromkeys(f.split for f in findings))
    return {
        "settings": {"score": settings.score, "iou": settings.iou, "min_count": settings.min_count},
        "images": len(findings),
        "images_with_findings": len(ranked),
        "unlabelled_detections": sum(len(f.unlabelled) for f in findings),
        "unconfirmed_boxes": sum(len(f.unconfirmed) for f in findings),
        "per_split": {s: _split_counts([f for f in findings if f.split == s], class_names) for s in splits},
        "class_unlabelled": [{"split": f.split, "image": image_name(f.path, root),
                              "classes": [name(c) for c in f.class_unlabelled],
                              "unmatched_detections": sum(c in f.class_unlabelled for c, _, _ in f.unlabelled)}
                             for f in ranked if f.class_unlabelled],
        "top": [{"split": f.split, "image": image_name(f.path, root),
                 "unlabelled": [{"class": name(c), "score": round(s, 3), "box": list(b)} for c, s, b in f.unlabelled],
                 "unconfirmed": [{"class": name(c), "covered_by": name(o), "box": list(b)}
                                 for c, o, b in f.unconfirmed]}
                for f in ranked[:top]],
    }


def markdown(summary: dict[str, Any], command: str) -> str:
    """The short tables a person reads first."""
    s = summary["settings"]
    lines = [f"# Label audit\n\nCommand: `{command}`\n",
             f"{summary['images']} images. A detection is confident at score >= {s['score']} and matches a box of "
             f"its class at IoU >= {s['iou']}; a box counts as found by a detection of its class at any score the "
             "post-processing keeps.\n",
             "| split | images | boxes | confident detections no box matches | images with such | boxes not found |",
             "|---|---:|---|---|---|---|"]
    for split, c in summary["per_split"].items():
        lines.append(f"| {split} | {c['images']} | {_by_class(c['boxes'])} | {_by_class(c['unlabelled'])} | "
                     f"{_by_class(c['images_with_unlabelled'])} | {_by_class(c['unconfirmed'])} |")
    lines.append(f"\n## Images with a class the model finds ({s['min_count']}+ times) but no box has\n")
    if summary["class_unlabelled"]:
        lines += ["| split | image | classes | its confident detections |", "|---|---|---|---:|"]
        lines += [f"| {r['split']} | {r['image']} | {', '.join(r['classes'])} | {r['unmatched_detections']} |"
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
    """``flagged.txt``: the images with a class the model finds but no box has, one per line with its split
    and classes as a comment (the format ``--exclude-images`` reads)."""
    s = summary["settings"]
    lines = [f"# audit-labels: images with a class found {s['min_count']}+ times at score >= {s['score']} "
             "that no box has; check each before leaving it out (--exclude-images)"]
    lines += [f"{r['image']}  # {r['split']}: {', '.join(r['classes'])}" for r in summary["class_unlabelled"]]
    return "\n".join(lines) + "\n"


def _by_class(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for n, k in counts.items())


def _counts(names: Iterable[str]) -> str:
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
