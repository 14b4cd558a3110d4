"""Fast bias correction of the ONNX int8 files (quantize/bias_correction.py): a quantized convolution's output keeps
the FP32 mean that rounding its weights moved, and only the convolutions NNCF would correct are touched.

Real onnxruntime quantization and inference on small convolution graphs and a calibration set of bright images
(a large input mean, which is what turns weight rounding into a shift of the output's mean).
"""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from calib_data import CalibrationSet, build_calibration_set
from efficientdet.data.image_folder import load_image_folder
from quantize.onnx_int8 import quantize_onnx
from runtime.contract import PreprocessSpec

SIZE = 32
SPEC = PreprocessSpec(SIZE, mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5))


@pytest.fixture(scope="module")
def bright(tmp_path_factory: pytest.TempPathFactory) -> CalibrationSet:
    root = tmp_path_factory.mktemp("bright")
    (root / "images").mkdir()
    rng = np.random.default_rng(1)
    for i in range(8):
        cv2.imwrite(str(root / "images" / f"{i}.png"), rng.integers(170, 256, (SIZE, SIZE, 3)).astype(np.uint8))
    return build_calibration_set(load_image_folder(root / "images", ["object"]), SPEC, root / "set", n=8)


def _model(convs: list[tuple[str, int, np.ndarray, np.ndarray | None]]) -> onnx.ModelProto:
    """A chain of 3x3 convolutions (name, groups, weights, bias or None) on the 3-channel input."""
    nodes, inits, x = [], [], "x"
    for name, groups, w, b in convs:
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"{name}.w"))
        inputs = [x, f"{name}.w"]
        if b is not None:
            inits.append(numpy_helper.from_array(b.astype(np.float32), f"{name}.b"))
            inputs.append(f"{name}.b")
        nodes.append(helper.make_node("Conv", inputs, [f"{name}.y"], name=name, pads=[1, 1, 1, 1], group=groups))
        x = f"{name}.y"
    channels = convs[-1][2].shape[0]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, channels, SIZE, SIZE])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def _mean_error(model: onnx.ModelProto, fp32: onnx.ModelProto, calib: CalibrationSet) -> np.ndarray:
    """Per output channel: the int8 model's output mean minus the FP32 model's, over the calibration images."""
    run = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]) for m in (model, fp32)]
    diffs = [np.subtract(*(s.run(None, {"x": calib.nchw(i)})[0] for s in run)).mean(axis=(0, 2, 3))
             for i in range(len(calib))]
    return np.mean(diffs, axis=0)


@pytest.mark.parametrize("groups", [1, 3])
def test_the_output_keeps_its_fp32_mean(bright: CalibrationSet, groups: int) -> None:
    """Dense (7-bit weights) and depthwise (8-bit): the shift of each channel's mean shrinks several-fold."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(12, 3 // groups, 3, 3))
    fp32 = _model([("conv", groups, w, rng.uniform(0.5, 1.5, 12))])
    plain, none = quantize_onnx(fp32, bright, "minmax", bias_correction=False)
    corrected, done = quantize_onnx(fp32, bright, "minmax")
    assert none is None and (done.corrected, done.quantized_convs, done.skipped, done.images) == (1, 1, 0, 8)
    before, after = (np.abs(_mean_error(m, fp32, bright)) for m in (plain, corrected))
    assert before.mean() > 1e-3  # the rounding does move the mean here
    assert after.mean() < 0.25 * before.mean(), (before, after)


def test_only_convolutions_nncf_would_correct_are_touched(bright: CalibrationSet) -> None:
    """No bias: nothing to correct; a shift of twice the bias or more: left alone; kept in float: not quantized."""
    rng = np.random.default_rng(2)
    convs = [("with_bias", 1, rng.normal(size=(8, 3, 3, 3)), rng.uniform(0.5, 1.5, 8)),
             ("no_bias", 8, rng.normal(size=(8, 1, 3, 3)), None),
             ("tiny_bias", 1, rng.normal(size=(8, 8, 3, 3)), np.full(8, 1e-6)),
             ("kept_float", 1, rng.normal(size=(4, 8, 3, 3)), rng.uniform(0.5, 1.5, 4))]
    fp32 = _model(convs)
    plain, _ = quantize_onnx(fp32, bright, "minmax", exclude=["kept_float"], bias_correction=False)
    corrected, done = quantize_onnx(fp32, bright, "minmax", exclude=["kept_float"])
    assert (done.corrected, done.quantized_convs, done.skipped) == (1, 3, 1)

    def biases(model: onnx.ModelProto) -> dict[str, np.ndarray]:
        made = {o: n for n in model.graph.node for o in n.output}
        values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        found = {}
        for node in model.graph.node:
            if node.op_type == "Conv" and len(node.input) > 2:
                source = made.get(node.input[2])
                found[node.name] = values[source.input[0] if source is not None else node.input[2]]
        return found

    old, new = biases(plain), biases(corrected)
    assert set(old) == set(new) == {"with_bias", "tiny_bias", "kept_float"}
    assert new["with_bias"].dtype == np.int32 and not np.array_equal(old["with_bias"], new["with_bias"])
    assert np.array_equal(old["tiny_bias"], new["tiny_bias"])
    assert new["kept_float"].dtype == np.float32 and np.array_equal(old["kept_float"], new["kept_float"])
    onnx.checker.check_model(corrected, full_check=True)
    assert len(corrected.graph.node) == len(plain.graph.node)  # the old bias dequantizer went with its initializer
    assert {t.name for t in plain.graph.initializer} - {t.name for t in corrected.graph.initializer} == {
        "with_bias.b_quantized"}

