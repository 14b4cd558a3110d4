"""IoU-based anchor matching and target encoding (numpy, runs in the data-loader workers).

Anchors with IoU >= 0.5 to a ground-truth box are positives for it, the rest negatives; every
ground truth also claims its best anchor (force match) so small objects are never unmatched.
Targets use the runtime's box coding, the same module the devices decode with.
"""

from __future__ import annotations

import numpy as np

from runtime.box_coding import encode
from runtime.iou import iou_matrix

BACKGROUND = -1
MATCH_IOU = 0.5


def match_anchors(anchors: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                  iou_threshold: float = MATCH_IOU) -> tuple[np.ndarray, np.ndarray]:
    """Per-anchor class label (``BACKGROUND`` for negatives) and ``[A,4]`` encoded box targets."""
    num = anchors.shape[0]
    cls = np.full(num, BACKGROUND, np.int64)
    reg = np.zeros((num, 4), np.float32)
    if boxes.shape[0] == 0:
        return cls, reg
    iou = iou_matrix(anchors, boxes.astype(np.float32))  # [A, G]
    best_gt = iou.argmax(1)
    best_iou = iou[np.arange(num), best_gt]
    pos = best_iou >= iou_threshold
    forced = iou.argmax(0)  # best anchor for each ground truth
    best_gt[forced] = np.arange(boxes.shape[0])
    pos[forced] = True
    idx = np.flatnonzero(pos)
    cls[idx] = labels[best_gt[idx]]
    reg[idx] = encode(boxes[best_gt[idx]], anchors[idx])
    return cls, reg
