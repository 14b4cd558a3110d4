"""The pixel-input int8 form (convert/pixel_input.py): the normalisation folded into the first convolution, so the
input quantizer is scale 1, zero point 0 over 0-255 and no pixel value is rounded (issue 15).

The fold is checked on the project's own exported graphs (a Lite stem padded 'same' with one mean on every channel,
a D0 stem padded symmetrically with ImageNet's per-channel mean), the quantizers on real onnxruntime and NNCF runs,
and the whole path once through ``python -m convert`` on the default D0.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from calib_data import CalibrationSet, build_calibration_set
from convert.input_quantizer import input_quantizer
from convert.int8_recipe import INPUT_FOLDED
from convert.pixel_input import (
    PIXEL_RANGE,
    PixelInputError,
    exact_border,
    fold_normalisation,
    pixel_calibration,
    pixel_spec,
)
from convert.targets.onnx import fp32_model, run_onnx
from efficientdet.data.image_folder import load_image_folder
from efficientdet.model.config import make_config
from efficientdet.model.detector import EfficientDet
from efficientdet.model.testing import randomize_bn
from runtime.contract import PreprocessSpec
from runtime.preprocess import normalised_range, preprocess
from tests.conftest import ROOT, write_bright_images

SIZE = 64
LITE_SPEC = PreprocessSpec(SIZE, mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5))
IMAGENET_SPEC = PreprocessSpec(SIZE, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))


def _graph(variant: str, spec: PreprocessSpec) -> onnx.ModelProto:
    config = make_config("0", variant, num_classes=3, input_size=SIZE)
    config = config.replace(preprocess=dataclasses.replace(spec, input_size=SIZE))
    torch.manual_seed(0)
    return fp32_model(randomize_bn(EfficientDet(config)).eval(), SIZE)


@pytest.fixture(scope="module")
def graphs() -> dict[str, tuple[onnx.ModelProto, PreprocessSpec]]:
    return {"lite": (_graph("lite", LITE_SPEC), LITE_SPEC), "d": (_graph("d", IMAGENET_SPEC), IMAGENET_SPEC)}


@pytest.mark.parametrize("variant", ["lite", "d"])
def test_folded_graph_on_pixels_equals_the_model_on_normalised_images(graphs: dict, variant: str) -> None:
    fp32, spec = graphs[variant]
    folded = fold_normalisation(fp32, spec)
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (1, 3, SIZE, SIZE)).astype(np.float32)
    pixels[..., :8, :] = 0.0  # a black band on the padded border, where the padding's colour matters most
    mean = np.asarray(spec.mean, np.float32)[None, :, None, None]
    std = np.asarray(spec.std, np.float32)[None, :, None, None]
    reference, got = run_onnx(fp32, (pixels - mean) / std), run_onnx(exact_border(folded, spec), pixels)
    for name, ref in reference.items():
        assert np.abs(got[name] - ref).max() <= 1e-5 * np.abs(ref).max(), name
    # Lite: pixels centred on 128, then zero padding (TFLite's PAD, which the Edge TPU runs, not PADV2); the border
    # holds pixel 128 for the mean 127.5. D0: zero padding plus the per-channel mean on the border, exact as it is.
    stem = ["Sub", "Pad", "Conv"] if variant == "lite" else ["Pad", "Add", "Conv"]
    assert [n.op_type for n in folded.graph.node][: len(stem)] == stem
    pad = next(n for n in folded.graph.node if n.op_type == "Pad")
    inits = {t.name: numpy_helper.to_array(t) for t in folded.graph.initializer}
    assert float(inits[pad.input[2]]) == 0.0
    if variant == "lite":
        assert float(inits[folded.graph.node[0].input[1]]) == 128.0
    else:
        assert exact_border(folded, spec) == folded
    assert {n.name for n in folded.graph.node} >= {n.name for n in fp32.graph.node if n.op_type == "Conv"}


def test_fold_refuses_a_graph_without_a_foldable_stem() -> None:
    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Conv", ["r", "w"], ["y"], name="c")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    with pytest.raises(PixelInputError, match="not one convolution"):
        fold_normalisation(model, LITE_SPEC)


@pytest.fixture(scope="module")
def bright(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """8 bright, pale images (a calibration set's source) and a darkened one never seen by calibration."""
    root = tmp_path_factory.mktemp("bright")
    write_bright_images(root, SIZE)
    dark = (cv2.imread(str(root / "images" / "0.png")) * 0.2).astype(np.uint8)
    return root, dark


def _calib(root: Path, spec: PreprocessSpec, name: str) -> CalibrationSet:
    return build_calibration_set(load_image_folder(root / "images", ["object"]), spec, root / name, n=8)


def test_pixel_calibration_restores_the_images_pixels(bright: tuple[Path, np.ndarray]) -> None:
    root, _ = bright
    calib = _calib(root, IMAGENET_SPEC, "imagenet")
    pixels = pixel_calibration(calib, IMAGENET_SPEC)
    assert len(pixels) == len(calib) and pixels.manifest["preprocess"] == pixel_spec(IMAGENET_SPEC).to_dict()
    frames = [preprocess(cv2.imread(str(path)), pixel_spec(IMAGENET_SPEC))[0]
              for path in sorted((root / "images").glob("*.png"))]
    for i in range(len(pixels)):  # each the uint8 frame, exactly, in the model's colour order
        assert any(np.array_equal(pixels.nhwc(i)[0], frame) for frame in frames), i


def _pixel_error(path: Path, spec: PreprocessSpec, pixel_input: bool) -> float:
    """The largest move of an integer pixel through the file's input quantizer, in grey levels."""
    q = input_quantizer(path)
    values = np.arange(256, dtype=np.float64)
    x = values if pixel_input else (values - spec.mean[0]) / spec.std[0]
    back = q.low + np.clip(np.round((x - q.low) / q.step), 0, q.levels - 1) * q.step
    return float(np.abs((back if pixel_input else back * spec.std[0] + spec.mean[0]) - values).max())


def test_onnx_pixel_input_takes_every_pixel_exactly(graphs: dict, bright: tuple[Path, np.ndarray],
                                                    tmp_path: Path) -> None:
    """The Lite's normalised int8 input moves every pixel by half a grey level (zero point 127.5 is no integer); the
    pixel form's moves none, clips no dark frame and computes what the normalised form computes."""
    from quantize.onnx_int8 import quantize_onnx

    root, dark = bright
    fp32, spec = graphs["lite"]
    calib = _calib(root, spec, "lite")
    normalised, _ = quantize_onnx(fp32, calib, "minmax", input_range=normalised_range(spec))
    onnx.save(normalised, str(tmp_path / "normalised.onnx"))
    pixels, _ = quantize_onnx(fold_normalisation(fp32, spec), pixel_calibration(calib, spec), "minmax",
                              input_range=PIXEL_RANGE)
    onnx.save(pixels, str(tmp_path / "pixels.onnx"))
    assert _pixel_error(tmp_path / "normalised.onnx", spec, pixel_input=False) == pytest.approx(0.5)
    assert _pixel_error(tmp_path / "pixels.onnx", spec, pixel_input=True) == 0.0
    q = input_quantizer(tmp_path / "pixels.onnx")
    assert (q.low, q.high, q.levels) == (0.0, 255.0, 256)
    x = preprocess(dark, pixel_spec(spec))[0].transpose(2, 0, 1)[None]
    assert q.clipped(x) == 0 and x.max() < 60  # the dark frame, far below anything calibrated
    ref = run_onnx(fp32, preprocess(dark, spec)[0].transpose(2, 0, 1)[None])
    got = run_onnx(pixels, np.ascontiguousarray(x))
    for name, r in ref.items():  # int8 is a near copy, not a different model
        assert np.corrcoef(got[name].ravel(), r.ravel())[0, 1] > 0.9, name


def test_openvino_holds_every_quantizer_before_the_first_convolution(graphs: dict, bright: tuple[Path, np.ndarray],
                                                                     tmp_path: Path) -> None:
    """The D0's folded stem adds the border's mean after the padding; NNCF quantizes that Add's output too, and gave
    it the bright calibration images' range (0-248) until the input range was carried past the first quantizer."""
    from quantize.openvino_int8 import quantize_openvino
    from runtime.backends.openvino_privacy import import_openvino

    ov = import_openvino()
    root, _ = bright
    fp32, spec = graphs["d"]
    onnx.save(fold_normalisation(fp32, spec), str(tmp_path / "pixels.onnx"))
    model = quantize_openvino(ov.Core().read_model(str(tmp_path / "pixels.onnx")),
                              pixel_calibration(_calib(root, spec, "d"), spec), "mixed", input_range=PIXEL_RANGE)
    ranges = []
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("Convolution", "GroupConvolution"):
            break
        if op.get_type_name() == "FakeQuantize":
            ranges.append(tuple(float(np.asarray(op.input_value(k).get_node().get_data()).min()) for k in (1, 2)))
    assert len(ranges) == 2 and all(r == PIXEL_RANGE for r in ranges), ranges


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.skipif(not (ROOT / "models" / "default-d0.pt").is_file(), reason="default model not built")
def test_export_with_pixel_input_is_gated_and_run_by_the_runtime(tmp_path: Path) -> None:
    """``--int8-input pixels`` end to end on the default D0 (ONNX): the manifest says pixels (mean 0, std 1), the
    gate compares the file with the FP32 model on the same images, and the runtime feeds it pixels."""
    from runtime.detector import Detector

    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "convert", "--ckpt", str(ROOT / "models" / "default-d0.pt"),
                           "--data", str(ROOT / "data" / "synthetic"), "--max-images", "12", "--threads", "1",
                           "--target", "onnx", "--precision", "int8", "--int8-input", "pixels",
                           "--no-sensitivity", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1700)
    sys.stderr.write(proc.stderr[-3000:])
    (artifact,) = [a for a in json.loads((out / "report.json").read_text())["artifacts"] if a["precision"] == "int8"]
    parity = artifact["parity"]
    assert parity["det_match"] >= 0.8 and abs(parity["map_delta"]) <= 0.03, parity
    assert parity["input_clipped"] == 0 and parity["field"]["input_clipped"] == 0
    assert "fp32_input_rounding" not in parity  # its input is not rounded: the reading does not apply to it
    assert "det_match" in parity["fp32_activation_rounding"]  # its activations are, as every int8 file's
    path = Path(artifact["path"])
    manifest = json.loads(path.with_name(path.name + ".json").read_text())
    assert manifest["artifact"]["quantization"]["input"] == INPUT_FOLDED
    assert manifest["preprocess"]["mean"] == [0.0, 0.0, 0.0] and manifest["preprocess"]["std"] == [1.0, 1.0, 1.0]
    detector = Detector(path, threads=1)
    x, _ = detector.preprocess_image(np.full((100, 140, 3), 40, np.uint8))
    assert x.dtype == np.float32 and float(x.min()) == 40.0  # pixels in, padded with the mean colour
    assert float(x.max()) == pytest.approx(123.675)


