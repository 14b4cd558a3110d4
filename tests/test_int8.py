"""int8 end to end on the project's trained default D0 (256 px): calibrate on a handful of training images,
export to all three targets, then check what each file really is and that the accuracy gate bites.

The default model is used (not a random one) because a random detector emits the prior bias everywhere
and every int8 artifact would "match" it; its export is the product's main path anyway.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from calib_data import build_calibration_set, load_calibration_set
from convert.gates import GATES, MIN_REFERENCE_DETECTIONS
from convert.input_quantizer import input_quantizer
from convert.int8_recipe import INPUT_FULL_RANGE
from efficientdet.checkpoint import load_checkpoint
from efficientdet.data.loader import load_dataset
from efficientdet.data.synthetic import resolve_dataset
from efficientdet.model.config import ModelConfig
from quantize.qat import DENSE_WEIGHT_CODES, FAKE_QUANTIZER
from quantize.tflite_learned_weights import qdq_convolutions
from runtime.contract import PreprocessSpec
from runtime.preprocess import pixel_extremes
from tests.conftest import ROOT, bccd_dir, conv_weight_codes_onnx, conv_weight_codes_openvino, tflite_conv_weights

DEFAULT = ROOT / "models" / "default-d0.pt"
BCCD_MODEL = ROOT / "models" / "bccd-d0.pt"
# The module's first test carries the export of every target (int8 + QAT): ~5 min idle, over 15 under load.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3000),
              pytest.mark.skipif(not DEFAULT.is_file(), reason="default model not built")]


@pytest.fixture(scope="module")
def data() -> Path:
    return resolve_dataset(ROOT / "data" / "synthetic")


@pytest.fixture(scope="module")
def calib(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = ModelConfig.from_dict(load_checkpoint(DEFAULT)["config"])
    out = tmp_path_factory.mktemp("calib") / "set"
    build_calibration_set(load_dataset(data, "train"), config.preprocess, out, n=16)
    return out


def _run_convert(*args: str) -> subprocess.CompletedProcess:
    """``python -m convert`` in its own process, as users run it: TensorFlow's converter, onnxruntime,
    NNCF and torch then start clean for each export (a second in-process TFLite conversion after the
    benchmark tests had loaded their libraries crashed the test process with SIGSEGV)."""
    proc = subprocess.run([sys.executable, "-m", "convert", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=3000)
    sys.stderr.write(proc.stderr[-4000:])
    return proc


def _convert(out: Path, data: Path, *args: str) -> subprocess.CompletedProcess:
    return _run_convert("--ckpt", str(DEFAULT), "--data", str(data), "--max-images", "12", "--threads", "1",
                        "--out", str(out), *args)


@pytest.fixture(scope="module")
def exported(calib: Path, data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Post-training int8 for every target, plus a QAT run of a few steps (enough to exercise every QAT
    path; a QAT that short is not expected to pass its gate, so the command's status is not asserted)."""
    out = tmp_path_factory.mktemp("int8")
    code = _convert(out, data, "--target", "all", "--precision", "int8", "--calib", str(calib),
                    "--io-dtype", "uint8", "--qat", "--qat-epochs", "0.03").returncode
    report = json.loads((out / "report.json").read_text())
    return {"code": code, "out": out, "report": report,
            "by_target": {a["target"]: a for a in report["artifacts"] if a["precision"] == "int8"},
            "qat": {a["target"]: a for a in report["artifacts"] if a["precision"] == "int8-qat"}}


