"""Exporters and the parity gate, with real conversions (no mocks) of a tiny EfficientDet-Lite0 at 160 px.

160 rather than 128: a side that is not a multiple of 128 gives the BiFPN non-integer upsample ratios
(P7 2 -> P6 3, P6 3 -> P5 5), which onnx2tf converts wrongly unless the exporter rewrites them.

The test model has image-dependent, detector-like outputs: a variance-preserving random init (otherwise
the signal dies with depth and every image gives the same output, so parity passes trivially), random BN
statistics (``randomize_bn``), and final layers rescaled so that a few detections per image clear the
score threshold with a clear margin (a score sitting exactly on the threshold flips under any rounding).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from convert import cli
from convert.gates import GATES, check, gate_for
from convert.matching import match_count
from convert.parity import run_parity
from convert.targets.onnx import export_onnx, write_onnx
from efficientdet.checkpoint import file_sha256, load_model, save_checkpoint
from efficientdet.data.loader import load_dataset
from efficientdet.data.synthetic import CLASS_NAMES, generate_synthetic
from efficientdet.model.config import make_config
from efficientdet.model.detector import EfficientDet
from efficientdet.train.batches import DetectionBatches
from runtime.manifest import METADATA_KEY, check_artifact, load_manifest, validate_manifest
from runtime.postprocess import Detections
from tests.conftest import ROOT, detector_like_model_for

CONFIG = make_config("0", "lite", num_classes=len(CLASS_NAMES), class_names=CLASS_NAMES, input_size=160)
SCORE_THRESHOLD = 0.3  # runtime.postprocess.DEFAULT_POSTPROCESS, what the gate's detection matching uses


def detector_like_model(images: torch.Tensor, seed: int = 0) -> EfficientDet:
    """A random but well-conditioned, image-dependent EfficientDet with a few confident detections per image."""
    return detector_like_model_for(CONFIG, images, seed, SCORE_THRESHOLD)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("convert")
    data = generate_synthetic(root / "data", num_train=4, num_val=6, image_size=160)
    dataset = load_dataset(data, "val", class_names=list(CLASS_NAMES))
    batches = DetectionBatches(dataset, CONFIG.preprocess, CONFIG.anchor_spec)
    model = detector_like_model(torch.stack([batches[i][0] for i in range(len(batches))]))
    ckpt = root / "lite0.pt"
    state = model.state_dict()
    save_checkpoint(ckpt, {"config": CONFIG.to_dict(), "model": state, "ema": state, "epoch": 0, "step": 0})
    return {"root": root, "data": data, "ckpt": ckpt, "dataset": dataset}


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "convert", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=1800)


@pytest.fixture(scope="module")
def exported(workspace: dict) -> dict:
    out = workspace["root"] / "out"
    proc = _run_cli("--target", "all", "--precision", "fp32,fp16", "--variant", "lite", "--phi", "0",
                    "--ckpt", str(workspace["ckpt"]), "--data", str(workspace["data"]), "--split", "val",
                    "--out", str(out))
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").is_file() else None
    return {"proc": proc, "out": out, "report": report}


def _artifact(exported: dict, target: str, precision: str) -> dict:
    (entry,) = [a for a in exported["report"]["artifacts"] if (a["target"], a["precision"]) == (target, precision)]
    return entry


# ---- fast: thresholds, matching, bad input -------------------------------------------------------------------


def test_gate_thresholds_and_units() -> None:
    assert gate_for("fp32").rel_err_max == 1e-4 and gate_for("fp32").det_match_min == 1.0
    assert gate_for("fp16").rel_err_max == 1e-2 and gate_for("fp16").det_match_min == 0.98
    assert gate_for("fp16").map_delta_max == pytest.approx(0.001)  # 0.1 mAP point, in 0-1 units
    assert {"int8", "int8-qat"} <= set(GATES) and gate_for("int8").det_match_iou == 0.5
    parity = {"outputs": {"logits": {"rel_err": 2e-2}, "box_regression": {"rel_err": 1e-3}}, "det_match": 0.97,
              "det_match_reverse": 1.0, "map": 0.500, "map_ref": 0.502, "map_delta": -0.002}
    failures = check(parity, gate_for("fp16"))
    assert len(failures) == 3
    assert "logits rel_err" in failures[0] and "reference detections matched 97.00%" in failures[1]
    assert "0.200 points > 0.100 points" in failures[2]
    with pytest.raises(ValueError, match="no parity gate"):
        gate_for("int4")


def test_match_count_is_one_to_one_and_class_aware() -> None:
    boxes = np.array([[0, 0, 10, 10], [20, 20, 40, 40], [0, 0, 10, 10]], np.float32)
    ref = Detections(boxes, np.array([0.9, 0.8, 0.7], np.float32), np.array([0, 1, 0]))
    assert match_count(ref, ref, 0.99) == 3
    other = Detections(boxes[:2] + [0, 0, 0, 1], np.array([0.9, 0.8], np.float32), np.array([0, 2]))
    assert match_count(ref, other, 0.5) == 1  # second box has another class; the duplicate finds nothing left
    assert match_count(ref, other, 0.99) == 0  # IoU 10/11
    far = Detections(np.array([[500, 0, 600, 10]], np.float32), np.ones(1, np.float32), np.zeros(1, np.int64))
    assert match_count(far, far, 0.99) == 1  # off-image boxes still match (no clipping before matching)


def test_cli_missing_checkpoint(workspace: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert cli.main(["--ckpt", str(tmp_path / "nope.pt"), "--out", str(out)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("args, expected", [
    (["--target", "onnx,coreml"], "--target must be one of onnx, openvino, tflite"),
    (["--input-size", "300"], "--input-size must be a multiple of 32"),
])
def test_cli_bad_target_or_size(workspace: dict, tmp_path: Path, capsys: pytest.CaptureFixture,
                                args: list[str], expected: str) -> None:
    out = tmp_path / "out"
    assert cli.main([*args, "--ckpt", str(workspace["ckpt"]), "--out", str(out)]) == 2
    assert expected in capsys.readouterr().err
    assert not out.exists()


def test_cli_default_precision_is_int8_for_tflite_only(workspace: dict, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    """--qat needs int8: with no --precision, ONNX (fp32 by default) refuses it and TFLite (int8) goes on
    to the QAT schedule's own check."""
    args = ["--variant", "lite", "--ckpt", str(workspace["ckpt"]), "--out", str(tmp_path / "out"), "--qat",
            "--qat-epochs", "-1"]
    assert cli.main(["--target", "onnx", *args]) == 2
    assert "needs --precision int8" in capsys.readouterr().err
    assert cli.main(["--target", "tflite", *args]) == 2
    assert "--qat-epochs and --qat-lr must be > 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_default_checkpoint_missing_says_how_to_get_it(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # an empty folder: no models/default-d0.pt here
    assert cli.main(["--target", "onnx"]) == 2
    err = capsys.readouterr().err
    assert "models/default-d0.pt" in err and "--ckpt" in err and "make default-model-train" in err
    assert not (tmp_path / "exports").exists()


