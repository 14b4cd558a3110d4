"""Small real artifacts for the runtime tests: a tiny EfficientDet-Lite0 at 128 px (randomised BN, so outputs
are not the prior bias everywhere) as ONNX and OpenVINO IR, and float/int8 TFLite files whose outputs are
simple functions of the input (made with TensorFlow in a child process, so TensorFlow never loads in the
test process). Manifests are written the way the exporter writes them. ``tests/conftest.py`` builds them
once per session (fixtures ``artifacts`` and ``tflite_models``).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from convert.manifest_writer import build_manifest
from efficientdet.model.config import make_config
from efficientdet.model.detector import EfficientDet
from runtime.contract import Quantization, TensorSpec
from runtime.manifest import file_sha256, write_sidecar
from tests.conftest import randomize_bn

SIZE = 128
NAMES = ["a", "b", "c"]


def make_manifest(config: Any, target: str, file: Path, input_spec: TensorSpec,
                  outputs: dict[str, TensorSpec], precision: str = "fp32") -> dict[str, Any]:
    """The exporter's own manifest for a test-made artifact."""
    return build_manifest(config, target=target, precision=precision, artifact_file=file.name,
                          input_spec=input_spec, outputs=outputs, sha256=file_sha256(file),
                          inference_precision="f32" if target == "openvino" else None)


def float_io(config: Any, layout: str = "nchw") -> tuple[TensorSpec, dict[str, TensorSpec]]:
    a, s = config.num_anchors, config.input_size
    shape = (1, 3, s, s) if layout == "nchw" else (1, s, s, 3)
    inp = TensorSpec("images", shape, "float32", layout)
    outs = {"logits": TensorSpec("logits", (1, a, config.num_classes)),
            "box_regression": TensorSpec("box_regression", (1, a, 4))}
    return inp, outs


def test_image(height: int = 150, width: int = 220) -> np.ndarray:
    rng = np.random.default_rng(3)
    img = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (5, 5), 0)
    cv2.rectangle(img, (30, 20), (120, 110), (20, 200, 240), -1)
    cv2.circle(img, (170, 90), 35, (250, 40, 40), -1)
    return img


test_image.__test__ = False  # a helper, not a test


def build_artifacts(out: Path) -> dict[str, Any]:
    """A tiny EfficientDet-Lite0 at 128 px with randomised BN as ONNX and OpenVINO IR, with sidecars."""
    import openvino as ov

    config = make_config("0", "lite", num_classes=3, class_names=NAMES, input_size=SIZE)
    torch.manual_seed(0)
    model = randomize_bn(EfficientDet(config), seed=1).eval()
    onnx_path = out / "model.onnx"
    x = torch.zeros(1, 3, SIZE, SIZE)
    torch.onnx.export(model.export_form(), (x,), str(onnx_path), dynamo=True, opset_version=18,
                      input_names=["images"], output_names=["logits", "box_regression"], external_data=False)
    xml_path = out / "model.xml"
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)
    inp, outs = float_io(config)
    write_sidecar(onnx_path, make_manifest(config, "onnx", onnx_path, inp, outs))
    xml_manifest = make_manifest(config, "openvino", xml_path, inp, outs)
    xml_manifest["artifact"]["weights_sha256"] = file_sha256(xml_path.with_suffix(".bin"))
    write_sidecar(xml_path, xml_manifest)
    return {"dir": out, "config": config, "model": model, "onnx": onnx_path, "xml": xml_path}


def run_python(code: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=600,
                          env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def build_tflite_models(artifacts: dict[str, Any]) -> dict[str, Path]:
    """Float and int8 .tflite files whose outputs are simple functions of the input (made with TF in a child
    process, so TensorFlow never loads here). Signature outputs sort box_regression first: the opposite of
    the manifest's order."""
    out = artifacts["dir"]
    cfg = artifacts["config"]
    code = f"""
        import numpy as np, tensorflow as tf
        A, C, S = {cfg.num_anchors}, {cfg.num_classes}, {cfg.input_size}
        class M(tf.Module):
            @tf.function(input_signature=[tf.TensorSpec([1, S, S, 3], tf.float32, name="images")])
            def f(self, images):
                flat = tf.reshape(images, [1, -1])
                return {{"logits": tf.reshape(flat[:, :A * C], [1, A, C]),
                         "box_regression": tf.reshape(flat[:, A * C:A * C + A * 4], [1, A, 4]) * 0.5}}
        m = M()
        tf.saved_model.save(m, {str(out / "sm")!r}, signatures={{"serving_default": m.f}})
        def rep():
            r = np.random.default_rng(0)
            for _ in range(8):
                yield [r.uniform(-2.2, 2.7, (1, S, S, 3)).astype(np.float32)]
        conv = tf.lite.TFLiteConverter.from_saved_model({str(out / "sm")!r})
        open({str(out / "float.tflite")!r}, "wb").write(conv.convert())
        conv = tf.lite.TFLiteConverter.from_saved_model({str(out / "sm")!r})
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
        open({str(out / "int8.tflite")!r}, "wb").write(conv.convert())
    """
    run_python(code, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    paths = {"float": out / "float.tflite", "int8": out / "int8.tflite"}
    for precision, path in paths.items():
        inp, outs = tflite_io(path, cfg, precision)
        write_sidecar(path, make_manifest(cfg, "tflite", path, inp, outs,
                                                precision="fp32" if precision == "float" else "int8"))
    return paths


def tflite_io(path: Path, config: Any, precision: str) -> tuple[TensorSpec, dict[str, TensorSpec]]:
    """The manifest's input/output specs of a test-made ``.tflite`` (int8: scales read from the file)."""
    from ai_edge_litert.interpreter import Interpreter

    inp, outs = float_io(config, layout="nhwc")
    if precision == "int8":
        interp = Interpreter(model_path=str(path))
        details = {d["index"]: d for d in interp.get_output_details()}
        sig = interp.get_signature_runner().get_output_details()
        scale, zp = interp.get_input_details()[0]["quantization"]
        inp = dataclasses.replace(inp, dtype="int8", quantization=Quantization(float(scale), int(zp)))
        for key in outs:
            scale, zp = details[sig[key]["index"]]["quantization"]
            outs[key] = dataclasses.replace(outs[key], dtype="int8", quantization=Quantization(float(scale), int(zp)))
    return inp, outs