def test_second_split_reproduces_the_gate_on_its_own_images_and_scores_another(exported: dict[str, Any]) -> None:
    """benchmarks/second_split scores each int8 file again through the runtime: on the gate's own images it must
    give the gate's ΔmAP (the same bytes, the same post-processing), on another split its own figure; a file that
    sits in two exports is scored once; a target's mean and QAT minus post-training are those of its files, with
    intervals from the same draws."""
    from benchmarks.second_split import TOGETHER, markdown, score_exports

    report = exported["report"]
    gate_split = report["split"]
    doc = score_exports([report, report], [gate_split, "train"], report["num_images"], progress=False)
    int8 = [a for a in report["artifacts"] if a["precision"].startswith("int8")]
    assert doc["files_scored"] == len(int8) == 6 and len(doc["rows"]) == 12
    assert [s["split"] for s in doc["splits"]] == [gate_split, "train"]
    assert [s["num_images"] for s in doc["splits"]] == [report["num_images"]] * 2
    for row in doc["rows"]:
        assert row["by_split"][gate_split]["delta_points"] == pytest.approx(row["gate_split_delta_points"], abs=1e-3)
        for figure in row["by_split"].values():
            assert figure["interval"]["low"] <= figure["interval"]["high"]
    by_file = {(r["target"], r["precision"]): r["by_split"] for r in doc["rows"]}
    weights = [s["num_images"] / sum(s["num_images"] for s in doc["splits"]) for s in doc["splits"]]
    for target in ("onnx", "openvino", "tflite"):
        qat, ptq = by_file[(target, "int8-qat")], by_file[(target, "int8")]
        group = doc["groups"][f"{target} int8-qat"]
        assert group["files"] == 1 and group["mean"]["train"]["points"] == qat["train"]["delta_points"]
        diff = doc["qat_minus_post_training"][target]
        for split in (gate_split, "train"):
            assert diff[split]["points"] == pytest.approx(qat[split]["delta_points"] - ptq[split]["delta_points"],
                                                          abs=2e-3)
        together = sum(w * (qat[s]["delta_points"] - ptq[s]["delta_points"])
                       for w, s in zip(weights, (gate_split, "train"), strict=True))
        assert diff[TOGETHER]["points"] == pytest.approx(together, abs=2e-3)
        iv = diff[TOGETHER]["interval"]
        assert iv["low"] <= iv["high"] and iv["resamples"] == 200
    one = score_exports([report], ["train"], 2, progress=False)  # one split: no figure over the splits
    assert all(TOGETHER not in g["mean"] for g in one["groups"].values()) and len(one["rows"]) == 6
    with pytest.raises(ValueError, match="named twice"):
        score_exports([report], ["train", "train"], 2, progress=False)
    table = markdown(doc, "make x", None, "x.png")
    assert table.count("| int8-qat |") == 3 + 3  # one row per file, one summary row per target
    assert table.count("QAT minus post-training (") == 1 and "| splits together |" in table


def test_post_training_int8_is_close_and_gated_consistently(exported: dict[str, Any], calib: Path) -> None:
    """On 16 calibration and 12 evaluation images the gate's verdict is noisy (a few detections move
    it), so this checks that int8 is a working near-copy of FP32 and that the verdict follows the
    thresholds; the split gate passing on real data is checked on the BCCD D0 (below)."""
    assert set(exported["by_target"]) == {"onnx", "openvino", "tflite"}
    sha = load_calibration_set(calib).manifest["images_sha256"]
    gate = GATES["int8"]
    for a in exported["by_target"].values():
        p = a["parity"]
        assert p["det_match"] >= 0.8 and abs(p["map_delta"]) <= 0.03, (a["target"], p)
        within = (p["det_match"] >= gate.det_match_min and p["det_match_reverse"] >= gate.det_match_min
                  and abs(p["map_delta"]) <= gate.map_delta_max)
        field = p["field"]  # images unlike the calibration set: 12 shifted evaluation images and 4 other scenes
        assert field["num_images"] == 16 and field["by_kind"]["dark"]["num_images"] >= 1
        # beside the gate: the FP32 model against itself under the input quantizer's rounding alone
        own = exported["report"]["fp32_input_rounding"]
        assert p["fp32_input_rounding"] == own["split"] and field["fp32_input_rounding"] == own["field"]
        assert own["split"]["num_images"] == 12 and own["field"]["num_images"] == 16
        # ... and under its activations' 8-bit rounding alone, ranges over the calibration set
        steps = exported["report"]["fp32_activation_rounding"]
        assert p["fp32_activation_rounding"] == steps["split"] and field["fp32_activation_rounding"] == steps["field"]
        assert steps["range_images"] == 16 and steps["tensors"] > 50 and steps["field"]["num_images"] == 16
        field_ok = (field["num_detections_ref"] < MIN_REFERENCE_DETECTIONS
                    or min(field["det_match"], field["det_match_reverse"]) >= gate.field_det_match_min)
        assert a["gate"]["passed"] == (within and field_ok)
        manifest = json.loads(Path(a["manifest"]).read_text())
        q = manifest["artifact"]["quantization"]
        assert q["calibration"]["images_sha256"] == sha and q["calibration"]["count"] == 16
        # ONNX: the biases carry the mean shift of their weights' rounding, as NNCF gives the OpenVINO file
        assert ("bias_correction" in q) == (a["target"] == "onnx")
        if a["target"] == "onnx":
            assert q["bias_correction"].startswith("fast bias correction: ") and " 0 of " not in q["bias_correction"]
        # the input quantizer holds every pixel, not just the calibration images' range
        assert q["input"] == INPUT_FULL_RANGE and p["input_clipped"] == 0 and field["input_clipped"] == 0
        quantizer = input_quantizer(a["path"])
        extremes = pixel_extremes(PreprocessSpec.from_dict(manifest["preprocess"]))
        assert sum(quantizer.clipped(frame) for frame in extremes) == 0
    fp32_size = 15_000_000
    assert all(a["size_bytes"] < 0.6 * fp32_size for a in exported["by_target"].values())
    if any(not a["gate"]["passed"] for a in exported["report"]["artifacts"]):
        assert exported["code"] == 1 and exported["report"]["sensitivity"]["layers"]