@pytest.mark.parametrize("args, expected", [
    (["--variant", "lite", "--phi", "1"], "efficientdet-lite1"),
    (["--variant", "d", "--phi", "0"], "efficientdet-d0"),
    (["--variant", "lite", "--phi", "0", "--num-classes", "3"], "num_classes: requested 3"),
])
def test_cli_checkpoint_for_another_model(workspace: dict, tmp_path: Path, capsys: pytest.CaptureFixture,
                                          args: list[str], expected: str) -> None:
    out = tmp_path / "out"
    assert cli.main([*args, "--ckpt", str(workspace["ckpt"]), "--data", str(workspace["data"]),
                     "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "efficientdet-lite0" in err  # names both the request and the checkpoint
    assert not out.exists()


def test_cli_unwritable_out_fails_before_any_work(workspace: dict, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert cli.main(["--variant", "lite", "--ckpt", str(workspace["ckpt"]), "--out", str(blocker / "out")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert cli.main(["--variant", "lite", "--ckpt", str(workspace["ckpt"]), "--out", "x",
                     "--gate", "bogus=1"]) == 2
    assert "--gate expects KEY=VALUE" in capsys.readouterr().err


def test_non_integer_nearest_upsample_is_rewritten_exactly(tmp_path: Path) -> None:
    from convert.targets.onnx import run_onnx, torch_to_onnx
    from convert.targets.tflite import onnx2tf_safe

    class Up(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            small = torch.nn.functional.max_pool2d(x, 2, ceil_mode=True)[:, :, :3, :3]
            return torch.nn.functional.interpolate(small, size=(5, 5), mode="nearest") * 2

    proto = torch_to_onnx(Up(), 10)
    assert [n.op_type for n in proto.graph.node].count("Resize") == 1
    safe = onnx2tf_safe(proto)
    assert "Resize" not in [n.op_type for n in safe.graph.node]
    x = np.random.default_rng(1).standard_normal((1, 3, 10, 10)).astype(np.float32)
    (want,), (got,) = run_onnx(proto, x).values(), run_onnx(safe, x).values()
    assert np.array_equal(want, got)


# ---- slow: real conversions ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_all_targets_pass_the_parity_gate(exported: dict) -> None:
    proc, report = exported["proc"], exported["report"]
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    assert {(a["target"], a["precision"]) for a in report["artifacts"]} == {
        (t, p) for t in ("onnx", "openvino", "tflite") for p in ("fp32", "fp16")}
    for a in report["artifacts"]:
        p, gate = a["parity"], GATES[a["precision"]]
        assert a["gate"]["passed"] and not a["gate"]["failures"], a
        assert p["num_detections_ref"] >= 10  # matching is not vacuous
        assert p["rel_err"] <= gate.rel_err_max and p["det_match"] >= gate.det_match_min
        assert p["det_match_reverse"] >= gate.det_match_min and p["pearson"] > 0.999
        interval = p["map_delta_interval"]  # a paired bootstrap over the same images brackets the measured delta
        assert interval["resamples"] == 200 and interval["low"] <= p["map_delta"] <= interval["high"]
        if a["precision"] == "fp32":
            assert p["rel_err"] <= 1e-4 and p["det_match"] == p["det_match_reverse"] == 1.0
        else:
            assert abs(p["map_delta"]) <= 0.001
            assert p["rel_err"] > 1e-5  # really FP16 (an accidental FP32 copy would be ~1e-6)
    out = exported["out"]
    assert (out / "report.md").read_text().count("| PASS |") == 6
    import cv2

    png = cv2.imread(str(out / "parity.png"))
    assert png is not None and png.shape[1] > png.shape[0]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp leftovers


@pytest.mark.slow
def test_artifacts_carry_valid_manifests(exported: dict) -> None:
    for a in exported["report"]["artifacts"]:
        path = Path(a["path"])
        manifest = load_manifest(path)
        validate_manifest(manifest)
        check_artifact(manifest, path)  # sidecar sha256 == file bytes
        assert manifest["artifact"]["sha256"] == a["sha256"] == file_sha256(path)
        assert manifest["outputs"]["logits"]["shape"] == [1, CONFIG.num_anchors, CONFIG.num_classes]
        assert manifest["outputs"]["box_regression"]["shape"] == [1, CONFIG.num_anchors, 4]
        assert manifest["source"]["checkpoint_sha256"] == exported["report"]["checkpoint_sha256"]
        assert manifest["class_names"] == list(CLASS_NAMES) and manifest["tools"]["torch"]
        if a["target"] == "tflite":
            assert manifest["input"]["layout"] == "nhwc" and manifest["input"]["shape"] == [1, 160, 160, 3]
        else:
            assert manifest["input"]["layout"] == "nchw" and manifest["input"]["shape"] == [1, 3, 160, 160]
        assert manifest["inference_precision"] == ("f32" if a["target"] == "openvino" else None)


@pytest.mark.slow
def test_onnx_is_checked_static_single_file_with_embedded_manifest(exported: dict) -> None:
    for precision in ("fp32", "fp16"):
        path = Path(_artifact(exported, "onnx", precision)["path"])
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model, full_check=True)
        assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
        assert [i.name for i in model.graph.input] == ["images"]
        for value in list(model.graph.input) + list(model.graph.output):
            assert all(d.HasField("dim_value") and d.dim_value > 0 for d in value.type.tensor_type.shape.dim)
            assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # fp16 keeps float32 I/O
        embedded = json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
        assert embedded["artifact"]["sha256"] is None and embedded["artifact"]["precision"] == precision
        weights = [t for t in model.graph.initializer if t.data_type in (onnx.TensorProto.FLOAT16,
                                                                         onnx.TensorProto.FLOAT)]
        assert any(t.data_type == (onnx.TensorProto.FLOAT16 if precision == "fp16" else onnx.TensorProto.FLOAT)
                   for t in weights)
    assert not list(exported["out"].glob("*.data"))


@pytest.mark.slow
def test_openvino_and_tflite_io(exported: dict) -> None:
    import openvino as ov
    from ai_edge_litert.interpreter import Interpreter

    for precision in ("fp32", "fp16"):
        xml = Path(_artifact(exported, "openvino", precision)["path"])
        model = ov.Core().read_model(str(xml))
        assert json.loads(str(model.get_rt_info(METADATA_KEY).astype(str)))["artifact"]["sha256"] is None
        assert xml.read_text().count(METADATA_KEY) == 1  # no stale ONNX manifest copied into rt_info/framework
        assert file_sha256(xml.with_suffix(".bin")) == load_manifest(xml)["artifact"]["weights_sha256"]
        interpreter = Interpreter(model_path=_artifact(exported, "tflite", precision)["path"])
        (inp,) = interpreter.get_input_details()
        assert list(inp["shape"]) == [1, 160, 160, 3] and inp["dtype"] == np.float32  # NHWC float input
        outputs = interpreter.get_signature_list()["serving_default"]["outputs"]
        assert sorted(outputs) == ["box_regression", "logits"]  # named, never by position


@pytest.mark.slow
def test_onnx_export_is_deterministic(workspace: dict, exported: dict, tmp_path: Path) -> None:
    """Exporting the same checkpoint again (here in another process than the CLI's) gives identical bytes."""
    model, config = load_model(workspace["ckpt"])
    ckpt = str(workspace["ckpt"])
    again = export_onnx(model, config, tmp_path / "efficientdet-lite0-160-fp32.onnx", "fp32", checkpoint=ckpt,
                        checkpoint_sha256=file_sha256(ckpt))
    assert again.sha256 == _artifact(exported, "onnx", "fp32")["sha256"]


@pytest.mark.slow
def test_gate_fails_on_perturbed_weights(workspace: dict, exported: dict, tmp_path: Path) -> None:
    model, config = load_model(workspace["ckpt"])
    proto = onnx.load(_artifact(exported, "onnx", "fp32")["path"])
    conv_weights = [t for t in proto.graph.initializer if len(t.dims) == 4 and t.dims[0] > 16]
    tensor = conv_weights[len(conv_weights) // 2]
    values = onnx.numpy_helper.to_array(tensor) * np.float32(1.01)  # a 1% weight error in one layer
    tensor.CopyFrom(onnx.numpy_helper.from_array(values, tensor.name))
    artifact = write_onnx(proto, config, tmp_path / "perturbed.onnx", "fp32")
    original = Path(_artifact(exported, "onnx", "fp32")["path"])
    exact = write_onnx(onnx.load(str(original)), config, tmp_path / "exact.onnx", "fp32")
    _, entries, _ = run_parity(model, config.contract(), workspace["dataset"],
                               [(exact, gate_for("fp32")), (artifact, gate_for("fp32"))])
    assert entries[0]["gate"]["passed"], entries[0]["gate"]
    entry = entries[1]
    assert not entry["gate"]["passed"]
    assert any("rel_err" in f and "> 0.0001" in f for f in entry["gate"]["failures"]), entry["gate"]


@pytest.mark.slow
def test_cli_exits_nonzero_and_names_the_failed_gate(workspace: dict, tmp_path: Path) -> None:
    out = tmp_path / "strict"
    proc = _run_cli("--target", "onnx", "--precision", "fp16", "--variant", "lite", "--ckpt", str(workspace["ckpt"]),
                    "--data", str(workspace["data"]), "--out", str(out), "--gate", "rel_err_max=1e-7")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "GATE FAILED: onnx fp16" in proc.stderr and "rel_err" in proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["gates"]["fp16"]["rel_err_max"] == 1e-7 and report["gate_overrides"] == {"rel_err_max": 1e-7}
    assert not report["artifacts"][0]["gate"]["passed"]


def test_the_benchmarks_export_takes_a_lite_checkpoint(workspace: dict, tmp_path: Path) -> None:
    """`make bench` on a Lite checkpoint exited 3: its export asked for the default D0 and the checkpoint was refused
    as another model (issue 12). The benchmark's export now asks for the checkpoint's own variant and PHI."""
    from benchmarks.exports import ensure_exports

    report = ensure_exports(tmp_path / "exports", workspace["ckpt"], CONFIG, CONFIG.input_size, str(workspace["data"]),
                            ["onnx"], ["fp32"], qat_epochs=1.0, max_images=4, log=lambda _: None)
    assert report["model"] == "efficientdet-lite0"
    artifacts = [(a["target"], a["precision"], a["gate"]["status"]) for a in report["artifacts"]]
    assert artifacts == [("onnx", "fp32", "pass")]
