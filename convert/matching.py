"""One-to-one detection matching, the parity gate's (and every device and engine comparison's) notion of "the same
detection": same class, IoU at or above a threshold, reference detections in score order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


@dataclass
class MatchCounts:
    """Running one-to-one matches of reference and other detections over images, and their shares both ways."""

    matched: int = 0
    num_ref: int = 0
    num_out: int = 0
    num_images: int = 0

    def add(self, ref: Detections, out: Detections, iou_threshold: float) -> int:
        """Count one image's detections; returns how many matched."""
        matched = match_count(ref, out, iou_threshold)
        self.matched += matched
        self.num_ref += len(ref)
        self.num_out += len(out)
        self.num_images += 1
        return matched

    def detections(self) -> dict[str, Any]:
        return {"det_match": self.matched / self.num_ref if self.num_ref else 1.0,
                "det_match_reverse": self.matched / self.num_out if self.num_out else 1.0,
                "num_detections_ref": self.num_ref, "num_detections": self.num_out}