@pytest.mark.skipif(not (BCCD_MODEL.is_file() and bccd_dir().is_dir()), reason="needs ../shared/datasets/bccd")
def test_bccd_int8_passes_the_split_gate_and_measures_the_field(tmp_path: Path) -> None:
    """Real data: the BCCD D0 calibrated on 64 training images passes the split part of the int8 gate on all 72
    test images. The field part is measured and decides the verdict, but the BCCD D0 does not hold it yet
    (58-71 % of FP32's field detections in session 11; issue 15, docs/QUANTIZATION.md), so only its consistency is
    asserted here: before session 11 the test expected a pass and was saved by the AMX xfail below."""
    config = ModelConfig.from_dict(load_checkpoint(BCCD_MODEL)["config"])
    calib = tmp_path / "calib"
    build_calibration_set(load_dataset(bccd_dir(), "train"), config.preprocess, calib, n=64)
    code = _run_convert("--ckpt", str(BCCD_MODEL), "--data", str(bccd_dir()), "--split", "test", "--max-images",
                        "0", "--threads", "2", "--out", str(tmp_path / "out"), "--target", "onnx", "--precision",
                        "int8", "--calib", str(calib)).returncode
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    (entry,) = report["artifacts"]
    kernels, emulated = _int8_kernel_disagreement(Path(entry["path"]), config)
    assert emulated < 0.15, f"the quantized model itself is off: QDQ arithmetic rel err {emulated:.3f}"
    split = [f for f in entry["gate"]["failures"] if not f.startswith(("field:", "most sensitive layers"))]
    if split and kernels > 3 * emulated:
        pytest.xfail(f"onnxruntime's int8 kernels on this CPU ({_cpu_flags()}) disagree with the artifact's own "
                     f"QDQ arithmetic (logits rel err {kernels:.3f} with them, {emulated:.3f} without): the gate "
                     "rightly failed the artifact here; docs/INT8-CPU-CLASSES.md")
    assert not split, split
    assert entry["parity"]["num_images"] == 72 and entry["parity"]["det_match"] >= 0.9
    field = entry["parity"]["field"]
    assert field["num_images"] == 60 and field["num_detections_ref"] >= MIN_REFERENCE_DETECTIONS
    field_ok = min(field["det_match"], field["det_match_reverse"]) >= GATES["int8"].field_det_match_min
    assert entry["gate"]["passed"] == field_ok and code == (0 if field_ok else 1)


