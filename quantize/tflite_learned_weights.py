"""Carry the weights QAT learned into full-integer TFLite, code for code.

The QAT TFLite is converted from QAT's float twin (:func:`quantize.qat.float_twin`), whose weights are QAT's quantized
values. TF's quantizer then quantizes them again at its own per-channel scale, max|w| / 127: exact on a grid of +-127
codes (QAT's depthwise convolutions), but a dense convolution's 7-bit grid (+-63,
:data:`quantize.qat.DENSE_WEIGHT_CODES`) lands between the 8-bit codes, and every such weight was rounded again: 1.4 %
relative L2 noise QAT never trained against, on each of the BCCD Lite0's 102 dense convolutions (session 25). This
module writes QAT's own codes and scales (from the QAT Q/DQ ONNX, which holds exactly the weights QAT trained) over
the converter's, and requantizes each bias to the new scales (TFLite's int32 bias scale is input scale x weight
scale). Where the converter folded a constant factor into a convolution (BiFPN's fusion weights), the scales carry
that factor.

Matching by value and shape, not by name: torch.onnx, onnxsim and onnx2tf rename, fuse and transpose everything, and
the two graphs do not list their convolutions in the same order. A TFLite convolution takes the QAT convolution with
the same weight shape and output shape whose weights its own are closest to (relative L2 within
:data:`WEIGHT_MATCH_RTOL`, the next candidate at least :data:`WEIGHT_MATCH_MARGIN` times further). The output shape
tells a head's per-level copies apart (their weights nearly agree, measured: the next copy 1.02-1.1x as far as the
right one on weights alone); with it the next candidate was at least 53x further on the BCCD Lite0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

# A converter's 8-bit rounding of a 7-bit grid moves weights by up to half a TFLite step: at most 0.93 % relative L2
# on the BCCD Lite0's 182 convolutions, 0.84 % on the default D0's 214 (session 25); another convolution's weights are
# not that close.
WEIGHT_MATCH_RTOL = 0.05
WEIGHT_MATCH_MARGIN = 2.0
TFLITE_WEIGHT_CODES = 127  # TF's quantizer: per-channel scale = max|w| / 127
# The factor read off each channel's scale agrees to float32 precision (about 1e-7) when it is one factor.
FACTOR_RTOL = 1e-5
CONVOLUTIONS = ("CONV_2D", "DEPTHWISE_CONV_2D")


@dataclass(frozen=True)
class LearnedConv:
    """One convolution of the QAT model: its int8 weight codes (OIHW), per-output-channel scales and output shape
    (NHWC, as TFLite lays it out)."""

    codes: np.ndarray
    scales: np.ndarray
    out_shape: tuple[int, ...]

    @property
    def weights(self) -> np.ndarray:
        return self.codes.astype(np.float64) * self.scales.astype(np.float64).reshape(-1, 1, 1, 1)


@dataclass(frozen=True)
class WeightTransfer:
    """What :func:`apply_learned_weights` carried: TFLite convolutions given QAT's codes, convolutions in all, QAT's
    convolutions, the worst relative difference among the matches (TFLite's rounding against QAT's)."""

    carried: int
    convolutions: int
    learned: int
    worst_rtol: float

    def describe(self) -> str:
        """The manifest's ``weights`` line."""
        return (f"QAT's int8 codes and scales for {self.carried} of {self.convolutions} convolutions (of QAT's "
                f"{self.learned}, matched by value)")


