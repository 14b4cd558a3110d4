"""Gate verdicts that mean something (issue 14): too few reference detections is "not measurable", never a
pass; a failed gate says what to try next; every artifact's manifest records its verdict (or "not gated") and
the runtime warns when it loads a failed or ungated one; an interrupted export leaves a report of the folder."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import torch

from convert.gates import FAIL, NOT_MEASURABLE, PASS, gate_for, verdict
from runtime import Detector, UngatedArtifactWarning
from runtime.manifest import sidecar_path
from tests.conftest import ROOT

DEFAULT_MODEL = ROOT / "models" / "default-d0.pt"


def _parity(num_ref: int, det_match: float = 1.0, rel_err: float = 0.0) -> dict[str, Any]:
    return {"outputs": {"logits": {"rel_err": rel_err}}, "det_match": det_match, "det_match_reverse": det_match,
            "map_delta": 0.0, "map": 0.0, "map_ref": 0.0, "num_detections_ref": num_ref, "num_images": 12}


def test_an_int8_gate_without_reference_detections_is_not_measurable() -> None:
    status, reasons = verdict(_parity(0), gate_for("int8"))
    assert status == NOT_MEASURABLE and "made 0 detections" in reasons[0] and "--accept-unmeasurable" in reasons[0]
    assert verdict(_parity(9), gate_for("int8"))[0] == NOT_MEASURABLE
    assert verdict(_parity(10), gate_for("int8"))[0] == PASS
    assert verdict(_parity(0, det_match=0.5), gate_for("int8"))[0] == FAIL  # a real failure wins
    # a float gate bounds every raw output value, which is a real check without any detection
    assert verdict(_parity(0), gate_for("fp32"))[0] == PASS
    assert verdict(_parity(0, rel_err=1.0), gate_for("fp32"))[0] == FAIL


def test_unlabelled_images_leave_map_unmeasured_not_passed() -> None:
    """On unlabelled images (``--images``) ΔmAP is None: an int8 gate, which bounds it, is not measurable; a float
    gate, which does not, still passes or fails on raw outputs and detections."""
    unlabelled = {**_parity(50), "map_delta": None, "map": None, "map_ref": None}
    status, reasons = verdict(unlabelled, gate_for("int8"))
    assert status == NOT_MEASURABLE and "unlabelled" in reasons[0]
    assert verdict({**unlabelled, "det_match": 0.5, "det_match_reverse": 0.5}, gate_for("int8"))[0] == FAIL
    assert verdict(unlabelled, gate_for("fp32"))[0] == PASS
    assert verdict({**unlabelled, "outputs": {"logits": {"rel_err": 1e-3}}}, gate_for("fp32"))[0] == FAIL


@pytest.fixture(scope="module")
def blind_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model with its class bias pushed down so that it detects nothing at the deployment threshold."""
    ck = torch.load(DEFAULT_MODEL, map_location="cpu", weights_only=True)
    for key, value in ck["model"].items():
        if key.startswith("class_net.predict") and key.endswith("bias"):
            ck["model"][key] = torch.full_like(value, -30.0)
    path = tmp_path_factory.mktemp("blind") / "blind.pt"
    torch.save(ck, path)
    return path