def _cpu_flags() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return " ".join(f for f in ("avx2", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags) or "unknown"


def _int8_kernel_disagreement(path: Path, config: ModelConfig) -> tuple[float, float]:
    """Logits rel err against FP32 PyTorch on 3 test images: with onnxruntime's int8 kernels, and with the same
    QDQ model computed in float (``session.disable_quant_qdq``: the artifact's own arithmetic, no int8 kernel)."""
    import onnxruntime as ort
    import torch

    from efficientdet.checkpoint import load_model
    from runtime.preprocess import preprocess, read_image, to_layout

    model, _ = load_model(BCCD_MODEL)
    records = load_dataset(bccd_dir(), "test", verify_images=False).records[:3]
    worst = [0.0, 0.0]
    for k, config_entries in enumerate(({}, {"session.disable_quant_qdq": "1"})):
        opts = ort.SessionOptions()
        for key, value in config_entries.items():
            opts.add_session_config_entry(key, value)
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        for rec in records:
            x = to_layout(preprocess(read_image(rec.path), config.preprocess)[0], "nchw")
            with torch.no_grad():
                ref = model(torch.from_numpy(x))[0][0].numpy()
            out = session.run(None, {session.get_inputs()[0].name: x})[names.index("logits")][0]
            worst[k] = max(worst[k], float(np.abs(out - ref).max() / np.abs(ref).max()))
    return worst[0], worst[1]


def test_qat_artifacts_for_every_target(exported: dict[str, Any]) -> None:
    from convert.edgetpu import check_tflite

    qat = exported["qat"]
    assert set(qat) == {"onnx", "openvino", "tflite"}
    for target, a in qat.items():
        q = json.loads(Path(a["manifest"]).read_text())["artifact"]["quantization"]
        assert q["qat"]["history"] and q["qat"]["history"][0]["steps"] >= 2
        assert q["ranges"] == "learned by QAT" if target != "tflite" else q["ranges"].startswith("learned by QAT for")
        assert q["qat"]["objective"] == "distill" and q["qat"]["fake_quantizer"] == FAKE_QUANTIZER
        assert a["parity"]["det_match"] > 0.5  # a working detector, if not yet a gated one
    graph = onnx.load(qat["onnx"]["path"]).graph
    ops = Counter(n.op_type for n in graph.node)
    assert ops["DequantizeLinear"] > 100 and ops["QuantizeLinear"] > 50
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert len(convs) > 200
    # every convolution's output is quantized, so onnxruntime can run each one as an int8 QLinearConv
    assert all(consumers.get(c.output[0]) == ["QuantizeLinear"] for c in convs)
    assert not [op for op in ops if op.startswith("Random")]  # no traced stochastic depth
    # reproducible bytes: no exporter stack traces (they named this checkout's paths), no wall time in the manifest
    assert not [n.name for n in graph.node if n.metadata_props]
    assert all("wall_time_s" not in json.loads(Path(a["manifest"]).read_text())["artifact"]["quantization"]["qat"]
               for a in qat.values())
    assert check_tflite(qat["tflite"]["path"]).float_tensors == []
    assert _int8_conv_share(qat["openvino"]["path"]) > 0.8
    # no x86 CPU saturates them: dense convolutions' weights within +-63 in both files, depthwise ones 8-bit
    onnx_codes = conv_weight_codes_onnx(onnx.load(qat["onnx"]["path"]))
    ov_codes = conv_weight_codes_openvino(qat["openvino"]["path"])
    for codes in (onnx_codes, ov_codes):
        assert max(c for dense, c in codes if dense) <= DENSE_WEIGHT_CODES < max(c for dense, c in codes if not dense)
    assert len(onnx_codes) == len(ov_codes) > 200
    for a in (qat["onnx"], qat["openvino"]):
        assert "7-bit" in json.loads(Path(a["manifest"]).read_text())["artifact"]["quantization"]["scheme"]["weights"]
    # TFLite runs the ranges QAT learned: most activation scales of the QAT ONNX are scales of the TFLite file
    # (recalibrated, as before, it shared none of the BCCD D0's 357). TF's quantizer gives the rest other scales:
    # on the BCCD D0 (305 of 357 kept) they feed convolutions, the head's transposes and concatenations.
    carried = json.loads(Path(qat["tflite"]["manifest"]).read_text())["artifact"]["quantization"]["ranges_carried"]
    assert carried["used"] >= 0.95 * carried["learned"] and carried["worst_rtol"] < 1e-3
    learned = _activation_scales_onnx(graph)
    tflite = _scales_tflite(qat["tflite"]["path"])
    found = [s for s in learned if np.isclose(tflite, s, rtol=1e-5, atol=0).any()]
    assert len(learned) > 300 and len(found) >= 0.8 * len(learned)
    # ... and QAT's weights: every convolution holds the QAT ONNX's int8 codes, not the converter's 8-bit rounding of
    # them (the D0's five BiFPN input projections with the fusion weight the converter folded into their scales)
    weights = json.loads(Path(qat["tflite"]["manifest"]).read_text())["artifact"]["quantization"]["weights_carried"]
    assert weights["carried"] == weights["convolutions"] == weights["learned"] > 200
    qat_codes = [c.codes for c in qdq_convolutions(onnx.load(qat["onnx"]["path"]))]
    tflite_codes = [codes for codes, _, _ in tflite_conv_weights(Path(qat["tflite"]["path"]).read_bytes())]
    assert len(tflite_codes) == len(qat_codes)
    assert all(any(np.array_equal(t, q) for q in qat_codes if q.shape == t.shape) for t in tflite_codes)


def _activation_scales_onnx(graph: onnx.GraphProto) -> list[float]:
    """The scale of every QuantizeLinear of an activation (input not stored in the file) except the model input."""
    from onnx import numpy_helper

    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return [float(constants[n.input[1]].reshape(-1)[0]) for n in graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in constants and n.input[0] != graph.input[0].name]


def _scales_tflite(path: str) -> np.ndarray:
    """Every per-tensor scale in a TFLite file."""
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=path).get_tensor_details()
    return np.array([d["quantization_parameters"]["scales"][0] for d in details
                     if len(d["quantization_parameters"]["scales"]) == 1])


