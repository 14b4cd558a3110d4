"""The QAT seed summary: mean and spread per target, the goal judged on every seed, incomparable runs refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.qat_seeds import main, markdown, summarize_seeds


def _artifact(target: str, precision: str, delta: float, seed: int = 0, sha: str = "a") -> dict[str, Any]:
    return {"target": target, "precision": precision, "sha256": sha if precision == "int8" else f"q{seed}",
            "quantization": {"qat": {"seed": seed}} if precision == "int8-qat" else {},
            "parity": {"map_delta": delta / 100, "det_match": 0.95, "field": {"det_match": 0.8,
                                                                          "det_match_reverse": 0.9}},
            "gate": {"status": "pass"}}


def _report(seed: int, qat: dict[str, float], ptq_sha: str = "a") -> dict[str, Any]:
    artifacts = []
    for target, delta in qat.items():
        artifacts += [_artifact(target, "int8", -0.1, sha=ptq_sha), _artifact(target, "int8-qat", delta, seed)]
    return {"model": "efficientdet-d0", "input_size": 320, "checkpoint": "m.pt", "checkpoint_sha256": "c",
            "data": "d", "split": "test", "num_images": 72, "artifacts": artifacts}


def test_mean_spread_and_goal_per_target(tmp_path: Path) -> None:
    reports = [_report(0, {"onnx": 0.1, "tflite": -0.2}), _report(1, {"onnx": -0.3, "tflite": 0.4}),
               _report(2, {"onnx": 0.2, "tflite": 0.0})]
    doc = summarize_seeds(reports)
    assert doc["seeds"] == [0, 1, 2]
    onnx, tflite = doc["targets"]["onnx"], doc["targets"]["tflite"]
    assert onnx["qat_mean_points"] == pytest.approx(0.0) and onnx["qat_spread_points"] == pytest.approx(0.5)
    assert onnx["goal_met"] and not tflite["goal_met"]  # one seed of three at +0.4 misses the 0.3 goal
    # one-sided, a gain is not a loss: +0.4 is no loss, -0.4 is
    assert tflite["no_loss_beyond_goal"]
    assert not summarize_seeds([_report(0, {"onnx": -0.4})])["targets"]["onnx"]["no_loss_beyond_goal"]
    assert onnx["post_training"]["map_delta_points"] == pytest.approx(-0.1)
    paths = []
    for i, r in enumerate(reports):
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(json.dumps(r))
    assert main(["--reports", *map(str, paths), "--out", str(tmp_path / "out"), "--command", "make x"]) == 0
    assert json.loads((tmp_path / "out.json").read_text())["targets"]["tflite"]["goal_met"] is False
    md = (tmp_path / "out.md").read_text()
    assert (tmp_path / "out.png").stat().st_size > 0 and "| tflite | -0.10 | -0.20 | +0.40 | +0.00 |" in md
    # the field in both directions, post-training then each seed: the gate bounds each direction on its own
    assert "| 80.0% / 90.0% | 80.0% / 90.0%; 80.0% / 90.0%; 80.0% / 90.0% |" in md
    # goal (two-sided) not met, no loss met, and the split's detection match per seed
    assert "| not met | met | 80.0% / 90.0% |" in md and "| 95.0% / —; 95.0% / —; 95.0% / — |" in md


def test_runs_with_another_calibration_are_refused() -> None:
    with pytest.raises(ValueError, match="post-training onnx artifacts differ"):
        summarize_seeds([_report(0, {"onnx": 0.1}), _report(1, {"onnx": 0.1}, ptq_sha="b")])


def test_a_seed_with_a_bootstrap_interval_shows_it_beside_its_delta(tmp_path: Path) -> None:
    reports = [_report(0, {"onnx": 0.1}), _report(1, {"onnx": -0.3})]
    qat = next(a for a in reports[1]["artifacts"] if a["precision"] == "int8-qat")
    qat["parity"]["map_delta_interval"] = {"low": -0.009, "high": 0.001, "std_error": 0.0025, "resamples": 200,
                                           "level": 0.95}
    paths = []
    for i, r in enumerate(reports):
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(json.dumps(r))
    assert main(["--reports", *map(str, paths), "--out", str(tmp_path / "out"), "--command", "make x"]) == 0
    assert "| onnx | -0.10 | +0.10 | -0.30 (-0.90 … +0.10) |" in (tmp_path / "out.md").read_text()


def test_the_models_own_reading_under_input_rounding_is_shown_when_the_reports_have_it() -> None:
    own = {"half_step_grey": 0.5, "det_match_iou": 0.5,
           "split": {"det_match": 0.969, "det_match_reverse": 0.967, "num_detections_ref": 1272, "num_images": 72},
           "field": {"det_match": 0.917, "det_match_reverse": 0.895, "num_detections_ref": 457, "num_images": 60}}
    reports = [{**_report(s, {"onnx": 0.1}), "fp32_input_rounding": own} for s in (0, 1)]
    doc = summarize_seeds(reports)
    assert doc["fp32_input_rounding"] == own
    md = markdown(doc, "make x", None, "x.png")
    assert "evaluation images 96.9% / 96.7%, field 91.7% / 89.5% of its detections kept" in md
    assert "FP32 against itself" not in markdown(summarize_seeds([_report(0, {"onnx": 0.1})]), "make x", None, "x.png")
