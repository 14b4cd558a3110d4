"""The TFLite for Android's detector APIs: in-graph post-processing, pixels in, MediaPipe metadata, gated, and
loaded by MediaPipe's ObjectDetector (the engine Android runs).

Fast tests check the pieces on their own (the threshold cut the op's detections rely on, the manifest form);
the slow ones export the trained default D0 (the product's main path) and run MediaPipe on it.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from convert.targets.android import SCORE_FLOOR
from runtime.contract import PostprocessSpec
from runtime.manifest import ANDROID_OUTPUTS, ManifestError, validate_manifest
from runtime.postprocess import EVAL_POSTPROCESS, at_threshold, from_detection_op, postprocess
from tests.conftest import ROOT

DEFAULT = ROOT / "models" / "default-d0.pt"


def test_nms_at_a_low_threshold_then_cut_equals_nms_at_the_high_one() -> None:
    """The Android graph runs NMS at the evaluation threshold (0.05) and apps cut at 0.3: exact only if greedy
    NMS commutes with the cut. Checked on dense random candidates with many overlaps across 3 classes."""
    rng = np.random.default_rng(0)
    anchors = np.concatenate([rng.uniform(0, 200, (400, 2)), np.zeros((400, 2))], axis=1)
    anchors[:, 2:] = anchors[:, :2] + rng.uniform(10, 60, (400, 2))
    for seed in range(5):
        r = np.random.default_rng(seed)
        logits = r.normal(-1.0, 1.5, (400, 3)).astype(np.float32)
        deltas = r.normal(0, 0.2, (400, 4)).astype(np.float32)
        high = EVAL_POSTPROCESS.replace(score_threshold=0.3)
        direct = postprocess(logits, deltas, anchors, high)
        cut = at_threshold(postprocess(logits, deltas, anchors, EVAL_POSTPROCESS), high)
        assert len(direct) > 20
        np.testing.assert_array_equal(direct.class_ids, cut.class_ids)
        np.testing.assert_array_equal(direct.boxes, cut.boxes)


def test_detection_op_outputs_become_input_pixel_detections() -> None:
    boxes = np.array([[[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 0.25, 0.5], [0.3, 0.3, 0.4, 0.4]]], np.float32)
    classes = np.array([[2.0, 0.0, 1.0]], np.float32)
    scores = np.array([[0.9, 0.2, 0.5]], np.float32)
    dets = from_detection_op(boxes, classes, scores, np.array([2.0], np.float32), 100,
                             PostprocessSpec(score_threshold=0.3, max_detections=10))
    # count 2: the third row is padding whatever its score; the second is below the threshold
    assert len(dets) == 1
    np.testing.assert_allclose(dets.boxes[0], [20, 10, 60, 50])  # (ymin, xmin, ymax, xmax) -> xyxy pixels
    assert dets.class_ids.tolist() == [2]


def _android_manifest() -> dict[str, Any]:
    k = 100
    return {
        "format": "efficientdet-manifest/1",
        "model": {"num_classes": 2, "input_size": 128, "class_names": ["a", "b"]},
        "artifact": {"target": "tflite", "precision": "fp32", "file": "m-android.tflite", "sha256": None},
        "input": {"name": "images", "layout": "nhwc", "shape": [1, 128, 128, 3], "dtype": "float32",
                  "quantization": None},
        "outputs": {"detection_boxes": {"name": "detection_boxes", "shape": [1, k, 4], "dtype": "float32"},
                    "detection_classes": {"name": "detection_classes", "shape": [1, k], "dtype": "float32"},
                    "detection_scores": {"name": "detection_scores", "shape": [1, k], "dtype": "float32"},
                    "num_detections": {"name": "num_detections", "shape": [1], "dtype": "float32"}},
        "preprocess": {"input_size": 128, "resize": "letterbox", "color_order": "rgb", "mean": [0, 0, 0],
                       "std": [1, 1, 1], "interpolation": "linear", "pad_color": [124, 116, 104]},
        "anchors": {"input_size": 128, "min_level": 3, "max_level": 7, "num_scales": 3, "anchor_scale": 4.0,
                    "aspect_ratios": [[1.0, 1.0], [1.4, 0.7], [0.7, 1.4]]},
        "box_coding": {"type": "delta_xywh"},
        "postprocess": {"score_threshold": 0.3, "iou_threshold": 0.5, "max_detections": 100, "pre_nms_top_k": 5000,
                        "in_graph": {"op": "TFLite_Detection_PostProcess", "score_threshold": 0.05,
                                     "max_detections": k, "nms": "per-class"}},
        "class_names": ["a", "b"], "inference_precision": None, "source": {}, "tools": {},
    }


def test_in_graph_manifest_is_validated_on_its_own_terms() -> None:
    good = _android_manifest()
    validate_manifest(good)
    for change, message in (
            (lambda m: m["artifact"].update(target="onnx"), "artifact.target"),
            (lambda m: m["outputs"]["detection_boxes"].update(shape=[1, 50, 4]), "detection_boxes.shape"),
            (lambda m: m["postprocess"]["in_graph"].update(score_threshold=0.5), "in_graph.score_threshold"),
            (lambda m: m["outputs"].pop("num_detections"), "num_detections")):
        bad = copy.deepcopy(good)
        change(bad)
        with pytest.raises(ManifestError, match=message.replace(".", r"\.")):
            validate_manifest(bad)


def test_android_needs_the_tflite_target() -> None:
    proc = subprocess.run([sys.executable, "-m", "convert", "--target", "onnx", "--android"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "--android" in proc.stderr and "--target tflite" in proc.stderr


def test_android_check_refuses_a_file_without_the_detection_op(tflite_models: dict[str, Path], tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The file is refused before any data is read: the dataset named here does not exist."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.android_engines", str(tflite_models["float"]),
                           "--max-images", "2", "--data", str(tmp_path / "no-such-dataset"),
                           "--out", str(tmp_path / "r")], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "not an Android TFLite" in proc.stderr and "ANDROID=1" in proc.stderr
    assert not (tmp_path / "r.json").exists()
    # the runtime's MediaPipe engine refuses it the same way, before MediaPipe is asked
    from runtime.cli import main as runtime_main

    capsys.readouterr()
    assert runtime_main(["bench", str(tflite_models["float"]), "--engine", "mediapipe", "--runs", "1"]) == 2
    assert "not an Android TFLite" in capsys.readouterr().err


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """fp32 and int8 of the default D0 with the Android flavour, gated on 24 images (16 calibration images), with
    the default thread count: ai-edge-litert's detection op lost detections with two threads (the runtime uses one)."""
    from calib_data import build_calibration_set
    from efficientdet.checkpoint import load_checkpoint
    from efficientdet.data.loader import load_dataset
    from efficientdet.data.synthetic import resolve_dataset
    from efficientdet.model.config import ModelConfig

    data = resolve_dataset(ROOT / "data" / "synthetic")
    config = ModelConfig.from_dict(load_checkpoint(DEFAULT)["config"])
    calib = tmp_path_factory.mktemp("calib") / "set"
    build_calibration_set(load_dataset(data, "train"), config.preprocess, calib, n=16)
    out = tmp_path_factory.mktemp("android")
    proc = subprocess.run([sys.executable, "-m", "convert", "--ckpt", str(DEFAULT), "--data", str(data),
                           "--target", "tflite", "--precision", "fp32,int8", "--android", "--calib", str(calib),
                           "--max-images", "24", "--no-sensitivity", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=3000)
    sys.stderr.write(proc.stderr[-4000:])
    report = json.loads((out / "report.json").read_text())
    android = {a["precision"]: a for a in report["artifacts"] if a.get("flavour") == "android"}
    return {"code": proc.returncode, "out": out, "android": android, "data": data}


@pytest.mark.slow
@pytest.mark.timeout(3000)
@pytest.mark.skipif(not DEFAULT.is_file(), reason="default model not built")
def test_android_tflite_is_gated_and_takes_pixels(exported: dict[str, Any]) -> None:
    from runtime.detector import Detector

    android = exported["android"]
    assert sorted(android) == ["fp32", "int8"]
    for precision, entry in android.items():
        assert Path(entry["path"]).name.endswith(f"-{precision}-android.tflite")
        manifest = json.loads(Path(entry["manifest"]).read_text())
        assert manifest["gate"]["status"] == entry["gate"]["status"]
        assert list(manifest["outputs"]) == list(ANDROID_OUTPUTS)
        assert manifest["preprocess"]["mean"] == [0.0, 0.0, 0.0] and manifest["preprocess"]["std"] == [1.0, 1.0, 1.0]
        parity = entry["parity"]
        assert parity["outputs"] == {} and parity["num_detections_ref"] >= 10
        assert entry["gate"]["status"] in ("pass", "fail")  # measured, on detections and mAP
        with zipfile.ZipFile(entry["path"]) as metadata:  # the labels ride in a ZIP appended to the flatbuffer
            assert [(i.filename, i.date_time) for i in metadata.infolist()] == [("labels.txt", (1980, 1, 1, 0, 0, 0))]
        detector = Detector(entry["path"])
        with pytest.raises(ValueError, match="no raw outputs"):
            detector.infer_raw(np.zeros(detector.input_shape, np.float32))
    int8_input = json.loads(Path(android["int8"]["manifest"]).read_text())["input"]
    # uint8 pixels with scale 1 and zero point 0: every pixel value is representable, nothing clips
    assert int8_input["dtype"] == "uint8"
    assert int8_input["quantization"] == {"scale": 1.0, "zero_point": 0}
    # the detection op reproduces the runtime's decoding and per-class NMS: fp32 gives the FP32 model's detections
    fp32 = android["fp32"]
    assert fp32["gate"]["status"] == "pass", fp32["gate"]["failures"]
    assert fp32["parity"]["det_match"] == 1.0 and fp32["parity"]["det_match_reverse"] == 1.0
    # the FP32 model's own readings under int8 rounding go with the files that round, not with a float one
    assert not {"fp32_input_rounding", "fp32_activation_rounding"} & set(fp32["parity"])
    assert "det_match" in android["int8"]["parity"]["fp32_activation_rounding"]
    # int8 (16 calibration images here) stays near the model; the committed figures use 200 (docs/ANDROID.md)
    assert abs(android["int8"]["parity"]["map_delta"]) < 0.03
    # the logits' int8 grid starts at the score floor, not at the calibrated minimum (about -19 on this model,
    # which stepped the scores by 0.02 near the 0.3 threshold and failed the committed int8 file's gate)
    floor = android["int8"]["quantization"]["score_floor_logit"]
    assert floor == pytest.approx(SCORE_FLOOR, abs=1e-4)
    lo, hi, scale = _sigmoid_input_range(Path(android["int8"]["path"]))
    assert floor - scale <= lo <= floor + scale and hi > 0
    assert scale < (hi - floor) / 250


def _sigmoid_input_range(path: Path) -> tuple[float, float, float]:
    """The dequantized (lowest, highest, step) of the int8 tensor the file's sigmoid reads."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    ops = interpreter._get_ops_details()
    (detection_op,) = [o for o in ops if o["op_name"] == "TFLite_Detection_PostProcess"]
    into_op = set(detection_op["inputs"])  # directly, or through the DEQUANTIZE to its float inputs
    into_op |= {int(o["inputs"][0]) for o in ops if o["op_name"] == "DEQUANTIZE" and set(o["outputs"]) & into_op}
    (op,) = [o for o in ops if o["op_name"] == "LOGISTIC" and set(o["outputs"]) & into_op]
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    scale, zero = details[int(op["inputs"][0])]["quantization"]
    return scale * (-128 - zero), scale * (127 - zero), scale


@pytest.fixture(scope="module")
def compared(exported: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each Android file through the engines (the Task Library where its environment is built) on 24 images."""
    from benchmarks.android_engines import compare, task_library_python
    from efficientdet.data.loader import load_dataset
    from runtime.mediapipe_engine import MediapipeDetector

    images = [r.path for r in load_dataset(exported["data"], "val").records[:24]]
    results = {}
    for precision, entry in exported["android"].items():
        engine = MediapipeDetector(entry["path"])  # loads: metadata, custom op, output order
        engine.close()
        results[precision] = compare(entry["path"], images, task_library_python=task_library_python())
    return results


def _assert_engine_agrees(results: dict[str, dict[str, Any]], engine: str) -> None:
    for precision, result in results.items():
        for mode in ("letterboxed square", "letterboxed non-square"):
            m = result["engines"][engine]["modes"][mode]
            assert m["runtime_detections"] > 0, (precision, mode)
            # same tensor in: the same detections with the same scores (int8: 1 of 375 differed on 120 images,
            # the int8 kernels of two TFLite builds)
            assert m["engine_in_runtime"] >= 0.95 and m["runtime_in_engine"] >= 0.95, (engine, precision, mode, m)
            assert m["score_abs_diff_mean"] < 1e-3, (engine, precision, mode, m)


@pytest.mark.slow
@pytest.mark.timeout(3000)
@pytest.mark.skipif(not DEFAULT.is_file(), reason="default model not built")
def test_mediapipe_object_detector_loads_it_and_agrees_with_the_runtime(compared: dict[str, Any]) -> None:
    _assert_engine_agrees(compared, "mediapipe")


@pytest.mark.slow
@pytest.mark.timeout(3000)
@pytest.mark.skipif(not DEFAULT.is_file(), reason="default model not built")
@pytest.mark.skipif(not any((ROOT / ".venv-task-library").glob(".installed-*")),
                    reason="the Task Library's environment is not built (make task-library-env)")
def test_task_library_object_detector_loads_it_and_agrees_with_the_runtime(compared: dict[str, Any]) -> None:
    _assert_engine_agrees(compared, "task_library")
    assert all(r["engines"]["task_library"]["version"] == "0.4.4" for r in compared.values())


@pytest.mark.slow
@pytest.mark.timeout(3000)
@pytest.mark.skipif(not DEFAULT.is_file(), reason="default model not built")
def test_runtime_bench_times_the_file_in_mediapipe(exported: dict[str, Any], tmp_path: Path) -> None:
    """`python -m runtime bench --engine mediapipe`: MediaPipe's latency and footprint on a device, as a row of the
    results format beside the runtime's own."""
    path = exported["android"]["int8"]["path"]
    cmd = [sys.executable, "-m", "runtime", "bench", path, "--runs", "3", "--warmup", "1", "--json"]
    rows = {}
    for engine in ("runtime", "mediapipe"):
        proc = subprocess.run([*cmd, "--engine", engine, "--out", str(tmp_path / "r.json")], cwd=ROOT,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        rows[engine] = json.loads(proc.stdout.strip().splitlines()[-1])
    mp = rows["mediapipe"]
    assert mp["engine"] == "mediapipe" and mp["name"] == "tflite-int8-android-mediapipe" and mp["rss_mb"] > 0
    assert mp["backend"].startswith("mediapipe 0.10.21") and mp["total_ms"] > 0 and mp["threads"] == 0
    assert rows["runtime"]["engine"] == "runtime" and rows["runtime"]["name"] == "tflite-int8-android"
    assert {r["name"] for r in json.loads((tmp_path / "r.json").read_text())["rows"]} == {
        "tflite-int8-android", "tflite-int8-android-mediapipe"}
    refused = subprocess.run([*cmd, "--engine", "mediapipe", "--threads", "2"], cwd=ROOT, capture_output=True,
                             text=True, timeout=600)
    assert refused.returncode == 2 and "no thread count" in refused.stderr