def test_tflite_is_fully_integer_and_edgetpu_ready(exported: dict[str, Any]) -> None:
    from convert.edgetpu import check_tflite

    report = check_tflite(exported["by_target"]["tflite"]["path"])
    assert report.float_tensors == [], report.float_tensors[:5]
    assert set(report.io.values()) == {"uint8"}
    assert "DEQUANTIZE" not in report.op_counts
    assert report.op_counts["CONV_2D"] > 50
    assert report.ready, report.problems
    assert report.ops_before_first_cpu_op == report.total_ops and report.first_cpu_op is None


def test_onnx_has_qdq_around_every_conv(exported: dict[str, Any]) -> None:
    model = onnx.load(exported["by_target"]["onnx"]["path"])
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["QuantizeLinear"] > 50 and ops["DequantizeLinear"] > ops["QuantizeLinear"]
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert all(producers.get(n.input[0]) == "DequantizeLinear" and producers.get(n.input[1]) == "DequantizeLinear"
               for n in convs)


def _runtime_convs(path: str) -> list[dict[str, str]]:
    """The convolutions of the model OpenVINO's CPU plugin compiled: precision and original layer names."""
    import openvino as ov

    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    convs = [op.get_rt_info() for op in compiled.get_runtime_model().get_ops()]
    convs = [{"precision": rt["runtimePrecision"].astype(str), "names": rt["originalLayersNames"].astype(str)}
             for rt in convs if rt["layerType"].astype(str) == "Convolution"]
    assert convs, "no convolutions in the runtime model"
    return convs


def _conv_precisions(path: str) -> dict[str, str]:
    """ONNX Conv name -> the precision OpenVINO executes that convolution in (u8, i8, f32)."""
    return {name.removesuffix("/WithoutBiases"): conv["precision"] for conv in _runtime_convs(path)
            for name in conv["names"].split(",") if name.endswith("/WithoutBiases")}


def _int8_conv_share(path: str) -> float:
    """Share of the compiled model's convolutions that OpenVINO's CPU plugin executes in u8/i8."""
    precisions = Counter(conv["precision"] for conv in _runtime_convs(path))
    return (precisions.get("u8", 0) + precisions.get("i8", 0)) / sum(precisions.values())


