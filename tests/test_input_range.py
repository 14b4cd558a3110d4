"""The int8 input quantizer holds every pixel a camera can give, whatever the calibration images looked like
(issue 15: calibrated on BCCD's bright images, it clipped 16-34 % of a darker photo's input values), on a grid
that leaves no pixel value on a rounding tie (session 26: the Lite models' whole-range grid put every pixel exactly
between two codes, and onnxruntime and OpenVINO broke half of those ties apart).

Each target's quantizer runs for real on a small convolution network and a calibration set of bright images
only, for the D0's and the Lite models' normalisation; the quantizer in front of the first convolution is then read
back from the written file. Without the whole-range setting (the previous behaviour, still the quantizers' default)
the dark image clips, which is what these tests would see on the code before the fix.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calib_data import CalibrationSet, build_calibration_set
from convert.field import SHIFTS
from convert.input_quantizer import InputQuantizer, input_quantizer
from efficientdet.data.image_folder import load_image_folder
from quantize.input_grid import TIE_MARGIN, input_range, pixel_values
from runtime.contract import PreprocessSpec
from runtime.preprocess import normalised_range, pixel_extremes, preprocess
from tests.conftest import conv_weight_codes_onnx, conv_weight_codes_openvino, write_bright_images

SIZE = 64
SPEC = PreprocessSpec(SIZE, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
LITE = PreprocessSpec(SIZE, mean=(127.5,) * 3, std=(127.5,) * 3)
SPECS = {"d0": SPEC, "lite": LITE}


@pytest.fixture(scope="module", params=sorted(SPECS))
def bright(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[PreprocessSpec, CalibrationSet, np.ndarray]:
    """A normalisation, a calibration set of 8 bright, pale images, and a darkened one of them (never seen by
    calibration), both normalised by it."""
    spec = SPECS[request.param]
    root = tmp_path_factory.mktemp(f"bright-{request.param}")
    rng = write_bright_images(root, SIZE)
    dataset = load_image_folder(root / "images", ["object"])
    calib = build_calibration_set(dataset, spec, root / "set", n=8)
    dark = SHIFTS["dark"](cv2.imread(str(root / "images" / "0.png")), rng)
    return spec, calib, preprocess(dark, spec)[0]


def tie_distance(quantizer: InputQuantizer, spec: PreprocessSpec) -> float:
    """How close, in codes, the file's input grid brings any pixel value to a rounding tie."""
    codes = (pixel_values(spec) - quantizer.low) / quantizer.step
    return float(np.abs(codes - np.floor(codes) - 0.5).min())


def _check(path: Path, spec: PreprocessSpec, dark: np.ndarray, holds: bool) -> None:
    quantizer = input_quantizer(path)
    assert quantizer is not None
    black, white = pixel_extremes(spec)
    clipped = quantizer.clipped(dark) + quantizer.clipped(black) + quantizer.clipped(white)
    if holds:
        assert clipped == 0, quantizer
        low, high = normalised_range(spec)
        assert quantizer.high - quantizer.low < (high - low) * 1.03  # the whole range, not much more
        zero = -quantizer.low / quantizer.step
        assert abs(zero - round(zero)) < 1e-3, quantizer  # zero is a code
        # the file's float32 end points move the grid by far less than the margin
        assert tie_distance(quantizer, spec) > TIE_MARGIN / 2, quantizer
    else:
        assert quantizer.clipped(dark) > dark.size // 2, quantizer  # the old behaviour: the dark image saturates


def _conv_onnx(path: Path) -> None:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "w")
    w2 = numpy_helper.from_array(rng.normal(size=(4, 8, 1, 1)).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="stem", pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["y"], ["r"]), helper.make_node("Conv", ["r", "w2"], ["z"], name="head")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, SIZE // 2, SIZE // 2])],
                              [w, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(path))


def _onnx_int8(spec: PreprocessSpec, calib: CalibrationSet, folder: Path, holds: bool) -> Path:
    from quantize.onnx_int8 import quantize_onnx

    _conv_onnx(folder / "fp32.onnx")
    model, _ = quantize_onnx(onnx.load(str(folder / "fp32.onnx")), calib, "minmax",
                          input_range=input_range(spec) if holds else None)
    onnx.save(model, str(folder / "int8.onnx"))
    return folder / "int8.onnx"


