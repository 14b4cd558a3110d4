"""The one post-processing path: raw logits and box deltas -> final detections.

Cost is dominated by touching the full ``[A, C]`` logits array (TOOLCHAIN-FACTS), so the score
threshold is applied to logits (no sigmoid over the whole array), first on the per-anchor max
to shrink the candidate set, then top-k, decoding and class-aware NMS only on survivors.
NMS is OpenCV's ``NMSBoxesBatched`` (well kept, C++, class-aware).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .box_coding import decode


@dataclass(frozen=True)
class Detections:
    """Boxes ``[K,4]`` xyxy (float32), scores ``[K]`` (sigmoid probabilities), class ids ``[K]`` (int)."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64))


def logit(p: float) -> float:
    p = min(max(float(p), 1e-7), 1 - 1e-7)
    return math.log(p / (1 - p))


def postprocess(logits: np.ndarray, deltas: np.ndarray, anchors: np.ndarray, spec: dict[str, Any],
                anchor_max: np.ndarray | None = None) -> Detections:
    """Detections in network-input pixels for one image.

    ``logits [A,C]`` raw class logits, ``deltas [A,4]``; ``spec`` is the manifest's
    ``postprocess`` block (score_threshold, iou_threshold, max_detections, pre_nms_top_k).
    ``anchor_max`` (``[A]``, the per-anchor max logit) may be given when the graph computes it.
    """
    if logits.ndim != 2 or deltas.shape != (logits.shape[0], 4) or anchors.shape != deltas.shape:
        raise ValueError(f"shape mismatch: logits {logits.shape}, deltas {deltas.shape}, anchors {anchors.shape}")
    t = logit(spec["score_threshold"])
    top_k = int(spec.get("pre_nms_top_k", 5000))
    amax = logits.max(axis=1) if anchor_max is None else anchor_max.reshape(-1)
    cand = np.flatnonzero(amax > t)
    if cand.size == 0:
        return Detections.empty()
    if cand.size > top_k:
        cand = cand[np.argpartition(-amax[cand], top_k - 1)[:top_k]]
    sub = logits[cand]
    if sub.shape[1] == 1:
        rows, cls = np.arange(cand.size), np.zeros(cand.size, np.int64)
    else:
        rows, cls = np.nonzero(sub > t)
    vals = sub[rows, cls].astype(np.float32)
    if vals.size > top_k:
        keep = np.argpartition(-vals, top_k - 1)[:top_k]
        rows, cls, vals = rows[keep], cls[keep], vals[keep]
    idx = cand[rows]
    boxes = decode(deltas[idx], anchors[idx])
    scores = 1.0 / (1.0 + np.exp(-vals))
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    keep = cv2.dnn.NMSBoxesBatched(xywh, scores, cls.astype(np.int32), float(spec["score_threshold"]),
                                   float(spec["iou_threshold"]), top_k=int(spec["max_detections"]))
    keep = np.asarray(keep, dtype=np.int64).reshape(-1)
    if keep.size == 0:
        return Detections.empty()
    order = keep[np.argsort(-scores[keep], kind="stable")][: int(spec["max_detections"])]
    return Detections(boxes[order].astype(np.float32), scores[order].astype(np.float32), cls[order].astype(np.int64))


DEFAULT_POSTPROCESS = {"score_threshold": 0.3, "iou_threshold": 0.5, "max_detections": 100, "pre_nms_top_k": 5000}
EVAL_POSTPROCESS = {"score_threshold": 0.05, "iou_threshold": 0.5, "max_detections": 100, "pre_nms_top_k": 5000}
