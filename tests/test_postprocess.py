"""The runtime's post-processing against a plain brute-force reference (sigmoid everything, greedy NMS)."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.anchors import generate_anchors
from runtime.box_coding import decode
from runtime.contract import AnchorSpec, PostprocessSpec
from runtime.postprocess import postprocess

ANCHORS = AnchorSpec(128, min_level=3, max_level=5, num_scales=2, anchor_scale=4.0,
                     aspect_ratios=((1.0, 1.0), (1.4, 0.7)))


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = lambda b: np.prod(b[..., 2:] - b[..., :2], axis=-1)  # noqa: E731
    return inter / (area(box) + area(boxes) - inter)


def reference(logits: np.ndarray, deltas: np.ndarray, anchors: np.ndarray, thr: float, iou: float,
              max_det: int) -> list[tuple[int, int]]:
    """(anchor, class) pairs kept by per-class greedy NMS over every score above the threshold."""
    scores = 1 / (1 + np.exp(-logits.astype(np.float64)))
    boxes = decode(deltas, anchors)
    kept = []
    for c in range(logits.shape[1]):
        idx = np.flatnonzero(scores[:, c] > thr)
        idx = idx[np.argsort(-scores[idx, c], kind="stable")]
        while idx.size:
            kept.append((scores[idx[0], c], int(idx[0]), c))
            idx = idx[1:][_iou(boxes[idx[0]], boxes[idx[1:]]) <= iou]
    kept.sort(key=lambda k: -k[0])
    return [(a, c) for _, a, c in kept[:max_det]]


def _inputs(num_classes: int, hot: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    anchors = generate_anchors(ANCHORS)
    logits = rng.normal(-6, 1.0, (len(anchors), num_classes)).astype(np.float32)
    rows = rng.choice(len(anchors), hot, replace=False)
    logits[rows, rng.integers(0, num_classes, hot)] = rng.normal(1.0, 1.5, hot)
    deltas = (rng.standard_normal((len(anchors), 4)) * 0.2).astype(np.float32)
    return logits, deltas, anchors


@pytest.mark.parametrize("num_classes,max_det", [(1, 100), (3, 100), (90, 100), (3, 10)])
def test_matches_bruteforce_reference(num_classes: int, max_det: int) -> None:
    logits, deltas, anchors = _inputs(num_classes, hot=150, seed=num_classes)
    spec = PostprocessSpec(score_threshold=0.3, iou_threshold=0.5, max_detections=max_det, pre_nms_top_k=5000)
    dets = postprocess(logits, deltas, anchors, spec)
    ref = reference(logits, deltas, anchors, 0.3, 0.5, max_det)
    assert min(20, max_det) <= len(ref) <= max_det
    got_boxes = dets.boxes
    ref_boxes = np.stack([decode(deltas[[a]], anchors[[a]])[0] for a, _ in ref])
    assert [int(c) for c in dets.class_ids] == [c for _, c in ref]
    np.testing.assert_allclose(got_boxes, ref_boxes, atol=1e-3)
    np.testing.assert_allclose(dets.scores, [1 / (1 + np.exp(-logits[a, c])) for a, c in ref], rtol=1e-5)


def test_more_candidates_than_top_k_keeps_the_best() -> None:
    """An untrained model puts most scores above threshold: the top-k fallback must still rank by score."""
    logits, deltas, anchors = _inputs(3, hot=0, seed=1)
    logits += 6.5
    spec = PostprocessSpec(score_threshold=0.3, iou_threshold=0.5, max_detections=50, pre_nms_top_k=200)
    dets = postprocess(logits, deltas, anchors, spec)
    assert 0 < len(dets) <= 50
    best = np.unravel_index(np.argmax(logits), logits.shape)
    assert dets.scores[0] == pytest.approx(1 / (1 + np.exp(-logits[best])), rel=1e-6)
    assert np.all(np.diff(dets.scores) <= 0)


def test_nothing_above_threshold_is_empty() -> None:
    logits, deltas, anchors = _inputs(3, hot=0, seed=2)
    dets = postprocess(logits, deltas, anchors, PostprocessSpec(score_threshold=0.5))
    assert len(dets) == 0 and dets.boxes.shape == (0, 4)
