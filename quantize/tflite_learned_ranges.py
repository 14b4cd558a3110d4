"""Carry the activation ranges QAT learned into full-integer TFLite.

The TFLite converter takes no Q/DQ graph (and onnx2tf converts one into a wrong model, docs/TOOLCHAIN.md),
so the QAT TFLite used to be QAT's weights with every range calibrated again. Its first step, however,
*calibrate only* (:mod:`quantize.tflite_int8`), writes a float model whose activation tensors carry
(min, max) records, from which TF's MLIR quantizer derives every scale and zero point. Writing QAT's
learned range into the record of each tensor QAT quantized makes the quantizer use that range: an 8-bit
affine range ``[(q_min - z) s, (q_max - z) s]`` gives back exactly QAT's scale and, shifted by 128 for int8,
its zero point.

Matching by value, not by name. The TFLite graph comes from QAT's float twin (:func:`quantize.qat.float_twin`:
QAT's quantized weights, no activation quantization) through torch.onnx, onnxsim and onnx2tf, which rename,
fuse and transpose everything. So both models run one probe image: the QAT model with activation
quantization off (float values at every activation quantizer, recorded by ``float_twin``) and the
calibrate-only TFLite model. A TFLite tensor takes the range of the QAT tensor whose values it reproduces:
same shape (NCHW read as NHWC), relative L2 difference within :data:`MATCH_RTOL` (the same function in
float on both sides: worst 7.9e-5 to 1.2e-4 on the BCCD D0's three QAT seeds), and no other candidate
close. Tensors no QAT quantizer saw keep their calibrated ranges (the sigmoid inside SiLU, paddings,
reshapes); the manifest says how many were carried.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

MATCH_RTOL = 1e-3  # relative L2 difference below which a TFLite tensor is QAT's tensor
SAMPLE = 4096  # values compared per tensor (a strided subsample: exact float twins agree everywhere)


def _strided(values: np.ndarray) -> np.ndarray:
    """At most SAMPLE of the values, evenly strided in their memory order."""
    flat = np.ascontiguousarray(values, np.float32).reshape(-1)
    return flat[:: max(1, flat.size // SAMPLE)][:SAMPLE].copy()


def fingerprint(values: np.ndarray) -> tuple[tuple[int, ...], np.ndarray]:
    """A torch tensor's NHWC shape (4-D NCHW values are transposed, as TFLite lays them out) and its subsample."""
    if values.ndim == 4:
        values = values.transpose(0, 2, 3, 1)
    return tuple(values.shape), _strided(values)


@dataclass(frozen=True)
class LearnedTensor:
    """One activation QAT quantized: its range and its fingerprint on the probe image."""

    shape: tuple[int, ...]
    sample: np.ndarray
    low: float
    high: float


@dataclass(frozen=True)
class LearnedRanges:
    """QAT's learned activation ranges with the probe image (``[1, S, S, 3]``, the model's normalised input) that
    identifies their tensors."""

    probe: np.ndarray
    tensors: tuple[LearnedTensor, ...]


@dataclass(frozen=True)
class RangeTransfer:
    """What :func:`apply_learned_ranges` carried: TFLite tensors given a learned range, tensors with a range
    record, QAT ranges used, QAT ranges in all, and the worst relative difference among the matches."""

    carried: int
    recorded: int
    used: int
    learned: int
    worst_rtol: float

    def describe(self, method: str) -> str:
        """The manifest's ``ranges`` line; ``method``: how the other tensors were calibrated."""
        return (f"learned by QAT for {self.carried} of {self.recorded} activation tensors ({self.used} of QAT's "
                f"{self.learned} ranges found, matched by value); the other tensors calibrated ({method})")


def _match(sample: np.ndarray, candidates: list[LearnedTensor]) -> tuple[LearnedTensor | None, float]:
    """The candidate whose values ``sample`` reproduces, or None when none is within MATCH_RTOL or two differing
    ranges are."""
    errors = []
    for c in candidates:
        norm = float(np.linalg.norm(c.sample))
        if norm > 0.0:
            errors.append((float(np.linalg.norm(sample - c.sample)) / norm, c))
    close = sorted((e for e in errors if e[0] <= MATCH_RTOL), key=lambda e: e[0])
    if not close or any((c.low, c.high) != (close[0][1].low, close[0][1].high) for _, c in close[1:]):
        return None, 0.0
    return close[0][1], close[0][0]


def apply_learned_ranges(calibrated: bytes, learned: LearnedRanges, tf: Any) -> tuple[bytes, RangeTransfer]:
    """``calibrated`` (the converter's calibrate-only model) with QAT's range written into every activation tensor
    that matches a tensor QAT quantized. Raises if none matches (the export would silently be recalibrated)."""
    from tensorflow.lite.tools import flatbuffer_utils

    from .tflite_int8 import calibrated_tensors, inspecting_interpreter

    model = flatbuffer_utils.convert_bytearray_to_object(calibrated)
    ranges = calibrated_tensors(model)
    interpreter, inp = inspecting_interpreter(calibrated, tf)
    interpreter.set_tensor(inp["index"], learned.probe.astype(inp["dtype"]))
    interpreter.invoke()
    by_shape: dict[tuple[int, ...], list[LearnedTensor]] = {}
    for t in learned.tensors:
        by_shape.setdefault(t.shape, []).append(t)
    tensors = model.subgraphs[0].tensors
    used: set[int] = set()
    carried, worst = 0, 0.0
    for index in ranges:
        values = interpreter.get_tensor(index)
        candidates = by_shape.get(tuple(values.shape), [])
        if not candidates:
            continue
        match, error = _match(_strided(values), candidates)
        if match is None:
            continue
        q = tensors[index].quantization
        q.min, q.max = [min(match.low, 0.0)], [max(match.high, 0.0)]
        used.add(id(match))
        carried += 1
        worst = max(worst, error)
    if carried == 0:  # a conversion fault (RuntimeError: the export's exit status 3), not bad input
        raise RuntimeError(f"none of QAT's {len(learned.tensors)} activation ranges matched a tensor of the TFLite "
                         "model by value: the float model converted is not QAT's float twin")
    transfer = RangeTransfer(carried, len(ranges), len(used), len(learned.tensors), worst)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), transfer
