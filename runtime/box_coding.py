"""Box coding shared by training targets and every runtime backend.

Coding ``delta_xywh``: ``dx = (cx - cxa) / wa``, ``dy = (cy - cya) / ha``, ``dw = log(w / wa)``,
``dh = log(h / ha)``; boxes are xyxy in input pixels. No variance scaling (the EfficientDet
reference uses none). Decoding clamps dw/dh at the coding's ``clip_log`` (runtime/contract.py) so exp() cannot
overflow on wild outputs.
"""

from __future__ import annotations

import numpy as np

from .contract import BoxCoding

BOX_CODING = BoxCoding()


def _centre_size(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def encode(boxes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """``[N,4]`` xyxy targets against matched ``[N,4]`` anchors -> ``[N,4]`` deltas."""
    cx, cy, w, h = _centre_size(boxes.astype(np.float32))
    cxa, cya, wa, ha = _centre_size(anchors.astype(np.float32))
    w = np.maximum(w, 1e-3)
    h = np.maximum(h, 1e-3)
    return np.stack([(cx - cxa) / wa, (cy - cya) / ha, np.log(w / wa), np.log(h / ha)], axis=-1).astype(np.float32)


def decode(deltas: np.ndarray, anchors: np.ndarray, coding: BoxCoding = BOX_CODING) -> np.ndarray:
    """``[N,4]`` deltas with their ``[N,4]`` anchors -> ``[N,4]`` xyxy boxes (float32), ``dw``/``dh`` clamped at
    ``coding.clip_log`` (the manifest's ``box_coding``)."""
    cxa, cya, wa, ha = _centre_size(anchors.astype(np.float32))
    d = deltas.astype(np.float32)
    clip = np.float32(coding.clip_log)
    cx = d[..., 0] * wa + cxa
    cy = d[..., 1] * ha + cya
    hw = 0.5 * np.exp(np.minimum(d[..., 2], clip)) * wa
    hh = 0.5 * np.exp(np.minimum(d[..., 3], clip)) * ha
    return np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=-1)
