"""Shared fixtures: the repo on sys.path, the shared datasets location, non-trivial tiny models, and readers of the
weight codes of int8 artifacts."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from efficientdet.model.testing import detector_like_model_for, randomize_bn  # noqa: E402, F401  (for the tests)
from runtime.backends.openvino_privacy import disable_telemetry  # noqa: E402  (needs ROOT on sys.path)

disable_telemetry()  # before any test imports openvino or nncf: the suite sends nothing either


def shared_dir() -> Path:
    return Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared"))


def bccd_dir() -> Path:
    return Path(os.environ.get("BCCD_DIR", shared_dir() / "datasets" / "bccd"))


@pytest.fixture
def bccd() -> Path:
    path = bccd_dir()
    if not (path / "BCCD" / "Annotations").is_dir():
        pytest.skip(f"BCCD not found at {path} (set BCCD_DIR or provide ../shared/datasets/bccd)")
    return path


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """ONNX + OpenVINO IR of a tiny Lite0 with sidecars (``tests/runtime_artifacts.py``), shared by the session."""
    from tests.runtime_artifacts import build_artifacts

    return build_artifacts(tmp_path_factory.mktemp("runtime"))


@pytest.fixture(scope="session")
def tflite_models(artifacts: dict[str, Any]) -> dict[str, Path]:
    """Float and int8 ``.tflite`` files beside ``artifacts`` (made by TensorFlow in a child process)."""
    from tests.runtime_artifacts import build_tflite_models

    return build_tflite_models(artifacts)


def write_bright_images(root: Path, size: int, count: int = 8) -> Any:
    """``count`` bright, pale random images (pixels 150-255) in ``root/images``: a calibration source that never shows
    a dark pixel. Returns the random generator, drawn past the images, for what the test draws next."""
    import cv2
    import numpy as np

    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        cv2.imwrite(str(root / "images" / f"{i}.png"), rng.integers(150, 256, (size, size, 3)).astype(np.uint8))
    return rng


def conv_weight_codes_onnx(model: Any) -> list[tuple[bool, int]]:
    """(dense, largest |code|) of every convolution of a QDQ ONNX whose weights are int8 behind a DequantizeLinear;
    dense = not depthwise (``group`` 1). x86 int8 kernels without VNNI saturate dense weights beyond +-64."""
    import numpy as np
    from onnx import numpy_helper

    constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    dequantized = {n.output[0]: constants.get(n.input[0]) for n in model.graph.node if n.op_type == "DequantizeLinear"}
    out = []
    for node in model.graph.node:
        codes = dequantized.get(node.input[1]) if node.op_type == "Conv" else None
        if codes is not None and codes.dtype == np.int8:
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            out.append((group == 1, int(np.abs(codes.astype(np.int32)).max())))
    return out


def conv_weight_codes_openvino(path: str) -> list[tuple[bool, int]]:
    """(dense, largest |code|) of every convolution of an int8 IR: its weights are an i8 constant behind
    Convert/Multiply (and Reshape for a GroupConvolution)."""
    import numpy as np

    from runtime.backends.openvino_privacy import import_openvino

    ov = import_openvino()
    out = []
    for op in ov.Core().read_model(path).get_ops():
        if op.get_type_name() in ("Convolution", "GroupConvolution"):
            node = op.input_value(1).get_node()
            while node.get_type_name() != "Constant":
                node = node.input_value(0).get_node()
            assert node.get_element_type() == ov.Type.i8, op.get_friendly_name()
            out.append((op.get_type_name() == "Convolution", int(np.abs(node.get_data().astype(np.int32)).max())))
    return out


def tflite_conv_weights(data: bytes) -> list[tuple[Any, Any, Any]]:
    """(int8 codes OIHW, per-channel scales, dequantized bias) of every convolution of a TFLite flatbuffer."""
    import numpy as np
    from tensorflow.lite.tools import flatbuffer_utils

    from quantize.tflite_int8 import OpGraph
    from quantize.tflite_learned_weights import CONVOLUTIONS, _as_oihw

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    tensors = model.subgraphs[0].tensors
    out = []
    for op, inputs, _ in OpGraph(model).ops:
        if op in CONVOLUTIONS:
            w, b = tensors[inputs[1]], tensors[inputs[2]]
            codes = np.frombuffer(bytes(model.buffers[w.buffer].data), np.int8).reshape(w.shape)
            bias = np.frombuffer(bytes(model.buffers[b.buffer].data), "<i4") * np.asarray(b.quantization.scale)
            out.append((_as_oihw(codes, op), np.asarray(w.quantization.scale), bias))
    return out


class ImagesAsCalibration:
    """A batch of images (an ``[N, 3, H, W]`` tensor) in the calibration set's interface, as
    ``quantize.qat.calibrate`` reads it."""

    def __init__(self, images: Any) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def nchw(self, i: int) -> Any:
        return self.images[i : i + 1].numpy()
