"""The conversion matrix (``python -m convert.matrix``) on a subset of variants that covers every structural
difference between D0-D7 and Lite0-Lite4, with real conversions at 128 px; the full matrix is
``make convert-matrix`` (results/convert-matrix.md).

The subset: D0 (fast fusion, head depth 3, B0), D3 (head depth 4, B3), D7 (sum fusion, anchor scale 5,
head depth 5, B6), Lite0 (ReLU6, no SE, anchor scale 3) and Lite3x (a wider BiFPN than its backbone's
Lite3). D7 skips TFLite here only for CI time (onnx2tf alone takes minutes on a 51 M-parameter graph);
the full matrix converts it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from convert import matrix
from convert.matrix import ALL_VARIANTS, MatrixSpec, Seconds, parse_variant, run_matrix
from convert.matrix_report import JSON_NAME, MD_NAME
from efficientdet.model.config import make_config

ALL_TARGETS = ("onnx", "openvino", "tflite")
SUBSET = {"D0": ALL_TARGETS, "D3": ALL_TARGETS, "D7": ("onnx", "openvino"), "Lite0": ALL_TARGETS,
          "Lite3x": ALL_TARGETS}


def _structure(label: str) -> dict[str, Any]:
    cfg = make_config(*reversed(parse_variant(label)))
    return {"fusion": cfg.fusion, "head_depth": cfg.head_depth, "activation": cfg.activation,
            "anchor_scale": cfg.anchor_scale}


def test_parse_variant() -> None:
    assert [parse_variant(v) for v in ("D0", "d7", "Lite3x", "LITE4")] == [
        ("d", "0"), ("d", "7"), ("lite", "3x"), ("lite", "4")]
    for bad in ("", "D", "E3", "lite"):
        with pytest.raises(ValueError, match="unknown variant"):
            parse_variant(bad)
    assert len(ALL_VARIANTS) == 14 and all(make_config(*reversed(parse_variant(v))) for v in ALL_VARIANTS)


def test_subset_covers_every_structural_difference() -> None:
    for key in ("fusion", "head_depth", "activation", "anchor_scale"):
        assert {_structure(v)[key] for v in SUBSET} == {_structure(v)[key] for v in ALL_VARIANTS}, key
    backbones = {make_config(*reversed(parse_variant(v))).backbone for v in SUBSET}
    assert {"b0", "b3", "b6", "lite0", "lite3"} <= backbones  # SE (D) and no SE (Lite), smallest and largest


def test_cli_rejects_bad_arguments(capsys: pytest.CaptureFixture) -> None:
    assert matrix.main(["--variants", "D0,E9"]) == 2
    assert "unknown variant 'E9'" in capsys.readouterr().err
    assert matrix.main(["--size", "100"]) == 2
    assert "multiple of 32" in capsys.readouterr().err


class _Stub:
    """Stands in for a variant: setup fails for D1; for D0 the TFLite export fails, the OpenVINO artifact breaks
    the parity run (so the others are re-run one at a time) and ONNX passes."""

    def __init__(self, label: str, spec: MatrixSpec, data: Path, work: Path) -> None:
        if label == "D1":
            raise RuntimeError("model too big")
        self.params = 7

    def export(self, target: str, precision: str) -> tuple[Any, Seconds]:
        if target == "tflite":
            raise RuntimeError("onnx2tf failed\nthe cause")
        return type("A", (), {"size_bytes": 100, "target": target, "precision": precision})(), Seconds(0.5, 0.25)

    def parity(self, artifacts: list[Any]) -> list[dict[str, Any]]:
        if any(a.target == "openvino" for a in artifacts):
            raise RuntimeError("openvino broke")
        out = {"rel_err": 1e-7}
        return [{"parity": {"outputs": {"logits": out, "box_regression": out}, "pearson": 1.0, "det_match": 1.0,
                            "det_match_reverse": 1.0, "num_detections_ref": 5},
                 "gate": {"passed": True, "failures": []}} for _ in artifacts]


def test_one_failure_does_not_stop_the_matrix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(matrix, "_Variant", _Stub)
    result = run_matrix(MatrixSpec(variants=("D1", "D0")), work=tmp_path, out=tmp_path / "out", command="cmd",
                        progress=False)
    status = {(r["variant"], r["target"]): (r["passed"], r["error"]) for r in result["rows"]}
    assert all(not passed and "setup: RuntimeError: model too big" in err
               for (v, _), (passed, err) in status.items() if v == "D1")
    assert status[("D0", "onnx")] == (True, None)
    assert [(r["export_s"], r["export_cpu_s"]) for r in result["rows"] if r["variant"] == "D0"][:2] == [(0.5, 0.25)] * 2
    assert status[("D0", "openvino")] == (False, "parity: RuntimeError: openvino broke")
    assert status[("D0", "tflite")] == (False, "RuntimeError: onnx2tf failed\nthe cause")
    md = (tmp_path / "out" / MD_NAME).read_text()
    assert "**1/6 passed.**" in md and "`cmd`" in md
    assert "- D0 tflite fp32: `RuntimeError: onnx2tf failed … the cause`" in md
    assert json.loads((tmp_path / "out" / JSON_NAME).read_text())["rows"] == result["rows"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the work folder is cleaned up


@pytest.mark.slow
@pytest.mark.parametrize("label", list(SUBSET))
def test_variant_converts_and_passes_the_gate(label: str, tmp_path: Path) -> None:
    spec = MatrixSpec(variants=(label,), targets=SUBSET[label], precisions=("fp32",), size=128)
    result = run_matrix(spec, work=tmp_path, out=tmp_path / "out", command=f"test {label}", progress=False)
    assert [(r["target"], r["precision"]) for r in result["rows"]] == [(t, "fp32") for t in SUBSET[label]]
    for r in result["rows"]:
        assert r["passed"] and r["error"] is None and not r["failures"], r
        assert r["rel_err_logits"] <= 1e-4 and r["rel_err_boxes"] <= 1e-4, r
        assert r["num_detections_ref"] >= 2 and r["det_match"] == r["det_match_reverse"] == 1.0, r  # not vacuous
        assert r["pearson"] > 0.999 and r["size_bytes"] > 0 and r["params"] > 0, r
    assert (tmp_path / "out" / MD_NAME).read_text().count("| PASS |") == len(SUBSET[label])


def test_a_failed_shared_step_runs_once_and_fails_every_artifact_that_needs_it() -> None:
    variant = matrix._Variant.__new__(matrix._Variant)  # only the shared-step cache, no model
    variant._shared = {}
    calls = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("opset")

    for _ in range(2):
        with pytest.raises(RuntimeError, match=r"FP32 ONNX export \(shared .*\) failed: ValueError: opset"):
            variant._once("FP32 ONNX export", broken)
    assert len(calls) == 1
    assert variant._once("ok", lambda: 5)[0] == variant._once("ok", lambda: 6)[0] == 5
