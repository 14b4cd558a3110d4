"""Full-integer TFLite: TF's own TFLiteConverter with a representative dataset from the calibration set.

Chosen over onnx2tf's ``-oiqt`` (identical int8 results here, docs/TOOLCHAIN.md) because the converter
route takes the shared calibration array directly and lets the I/O type be chosen. Every op is int8
(``TFLITE_BUILTINS_INT8``, and :func:`convert.edgetpu.check_tflite` refuses any float tensor), inputs
and outputs int8 or uint8 (uint8 for the Edge TPU).

Calibration methods. The converter itself only knows min-max, the weakest method on these models
(docs/TOOLCHAIN.md; on the default D0 it lost 1.67 mAP points and failed the gate). ``percentile``
splits the converter's own two steps, as TF's ``QuantizationDebugger`` does: the converter first
*calibrates only* (a float model whose activation tensors carry the observed min/max), each of those
ranges is then narrowed to the ``percentile`` of the values the calibration images produced in that
tensor (histograms from the interpreter, with the calibrated min/max as their bounds), and TF's MLIR
quantizer (``mlir_quantize``, what ``convert()`` runs next) quantizes the model from the edited
ranges. With the ranges left unedited this reproduces ``convert()``'s tensors and scales exactly
(checked: every scale of D0 identical). Only activation ranges change; weights stay per-channel
symmetric min-max and the model input keeps its range (it is the normalised image, no outliers).

Whole pixel range. The input side (the input, normalisation and padding up to the first convolutions)
is widened to hold a black and a white frame, whatever the calibration images looked like
(:func:`hold_pixel_range`): a camera can produce any pixel, and a range calibrated on bright, pink
microscope images clipped 16-34 % of the input values of darker photos (issue 15).

Score floor. In a graph that applies the sigmoid itself (the Android file), the score threshold falls on
the logits' int8 grid. Calibrated, the default D0's logits span [-19.4, 4.6] (scale 0.094): four fifths of
the levels encode scores below 0.02, which nothing keeps, and near the 0.3 threshold scores stepped by 0.02,
which failed that file's gate. ``score_floor`` raises the lower end of the ranges into the score sigmoid to a
logit below every threshold, so the levels go where scores are decided (scale 0.033; docs/QUANTIZATION.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from calib_data import CalibrationSet
from quantize.folded_stem import FoldedStem

from .tflite_learned_ranges import LearnedRanges, RangeTransfer, apply_learned_ranges
from .tflite_learned_weights import LearnedConv, WeightTransfer, apply_learned_weights

IO_DTYPES = ("int8", "uint8")
METHODS = ("minmax", "percentile")
PERCENTILE = 99.999  # share of each tensor's calibration values kept inside its range (onnxruntime's default)
HISTOGRAM_BINS = 4096


class Batches(Sequence[np.ndarray]):
    """``[1, S, S, 3]`` model inputs made one at a time by ``make(i)``: a calibration set is memory-mapped, and
    200 images at 512 px held at once would be 630 MB."""

    def __init__(self, make: Callable[[int], np.ndarray], count: int) -> None:
        self._make, self._count = make, count

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        if not 0 <= i < self._count:
            raise IndexError(i)
        return self._make(i)

    @staticmethod
    def of(calib: CalibrationSet) -> Batches:
        return Batches(calib.nhwc, len(calib))


def configure_full_int8(converter: Any, tf: Any, samples: Sequence[np.ndarray], io_dtype: str = "int8",
                        float_outputs: bool = False) -> None:
    """Set ``converter`` (a ``tf.lite.TFLiteConverter``) up for a fully integer model calibrated on ``samples``.

    ``float_outputs``: keep float outputs (a graph that ends in the detection op, whose outputs are float).
    """
    if io_dtype not in IO_DTYPES:
        raise ValueError(f"TFLite int8 I/O type must be one of {IO_DTYPES}, got {io_dtype!r}")
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s] for s in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8 if io_dtype == "int8" else tf.uint8
    converter.inference_output_type = tf.float32 if float_outputs else converter.inference_input_type


@dataclass(frozen=True)
class TfliteFlatbuffer:
    """A TFLite model's bytes and, when QAT's ranges and weights were carried into its int8 form, what was carried."""

    data: bytes
    transfer: RangeTransfer | None = None
    weights: WeightTransfer | None = None


def convert_full_int8(converter: Any, tf: Any, calib: CalibrationSet | Sequence[np.ndarray], io_dtype: str = "int8",
                      method: str = "percentile", progress: bool = True, float_outputs: bool = False,
                      score_floor: float | None = None, extremes: Sequence[np.ndarray] = (),
                      learned: LearnedRanges | None = None, stem: FoldedStem | None = None,
                      weights: Sequence[LearnedConv] = (), grid: tuple[float, float] | None = None) -> TfliteFlatbuffer:
    """The fully integer flatbuffer, its activation ranges calibrated by ``method`` on ``calib`` (a calibration
    set, or its images already as the model's ``[1, S, S, 3]`` inputs); with ``learned`` (a QAT model's ranges),
    those ranges replace the calibrated ones wherever their tensors are found
    (:mod:`quantize.tflite_learned_ranges`); with ``score_floor`` (a logit), the ranges into the graph's sigmoid
    start there (:func:`floor_score_logits`); with ``extremes`` (the black and white frames as model inputs), the
    input side holds the whole pixel range (:func:`hold_pixel_range`; ``grid``: the input's range as
    :func:`quantize.input_grid.input_range` sets it); with ``stem`` (the model takes pixels with the
    normalisation folded into its first convolution), that convolution's bias is refolded for its quantized
    weights (:func:`refold_stem_bias`); with ``weights`` (a QAT model's convolutions), their int8 codes and scales
    replace the converter's wherever found (:mod:`quantize.tflite_learned_weights`)."""
    if method not in METHODS:
        raise ValueError(f"TFLite calibration method must be one of {METHODS}, got {method!r}")
    samples = Batches.of(calib) if isinstance(calib, CalibrationSet) else calib
    configure_full_int8(converter, tf, samples, io_dtype, float_outputs)
    if method == "minmax" and score_floor is None and not len(extremes) and learned is None:
        data = converter.convert()
        return TfliteFlatbuffer(refold_stem_bias(data, stem) if stem is not None else data)
    from tensorflow.lite.python import convert as tf_convert

    converter._experimental_calibrate_only = True  # the converter's own first step, as QuantizationDebugger uses it
    ranges = converter.convert()
    if method == "percentile":
        ranges = percentile_ranges(ranges, samples, PERCENTILE, tf, progress)
    transfer = None
    if learned is not None:
        ranges, transfer = apply_learned_ranges(ranges, learned, tf)
    if score_floor is not None:
        ranges = floor_score_logits(ranges, score_floor)
    if len(extremes):
        ranges = hold_pixel_range(ranges, extremes, tf, grid)
    dtype = tf.int8 if io_dtype == "int8" else tf.uint8
    data = tf_convert.mlir_quantize(ranges, input_data_type=dtype,
                                    output_data_type=tf.float32 if float_outputs else dtype)
    if stem is not None:
        data = refold_stem_bias(data, stem)
    carried = None
    if weights:
        data, carried = apply_learned_weights(data, weights)
    return TfliteFlatbuffer(data, transfer, carried)


def refold_stem_bias(data: bytes, stem: FoldedStem) -> bytes:
    """``data`` (a fully integer flatbuffer of a pixel-input graph) with its first convolution's int32 bias refolded
    for the int8 weights the converter chose (:mod:`quantize.folded_stem`), on the bias's own scales."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    graph = OpGraph(model)
    conv = next((inputs for name, inputs, _ in graph.ops if name == "CONV_2D"), None)
    tensors = model.subgraphs[0].tensors
    weights, bias = (tensors[conv[1]], tensors[conv[2]]) if conv is not None and len(conv) > 2 else (None, None)
    if weights is None or list(weights.shape)[3:] != [len(stem.mean)] or list(bias.shape) != [len(stem.bias)]:
        raise ValueError("the TFLite model's first convolution is not the folded pixel-input stem")
    codes = np.frombuffer(bytes(model.buffers[weights.buffer].data), np.int8).reshape(weights.shape)
    scale = np.asarray(weights.quantization.scale, np.float64)[:, None, None, None]
    zero = np.asarray(weights.quantization.zeroPoint, np.float64)[:, None, None, None]
    refolded = stem.bias_for(((codes - zero) * scale).transpose(0, 3, 1, 2))  # OHWI -> OIHW
    info = np.iinfo(np.int32)
    step = np.asarray(bias.quantization.scale, np.float64)
    values = np.clip(np.round(refolded / step), info.min, info.max).astype("<i4")
    model.buffers[bias.buffer].data = np.frombuffer(values.tobytes(), np.uint8)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def calibrated_tensors(model: Any) -> dict[int, tuple[float, float]]:
    """Index -> (min, max) of every tensor the calibration recorded a range for, except the model input."""
    graph = model.subgraphs[0]
    inputs = set(int(i) for i in graph.inputs)
    out = {}
    for index, tensor in enumerate(graph.tensors):
        q = tensor.quantization
        if index in inputs or q is None or q.min is None or q.max is None or len(q.min) != 1:
            continue
        out[index] = (float(q.min[0]), float(q.max[0]))
    return out


def _cut(hist: np.ndarray, edges: np.ndarray, percentile: float) -> tuple[float, float]:
    """The narrowest [lo, hi] on the histogram's edges that leaves (100 - percentile) % out, split over both tails."""
    cdf = np.cumsum(hist, dtype=np.float64)
    total = cdf[-1]
    if total == 0:
        return float(edges[0]), float(edges[-1])
    tail = total * (100.0 - percentile) / 200.0
    lo = int(np.searchsorted(cdf, tail, side="right"))
    hi = int(np.searchsorted(cdf, total - tail, side="left"))
    return float(edges[lo]), float(edges[min(hi + 1, len(edges) - 1)])


def inspecting_interpreter(calibrated: bytes, tf: Any) -> tuple[Any, dict[str, Any]]:
    """An interpreter of the calibrate-only float model that keeps every tensor readable, and its input."""
    interpreter = tf.lite.Interpreter(
        model_content=calibrated, experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    return interpreter, inp


def percentile_ranges(calibrated: bytes, samples: Sequence[np.ndarray], percentile: float, tf: Any,
                      progress: bool = True) -> bytes:
    """``calibrated`` with each recorded activation range narrowed to ``percentile`` of its calibration values.

    Ranges never widen and always contain 0 (the quantizer needs an exact zero)."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(calibrated)
    ranges = calibrated_tensors(model)
    interpreter, inp = inspecting_interpreter(calibrated, tf)
    hists = {i: np.zeros(HISTOGRAM_BINS, np.int64) for i in ranges}
    for sample in tqdm(samples, desc="TFLite percentile calibration", unit="img", disable=not progress):
        interpreter.set_tensor(inp["index"], sample)
        interpreter.invoke()
        for index, (lo, hi) in ranges.items():
            if hi > lo:
                hists[index] += np.histogram(interpreter.get_tensor(index), HISTOGRAM_BINS, (lo, hi))[0]
    tensors = model.subgraphs[0].tensors
    for index, (lo, hi) in ranges.items():
        if hi <= lo:
            continue
        new_lo, new_hi = _cut(hists[index], np.linspace(lo, hi, HISTOGRAM_BINS + 1), percentile)
        q = tensors[index].quantization
        q.min = [min(max(new_lo, lo), 0.0)]
        q.max = [max(min(new_hi, hi), 0.0)]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


# Ops that only move or join values: the range of their output is the range of their inputs.
_VALUE_PRESERVING = ("RESHAPE", "CONCATENATION", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS")


class OpGraph:
    """The ops of a TFLite flatbuffer's main graph (``ops``: name, inputs, outputs in execution order), indexed by
    the tensors they read and write."""

    def __init__(self, model: Any) -> None:
        from tensorflow.lite.python import schema_py_generated as schema

        names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        self.model, self.graph = model, model.subgraphs[0]
        self.producer: dict[int, tuple[str, list[int]]] = {}  # tensor -> (op, its inputs)
        self.takers: dict[int, list[tuple[str, list[int]]]] = {}  # tensor -> [(op, its outputs)]
        self.ops: list[tuple[str, list[int], list[int]]] = []
        for op in self.graph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
            inputs, outs = [int(i) for i in op.inputs if i >= 0], [int(o) for o in op.outputs]
            self.ops.append((name, inputs, outs))
            for out in outs:
                self.producer[out] = (name, inputs)
            for i in inputs:
                self.takers.setdefault(i, []).append((name, outs))
        self.outputs = {int(o) for o in self.graph.outputs}

    def single_range(self, index: int) -> Any:
        """The tensor's quantization record if it holds one recorded (min, max), else None."""
        q = self.graph.tensors[index].quantization
        ok = q is not None and q.min is not None and q.max is not None and len(q.min) == 1
        return q if ok else None


def floor_score_logits(calibrated: bytes, floor: float) -> bytes:
    """``calibrated`` with every recorded range on the path into the score sigmoid raised to start at ``floor``
    (a negative logit): the sigmoid's input, and back through reshapes and concatenations to the ops that
    compute the logits (the class head's convolutions).

    The score sigmoid is a ``LOGISTIC`` op whose output leaves the network (possibly through reshapes, which the
    converter may move after it), as a graph output or into a custom op (the detection op); the backbone's
    swish sigmoids feed a multiplication and keep their ranges. Raises if there is no score sigmoid."""
    from tensorflow.lite.tools import flatbuffer_utils

    if not floor < 0.0:
        raise ValueError(f"the score floor is a logit below 0 (a score below 0.5), got {floor}")
    model = flatbuffer_utils.convert_bytearray_to_object(calibrated)
    g = OpGraph(model)

    def leaves(index: int) -> bool:
        """The tensor leaves the network unchanged: a graph output, or through reshapes into a custom op."""
        return index in g.outputs or any(name == "CUSTOM" or name in _VALUE_PRESERVING and any(map(leaves, outs))
                                         for name, outs in g.takers.get(index, []))

    todo = [ins[0] for out, (name, ins) in g.producer.items() if name == "LOGISTIC" and leaves(out)]
    if not todo:
        raise ValueError("the graph has no score sigmoid (a LOGISTIC op whose output is a graph output or goes to "
                         "the detection op): there are no score logits to floor")
    seen: set[int] = set()
    while todo:
        index = todo.pop()
        if index in seen:
            continue
        seen.add(index)
        q = g.single_range(index)
        if q is not None:
            q.min = [min(max(float(q.min[0]), floor), 0.0)]
            q.max = [max(float(q.max[0]), 0.0)]
        name, inputs = g.producer.get(index, ("", []))
        if name in _VALUE_PRESERVING:
            todo += [i for i in inputs if not _is_constant(model, g.graph.tensors[i])]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


# Ops that hold the network's weights: the pixel-range walk stops at the first of them.
_WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")


def hold_pixel_range(calibrated: bytes, extremes: Sequence[np.ndarray], tf: Any,
                     grid: tuple[float, float] | None = None) -> bytes:
    """``calibrated`` with the input's range, and that of every tensor between the input and the first
    convolutions (normalisation, padding), widened to hold ``extremes``: the black and the white frame as the
    model takes them. With ``grid`` (a range holding the input's extremes, :func:`quantize.input_grid.input_range`),
    the input and every tensor on that path whose extremes are the input's (padding, reshapes) take it instead, so
    that no pixel value lies on a rounding tie of their quantizer.

    Calibrated on the calibration images alone, the input quantizer clipped whatever those images never showed:
    16-34 % of the input values of darker or more colourful photos for the BCCD D0's int8 artifacts, 0.1 % or
    less in distribution (issue 15). Every op on that path (subtract, multiply by 1/std, pad) is monotone per
    value, so a black and a white frame reach the lowest and highest value any camera frame can give there."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(calibrated)
    g = OpGraph(model)
    chain: list[int] = []
    todo = [int(i) for i in g.graph.inputs]
    while todo:
        index = todo.pop()
        if index in chain:
            continue
        chain.append(index)
        todo += [o for name, outs in g.takers.get(index, []) if name not in _WEIGHTED for o in outs]
    interpreter, inp = inspecting_interpreter(calibrated, tf)
    low = {i: np.inf for i in chain}
    high = {i: -np.inf for i in chain}
    for frame in extremes:
        interpreter.set_tensor(inp["index"], np.asarray(frame, inp["dtype"]))
        interpreter.invoke()
        for i in chain:
            values = interpreter.get_tensor(i)
            low[i], high[i] = min(low[i], float(values.min())), max(high[i], float(values.max()))
    first = int(g.graph.inputs[0])
    for i in chain:
        q = g.single_range(i)
        if q is None:
            continue
        if grid is not None and np.isclose(low[i], low[first]) and np.isclose(high[i], high[first]):
            if not (grid[0] <= low[i] + 1e-6 and grid[1] >= high[i] - 1e-6):
                raise ValueError(f"the input grid {grid} does not hold the input's extremes {low[i]}..{high[i]}")
            q.min, q.max = [float(grid[0])], [float(grid[1])]
        else:
            q.min = [min(float(q.min[0]), low[i], 0.0)]
            q.max = [max(float(q.max[0]), high[i], 0.0)]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _is_constant(model: Any, tensor: Any) -> bool:
    """A tensor whose values are stored in the file (a shape or an axis), not computed."""
    buffer = model.buffers[tensor.buffer]
    return buffer.data is not None and len(buffer.data) > 0
