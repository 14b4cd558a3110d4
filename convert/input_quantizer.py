"""Read the range of an int8 artifact's first quantizer (the one in front of the first convolution), in the units
of the image the first convolution reads (the normalised image; pixels for the pixel-input form,
:mod:`convert.pixel_input`), from the file itself: TFLite, QDQ ONNX or OpenVINO IR.

The parity gate reports which share of the input values that quantizer clips (in distribution and in the field),
and the tests check that the black and white frames of any camera fit (issue 15: calibrated on BCCD's bright
images alone, it clipped 16-34 % of a darker photo's input values). A float artifact has no such quantizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class InputQuantizer:
    """``low``/``high``: the values the lowest and highest code stand for; ``levels``: how many codes."""

    low: float
    high: float
    levels: int

    @property
    def step(self) -> float:
        return (self.high - self.low) / (self.levels - 1)

    def clipped(self, x: np.ndarray) -> int:
        """How many values of ``x`` (in the quantizer's units) fall beyond the end codes by more than half a step."""
        half = self.step / 2
        return int(np.count_nonzero((x < self.low - half) | (x > self.high + half)))


def _tflite(path: Path) -> InputQuantizer | None:
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    from quantize.tflite_int8 import OpGraph

    graph = OpGraph(flatbuffer_utils.read_model(str(path)))
    shift = 0.0  # what the ops before the first convolution added (the Lite pixel form centres pixels on 128)
    for name, inputs, _ in graph.ops:  # in execution order: the first convolution reads the input side's last tensor
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            tensor = graph.graph.tensors[inputs[0]]
            q = tensor.quantization
            if q is None or q.scale is None or len(q.scale) != 1:
                return None
            info = np.iinfo(np.int8 if tensor.type == schema.TensorType.INT8 else np.uint8)
            scale, zero = float(q.scale[0]), int(q.zeroPoint[0])
            shift = round(shift / scale) * scale  # as the integer kernels apply it: in whole steps of the grid
            return InputQuantizer((info.min - zero) * scale - shift, (info.max - zero) * scale - shift, 256)
        constant = _tflite_scalar(graph, inputs[1], schema) if name in ("ADD", "SUB") and len(inputs) == 2 else None
        if constant is not None:
            shift += constant if name == "ADD" else -constant
    return None


def _tflite_scalar(graph: Any, index: int, schema: Any) -> float | None:
    """The value of a one-element constant tensor of a TFLite graph (dequantized), None for any other tensor."""
    tensor = graph.graph.tensors[index]
    data = graph.model.buffers[tensor.buffer].data
    dtypes = {schema.TensorType.INT8: np.int8, schema.TensorType.UINT8: np.uint8, schema.TensorType.FLOAT32: np.float32}
    if data is None or int(np.prod(tensor.shape)) != 1 or tensor.type not in dtypes:
        return None
    raw = np.frombuffer(bytes(data), dtypes[tensor.type])
    q = tensor.quantization
    if tensor.type != schema.TensorType.FLOAT32 and q is not None and q.scale is not None and len(q.scale) == 1:
        return float((int(raw[0]) - int(q.zeroPoint[0])) * float(q.scale[0]))
    return float(raw[0])


def _onnx(path: Path) -> InputQuantizer | None:
    import onnx
    from onnx import numpy_helper

    from quantize.onnx_int8 import input_side

    model = onnx.load(str(path), load_external_data=False)
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    side = input_side(model)
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in side:
            scale, zero = float(values[node.input[1]]), values[node.input[2]]
            info = np.iinfo(zero.dtype)
            shift = side[node.input[0]]  # back in the input's units (the Lite pixel form centres pixels on 128 first)
            return InputQuantizer((info.min - int(zero)) * scale - shift, (info.max - int(zero)) * scale - shift, 256)
    return None


def _openvino(path: Path) -> InputQuantizer | None:
    from quantize.openvino_int8 import input_quantizers
    from runtime.backends.openvino_privacy import import_openvino

    found = input_quantizers(import_openvino().Core().read_model(str(path)))
    if not found:
        return None
    node, shift = found[0]
    low, high = (_constant(node.input_value(k).get_node()) for k in (3, 4))
    return InputQuantizer(float(np.min(low)) - shift, float(np.max(high)) - shift, int(node.get_attributes()["levels"]))


def _constant(node: Any) -> np.ndarray:
    while node.get_type_name() == "Convert":  # a compressed constant
        node = node.input_value(0).get_node()
    return np.asarray(node.get_data(), np.float64)


_READERS = {".tflite": _tflite, ".onnx": _onnx, ".xml": _openvino}


def input_quantizer(path: str | Path) -> InputQuantizer | None:
    """The first quantizer of the artifact at ``path``; None for a float artifact."""
    path = Path(path)
    try:
        read = _READERS[path.suffix]
    except KeyError:
        raise ValueError(f"{path}: not an artifact this project writes (.tflite, .onnx or .xml)") from None
    return read(path)
