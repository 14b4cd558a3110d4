"""``make bench``, ``make report`` and the embedding example, run for real on the project's default D0
exported at 128 px (ONNX and OpenVINO, fp32 and int8) on a few generated images."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import cv2
import pytest

from benchmarks import html_report
from benchmarks.check_html import RenderError, check_page, find_chromium
from calib_data import build_calibration_set
from efficientdet.checkpoint import load_checkpoint
from efficientdet.data.loader import load_dataset
from efficientdet.data.synthetic import generate_synthetic
from efficientdet.model.config import ModelConfig
from examples.make_video import make_video
from runtime.cli import main as runtime_main
from tests.conftest import ROOT

DEFAULT = ROOT / "models" / "default-d0.pt"
SIZE = 128
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not DEFAULT.is_file(), reason="default model not built")]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("bench")
    data = generate_synthetic(root / "data", num_train=8, num_val=6, image_size=160)
    spec = ModelConfig.from_dict(load_checkpoint(DEFAULT)["config"]).replace(input_size=SIZE).preprocess
    calib = build_calibration_set(load_dataset(data, "train"), spec, root / "calib", n=8)
    argv = ["--ckpt", str(DEFAULT), "--input-size", str(SIZE), "--data", str(data), "--quick", "--targets",
            "onnx,openvino", "--runs", "4", "--calib", str(calib.path), "--exports", str(root / "exports"),
            "--out", str(root / "out"), "--max-images", "6"]
    # Its own process, as `make bench` runs it (the conversions load TensorFlow, NNCF and torch natively).
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench", *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((root / "out" / "results.json").read_text())
    return {"root": root, "argv": argv, "doc": doc, "data": data}


def test_rows_baselines_and_fields(run: dict[str, Any]) -> None:
    doc = run["doc"]
    assert doc["schema"] == "efficientdet-bench/1" and doc["input_size"] == SIZE and doc["gmacs"] > 0
    rows = {r["name"]: r for r in doc["rows"]}
    assert set(rows) == {"torch-fp32", "onnxruntime-fp32", "onnx-fp32", "onnx-int8", "openvino-fp32",
                         "openvino-int8"}
    assert rows["torch-fp32"]["baseline"] and rows["onnxruntime-fp32"]["baseline"]
    assert not rows["onnx-int8"]["baseline"]
    for r in rows.values():
        assert r["threads"] == 1 and r["runs"] == 4
        for key in ("pre_ms", "infer_ms", "post_ms", "total_ms", "p90_ms", "fps", "rss_mb", "load_ms"):
            assert r[key] > 0, (r["name"], key)
        assert r["total_ms"] >= r["infer_ms"] and r["p90_ms"] >= r["total_ms"] * 0.999
        assert r["size_bytes"] > 0 and 0 <= r["map"] <= 1
        assert 0 < r["peak_fraction"] < 5 and r["achieved_gmacs"] > 0
    # Peak memory is each fresh process's own (torch alone costs more than a whole runtime process).
    assert rows["torch-fp32"]["rss_mb"] > rows["onnx-int8"]["rss_mb"] + 50
    assert len({round(r["rss_mb"]) for r in rows.values()}) > 2
    # The artifacts' accuracy is the parity report's; the int8 sizes follow from the files.
    report = json.loads(Path(doc["export_report"]).read_text())
    parity = {f"{a['target']}-{a['precision']}": a for a in report["artifacts"]}
    assert rows["onnx-int8"]["map"] == parity["onnx-int8"]["parity"]["map"]
    assert rows["torch-fp32"]["map"] == report["map_ref"]
    assert rows["onnx-int8"]["size_bytes"] < 0.5 * rows["onnx-fp32"]["size_bytes"]
    goals = {g["goal"]: g for g in doc["goals"]}
    speed = goals["best int8 end to end vs torch-fp32"]
    passing = [r for r in (rows["onnx-int8"], rows["openvino-int8"]) if r["gate_passed"]]
    if passing:
        best = min(passing, key=lambda r: r["total_ms"])
        assert speed["value"] == pytest.approx(rows["torch-fp32"]["total_ms"] / best["total_ms"])
    else:
        assert speed["value"] == 0 and not speed["passed"] and "no int8 artifact passed" in speed["detail"]
    size = goals["onnx-int8 size vs onnx-fp32"]
    assert size["value"] == pytest.approx(rows["onnx-int8"]["size_bytes"] / rows["onnx-fp32"]["size_bytes"])
    assert size["passed"] == (size["value"] <= 0.30)
    peaks = doc["roofline"]["peaks"]["1"]
    assert peaks["int8_gmacs"] > 0 and peaks["fp32_gmacs"] > 0


def test_markdown_and_plots(run: dict[str, Any]) -> None:
    out = run["root"] / "out"
    md = (out / "results.md").read_text()
    assert "| onnx-int8 |" in md and "torch-fp32" in md and "## Goals" in md and "## Roofline" in md
    for name in ("latency_vs_map.png", "latency_breakdown.png"):
        img = cv2.imread(str(out / name))
        assert img is not None and img.shape[0] > 200 and img.shape[1] > 400 and img.std() > 5


def test_second_run_reuses_the_exports(run: dict[str, Any]) -> None:
    exports = run["root"] / "exports"
    before = {p.name: p.stat().st_mtime_ns for p in exports.iterdir() if p.is_file()}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench", *run["argv"], "--out",
                           str(run["root"] / "out2")], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "reusing the artifacts" in proc.stderr
    assert {p.name: p.stat().st_mtime_ns for p in exports.iterdir() if p.is_file()} == before


def test_exports_made_with_another_int8_recipe_are_not_reused(run: dict[str, Any], tmp_path: Path) -> None:
    from benchmarks.exports import reusable

    report = json.loads((run["root"] / "exports" / "report.json").read_text())
    wanted = {(a["target"], a["precision"]) for a in report["artifacts"]}
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps(report))
    assert reusable(folder, DEFAULT, SIZE, wanted) is not None
    int8 = next(a for a in report["artifacts"] if a["precision"] == "int8")["quantization"]
    int8["method"] = "minmax"
    (folder / "report.json").write_text(json.dumps(report))
    assert reusable(folder, DEFAULT, SIZE, wanted) is None
    int8["method"] = "percentile"
    int8["calibration"]["shifted"] = 0.5  # a set made with `make calib SHIFTED=0.5`, not today's default
    (folder / "report.json").write_text(json.dumps(report))
    assert reusable(folder, DEFAULT, SIZE, wanted) is None
    for a in report["artifacts"]:  # ... unless the benchmark was given such a set (CALIB=): then it is the recipe
        if a["precision"].startswith("int8"):
            a["quantization"]["calibration"]["shifted"] = 0.5
    (folder / "report.json").write_text(json.dumps(report))
    assert reusable(folder, DEFAULT, SIZE, wanted, shifted=0.5) is not None
    assert reusable(folder, DEFAULT, SIZE, wanted) is None


def test_qat_files_with_8_bit_weights_or_fused_fake_quantizers_are_not_reused() -> None:
    """QAT's ONNX and OpenVINO files had 8-bit weights until session 24 (they saturate on AVX2 kernels: -14 points on
    the BCCD Lite0's IR, docs/INT8-CPU-CLASSES.md), until session 25 every QAT file came from torchao's fused fake
    quantizer, which trained on other scales than the files hold, and until session 26 the input grid of every int8
    file put the Lite models' pixels on rounding ties (quantize/input_grid.py); a benchmark must not time such a file
    as today's recipe."""
    from benchmarks.exports import current_recipe
    from calib_data.store import SHIFTED_SHARE
    from convert.int8_recipe import INPUT_FULL_RANGE, SCHEME, SCHEMES
    from quantize.qat import FAKE_QUANTIZER, QatConfig

    def qat_file(target: str, scheme: dict[str, str], fake_quantizer: str | None = FAKE_QUANTIZER,
                 input: str = INPUT_FULL_RANGE) -> dict[str, Any]:
        return {"target": target, "precision": "int8-qat", "quantization": {
            "scheme": scheme, "input": input, "calibration": {"shifted": SHIFTED_SHARE},
            "qat": {"objective": QatConfig().objective, "photometric": QatConfig().photometric,
                    **({"fake_quantizer": fake_quantizer} if fake_quantizer else {})}}}

    for target in ("onnx", "openvino", "tflite"):
        assert current_recipe(qat_file(target, SCHEMES[target]))
        assert not current_recipe(qat_file(target, SCHEMES[target], fake_quantizer=None))
        tied = "normalised image, quantized over the whole 0-255 pixel range"  # what session 25's files said
        assert not current_recipe(qat_file(target, SCHEMES[target], input=tied))
    assert not current_recipe(qat_file("onnx", SCHEME)) and not current_recipe(qat_file("openvino", SCHEME))