def _convert(*args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "convert", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_a_model_that_detects_nothing_does_not_pass_the_int8_gate(blind_checkpoint: Path, tmp_path: Path) -> None:
    """It printed det_match 100 %/100 % and PASS for every artifact; now NOT MEASURABLE and exit 1."""
    out = tmp_path / "out"
    args = ["--ckpt", str(blind_checkpoint), "--target", "onnx", "--precision", "int8", "--input-size", "128",
            "--max-images", "6", "--calib-method", "onnx=minmax", "--no-sensitivity", "--out", str(out)]
    proc = _convert(*args)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "NOT MEASURABLE onnx" in proc.stdout and "GATE NOT MEASURABLE" in proc.stderr
    assert "made 0 detections" in proc.stderr and "PASS" not in proc.stdout
    report = json.loads((out / "report.json").read_text())
    (entry,) = report["artifacts"]
    assert entry["gate"]["status"] == NOT_MEASURABLE and not entry["gate"]["passed"]
    assert "NOT MEASURABLE" in (out / "report.md").read_text()
    manifest = json.loads(sidecar_path(entry["path"]).read_text())
    assert manifest["gate"]["status"] == NOT_MEASURABLE and manifest["gate"]["reference_detections"] == 0
    with pytest.warns(UngatedArtifactWarning, match="not measurable"):
        Detector(entry["path"], threads=1)
    accepted = _convert(*args, "--accept-unmeasurable")
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    assert "NOT MEASURABLE (accepted)" in accepted.stdout
    entry = json.loads((out / "report.json").read_text())["artifacts"][0]
    assert entry["gate"]["accepted"] and json.loads(sidecar_path(entry["path"]).read_text())["gate"]["accepted"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UngatedArtifactWarning)
        Detector(entry["path"], threads=1)


@pytest.mark.slow
def test_gated_artifacts_record_their_verdict_and_an_interrupted_export_reports_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    base = ["--ckpt", str(DEFAULT_MODEL), "--input-size", "128", "--max-images", "4", "--out", str(out)]
    done = _convert("--target", "onnx", "--precision", "fp32", *base)
    assert done.returncode == 0, done.stderr[-2000:]
    onnx_path = next(out.glob("*-fp32.onnx"))
    assert json.loads(sidecar_path(onnx_path).read_text())["gate"]["status"] == PASS
    with warnings.catch_warnings():
        warnings.simplefilter("error", UngatedArtifactWarning)
        Detector(onnx_path, threads=1)
    # a second export into the same folder, interrupted (Ctrl-C) once its artifact is written. The child gets
    # SIGINT's default action back: a suite started in the background (`make test &`, nohup) inherits SIGINT
    # ignored, Python then installs no KeyboardInterrupt handler, and the export ran to the end (exit 0, twice in
    # session 6). Its gate runs on every validation image (120, seconds of work), so the signal lands inside it
    # on a loaded machine too.
    slow_gate = [*base[:base.index("--max-images")], "--max-images", "0", *base[base.index("--out"):]]
    proc = subprocess.Popen([sys.executable, "-m", "convert", "--target", "openvino", "--precision", "fp32",
                             *slow_gate], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("[convert] parity gate:"):
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=300) == 130, rest[-2000:]
    assert "interrupted" in rest
    report = json.loads((out / "report.json").read_text())
    states = {Path(a["path"]).suffix: a["gate"] for a in report["folder"]}
    assert report["interrupted"] and states == {".onnx": PASS, ".xml": "not gated"}
    xml = next(out.glob("*-fp32.xml"))
    with pytest.warns(UngatedArtifactWarning, match="never checked against the FP32 model"):
        Detector(xml, threads=1)
    finished = _convert("--target", "openvino", "--precision", "fp32", *base)
    assert finished.returncode == 0, finished.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert [(Path(a["path"]).suffix, a["gate"], a["in_this_report"]) for a in report["folder"]] == [
        (".onnx", PASS, False), (".xml", PASS, True)]
    assert "Other artifacts in this folder" in (out / "report.md").read_text()


def test_a_failed_int8_gate_says_what_to_try_next() -> None:
    from convert.cli import _summarise

    entry = {"target": "onnx", "precision": "int8", "path": "x.onnx",
             "parity": {**_parity(40, det_match=0.5), "rel_err": 0.1},
             "gate": {"status": FAIL, "passed": False, "failures": ["reference detections matched 50.00% < 90.00%"]}}
    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        code = _summarise([entry], {"md": Path("report.md")})
    assert code == 1
    text = err.getvalue()
    steps = [text.index(s) for s in ("make calib", "CALIB_METHOD", "FLOAT_LAYERS", "QAT=1")]
    assert steps == sorted(steps) and "what to try next for int8" in text


@pytest.mark.slow
def test_a_rerun_with_float_layers_says_what_it_kept_and_what_changed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    base = ["--ckpt", str(DEFAULT_MODEL), "--target", "onnx", "--precision", "int8", "--input-size", "128",
            "--max-images", "6", "--calib-method", "onnx=minmax", "--no-sensitivity", "--out", str(out)]
    first = _convert(*base)
    assert first.returncode in (0, 1), first.stderr[-2000:]
    (before,) = json.loads((out / "report.json").read_text())["artifacts"]
    again = _convert(*base, "--float-layers", "2")
    assert again.returncode in (0, 1), again.stderr[-2000:]
    (entry,) = json.loads((out / "report.json").read_text())["artifacts"]
    effect = entry["float_layers_effect"]
    assert effect["kept_in_float"] == entry["quantization"]["float_layers"] and len(effect["kept_in_float"]) == 2
    assert effect["previously_in_float"] == []
    assert (effect["map_delta_before"], effect["det_match_before"]) == (before["parity"]["map_delta"],
                                                                        before["parity"]["det_match"])
    assert (effect["map_delta_now"], effect["det_match_now"]) == (entry["parity"]["map_delta"],
                                                                  entry["parity"]["det_match"])
    assert "kept in float" in again.stderr and "->" in again.stderr
    assert "Layers kept in float, against the previous export" in (out / "report.md").read_text()
