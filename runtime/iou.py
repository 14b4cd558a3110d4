"""Intersection over union of xyxy boxes: the one implementation anchor matching, the parity gate's detection
matching and the engine comparisons use. A box of zero area has IoU 0 with everything (never NaN)."""

from __future__ import annotations

import numpy as np


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[..., 2:] - boxes[..., :2], 0, None).prod(-1)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``[N,4]`` and ``[M,4]`` boxes -> ``[N,M]`` (in the boxes' own float type)."""
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(br - tl, 0, None).prod(-1)
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def paired_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of ``a[i]`` with ``b[i]``, row by row (``[K,4]`` each -> ``[K]``, float64)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    inter = np.clip(np.minimum(a[:, 2:], b[:, 2:]) - np.maximum(a[:, :2], b[:, :2]), 0, None).prod(-1)
    union = _area(a) + _area(b) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
