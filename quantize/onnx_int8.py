"""ONNX -> QDQ int8 ONNX with onnxruntime's static quantizer.

Why onnxruntime's quantizer: it is the reference QDQ producer for the runtime that executes these
files, exposes the calibration method and per-node exclusion directly, and its output runs with int8
kernels in onnxruntime and in OpenVINO. NNCF's ONNX backend would be the other choice, but nncf 3.4
fails to import it with this onnx/protobuf set (``TypeError`` in ``ONNXQuantizerLayerParameters``).
Methods: ``minmax`` (global), ``ema-minmax`` (moving average of per-image ranges: outliers of single
images do not set the range), ``percentile`` (99.999th) and ``entropy``; the histogram methods bin
every activation in numpy and are capped at ``HISTOGRAM_IMAGES``.
Scheme (the one every target shares): weights int8 per-channel symmetric, activations uint8 per-tensor
asymmetric (U8S8, the fast path on x86 VNNI). Graph inputs/outputs stay float32. Weights of every
convolution that is not depthwise are 7-bit (``reduce_range``, within +-64): without VNNI, onnxruntime's
x86 kernels add pairs of u8 x s8 products in a saturating int16, and the BCCD D0's int8 ONNX lost 16.2
mAP points on such a CPU (AMD Zen 3) while passing on AVX-512 VNNI (docs/INT8-CPU-CLASSES.md); depthwise
kernels widen first and keep 8 bits. Every int8 convolution's bias is then corrected for the rounding of its
weights (:mod:`quantize.bias_correction`, what NNCF does for OpenVINO): without it the BCCD Lite0's ONNX int8 at
512 px failed its gate with percentile, min-max and EMA min-max ranges alike.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from calib_data import CalibrationSet
from quantize.bias_correction import BiasCorrection, correct_biases, refold_stem_bias
from quantize.folded_stem import FoldedStem

METHODS = ("minmax", "ema-minmax", "percentile", "entropy")
HISTOGRAM_IMAGES = 64  # percentile/entropy: onnxruntime bins every activation in numpy (~6 s per image for D0)


class CalibrationReader:
    """onnxruntime's CalibrationDataReader over a calibration set (NCHW batches of one), in ranges.

    onnxruntime keeps every intermediate tensor of every image it is given at once (the histogram
    calibrators: ~100 MB per D0 image at 256 px; 200 images were killed for memory at 21 GB), so it is
    fed ``CHUNK`` images at a time through its strided-calibration hook; histograms merge across chunks.
    """

    def __init__(self, calib: CalibrationSet, input_name: str, count: int) -> None:
        self.calib, self.input_name, self.count = calib, input_name, count
        self._items: Iterator[int] = iter(range(count))

    def __len__(self) -> int:
        return self.count

    def set_range(self, start_index: int, end_index: int) -> None:
        self._items = iter(range(start_index, min(end_index, self.count)))

    def get_next(self) -> dict[str, Any] | None:
        i = next(self._items, None)
        return None if i is None else {self.input_name: self.calib.nchw(i)}


CHUNK = 8


def _unshare_initializers(model: onnx.ModelProto, nodes: list[str]) -> onnx.ModelProto:
    """Give ``nodes`` their own copies of initializers they share with other nodes.

    The exporter stores one initializer for identical weights (e.g. the per-level copies of a head's
    prediction conv), and onnxruntime quantizes a shared initializer once for all its consumers, so a
    node excluded from quantization would still read int8 weights through the shared DequantizeLinear.
    """
    if not nodes:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: t for t in out.graph.initializer}
    users: dict[str, int] = {}
    for node in out.graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    wanted = set(nodes)
    for node in out.graph.node:
        if node.name not in wanted:
            continue
        for k, name in enumerate(node.input):
            if name in inits and users[name] > 1:
                copy = onnx.TensorProto()
                copy.CopyFrom(inits[name])
                copy.name = f"{name}__float_{node.name}"
                out.graph.initializer.append(copy)
                node.input[k] = copy.name
    return out


def images_used(method: str, available: int) -> int:
    """How many calibration images ``method`` uses: histogram methods are capped; onnxruntime wants equal chunks."""
    count = min(available, HISTOGRAM_IMAGES) if method in ("percentile", "entropy") else available
    return count - count % CHUNK if count > CHUNK else count


# Ops that only move values: the tensors between the input and the first convolution that carry raw input values.
_MOVERS = ("Pad", "Transpose", "Reshape", "Identity")


def input_side(model: onnx.ModelProto) -> dict[str, float]:
    """The graph input and every tensor that only moves its values on the way to the first weighted ops, each with
    the constant its values are shifted by from the input's: the pixel-input form (convert/pixel_input.py) centres
    the Lite models' pixels on 128 (``Sub`` of a scalar: -128) and fills the D0's padded border with a constant map
    (``Add`` of a map, which only fills the padding with pixel values: 0)."""
    names = {model.graph.input[0].name: 0.0}
    constants = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if not node.input or node.input[0] not in names:
            continue
        shift = names[node.input[0]]
        operand = constants.get(node.input[1]) if len(node.input) > 1 else None
        if node.op_type in ("Add", "Sub") and operand is not None:
            value = numpy_helper.to_array(operand)
            if value.size == 1:
                shift += float(value.reshape(())) * (1.0 if node.op_type == "Add" else -1.0)
            elif node.op_type == "Sub":
                continue
        elif node.op_type not in _MOVERS:
            continue
        names.update({name: shift for name in node.output})
    return names


def reads_input_in_float(model: onnx.ModelProto, exclude: Iterable[str]) -> bool:
    """Whether every weighted op that reads the input of ``model`` (directly or after ops that only move its values)
    is among the ``exclude``d nodes: the quantized model then has no input quantizer, and so no input range."""
    side = input_side(model)
    readers = [n.name for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul")
               and any(i in side for i in n.input)]
    return bool(readers) and set(readers) <= set(exclude)


def dense_conv_weights(model: onnx.ModelProto, exclude: Iterable[str] = ()) -> list[str]:
    """Weight initializers of the convolutions that are not depthwise (``group`` 1), except ``exclude``d nodes."""
    inits = {t.name for t in model.graph.initializer}
    skip = set(exclude)
    names = []
    for node in model.graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if node.op_type == "Conv" and group == 1 and node.name not in skip and node.input[1] in inits:
            names.append(node.input[1])
    return names


def quantize_onnx(fp32: onnx.ModelProto, calib: CalibrationSet, method: str = "percentile",
                  exclude: Iterable[str] = (), input_range: tuple[float, float] | None = None,
                  bias_correction: bool = True, stem: FoldedStem | None = None
                  ) -> tuple[onnx.ModelProto, BiasCorrection | None]:
    """A QDQ model of ``fp32``; ``exclude`` names nodes to keep in float (mixed-precision fallback);
    ``input_range`` (the range of every possible pixel, in the input's units) sets the input quantizer instead of the
    calibration images, so frames unlike them are not clipped before the first layer (issue 15);
    ``bias_correction``: each int8 convolution's bias absorbs its weights' rounding (:mod:`quantize.bias_correction`),
    returned with what it did (None when off); ``stem``: ``fp32`` takes pixels with this normalisation folded into its
    first convolution, whose bias is refolded for its quantized weights (:mod:`quantize.folded_stem`)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    calibrate = {"minmax": CalibrationMethod.MinMax, "ema-minmax": CalibrationMethod.MinMax,
                 "percentile": CalibrationMethod.Percentile,
                 "entropy": CalibrationMethod.Entropy}
    if method not in calibrate:
        raise ValueError(f"ONNX calibration method must be one of {METHODS}, got {method!r}")
    count = images_used(method, len(calib))
    extra: dict[str, Any] = {"WeightSymmetric": True, "ActivationSymmetric": False,
                             "CalibStridedMinMax": min(CHUNK, count)}
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    if method == "ema-minmax":
        extra["CalibMovingAverage"] = True
    exclude = list(exclude)
    overrides: dict[str, list[dict[str, Any]]] = {name: [{"axis": 0, "reduce_range": True}]
                                                  for name in dense_conv_weights(fp32, exclude)}
    if input_range is not None:
        low, high = (np.float32(v) for v in input_range)
        overrides.update({name: [{"rmin": np.float32(low + shift), "rmax": np.float32(high + shift)}]
                          for name, shift in input_side(fp32).items()})
    extra["TensorQuantOverrides"] = overrides
    with tempfile.TemporaryDirectory(prefix="onnx-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(_unshare_initializers(fp32, exclude).SerializeToString())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(str(src), str(dst), CalibrationReader(calib, fp32.graph.input[0].name, count),
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=list(exclude),
                            calibrate_method=calibrate[method], extra_options=extra)
        model = onnx.load(str(dst))
    del model.metadata_props[:]
    if stem is not None:
        model = refold_stem_bias(model, stem)
    if not bias_correction:
        return model, None
    return correct_biases(model, fp32, calib)



def hold_qdq_input_range(model: onnx.ModelProto, input_range: tuple[float, float]) -> onnx.ModelProto:
    """A copy of the QDQ ``model`` whose input quantizer (and the dequantizer after it) covers ``input_range``, as
    :func:`quantize_onnx` sets it: for QAT models, whose input range was learned from the training images."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    side = input_side(out)
    quant = next((n for n in out.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in side), None)
    if quant is None or len(quant.input) < 3:
        raise ValueError("the QDQ model has no quantizer with a zero point on its input: no input range to set")
    values = {t.name: t for t in out.graph.initializer}
    info = np.iinfo(numpy_helper.to_array(values[quant.input[2]]).dtype)
    shift = side[quant.input[0]]
    low, high = min(input_range[0] + shift, 0.0), max(input_range[1] + shift, 0.0)
    scale = np.float32((high - low) / (info.max - info.min))
    zero = np.array(np.clip(round(info.min - low / float(scale)), info.min, info.max), info.dtype)
    names = (f"{quant.output[0]}_full_range_scale", f"{quant.output[0]}_full_range_zero_point")
    out.graph.initializer.extend([numpy_helper.from_array(np.array(scale), names[0]),
                                  numpy_helper.from_array(zero, names[1])])
    old = set(quant.input[1:3])
    for node in out.graph.node:
        if node is quant or node.op_type == "DequantizeLinear" and node.input[0] == quant.output[0]:
            node.input[1], node.input[2] = names
    used = {name for node in out.graph.node for name in node.input}
    kept = [t for t in out.graph.initializer if t.name not in old or t.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    return out
