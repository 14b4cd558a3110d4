"""Anchor generator: levels 3-7, scales 2^(i/num_scales), (w, h) aspect factors, base size
``anchor_scale * stride``; centres at ``stride/2 + k*stride``.

Order matches the network output: level, row, column, then scale-major anchor-in-cell.
Numpy only, so the runtime, training targets and export all use this one definition.
"""

from __future__ import annotations

import numpy as np

from .contract import AnchorSpec


def level_sizes(input_size: int, min_level: int, max_level: int) -> list[int]:
    """Feature-map side per level with 'same' (ceil) stride-2 reductions."""
    sizes, size = [], input_size
    for level in range(1, max_level + 1):
        size = -(-size // 2)
        if level >= min_level:
            sizes.append(size)
    return sizes


def anchor_count(spec: AnchorSpec) -> int:
    """How many anchors :func:`generate_anchors` lays out, without building them (manifest checks, model sizes)."""
    cells = sum(size * size for size in level_sizes(spec.input_size, spec.min_level, spec.max_level))
    return cells * spec.num_scales * len(spec.aspect_ratios)


def generate_anchors(spec: AnchorSpec) -> np.ndarray:
    """``[A, 4]`` float32 xyxy anchors in input pixels."""
    input_size, min_level, max_level, num_scales = spec.input_size, spec.min_level, spec.max_level, spec.num_scales
    aspects = spec.aspect_ratios
    out = []
    for level, size in zip(range(min_level, max_level + 1), level_sizes(input_size, min_level, max_level)):
        stride = 2 ** level
        centres = np.arange(size, dtype=np.float64) * stride + stride / 2.0
        cy, cx = np.meshgrid(centres, centres, indexing="ij")
        wh = []
        for s in range(num_scales):
            base = float(spec.anchor_scale) * stride * 2.0 ** (s / num_scales)
            for aw, ah in aspects:
                wh.append((base * aw / 2.0, base * ah / 2.0))
        half = np.asarray(wh)  # [k, 2]
        cxk = cx[..., None]
        cyk = cy[..., None]
        boxes = np.stack([cxk - half[:, 0], cyk - half[:, 1], cxk + half[:, 0], cyk + half[:, 1]], axis=-1)
        out.append(boxes.reshape(-1, 4))
    return np.concatenate(out).astype(np.float32)