def _stem_graph(spec: PreprocessSpec) -> onnx.ModelProto:
    """One 3x3 stride-2 convolution with a bias over the normalised image (a stem), folded to take pixels."""
    rng = np.random.default_rng(2)
    w = numpy_helper.from_array((rng.normal(size=(16, 3, 3, 3)) / 5).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(size=16).astype(np.float32) * 0.3, "b")
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="stem", pads=[1, 1, 1, 1], strides=[2, 2])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, SIZE // 2, SIZE // 2])],
                              [w, b])
    return fold_normalisation(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10),
                              spec)


def _channel_shift(got: np.ndarray, want: np.ndarray) -> float:
    """rms over output channels of the mean error (away from the padded border): what a bias can carry. The
    calibration images are bright (pixels 150-255, mean about 200): unrefolded, the weights' rounding multiplies
    that mean, refolded only its distance to ImageNet's mean (104-124), so the shift should shrink 2-2.6 times.
    (The Lite form centres the pixels on 128 before its stem: there the refold moves the bias by half a grey level's
    worth, and these tests take the D0's per-channel mean.)"""
    d = (got - want)[0, :, 2:-2, 2:-2]
    return float(np.sqrt((d.mean(axis=(1, 2)) ** 2).mean()))


@pytest.fixture(scope="module")
def stem_case(bright: tuple[Path, np.ndarray]) -> dict:
    from convert.pixel_input import folded_stem

    root, _ = bright
    pixels = _stem_graph(IMAGENET_SPEC)
    calib = pixel_calibration(_calib(root, IMAGENET_SPEC, "stem"), IMAGENET_SPEC)
    x = calib.nchw(0)  # within every calibrated range: only the bias differs between the two files
    return {"graph": pixels, "stem": folded_stem(pixels, IMAGENET_SPEC), "calib": calib, "x": x,
            "want": run_onnx(pixels, x)["y"]}