def test_report_merges_device_rows_and_renders(run: dict[str, Any], capsys: pytest.CaptureFixture) -> None:
    root = run["root"]
    report = json.loads(Path(run["doc"]["export_report"]).read_text())
    int8 = next(a for a in report["artifacts"] if a["target"] == "onnx" and a["precision"] == "int8")
    device_file = root / "pi.json"
    assert runtime_main(["bench", int8["path"], "--runs", "2", "--warmup", "0", "--threads", "1", "--device",
                         "pi5", "--out", str(device_file)]) == 0
    capsys.readouterr()
    page = root / "report.html"
    assert html_report.main(["--bench", str(root / "out" / "results.json"), "--device-results", str(device_file),
                             "--images", "2", "--out", str(page)]) == 0
    text = page.read_text()
    assert "pi5" in text and "Detections side by side" in text and "Goals" in text
    device_rows = html_report.load_device_rows([device_file], report)
    assert device_rows[0]["map"] == int8["parity"]["map"] and device_rows[0]["device"] == "pi5"
    # int8 ONNX on another CPU class (or one the device did not record) does not borrow the gate's accuracy
    for device_class in ("arm-dotprod", None):
        other = json.loads(device_file.read_text())
        other["machine"]["int8_class"] = device_class
        (root / "other.json").write_text(json.dumps(other))
        (row,) = html_report.load_device_rows([root / "other.json"], report)
        assert row["map"] is None and row.get("gate_passed") is None and "not measured" in row["accuracy_of"]
    # nor does int8 TFLite (its ARM kernels moved the BCCD D0's file by 2.5 %): on its gate's class only (this run
    # exports no TFLite, so the ONNX entry stands in for one)
    as_tflite = dict(report, artifacts=[dict(int8, target="tflite")])
    for device_class, joined in (("arm-dotprod", False), (report["cpu"]["int8"], True)):
        other = json.loads(device_file.read_text())
        other["machine"]["int8_class"] = device_class
        other["rows"] = [dict(other["rows"][0], target="tflite")]
        (root / "other.json").write_text(json.dumps(other))
        (row,) = html_report.load_device_rows([root / "other.json"], as_tflite)
        assert (row["map"] == int8["parity"]["map"]) is joined and ("accuracy_of" in row) is not joined
    # a row's own class wins over its file's machine (make device-check: the file's machine is the x86 host)
    emulated = json.loads(device_file.read_text())
    emulated["rows"] = [dict(emulated["rows"][0], int8_class="arm-dotprod")]
    (root / "emulated.json").write_text(json.dumps(emulated))
    (row,) = html_report.load_device_rows([root / "emulated.json"], report)
    assert emulated["machine"]["int8_class"] == report["cpu"]["int8"] and row["map"] is None
    plain = json.loads(device_file.read_text())["rows"][0]
    emulated["rows"] = [dict(plain, emulated=True)]  # an emulated row without a class of its own
    (root / "emulated.json").write_text(json.dumps(emulated))
    (row,) = html_report.load_device_rows([root / "emulated.json"], report)
    assert row["map"] is None and "unrecorded" in row["accuracy_of"]
    # 2 plots + 2 images x (PyTorch + 4 artifacts) detection panels
    assert text.count("<img ") == 2 + 2 * 5
    # An Edge TPU build has its own bytes: its row takes the accuracy of the int8 TFLite it was compiled from.
    coral = json.loads(device_file.read_text())
    coral["rows"] = [dict(coral["rows"][0], name="edgetpu-int8", target="edgetpu", device="coral-usb",
                          sha256="0" * 64, source_sha256=int8["sha256"])]
    (root / "coral.json").write_text(json.dumps(coral))
    (row,) = html_report.load_device_rows([root / "coral.json"], report)
    assert row["map"] == int8["parity"]["map"] and "compiled from" in row["accuracy_of"]
    (root / "partial.json").write_text(json.dumps(dict(coral, rows=[{"name": "x", "threads": 1}])))
    with pytest.raises(html_report.ReportError, match="a row lacks target, precision"):
        html_report.load_device_rows([root / "partial.json"], report)
    (root / "bad.json").write_text(json.dumps({"rows": []}))
    assert html_report.main(["--bench", str(root / "out" / "results.json"), "--device-results",
                             str(root / "bad.json"), "--out", str(root / "r2.html")]) == 2
    assert "not a efficientdet-bench/1 file" in capsys.readouterr().err
    assert not (root / "r2.html").exists()
    if find_chromium() is None:
        pytest.skip("Chromium not installed: the headless render check is .ci/run's (apt-get install chromium)")
    seen = check_page(page, root / "report.png")
    assert seen["images"] == seen["images_decoded"] == 12 and seen["tables"] >= 3
    assert cv2.imread(str(root / "report.png")) is not None
    broken = root / "broken.html"
    broken.write_text(text.replace('src="data:image/jpeg;base64,', 'src="data:image/jpeg;base64,AAAA', 1))
    with pytest.raises(RenderError, match="11 of 12 images decoded"):
        check_page(broken)