def test_openvino_runs_convolutions_in_int8(exported: dict[str, Any]) -> None:
    # NNCF leaves the squeeze-excitation 1x1 convs (on pooled vectors) in float: 32 of 214 for D0
    assert _int8_conv_share(exported["by_target"]["openvino"]["path"]) > 0.8


def test_tflite_percentile_ranges_only_narrow_the_converters_minmax(exported: dict[str, Any], calib: Path,
                                                                     data: Path, tmp_path: Path) -> None:
    """The default TFLite method (percentile) starts from the converter's own min-max calibration and
    narrows activation ranges; no range may widen, and the model stays fully integer."""
    from ai_edge_litert.interpreter import Interpreter

    from convert.edgetpu import check_tflite

    _convert(tmp_path, data, "--target", "tflite", "--precision", "int8", "--calib", str(calib), "--io-dtype",
             "uint8", "--calib-method", "tflite=minmax", "--no-sensitivity")
    minmax = json.loads((tmp_path / "report.json").read_text())["artifacts"][0]
    percentile = exported["by_target"]["tflite"]
    methods = [json.loads(Path(a["manifest"]).read_text())["artifact"]["quantization"]["method"]
               for a in (minmax, percentile)]
    assert methods == ["minmax", "percentile"]

    def scales(path: str) -> dict[str, float]:
        return {t["name"]: float(t["quantization_parameters"]["scales"][0])
                for t in Interpreter(model_path=path).get_tensor_details()
                if len(t["quantization_parameters"]["scales"]) == 1}

    a, b = scales(percentile["path"]), scales(minmax["path"])
    assert a.keys() == b.keys()
    ratios = np.array([a[k] / b[k] for k in a])
    assert (ratios <= 1 + 1e-6).all(), sorted(k for k in a if a[k] > b[k] * (1 + 1e-6))[:5]
    assert (ratios < 1 - 1e-6).mean() > 0.3
    assert check_tflite(percentile["path"]).float_tensors == []


def test_runtime_detects_with_int8_tflite(exported: dict[str, Any], data: Path) -> None:
    from runtime.detector import Detector

    det = Detector(exported["by_target"]["tflite"]["path"], threads=1)
    assert det.input_spec.dtype == "uint8" and det.input_spec.quantization.scale > 0
    val = load_dataset(data, "val")
    found = sum(len(det.detect_file(r.path)) for r in val.records[:4])
    assert found > 0