def test_onnx_refolds_the_stem_bias_for_its_quantized_weights(stem_case: dict) -> None:
    """Without the refold the weights' rounding times the raw pixel shifts every output channel (the BCCD Lite0's
    pixel-input ONNX lost 5.5 mAP points that way); refolded, the shift is that of the centred pixel."""
    from quantize.onnx_int8 import quantize_onnx

    c = stem_case
    shifts = {}
    for refold in (False, True):
        model, _ = quantize_onnx(c["graph"], c["calib"], "minmax", input_range=PIXEL_RANGE, bias_correction=False,
                                 stem=c["stem"] if refold else None)
        shifts[refold] = _channel_shift(run_onnx(model, c["x"])["y"], c["want"])
    assert shifts[True] < shifts[False] / 2, shifts


def test_openvino_refolds_the_stem_bias_for_its_quantized_weights(stem_case: dict, tmp_path: Path) -> None:
    from quantize.openvino_int8 import quantize_openvino
    from runtime.backends.openvino_privacy import import_openvino

    ov = import_openvino()
    c = stem_case
    onnx.save(c["graph"], str(tmp_path / "stem.onnx"))
    shifts = {}
    for refold in (False, True):
        model = quantize_openvino(ov.Core().read_model(str(tmp_path / "stem.onnx")), c["calib"], "mixed",
                                  input_range=PIXEL_RANGE, stem=c["stem"] if refold else None)
        compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        shifts[refold] = _channel_shift(np.asarray(compiled(c["x"])[0]), c["want"])
    assert shifts[True] < shifts[False] / 2, shifts