def _openvino_int8(spec: PreprocessSpec, calib: CalibrationSet, folder: Path, holds: bool) -> Path:
    from quantize.openvino_int8 import quantize_openvino
    from runtime.backends.openvino_privacy import import_openvino

    ov = import_openvino()
    _conv_onnx(folder / "fp32.onnx")
    model = quantize_openvino(ov.Core().read_model(str(folder / "fp32.onnx")), calib, "mixed",
                              input_range=input_range(spec) if holds else None)
    ov.save_model(model, str(folder / "int8.xml"))
    return folder / "int8.xml"


def _tflite_int8(spec: PreprocessSpec, calib: CalibrationSet, folder: Path, holds: bool) -> Path:
    from convert.tensorflow_import import import_tensorflow
    from quantize.tflite_int8 import convert_full_int8

    tf = import_tensorflow()
    w = tf.constant(np.random.default_rng(0).normal(size=(3, 3, 3, 8)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32)])
    def net(x: tf.Tensor) -> tf.Tensor:
        return tf.nn.relu(tf.nn.conv2d(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), w, 2, "VALID"))

    converter = tf.lite.TFLiteConverter.from_concrete_functions([net.get_concrete_function()], net)
    extremes = [frame[None] for frame in pixel_extremes(spec)] if holds else []
    data = convert_full_int8(converter, tf, calib, "int8", "percentile", progress=False, extremes=extremes,
                             grid=input_range(spec) if holds else None).data
    (folder / "int8.tflite").write_bytes(data)
    return folder / "int8.tflite"


# target -> (make its int8 file with or without the whole pixel range, its input layout)
TARGETS = {"onnx": (_onnx_int8, "nchw"), "openvino": (_openvino_int8, "nchw"), "tflite": (_tflite_int8, "nhwc")}


@pytest.mark.parametrize("holds", [True, False])
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_input_quantizer_holds_the_pixel_range(bright: tuple[PreprocessSpec, CalibrationSet, np.ndarray],
                                               tmp_path: Path, target: str, holds: bool) -> None:
    spec, calib, dark = bright
    make, layout = TARGETS[target]
    _check(make(spec, calib, tmp_path, holds), spec, dark.transpose(2, 0, 1) if layout == "nchw" else dark, holds)


def test_openvino_range_keeps_an_exact_zero() -> None:
    from quantize.openvino_int8 import aligned_range

    for low, high in ((-2.118, 2.64), (-0.1, 2.64), (-2.5, 0.3)):
        a, b = aligned_range(low, high, 256)
        step = (b - a) / 255
        assert a <= low and b >= high and b - a < (high - low) * 1.01
        assert abs(-a / step - round(-a / step)) < 1e-6  # zero falls on a code
    # a range that starts at zero (pixels in, convert/pixel_input.py) is its own grid: scale 1, zero point 0
    assert aligned_range(0.0, 255.0, 256) == (0.0, 255.0)


