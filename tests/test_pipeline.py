"""The export pipeline's shape (issue 12): one registry of targets in the runtime's vocabulary, the order artifacts
are written in, requests refused before any work, and one table from errors to exit statuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from convert.errors import BAD_INPUT, CONVERSION_FAILED, WRITE_FAILED, ConversionError, UsageError, outcome
from convert.pipeline import ExportRequest, export
from convert.targets import REGISTRY, TargetSpec, plan
from runtime.manifest import PRECISIONS, TARGET_NAMES, TARGETS

ROOT = Path(__file__).resolve().parents[1]


def _label(target: TargetSpec) -> str:
    return f"{target.name} ({target.flavour})" if target.flavour else target.name


def test_the_registry_speaks_the_runtimes_vocabulary() -> None:
    plain = [t for t in REGISTRY if not t.flavour]
    assert tuple(t.name for t in plain) == TARGET_NAMES  # every backend has an exporter, in the runtime's order
    for t in REGISTRY:
        assert set(t.precisions) <= set(PRECISIONS), t
        assert TARGETS[Path("x" + t.suffix).suffix] == t.name, t  # the runtime opens what the target writes
    assert [_label(t) for t in REGISTRY if t.flavour] == ["tflite (android)"]


def test_plan_writes_floats_then_int8_then_flavours_then_qat() -> None:
    steps = [(_label(t), p) for t, p in plan(TARGET_NAMES, ("fp32", "fp16", "int8", "int8-qat"), ("android",))]
    assert steps == [
        ("onnx", "fp32"), ("onnx", "fp16"), ("openvino", "fp32"), ("openvino", "fp16"), ("tflite", "fp32"),
        ("tflite", "fp16"), ("onnx", "int8"), ("openvino", "int8"), ("tflite", "int8"),
        ("tflite (android)", "fp32"), ("tflite (android)", "int8"),
        ("onnx", "int8-qat"), ("openvino", "int8-qat"), ("tflite", "int8-qat")]
    assert [(_label(t), p) for t, p in plan(("tflite",), ("int8",))] == [("tflite", "int8")]  # no flavour unasked
    assert plan(("onnx",), ("fp16",), ("android",)) == plan(("onnx",), ("fp16",))  # Android needs TFLite


@pytest.mark.parametrize("changes, message", [
    ({"targets": ("onnx", "coreml")}, "--target must be one of onnx, openvino, tflite"),
    ({"precisions": ("int8-qat",)}, "needs --precision int8"),
    ({"precisions": ("fp16",), "flavours": ("android",)}, "--android (ANDROID=1) needs"),
    ({"flavours": ("ios",)}, "unknown flavours ['ios']"),
    ({"methods": {"onnx": "kmeans"}}, "--calib-method expects TARGET=METHOD"),
    ({"gate_overrides": {"bogus": 1.0}}, "--gate expects KEY=VALUE"),
    ({"max_images": -1}, "--max-images must be >= 0"),
    ({"calib": "calib_data/sets/x", "calib_shifted": 0.5}, "already has its own share of shifted images"),
    ({"calib_shifted": 1.5}, "--calib-shifted (SHIFTED=) is a share within 0..1"),
])
def test_a_request_that_cannot_work_is_refused_before_anything_is_written(tmp_path: Path, changes: dict,
                                                                          message: str) -> None:
    request = ExportRequest(ckpt=ROOT / "models" / "default-d0.pt", out=tmp_path / "out", **changes)
    with pytest.raises(UsageError) as refused:
        export(request)
    assert message in str(refused.value)
    assert outcome(refused.value).status == BAD_INPUT
    assert not (tmp_path / "out").exists()


def test_errors_map_to_exit_statuses_in_one_table(tmp_path: Path) -> None:
    from calib_data.store import CalibrationError
    from convert.targets.onnx import OnnxExportError
    from efficientdet.checkpoint import CheckpointError
    from runtime.manifest import ManifestError

    cases = {ManifestError("exporter wrote a bad manifest"): CONVERSION_FAILED,  # a ValueError, but our bug
             UsageError("bad"): BAD_INPUT, CheckpointError("truncated"): BAD_INPUT,
             CalibrationError("overlap"): BAD_INPUT, OnnxExportError("diverged"): CONVERSION_FAILED,
             ConversionError("parity"): CONVERSION_FAILED, FileNotFoundError("no such file"): BAD_INPUT,
             PermissionError(13, "Permission denied", str(tmp_path)): WRITE_FAILED}
    for error, status in cases.items():
        assert outcome(error).status == status, error
    assert outcome(OnnxExportError("diverged")).message == "error: conversion failed: diverged"
    assert outcome(KeyError("a bug")) is None  # not swallowed: a traceback, not a made-up status