def test_tflite_refolds_the_stem_bias_for_its_quantized_weights(stem_case: dict) -> None:
    from convert.tensorflow_import import import_tensorflow
    from quantize.tflite_int8 import convert_full_int8

    tf = import_tensorflow()
    c = stem_case
    inits = {t.name: numpy_helper.to_array(t) for t in c["graph"].graph.initializer}
    conv = next(n for n in c["graph"].graph.node if n.op_type == "Conv")
    w = tf.constant(inits[conv.input[1]].transpose(2, 3, 1, 0))  # OIHW -> HWIO
    b = tf.constant(inits[conv.input[2]])

    mean = tf.constant(np.asarray(IMAGENET_SPEC.mean, np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32)])
    def net(x: tf.Tensor) -> tf.Tensor:  # padded with the mean colour
        padded = tf.pad(x - mean, [[0, 0], [1, 1], [1, 1], [0, 0]]) + mean
        return tf.nn.conv2d(padded, w, 2, "VALID") + b

    shifts = {}
    for refold in (False, True):
        converter = tf.lite.TFLiteConverter.from_concrete_functions([net.get_concrete_function()], net)
        data = convert_full_int8(converter, tf, c["calib"], "int8", "minmax", progress=False,
                                 extremes=[np.zeros((1, SIZE, SIZE, 3), np.float32),
                                           np.full((1, SIZE, SIZE, 3), 255.0, np.float32)],
                                 stem=c["stem"] if refold else None).data
        interpreter = tf.lite.Interpreter(model_content=data)
        interpreter.allocate_tensors()
        inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        (s_in, z_in), (s_out, z_out) = inp["quantization"], out["quantization"]
        x = c["x"].transpose(0, 2, 3, 1)
        interpreter.set_tensor(inp["index"], np.clip(np.round(x / s_in) + z_in, -128, 127).astype(np.int8))
        interpreter.invoke()
        y = (interpreter.get_tensor(out["index"]).astype(np.float32) - z_out) * s_out
        shifts[refold] = _channel_shift(y.transpose(0, 3, 1, 2), c["want"])
    assert shifts[True] < shifts[False] / 2, shifts


@pytest.mark.timeout(900)
def test_lite_pixel_stem_converts_to_a_tflite_file_the_edge_tpu_runs(bright: tuple[Path, np.ndarray],
                                                                     tmp_path: Path) -> None:
    """The Lite form through the project's own TFLite path (onnx2tf, full-integer conversion, the stem refold): its
    first ops are on the Edge TPU's list (padding with the mean colour itself was PADV2, which the Edge TPU cannot
    run), its input takes every pixel as a code, and it computes what the folded float stem computes."""
    from convert.edgetpu import check_tflite
    from convert.pixel_input import folded_stem
    from convert.targets.tflite import onnx_to_saved_model
    from convert.tensorflow_import import import_tensorflow
    from quantize.tflite_int8 import convert_full_int8

    tf = import_tensorflow()
    root, _ = bright
    pixels = _stem_graph(LITE_SPEC)
    onnx.save(pixels, str(tmp_path / "stem.onnx"))
    saved = onnx_to_saved_model(tmp_path / "stem.onnx", tmp_path / "saved")
    calib = pixel_calibration(_calib(root, LITE_SPEC, "lite-stem"), LITE_SPEC)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    extremes = [np.full((1, SIZE, SIZE, 3), v, np.float32) for v in PIXEL_RANGE]
    data = convert_full_int8(converter, tf, calib, "int8", "minmax", progress=False, extremes=extremes,
                             stem=folded_stem(pixels, LITE_SPEC)).data
    path = tmp_path / "stem.tflite"
    path.write_bytes(data)
    report = check_tflite(path)
    assert report.ready, report.to_dict()
    assert "PADV2" not in report.op_counts and "SUB" in report.op_counts
    q = input_quantizer(path)
    assert (q.low, q.high, q.levels) == (0.0, 255.0, 256)
    interpreter = tf.lite.Interpreter(model_content=data)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    (s_in, z_in), (s_out, z_out) = inp["quantization"], out["quantization"]
    x = calib.nchw(0)
    interpreter.set_tensor(inp["index"], (np.round(x.transpose(0, 2, 3, 1) / s_in) + z_in).astype(np.int8))
    interpreter.invoke()
    got = ((interpreter.get_tensor(out["index"]).astype(np.float32) - z_out) * s_out).transpose(0, 3, 1, 2)
    want = run_onnx(pixels, x)["y"]
    assert np.abs(got - want).max() <= 4 * s_out + 0.02 * np.abs(want).max()
