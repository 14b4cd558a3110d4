"""The int8 input grid leaves no pixel value on a rounding tie (quantize/input_grid.py).

On the Lite models' whole-range grid every pixel value lay exactly halfway between two codes, and onnxruntime and
OpenVINO rounded half of them apart: the same Q/DQ file ran on two inputs half a grey level apart (session 26). The
per-target files are checked in tests/test_input_range.py; here the grid itself, the engines on it, and QAT.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from efficientdet.model.config import make_config
from efficientdet.model.testing import detector_like_model_for
from quantize.input_grid import MAX_WIDENING, TIE_MARGIN, input_range, pixel_values, tie_free_range
from runtime.contract import PreprocessSpec
from runtime.preprocess import normalised_range
from tests.conftest import ImagesAsCalibration

LITE = PreprocessSpec(64, mean=(127.5,) * 3, std=(127.5,) * 3)
D0 = PreprocessSpec(64, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))


def _grid(low: float, high: float) -> tuple[np.float32, int]:
    """The scale and zero point onnxruntime, TFLite and torchao derive from a range."""
    scale = np.float32((high - low) / 255)
    return scale, int(round(-low / float(scale)))


def _codes(spec: PreprocessSpec, low: float, high: float) -> np.ndarray:
    scale, zero = _grid(low, high)
    return pixel_values(spec) / float(scale) + zero


def _tie_distance(codes: np.ndarray) -> np.ndarray:
    return np.abs(codes - np.floor(codes) - 0.5)


@pytest.mark.parametrize("spec", [LITE, D0], ids=["lite", "d0"])
def test_the_input_grid_holds_every_pixel_off_the_ties(spec: PreprocessSpec) -> None:
    whole = normalised_range(spec)
    low, high = input_range(spec)
    codes = _codes(spec, low, high)
    assert codes.min() >= -0.5 and codes.max() <= 255.5  # nothing clips
    assert _tie_distance(codes).min() >= TIE_MARGIN
    assert high - low <= (whole[1] - whole[0]) * (1 + MAX_WIDENING) + 1e-9
    step = (high - low) / 255
    zero = -low / step
    assert zero == pytest.approx(round(zero), abs=1e-6)  # the grid's own end points: every tool's rule agrees
    # the Lite models' whole-range grid: every pixel exactly on a tie, half a grey level off; the input grid: about a
    # quarter on average
    error = np.abs(np.round(codes) - codes) * step * spec.std[0]
    if spec is LITE:
        assert _tie_distance(_codes(spec, *whole)).max() < 1e-4
        assert error.mean() < 0.25
    assert tie_free_range(np.arange(256.0), 0.0, 255.0) == (0.0, 255.0)  # pixels in: every pixel is a code already


def _quantize_dequantize(scale: np.float32, zero: int) -> onnx.ModelProto:
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    n = len(pixel_values(LITE))
    graph = helper.make_graph(nodes, "input_quantizer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
                              [numpy_helper.from_array(np.array(scale), "s"),
                               numpy_helper.from_array(np.array(zero, np.uint8), "z")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def test_onnxruntime_and_openvino_quantize_every_pixel_alike_on_the_input_grid() -> None:
    """The same input quantizer in both engines, fed every normalised Lite pixel value: on the whole-range grid they
    put 128 of the 256 values on different codes (onnxruntime rounds half to even, OpenVINO's FakeQuantize the other
    way for those); on the input grid on the same codes."""
    from runtime.backends.openvino_privacy import import_openvino

    ov = import_openvino()
    x = pixel_values(LITE).astype(np.float32)[None]
    differ = {}
    for name, (low, high) in (("whole", normalised_range(LITE)), ("grid", input_range(LITE))):
        scale, zero = _grid(low, high)
        model = _quantize_dequantize(scale, zero).SerializeToString()
        (by_ort,) = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})
        compiled = ov.Core().compile_model(ov.Core().read_model(model, b""), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        by_ov = compiled({0: x})[0]
        differ[name] = int((np.abs(by_ort - by_ov) > scale / 2).sum())
    assert differ["whole"] > 100
    assert differ["grid"] == 0


def test_qat_trains_on_the_input_grid_the_files_use() -> None:
    """Until session 26 QAT's input quantizer learned the calibration images' range and the files got the whole
    pixel range after training; now QAT holds the files' grid from the start and the Q/DQ graph converts with it."""
    import torchao.quantization.pt2e as pt2e
    from onnx import numpy_helper as nh

    from quantize.onnx_int8 import input_side
    from quantize.qat import calibrate, hold_input_quantizer, input_quantizers, prepare, to_qdq_onnx

    config = make_config(0, "lite", num_classes=3, input_size=64)
    # pale images: their own range would be far narrower than the pixel range
    images = torch.from_numpy(np.random.default_rng(0).uniform(0.5, 2.0, size=(2, 3, 64, 64)).astype(np.float32))
    qat = prepare(detector_like_model_for(config, images), config.input_size)
    assert hold_input_quantizer(qat, input_range(config.preprocess)) == len(input_quantizers(qat)) == 1
    calibrate(qat, ImagesAsCalibration(images), 2)
    pt2e.move_exported_model_to_train(qat)
    qat(images)  # a training step's forward: the observer must not move the range
    pt2e.move_exported_model_to_eval(qat)
    scale, zero = _grid(*input_range(config.preprocess))
    quantizer = qat.get_submodule(input_quantizers(qat)[0])
    assert quantizer.scale.item() == pytest.approx(float(scale), rel=1e-6) and quantizer.zero_point.item() == zero
    qdq = to_qdq_onnx(qat, config.input_size)
    side = input_side(qdq)
    values = {t.name: nh.to_array(t) for t in qdq.graph.initializer}
    node = next(n for n in qdq.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in side)
    assert float(values[node.input[1]]) == pytest.approx(float(scale), rel=1e-6)
    assert int(values[node.input[2]]) == zero