def test_embedding_example_runs_on_a_generated_video_with_the_runtime_only(run: dict[str, Any]) -> None:
    root = run["root"]
    video = make_video(root / "demo.mp4", frames=12, size=(320, 240))
    report = json.loads(Path(run["doc"]["export_report"]).read_text())
    model = next(a["path"] for a in report["artifacts"] if a["target"] == "onnx" and a["precision"] == "fp32")
    code = f"""
        import sys
        from examples.video_detect import run
        stats = run({model!r}, {str(video)!r}, out={str(root / 'annotated.mp4')!r}, threads=1)
        heavy = sorted(m for m in ("torch", "tensorflow", "efficientdet", "convert") if m in sys.modules)
        print(stats["frames"], stats["fps"] > 0, heavy)
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[-2] == "12 True []"
    cap = cv2.VideoCapture(str(root / "annotated.mp4"))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == 12


def test_the_default_model_is_the_one_trained_at_the_benchmarked_size() -> None:
    """`make bench` at D0's 512 used the model trained at 256, so every 512 accuracy verdict was off-distribution."""
    from benchmarks.bench import default_checkpoint

    for size, quick in ((None, False), (512, False), (512, True), (None, True), (256, False), (384, False)):
        ckpt = ROOT / default_checkpoint(size, quick)
        trained_at = ModelConfig.from_dict(load_checkpoint(ckpt)["config"]).input_size
        assert trained_at == (512 if (size or (256 if quick else 512)) == 512 else 256), (size, quick, ckpt)
