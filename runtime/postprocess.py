"""The one post-processing path: raw logits and box deltas -> final detections.

Cost is dominated by touching the full ``[A, C]`` logits array (docs/TOOLCHAIN.md, "Running"), so the score
threshold is applied to logits (no sigmoid over the whole array) in one flat pass; only when
more than ``pre_nms_top_k`` scores pass (an untrained or badly calibrated model) does it fall
back to ranking anchors by their max logit. Decoding and class-aware NMS see survivors only.
NMS is OpenCV's ``NMSBoxesBatched`` (well kept, C++, class-aware).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .box_coding import BOX_CODING, decode
from .contract import DEFAULT_POSTPROCESS, EVAL_POSTPROCESS, BoxCoding, PostprocessSpec

if TYPE_CHECKING:
    from .preprocess import Letterbox


@dataclass(frozen=True)
class Detections:
    """Boxes ``[K,4]`` xyxy (float32), scores ``[K]`` (sigmoid probabilities), class ids ``[K]`` (int)."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def to_original(self, box: Letterbox) -> Detections:
        """The same detections in the original image's pixels (clipped to it), as the runtime returns them."""
        return Detections(box.to_original(self.boxes), self.scores, self.class_ids)

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64))


def logit(p: float) -> float:
    p = min(max(float(p), 1e-7), 1 - 1e-7)
    return math.log(p / (1 - p))


def postprocess(logits: np.ndarray, deltas: np.ndarray, anchors: np.ndarray, spec: PostprocessSpec,
                coding: BoxCoding = BOX_CODING) -> Detections:
    """Detections in network-input pixels for one image: ``logits [A,C]`` raw class logits, ``deltas [A,4]`` in
    ``coding`` against ``anchors [A,4]``."""
    if logits.ndim != 2 or deltas.shape != (logits.shape[0], 4) or anchors.shape != deltas.shape:
        raise ValueError(f"shape mismatch: logits {logits.shape}, deltas {deltas.shape}, anchors {anchors.shape}")
    t = logit(spec.score_threshold)
    top_k = spec.pre_nms_top_k
    num_classes = logits.shape[1]
    flat_logits = logits.reshape(-1)
    mask = flat_logits > t
    if np.count_nonzero(mask) <= top_k:
        flat = np.flatnonzero(mask)
        idx, cls = np.divmod(flat, num_classes)
        return _decode_nms(flat_logits[flat], idx, cls, deltas, anchors, spec, coding)
    amax = logits.max(axis=1)
    cand = np.flatnonzero(amax > t)
    if cand.size == 0:
        return Detections.empty()
    if cand.size > top_k:
        cand = cand[np.argpartition(-amax[cand], top_k - 1)[:top_k]]
    sub = logits[cand]
    if num_classes == 1:
        rows, cls = np.arange(cand.size), np.zeros(cand.size, np.int64)
    else:
        rows, cls = np.nonzero(sub > t)
    vals = sub[rows, cls]
    if vals.size > top_k:
        keep = np.argpartition(-vals, top_k - 1)[:top_k]
        rows, cls, vals = rows[keep], cls[keep], vals[keep]
    return _decode_nms(vals, cand[rows], cls, deltas, anchors, spec, coding)


def _decode_nms(vals: np.ndarray, idx: np.ndarray, cls: np.ndarray, deltas: np.ndarray, anchors: np.ndarray,
                spec: PostprocessSpec, coding: BoxCoding) -> Detections:
    """Decode the candidates (``vals`` logits at anchors ``idx`` of classes ``cls``) and run class-aware NMS."""
    if idx.size == 0:
        return Detections.empty()
    vals = vals.astype(np.float32)
    boxes = decode(deltas[idx], anchors[idx], coding)
    # A NaN/inf box (a diverged or corrupted model output) must not reach OpenCV's NMS: one such
    # candidate suppressed ten real detections of its class, and was then dropped itself (issue 13).
    finite = np.isfinite(boxes).all(axis=1) & np.isfinite(vals)
    if not finite.all():
        vals, boxes, cls = vals[finite], boxes[finite], cls[finite]
        if vals.size == 0:
            return Detections.empty()
    scores = 1.0 / (1.0 + np.exp(-vals))
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    max_det, cls32 = spec.max_detections, cls.astype(np.int32)
    # Greedy NMS over the top-k scores keeps exactly the full result's boxes among those k, so
    # growing k until max_detections survive is exact and avoids O(n^2) work on thousands of boxes.
    k = 4 * max_det
    while True:
        keep = cv2.dnn.NMSBoxesBatched(xywh, scores, cls32, float(spec.score_threshold),
                                       float(spec.iou_threshold), top_k=k if k < len(scores) else 0)
        keep = np.asarray(keep, dtype=np.int64).reshape(-1)
        if keep.size >= max_det or k >= len(scores):
            break
        k *= 4
    if keep.size == 0:
        return Detections.empty()
    order = keep[np.argsort(-scores[keep], kind="stable")][:max_det]
    return Detections(boxes[order].astype(np.float32), scores[order].astype(np.float32), cls[order].astype(np.int64))


def from_detection_op(boxes: np.ndarray, classes: np.ndarray, scores: np.ndarray, count: np.ndarray,
                      input_size: int, spec: PostprocessSpec) -> Detections:
    """Detections in network-input pixels from ``TFLite_Detection_PostProcess``'s four outputs.

    The op already decoded and suppressed (at its own, lower score threshold); here only the first
    ``count`` rows are kept, boxes go from normalised (ymin, xmin, ymax, xmax) to input-pixel xyxy, and the
    deployment ``score_threshold`` and ``max_detections`` of ``spec`` apply, as in :func:`postprocess`.
    """
    n = min(int(np.asarray(count).reshape(-1)[0]), int(np.asarray(scores).size))
    if n <= 0:
        return Detections.empty()
    yxyx = np.asarray(boxes, np.float32).reshape(-1, 4)[:n] * np.float32(input_size)
    xyxy = yxyx[:, [1, 0, 3, 2]]
    probs = np.asarray(scores, np.float32).reshape(-1)[:n]
    cls = np.asarray(classes).reshape(-1)[:n]
    keep = np.isfinite(xyxy).all(axis=1) & np.isfinite(probs) & np.isfinite(cls)
    order = np.flatnonzero(keep)[np.argsort(-probs[keep], kind="stable")]
    return at_threshold(Detections(xyxy[order], probs[order], cls[order].astype(np.int64)), spec)


def at_threshold(dets: Detections, spec: PostprocessSpec) -> Detections:
    """Detections (sorted by score) found at a lower score threshold, cut to ``spec``'s threshold and count.
    Exact for greedy NMS:
    a box below the threshold only ever suppresses boxes with lower scores, which the cut drops anyway."""
    keep = np.flatnonzero(dets.scores > float(spec.score_threshold))[:spec.max_detections]
    return Detections(dets.boxes[keep], dets.scores[keep], dets.class_ids[keep])


__all__ = ["DEFAULT_POSTPROCESS", "EVAL_POSTPROCESS", "Detections", "at_threshold", "from_detection_op", "logit",
           "postprocess"]
