"""The int8 input quantizer's grid: the whole pixel range, with no pixel value on a rounding tie.

Why (session 26): every int8 file quantizes the normalised image with one per-tensor step over the normalised values
of pixels 0 and 255 (docs/QUANTIZATION.md, "The whole pixel range at the input"), and zero must be a code. With the
Lite models' mean = std = 127.5 that step is exactly one grey level and the zero point would have to be 127.5: every
pixel value then lies exactly halfway between two codes. Each engine breaks that tie its own way: onnxruntime and
TFLite round half to even (pixels move half a grey level up or down by parity), OpenVINO's FakeQuantize by its float
arithmetic. On the BCCD Lite0 512's QAT seed 2, OpenVINO's raw outputs were twice as far from the Q/DQ graph's own
float computation as onnxruntime's (logits 0.0225 against 0.0120 relative L2, 4 test images); moving the input off
the ties by a tenth of a step brought OpenVINO to 0.0138. The same file scored +0.49 (onnxruntime) and +1.10
(OpenVINO) mAP points against FP32; on this grid +0.86 and +0.89, with 1.2-1.5 points more of FP32's detections
matched by each (72 test images, the same files with only the input grid changed; docs/QUANTIZATION.md, "Pixels off
the ties").

:func:`tie_free_range` keeps the whole-range grid where every grid the tools derive from it already leaves each pixel
value at least :data:`TIE_MARGIN` codes from a tie, and otherwise takes the grid, up to :data:`MAX_WIDENING` coarser,
with the smallest mean rounding error among those that do: for the Lite models a step of 1.0056 grey levels, mean
error 0.21 grey level where the tied grid moved every pixel by 0.5. The D0's ImageNet mean/std missed the ties by
only 3e-5 to 2e-4 code at one value, so it moves too, barely (mean error 0.2727 against 0.2731 grey level). The
range comes back as the grid's own end points (``-zero * scale``, ``(levels - 1 - zero) * scale``), from which
onnxruntime's, NNCF's, TFLite's and torchao's range-to-grid rules all give back that one grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from runtime.contract import PreprocessSpec
from runtime.preprocess import normalised_range

LEVELS = 256
# Codes between any pixel value and a rounding tie. Engines compute x / scale + zero point in float32 by different
# formulas, which differ by about 1e-5 codes at 255; a hundred times that decides every value the same way in all.
TIE_MARGIN = 1e-3
MAX_WIDENING = 0.02  # the coarsest step tried, relative to the whole-range one
_TRIALS = 2000


def pixel_values(spec: PreprocessSpec) -> np.ndarray:
    """Every value the normalised input can hold: each channel's normalisation of pixels 0-255 (and of the letterbox
    colour), computed in float32 as :func:`runtime.preprocess.preprocess` computes it."""
    mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
    pixels = np.arange(256, dtype=np.float32)[:, None]
    values = [((pixels - mean) / std).ravel()]
    if spec.pad_color is not None:
        values.append((np.asarray(spec.pad_color, np.float32) - mean) / std)
    return np.unique(np.concatenate(values).astype(np.float64))


def _grid(low: float, high: float, zero: int, levels: int) -> float:
    """The step of the ``levels``-code grid with zero at code ``zero`` that just holds [low, high] (inf if none)."""
    steps = levels - 1
    below = -low / zero if zero else (0.0 if low == 0 else np.inf)
    above = high / (steps - zero) if zero < steps else (0.0 if high == 0 else np.inf)
    return max(below, above)


def _tie_distance(values: np.ndarray, scale: float, zero: int) -> float:
    codes = values / scale + zero
    return float(np.abs(codes - np.floor(codes) - 0.5).min())


def _mean_error(values: np.ndarray, scale: float, zero: int) -> float:
    codes = values / scale + zero
    return float(np.abs(np.round(codes) - codes).mean() * scale)


def tie_free_range(values: Sequence[float] | np.ndarray, low: float, high: float,
                   levels: int = LEVELS) -> tuple[float, float]:
    """A range holding [low, high] whose ``levels``-code grid has zero on it and puts none of ``values`` within
    :data:`TIE_MARGIN` codes of a rounding tie: (low, high) itself when every grid the tools derive from it already
    does, else the grid end points of the best coarser grid. Raises if none within
    :data:`MAX_WIDENING` does (not seen: a step a little coarser spreads the values' positions between codes)."""
    values = np.asarray(values, np.float64).ravel()
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    steps = levels - 1
    base = (high - low) / steps
    exact = -low / base

    def zeros(scale: float) -> set[int]:
        at = -low / scale
        return {min(max(int(np.floor(at)), 0), steps), min(max(int(np.ceil(at)), 0), steps)}

    # the grids the tools derive from [low, high]: onnxruntime's, TFLite's and torchao's whole-range step with the
    # zero point rounded either way, NNCF's narrowest step around either zero point (quantize.openvino_int8)
    own = [(base, z) for z in zeros(base)] + [(_grid(low, high, z, levels), z) for z in zeros(base)]
    if all(_tie_distance(values, scale, z) >= TIE_MARGIN for scale, z in own):
        return low, high
    best: tuple[float, float, int] | None = None
    for k in range(1, _TRIALS + 1):
        scale = base * (1 + MAX_WIDENING * k / _TRIALS)
        for zero in zeros(scale) | {int(round(exact))}:
            if -zero * scale > low or (steps - zero) * scale < high:
                continue
            if _tie_distance(values, scale, zero) < TIE_MARGIN:
                continue
            error = _mean_error(values, scale, zero)
            if best is None or error < best[0]:
                best = (error, scale, zero)
    if best is None:
        raise ValueError(f"no {levels}-code grid within {MAX_WIDENING:.0%} of [{low}, {high}] keeps the input values "
                         f"{TIE_MARGIN} codes off rounding ties")
    _, scale, zero = best
    return -zero * scale, (steps - zero) * scale


def input_range(spec: PreprocessSpec) -> tuple[float, float]:
    """The range every int8 input quantizer of a normalised-input artifact holds: every pixel a camera can give
    (:func:`runtime.preprocess.normalised_range`), on a grid that leaves no pixel value on a rounding tie."""
    return tie_free_range(pixel_values(spec), *normalised_range(spec))
