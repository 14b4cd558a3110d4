"""One-to-one detection matching, the parity gate's (and every device and engine comparison's) notion of "the same
detection": same class, IoU at or above a threshold, reference detections in score order."""

from __future__ import annotations

import numpy as np

from runtime.iou import iou_matrix
from runtime.postprocess import Detections


def match_pairs(ref: Detections, out: Detections, iou_threshold: float) -> list[tuple[int, int]]:
    """One-to-one greedy matches ``(ref index, out index)``: reference in score order, best IoU, same class.

    Call it on unclipped boxes (network-input pixels): IoU is invariant to the letterbox's uniform scale
    and shift, while clipping to the image collapses off-image boxes to zero area, where IoU is undefined.
    """
    if len(ref) == 0 or len(out) == 0:
        return []
    iou = iou_matrix(ref.boxes.astype(np.float64), out.boxes.astype(np.float64))
    iou[ref.class_ids[:, None] != out.class_ids[None, :]] = -1.0
    used = np.zeros(len(out), bool)
    pairs = []
    for i in np.argsort(-ref.scores, kind="stable"):
        row = np.where(used, -1.0, iou[i])
        j = int(row.argmax())
        if row[j] >= iou_threshold:
            used[j] = True
            pairs.append((int(i), j))
    return pairs


def match_count(ref: Detections, out: Detections, iou_threshold: float) -> int:
    """How many detections :func:`match_pairs` matches."""
    return len(match_pairs(ref, out, iou_threshold))