def test_gate_fails_on_constant_image_calibration(calib: Path, data: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    manifest = json.loads((calib / "manifest.json").read_text())
    np.save(broken / "images.npy", np.zeros((8, *np.load(calib / "images.npy", mmap_mode="r").shape[1:]), np.float32))
    from runtime.fileio import file_sha256

    manifest.update(count=8, images=manifest["images"][:8], images_sha256=file_sha256(broken / "images.npy"))
    (broken / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "out"
    proc = _convert(out, data, "--target", "onnx,openvino", "--precision", "int8", "--calib", str(broken),
                    "--calib-method", "onnx=minmax", "--float-layers", "2")
    err = proc.stderr
    assert proc.returncode == 1
    assert "GATE FAILED: onnx int8" in err and "most sensitive layers:" in err
    report = json.loads((out / "report.json").read_text())
    # the field figures collapse with the rest, and the gate names them
    assert any(f.startswith("field: ") for a in report["artifacts"] for f in a["gate"]["failures"])
    layers = report["sensitivity"]["layers"]
    assert layers and layers[0]["worst_snr_db"] <= layers[-1]["worst_snr_db"]
    # the float fallback kept the two most sensitive layers out of int8 on both targets, and the manifests say which
    entries = {a["target"]: a for a in report["artifacts"]}
    for entry in entries.values():
        kept = json.loads(Path(entry["manifest"]).read_text())["artifact"]["quantization"]["float_layers"]
        assert kept == [layers[0]["node"], layers[1]["node"]]
    model = onnx.load(entries["onnx"]["path"])
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    for node in (n for n in model.graph.node if n.name in kept):
        assert producers.get(node.input[1]) != "DequantizeLinear"  # float weight
    precisions = _conv_precisions(entries["openvino"]["path"])
    assert all(precisions[name] == "f32" for name in kept), {name: precisions.get(name) for name in kept}
    assert Counter(precisions.values())["u8"] > 100  # and the rest is still int8


def test_calibration_on_evaluation_images_is_refused(data: Path, tmp_path: Path) -> None:
    config = ModelConfig.from_dict(load_checkpoint(DEFAULT)["config"])
    val_as_train = load_dataset(data, "val")
    val_as_train.split = "train"  # a set built from eval images under another split name
    build_calibration_set(val_as_train, config.preprocess, tmp_path / "leak", n=4)
    proc = _convert(tmp_path / "out", data, "--target", "onnx", "--precision", "int8", "--calib",
                    str(tmp_path / "leak"))
    assert proc.returncode == 2
    assert "contains" in proc.stderr
    assert not (tmp_path / "out").exists()


_AVX2_CHILD = """
import json, sys
import numpy as np
from runtime.backends.openvino_privacy import import_openvino
from runtime.detector import Detector
from runtime.preprocess import read_image

path, out, *images = sys.argv[1:]
ov = import_openvino()
runtime = ov.Core().compile_model(path, "CPU").get_runtime_model()
kernels = sorted({op.get_rt_info()["primitiveType"].astype(str) for op in runtime.get_ops()
                  if op.get_rt_info()["layerType"].astype(str) == "Convolution"})
det = Detector(path, threads=1)
logits = [det.infer_raw(det.preprocess_image(read_image(p))[0])[0] for p in images]
np.save(out, np.stack(logits))
print(json.dumps(kernels))
"""


def _openvino_logits(path: str, images: list[str], out: Path, isa: str | None) -> tuple[np.ndarray, list[str]]:
    """The int8 IR's logits on ``images`` in a child process, its int8 kernels capped at ``isa`` (OpenVINO reads
    OV_CPU_MAX_ISA / ONEDNN_MAX_CPU_ISA once per process; docs/INT8-CPU-CLASSES.md)."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("OV_CPU_MAX_ISA", "ONEDNN_MAX_CPU_ISA")}
    if isa:
        env.update(OV_CPU_MAX_ISA=isa, ONEDNN_MAX_CPU_ISA=isa)
    proc = subprocess.run([sys.executable, "-c", _AVX2_CHILD, path, str(out), *images], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.load(out), json.loads(proc.stdout.strip().splitlines()[-1])


def test_openvino_int8_computes_the_same_on_avx2_kernels(exported: dict[str, Any], data: Path, tmp_path: Path) -> None:
    """On x86 CPUs without VNNI the int8 kernels add pairs of u8 x s8 products in a saturating int16; the BCCD D0's
    8-bit IR lost 3.3 points on such a CPU. With 7-bit weights the AVX2 path computes what this CPU computes, up to
    rounding: logits relative L2 between the native and the AVX2 kernels, default D0, 3 images (docs/
    INT8-CPU-CLASSES.md): 7-bit 1.4 % on an AMD EPYC (AVX-512 VNNI), under 1 % on an Intel Xeon (AMX); NNCF's
    default 8-bit weights 8.8 % here and 3.9 % there (session 9's IR). 3 % separates the two on both. The QAT IR
    too: its weights were 8-bit until session 24."""
    images = [r.path for r in load_dataset(data, "val").records[:3]]
    for kind, artifact in (("int8", exported["by_target"]["openvino"]), ("int8-qat", exported["qat"]["openvino"])):
        native, _ = _openvino_logits(artifact["path"], images, tmp_path / f"{kind}-native.npy", None)
        capped, kernels = _openvino_logits(artifact["path"], images, tmp_path / f"{kind}-avx2.npy", "AVX2")
        assert any("avx2" in k and "I8" in k for k in kernels), (kind, kernels)  # the non-VNNI int8 path really ran
        rel = float(np.linalg.norm(capped - native) / np.linalg.norm(native))
        assert rel < 0.03, (kind, rel)