def test_qat_qdq_input_range_is_widened_in_place(bright: tuple[PreprocessSpec, CalibrationSet, np.ndarray],
                                                 tmp_path: Path) -> None:
    """QAT learns its input range from the training images; the export widens it like the post-training one."""
    import onnxruntime as ort

    from quantize.onnx_int8 import hold_qdq_input_range, quantize_onnx

    spec, calib, dark = bright
    _conv_onnx(tmp_path / "fp32.onnx")
    narrow, _ = quantize_onnx(onnx.load(str(tmp_path / "fp32.onnx")), calib, "minmax")
    onnx.save(hold_qdq_input_range(narrow, input_range(spec)), str(tmp_path / "wide.onnx"))
    _check(tmp_path / "wide.onnx", spec, dark.transpose(2, 0, 1), holds=True)
    session = ort.InferenceSession(str(tmp_path / "wide.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"x": dark.transpose(2, 0, 1)[None]})
    assert out.shape == (1, 4, SIZE // 2, SIZE // 2) and np.isfinite(out).all() and np.abs(out).max() > 0
    unused = {t.name for t in onnx.load(str(tmp_path / "wide.onnx")).graph.initializer} - {
        i for n in onnx.load(str(tmp_path / "wide.onnx")).graph.node for i in n.input}
    assert not unused


@pytest.mark.parametrize("bright", ["d0"], indirect=True)
def test_dense_convolution_weights_fit_every_x86_int8_kernel(bright: tuple[PreprocessSpec, CalibrationSet, np.ndarray],
                                                             tmp_path: Path) -> None:
    """Weights within +-64 cannot saturate the int16 pair sums of the AVX2 int8 kernels (docs/INT8-CPU-CLASSES.md)."""
    from quantize.onnx_int8 import dense_conv_weights, quantize_onnx
    from quantize.openvino_int8 import quantize_openvino
    from runtime.backends.openvino_privacy import import_openvino

    _, calib, _ = bright
    _conv_onnx(tmp_path / "fp32.onnx")
    fp32 = onnx.load(str(tmp_path / "fp32.onnx"))
    assert dense_conv_weights(fp32) == ["w", "w2"] and dense_conv_weights(fp32, ["head"]) == ["w"]
    model, _ = quantize_onnx(fp32, calib, "minmax")
    codes = conv_weight_codes_onnx(model)
    assert len(codes) == 2 and all(dense and code <= 64 for dense, code in codes)
    ov = import_openvino()
    quantized = quantize_openvino(ov.Core().read_model(str(tmp_path / "fp32.onnx")), calib, "mixed")
    ov.save_model(quantized, str(tmp_path / "int8.xml"))
    codes = conv_weight_codes_openvino(str(tmp_path / "int8.xml"))
    assert len(codes) == 2 and all(dense and code <= 64 for dense, code in codes)


@pytest.mark.parametrize("bright", ["d0"], indirect=True)
def test_a_first_layer_kept_in_float_reads_the_input_in_float(
        bright: tuple[PreprocessSpec, CalibrationSet, np.ndarray], tmp_path: Path) -> None:
    """``--float-layers`` may keep the first convolution in float (on the BCCD D0 it ranks among the 15 most
    sensitive): the int8 files then read their input in float, where no range can clip, and the rest stays int8.
    OpenVINO's export refused such a model before (NNCF put no quantizer on the input to widen)."""
    from quantize.onnx_int8 import quantize_onnx, reads_input_in_float
    from quantize.openvino_int8 import quantize_openvino
    from quantize.sensitivity import fallback_layers, layer_sensitivity
    from runtime.backends.openvino_privacy import import_openvino

    spec, calib, _ = bright
    _conv_onnx(tmp_path / "fp32.onnx")
    fp32 = onnx.load(str(tmp_path / "fp32.onnx"))
    assert reads_input_in_float(fp32, ["stem"]) and not reads_input_in_float(fp32, ["head"])
    assert not reads_input_in_float(fp32, [])
    model, _ = quantize_onnx(fp32, calib, "minmax", exclude=["stem"], input_range=input_range(spec))
    onnx.save(model, str(tmp_path / "int8.onnx"))
    assert input_quantizer(tmp_path / "int8.onnx") is None
    assert [dense for dense, _ in conv_weight_codes_onnx(model)] == [True]  # the head's weights are int8 still
    ov = import_openvino()
    quantized = quantize_openvino(ov.Core().read_model(str(tmp_path / "fp32.onnx")), calib, "mixed",
                                  exclude={"stem": ["y"]}, input_range=input_range(spec))
    ov.save_model(quantized, str(tmp_path / "int8.xml"))
    assert input_quantizer(tmp_path / "int8.xml") is None
    quantized_inputs = [op.input_value(0).get_node().get_type_name() for op in quantized.get_ops()
                        if op.get_type_name() == "Convolution"]
    assert sorted(quantized_inputs) == ["FakeQuantize", "Parameter"]  # the stem reads the input as is, the head int8
    # the pixel-input form never keeps its folded stem in float (pixels in are its point): the next layer goes
    ranking = layer_sensitivity(fp32, calib, images=2, range_images=4, progress=False)
    assert sorted(s.node for s in ranking) == ["head", "stem"]
    assert fallback_layers(ranking, 2) == [s.node for s in ranking]
    assert fallback_layers(ranking, 1, keep_int8=["stem"]) == ["head"]