def qdq_convolutions(qdq: onnx.ModelProto) -> tuple[LearnedConv, ...]:
    """Every Conv of a Q/DQ ONNX whose weights come through a DequantizeLinear of int8 constants (zero points 0)."""
    model = shape_inference.infer_shapes(qdq)
    graph = model.graph
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    constants.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                      if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    producer = {o: n for n in graph.node for o in n.output}
    shapes = {v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim)
              for v in list(graph.value_info) + list(graph.output)}
    out = []
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        dq = producer.get(node.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in constants:
            continue
        codes = constants[dq.input[0]]
        zero = constants.get(dq.input[2]) if len(dq.input) > 2 else None
        shape = shapes.get(node.output[0])
        if codes.dtype != np.int8 or (zero is not None and np.any(zero)) or shape is None or len(shape) != 4:
            continue
        scales = np.broadcast_to(np.asarray(constants[dq.input[1]], np.float32).reshape(-1), (codes.shape[0],))
        n, c, h, w = shape
        out.append(LearnedConv(codes, scales.copy(), (n, h, w, c)))
    return tuple(out)


def _as_oihw(codes: np.ndarray, op: str) -> np.ndarray:
    """TFLite's weight layout (CONV_2D: OHWI, DEPTHWISE_CONV_2D: 1HWO) as torch's OIHW."""
    return codes.transpose(0, 3, 1, 2) if op == "CONV_2D" else codes.transpose(3, 0, 1, 2)


def _from_oihw(codes: np.ndarray, op: str) -> np.ndarray:
    return codes.transpose(0, 2, 3, 1) if op == "CONV_2D" else codes.transpose(1, 2, 3, 0)


def _factor(scale: np.ndarray, conv: LearnedConv) -> float | None:
    """The factor the converter multiplied ``conv``'s weights by, read off its per-channel ``scale``: TF's quantizer
    sets each to max|w| / 127, and QAT's largest code of the channel times QAT's scale is that max before the factor.
    None when the channels disagree (not one factor)."""
    top = np.abs(conv.codes.astype(np.int32)).reshape(len(conv.codes), -1).max(axis=1)
    live = top > 0
    if not live.any():
        return None
    per_channel = TFLITE_WEIGHT_CODES * scale[live] / (top[live] * conv.scales.astype(np.float64)[live])
    factor = float(np.median(per_channel))
    if factor <= 0.0 or np.abs(per_channel / factor - 1.0).max() > FACTOR_RTOL:
        return None
    return 1.0 if abs(factor - 1.0) <= FACTOR_RTOL else factor


def _match(weights: np.ndarray, scale: np.ndarray, candidates: Sequence[LearnedConv]
           ) -> tuple[LearnedConv | None, float, float]:
    """The candidate ``weights`` (TFLite's, dequantized, OIHW; ``scale``: its per-channel scales) round, its relative
    L2 difference and the factor the converter multiplied it by (1.0 unless it folded a constant that followed the
    convolution into it, as the weights of BiFPN's fast-attention fusion: 0.16-0.89 on the default D0's five input
    projections); None when none is close or two are."""
    fits = []
    for c in candidates:
        factor = _factor(scale, c)
        if factor is not None:
            ref = factor * c.weights
            fits.append((float(np.linalg.norm(weights - ref) / np.linalg.norm(ref)), factor, c))
    fits.sort(key=lambda f: f[0])
    if not fits or fits[0][0] > WEIGHT_MATCH_RTOL or (len(fits) > 1 and fits[1][0] < WEIGHT_MATCH_MARGIN * fits[0][0]):
        return None, 0.0, 1.0
    return fits[0][2], fits[0][0], fits[0][1]


def apply_learned_weights(data: bytes, learned: Sequence[LearnedConv]) -> tuple[bytes, WeightTransfer]:
    """``data`` (a fully integer TFLite flatbuffer) with QAT's codes and scales in every convolution that matches one
    of ``learned``, its int32 bias requantized for them. Raises if none matches (the export would silently keep the
    converter's rounding)."""
    from tensorflow.lite.tools import flatbuffer_utils

    from .tflite_int8 import OpGraph

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    graph = OpGraph(model)
    tensors = model.subgraphs[0].tensors
    readers = Counter(tensors[i].buffer for op, inputs, _ in graph.ops if op in CONVOLUTIONS for i in inputs[1:3])
    by_shape: dict[tuple[tuple[int, ...], tuple[int, ...]], list[LearnedConv]] = {}
    for conv in learned:
        by_shape.setdefault((conv.codes.shape, conv.out_shape), []).append(conv)
    convolutions, carried, worst, used = 0, 0, 0.0, set()
    for op, inputs, outputs in graph.ops:
        if op not in CONVOLUTIONS:
            continue
        convolutions += 1
        weight = tensors[inputs[1]]
        q = weight.quantization
        if readers[weight.buffer] > 1 or q is None or q.scale is None or np.any(np.asarray(q.zeroPoint)):
            continue  # a weight two convolutions share, or not symmetric per channel: left as converted
        codes = np.frombuffer(bytes(model.buffers[weight.buffer].data), np.int8).reshape(weight.shape)
        scale = np.broadcast_to(np.asarray(q.scale, np.float64), (codes.shape[0 if op == "CONV_2D" else 3],))
        oihw = _as_oihw(codes, op).astype(np.float64) * scale.reshape(-1, 1, 1, 1)
        key = (oihw.shape, tuple(int(d) for d in tensors[outputs[0]].shape))
        match, error, factor = _match(oihw, scale, [c for c in by_shape.get(key, []) if id(c) not in used])
        if match is None or np.any(match.codes == -128):
            continue
        new_scale = (match.scales.astype(np.float64) * factor).astype(np.float32)
        if len(inputs) > 2:  # the converter's own bias (any folded factor included), at the new scales
            bias = tensors[inputs[2]]
            old = np.frombuffer(bytes(model.buffers[bias.buffer].data), "<i4")
            value = old.astype(np.float64) * np.asarray(bias.quantization.scale, np.float64)
            bias_scale = np.float32(tensors[inputs[0]].quantization.scale[0]) * new_scale
            info = np.iinfo(np.int32)
            requantized = np.clip(np.round(value / bias_scale), info.min, info.max).astype("<i4")
            if readers[bias.buffer] > 1 and not np.array_equal(requantized, old):
                continue  # a bias buffer another convolution reads (the converter shares equal constants)
            model.buffers[bias.buffer].data = np.frombuffer(requantized.tobytes(), np.uint8)
            bias.quantization.scale = bias_scale.astype(np.float32)
            bias.quantization.zeroPoint = np.zeros(len(bias_scale), np.int64)
        layout = np.ascontiguousarray(_from_oihw(match.codes, op)).astype(np.int8)
        model.buffers[weight.buffer].data = np.frombuffer(layout.tobytes(), np.uint8)
        q.scale = new_scale
        q.zeroPoint = np.zeros(len(new_scale), np.int64)
        used.add(id(match))
        carried += 1
        worst = max(worst, error)
    if carried == 0:  # a conversion fault (RuntimeError: the export's exit status 3), not bad input
        raise RuntimeError(f"none of the TFLite model's {convolutions} convolutions matched one of QAT's "
                           f"{len(learned)} by value: the float model converted is not QAT's float twin")
    transfer = WeightTransfer(carried, convolutions, len(learned), worst)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), transfer
