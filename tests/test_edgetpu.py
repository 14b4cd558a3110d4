"""Edge TPU tooling that runs without the compiler: the op checker's verdicts and the compiler-log parser."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from convert.edgetpu import EdgeTpuError, check_tflite, main, parse_compiler_log, run_compiler

LOG = """Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 1840 ms.

Input model: efficientdet-d0-256-int8.tflite
Input size: 4.75MiB
Output model: out/efficientdet-d0-256-int8_edgetpu.tflite
Output size: 5.10MiB
Number of Edge TPU subgraphs: 1
Total number of operations: 412
Operation log: out/efficientdet-d0-256-int8_edgetpu.log

Number of operations that will run on Edge TPU: 405
Number of operations that will run on CPU: 7

Operator                       Count      Status

CONV_2D                        214        Mapped to Edge TPU
LOGISTIC                       118        Mapped to Edge TPU
GATHER                         4          Operation not supported
RESIZE_NEAREST_NEIGHBOR        3          Operation is otherwise supported, but not mapped due to some """ \
      """unspecified limitation
"""


def test_parse_compiler_log() -> None:
    report = parse_compiler_log(LOG, "m.tflite")
    assert (report.tpu_ops, report.cpu_ops) == (405, 7)
    assert report.tpu_fraction == pytest.approx(405 / 412)
    assert report.output == "out/efficientdet-d0-256-int8_edgetpu.tflite"
    assert [r["operator"] for r in report.operators] == ["CONV_2D", "LOGISTIC", "GATHER", "RESIZE_NEAREST_NEIGHBOR"]
    assert report.operators[2] == {"operator": "GATHER", "count": 4, "status": "Operation not supported"}
    with pytest.raises(EdgeTpuError, match="-s"):
        parse_compiler_log("Edge TPU Compiler version 16\nModel compiled successfully")


@pytest.mark.skipif(shutil.which("edgetpu_compiler") is not None, reason="the compiler is installed here")
def test_missing_compiler_is_explained(tmp_path: Path) -> None:
    with pytest.raises(EdgeTpuError, match="edgetpu_compiler is not installed"):
        run_compiler(tmp_path / "m.tflite", tmp_path, 0.95)
    assert main(["compile", str(tmp_path / "m.tflite")]) == 1


def _tiny_tflite(tmp_path: Path, integer: bool, gather: bool = False) -> Path:
    import tensorflow as tf

    rng = np.random.default_rng(0)
    w1 = tf.constant(rng.standard_normal((3, 3, 3, 8)).astype(np.float32))
    w2 = tf.constant(rng.standard_normal((1, 1, 8, 4)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 3], tf.float32)])
    def net(x: tf.Tensor) -> tf.Tensor:
        y = tf.nn.relu(tf.nn.conv2d(x, w1, 1, "SAME"))
        if gather:
            y = tf.gather(y, [0, 2, 4, 6], axis=1)
        y = tf.nn.max_pool2d(y, 2, 2, "VALID")
        return tf.nn.conv2d(y, w2, 1, "SAME")

    converter = tf.lite.TFLiteConverter.from_concrete_functions([net.get_concrete_function()], net)
    if integer:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([rng.standard_normal((1, 16, 16, 3)).astype(np.float32)]
                                                    for _ in range(8))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.uint8
    path = tmp_path / f"m-{integer}-{gather}.tflite"
    path.write_bytes(converter.convert())
    return path


def test_checker_verdicts(tmp_path: Path) -> None:
    ready = check_tflite(_tiny_tflite(tmp_path, integer=True))
    assert ready.ready, ready.problems
    assert set(ready.io.values()) == {"uint8"} and ready.first_cpu_op is None
    floating = check_tflite(_tiny_tflite(tmp_path, integer=False))
    assert not floating.ready and floating.float_tensors
    assert any("uint8" in p for p in floating.problems)
    gathered = check_tflite(_tiny_tflite(tmp_path, integer=True, gather=True))
    assert not gathered.ready and gathered.unsupported == {"GATHER": 1}
    assert gathered.float_tensors == []  # its int64 indices are not float
    assert gathered.first_cpu_op.startswith("GATHER") and 0 < gathered.ops_before_first_cpu_op < gathered.total_ops
