"""Draw detections onto a copy of an image (for ``detect --out``)."""

from __future__ import annotations

import cv2
import numpy as np

from .detector import Result


def _colour(class_id: int) -> tuple[int, int, int]:
    hue = (int(class_id) * 47) % 180
    bgr = cv2.cvtColor(np.uint8([[[hue, 220, 255]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


def draw_detections(image: np.ndarray, result: Result) -> np.ndarray:
    """BGR uint8 copy of ``image`` with each box and ``label score`` drawn."""
    out = image.copy()
    for box, score, cid, label in zip(result.boxes, result.scores, result.class_ids, result.labels):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        colour = _colour(int(cid))
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 2)
        text = f"{label} {float(score):.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        ty = max(y1, th + base)
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw, ty), colour, -1)
        cv2.putText(out, text, (x1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return out
