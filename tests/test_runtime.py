"""The standalone runtime on real artifacts: ONNX (onnxruntime), OpenVINO IR and small TFLite files
(``tests/runtime_artifacts.py``, built once per session by the ``artifacts``/``tflite_models`` fixtures)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from runtime import BackendUnavailableError, Detector, ImageError, ManifestError, load_manifest, validate_manifest
from runtime.anchors import generate_anchors
from runtime.cli import main as cli_main
from runtime.manifest import METADATA_KEY, file_sha256, sidecar_path, write_sidecar
from runtime.postprocess import DEFAULT_POSTPROCESS, postprocess
from tests.conftest import ROOT
from tests.runtime_artifacts import NAMES, SIZE, float_io, make_manifest, run_python, test_image

FORBIDDEN = ("torch", "tensorflow", "onnx", "onnxscript", "tf_keras", "keras", "onnx2tf", "nncf", "torchao",
             "efficientdet", "convert", "quantize", "calib_data")


@pytest.fixture(scope="module")
def detectors(artifacts: dict[str, Any]) -> dict[str, Detector]:
    return {"onnx": Detector(artifacts["onnx"], threads=2), "openvino": Detector(artifacts["xml"], threads=2)}


def torch_raw(model: torch.nn.Module, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference outputs, on one thread: torch's OpenMP pool crawls when the shared cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            logits, deltas = model(torch.from_numpy(x))
    finally:
        torch.set_num_threads(threads)
    return logits[0].numpy(), deltas[0].numpy()


def rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a - ref).max() / np.abs(ref).max())


def low_threshold(logits: np.ndarray, keep: int = 40) -> float:
    """A score threshold that lets through about ``keep`` anchors of this randomly-initialised model."""
    top = np.sort(logits.max(axis=1))[-keep]
    return float(1 / (1 + np.exp(-top)))


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_raw_outputs_match_torch(artifacts: dict[str, Any], detectors: dict[str, Detector], backend: str) -> None:
    det = detectors[backend]
    x, _ = det.preprocess_image(test_image())
    logits, deltas = det.infer_raw(x)
    ref_logits, ref_deltas = torch_raw(artifacts["model"], x)
    assert logits.dtype == np.float32 and logits.shape == ref_logits.shape == (artifacts["config"].num_anchors, 3)
    assert ref_logits.std() > 0.1 and ref_deltas.std() > 0.1, "model outputs are trivial; parity would prove nothing"
    assert rel_err(logits, ref_logits) < 1e-4
    assert rel_err(deltas, ref_deltas) < 1e-4
    if backend == "openvino":
        assert det.backend.precision == "f32"  # the hint was set; bf16 would fail the tolerance above anyway


def test_detections_identical_across_backends(artifacts: dict[str, Any], detectors: dict[str, Detector]) -> None:
    image = test_image()
    x, box = detectors["onnx"].preprocess_image(image)
    ref_logits, ref_deltas = torch_raw(artifacts["model"], x)
    threshold = low_threshold(ref_logits)
    results = {name: Detector(artifacts[key], threads=2, score_threshold=threshold)(image)
               for name, key in (("onnx", "onnx"), ("openvino", "xml"))}
    spec = DEFAULT_POSTPROCESS.replace(score_threshold=threshold)
    ref = postprocess(ref_logits, ref_deltas, generate_anchors(detectors["onnx"].contract.anchors), spec)
    ref_boxes = box.to_original(ref.boxes)
    inside = (ref_boxes[:, 2] > ref_boxes[:, 0]) & (ref_boxes[:, 3] > ref_boxes[:, 1])  # not wholly in the padding
    assert inside.sum() > 3
    for name, res in results.items():
        assert len(res) == inside.sum(), name
        np.testing.assert_array_equal(res.class_ids, ref.class_ids[inside])
        np.testing.assert_allclose(res.boxes, ref_boxes[inside], atol=1e-2, err_msg=name)
        np.testing.assert_allclose(res.scores, ref.scores[inside], atol=1e-5, err_msg=name)
        assert res.labels == [NAMES[c] for c in res.class_ids]
    boxes = results["onnx"].boxes
    assert boxes.min() >= 0 and boxes[:, [0, 2]].max() <= image.shape[1] and boxes[:, [1, 3]].max() <= image.shape[0]


def test_embedded_manifests(artifacts: dict[str, Any], tmp_path: Path) -> None:
    import onnx
    import openvino as ov

    manifest = load_manifest(artifacts["onnx"])
    manifest.pop("_source")
    manifest["artifact"]["sha256"] = None
    model = onnx.load(str(artifacts["onnx"]))
    model.metadata_props.add(key=METADATA_KEY, value=json.dumps({**manifest, "artifact": {
        **manifest["artifact"], "file": "embedded.onnx"}}))
    onnx.save(model, str(tmp_path / "embedded.onnx"))
    ov_model = ov.Core().read_model(str(artifacts["xml"]))
    ov.save_model(ov_model, str(tmp_path / "embedded.xml"), compress_to_fp16=False)
    ov_manifest = {**manifest, "artifact": {**manifest["artifact"], "target": "openvino", "file": "embedded.xml",
                                            "weights_sha256": file_sha256(tmp_path / "embedded.bin")},
                   "inference_precision": "f32"}
    ov_model.set_rt_info(json.dumps(ov_manifest), METADATA_KEY)
    ov.save_model(ov_model, str(tmp_path / "embedded.xml"), compress_to_fp16=False)
    assert file_sha256(tmp_path / "embedded.bin") == ov_manifest["artifact"]["weights_sha256"]
    image = test_image()
    for name in ("embedded.onnx", "embedded.xml"):
        path = tmp_path / name
        assert not sidecar_path(path).exists()
        assert load_manifest(path)["_source"] == "embedded"
        det = Detector(path, threads=2)
        x, _ = det.preprocess_image(image)
        np.testing.assert_allclose(det.infer_raw(x)[0], torch_raw(artifacts["model"], x)[0], atol=1e-4)


def test_missing_manifest(artifacts: dict[str, Any], tmp_path: Path) -> None:
    bare = tmp_path / "bare.onnx"
    shutil.copy(artifacts["onnx"], bare)
    with pytest.raises(ManifestError, match=r"no manifest for .*bare\.onnx: expected .*bare\.onnx\.json beside it"):
        Detector(bare)
    with pytest.raises(FileNotFoundError):
        Detector(tmp_path / "absent.onnx")


def _set(d: dict[str, Any], dotted: str, value: Any) -> None:
    *path, last = dotted.split(".")
    for part in path:
        d = d[part]
    d[last] = value


@pytest.mark.parametrize(("dotted", "value", "field"), [
    ("model.num_classes", 4, "model.num_classes"),
    ("class_names", ["a", "b"], "model.num_classes"),
    ("preprocess.input_size", 160, "preprocess.input_size"),
    ("anchors.input_size", 160, "anchors.input_size"),
    ("anchors.num_scales", 2, "outputs.logits.shape[1]"),
    ("outputs.logits.shape", [1, 3069, 5], "outputs.logits.shape[2]"),
    ("input.layout", "nhwc", "input.shape"),
    ("input.dtype", "uint8", "input.quantization"),
    ("artifact.precision", "int4", "artifact.precision"),
    ("box_coding.type", "yxhw", "box_coding.type"),
    ("format", "efficientdet-manifest/0", "format"),
    ("postprocess.iou_threshold", 1.5, "postprocess.iou_threshold"),
])
def test_inconsistent_manifest_names_field(artifacts: dict[str, Any], dotted: str, value: Any, field: str) -> None:
    manifest = load_manifest(artifacts["onnx"])
    validate_manifest(manifest)
    _set(manifest, dotted, value)
    with pytest.raises(ManifestError, match=f"'{__import__('re').escape(field)}'"):
        validate_manifest(manifest)


def test_missing_field_named(artifacts: dict[str, Any]) -> None:
    manifest = load_manifest(artifacts["onnx"])
    del manifest["outputs"]["box_regression"]["dtype"]
    with pytest.raises(ManifestError, match="'outputs.box_regression.dtype' is missing"):
        validate_manifest(manifest)


@pytest.mark.parametrize(("change", "field"), [
    ({"outputs.logits.name": "scores"}, "outputs.logits.name"),
    ({"input.name": "image"}, "input.name"),
    ({"outputs.box_regression.dtype": "float16"}, "outputs.box_regression.dtype"),
    ({"artifact.sha256": "0" * 64}, "artifact.sha256"),
    ({"artifact.target": "tflite"}, "artifact.target"),
])
def test_manifest_disagreeing_with_artifact(artifacts: dict[str, Any], tmp_path: Path, change: dict[str, Any],
                                            field: str) -> None:
    path = tmp_path / "model.onnx"
    shutil.copy(artifacts["onnx"], path)
    manifest = load_manifest(artifacts["onnx"])
    manifest.pop("_source")
    for dotted, value in change.items():
        _set(manifest, dotted, value)
    write_sidecar(path, manifest)
    with pytest.raises(ManifestError, match=f"'{field}'"):
        Detector(path, threads=1)


def test_stale_openvino_weights_rejected(artifacts: dict[str, Any], tmp_path: Path) -> None:
    for suffix in (".xml", ".bin", ".xml.json"):
        shutil.copy(artifacts["xml"].with_name("model" + suffix), tmp_path / ("model" + suffix))
    Detector(tmp_path / "model.xml", threads=1)
    weights = tmp_path / "model.bin"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="'artifact.weights_sha256'"):
        Detector(tmp_path / "model.xml", threads=1)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.bin"):
        Detector(tmp_path / "model.xml", threads=1)


def test_consistent_manifest_for_other_input_size_rejected(artifacts: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    shutil.copy(artifacts["onnx"], path)
    other = artifacts["config"].replace(input_size=160)
    inp, outs = float_io(other)
    write_sidecar(path, make_manifest(other, "onnx", path, inp, outs))
    with pytest.raises(ManifestError, match="'input.shape'"):
        Detector(path, threads=1)


@pytest.mark.parametrize(("image", "message"), [
    ("not an image", "numpy image array"),
    (np.zeros((0, 10, 3), np.uint8), "non-empty"),
    (np.zeros((20, 20, 3), np.int32), "dtype int32"),
    (np.zeros((20, 20, 3), np.bool_), "dtype bool"),
    (np.zeros((20, 20, 5), np.uint8), "got 5"),
    (np.full((20, 20, 3), np.nan, np.float32), "NaN"),
])
def test_bad_images_raise_image_error(detectors: dict[str, Detector], image: Any, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        detectors["onnx"](image)


def test_corrupt_file_raises_image_error(detectors: dict[str, Detector], tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(ImageError, match="corrupt"):
        detectors["onnx"].detect_file(bad)
    with pytest.raises(ImageError, match="cannot read image .*missing.png"):
        detectors["onnx"].detect_file(tmp_path / "missing.png")


def test_greyscale_rgba_uint16_float_images_work(artifacts: dict[str, Any], detectors: dict[str, Detector]) -> None:
    image = test_image()
    x, _ = detectors["onnx"].preprocess_image(image)
    det = Detector(artifacts["onnx"], threads=2, score_threshold=low_threshold(torch_raw(artifacts["model"], x)[0]))
    base = det(image)
    assert len(base) > 0
    np.testing.assert_allclose(det(image.astype(np.uint16) << 8).boxes, base.boxes)
    np.testing.assert_allclose(det(cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)).boxes, base.boxes)
    np.testing.assert_allclose(det(np.ascontiguousarray(image[:, :, ::-1]), color="rgb").boxes, base.boxes)
    assert det(image.astype(np.float32) / 255.0).boxes.shape[1] == 4
    for grey in (cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[:, :, None]):
        res = det(grey)
        assert res.boxes.shape[1] == 4 and res.scores.dtype == np.float32


def test_cli_detect_json_and_out(artifacts: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    images = []
    for i, (h, w) in enumerate([(150, 220), (200, 120)]):
        images.append(tmp_path / f"img{i}.png")
        cv2.imwrite(str(images[-1]), test_image(h, w))
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"nope")
    out_dir = tmp_path / "drawn"
    argv = ["detect", str(artifacts["onnx"]), str(images[0]), str(corrupt), str(images[1]), "--json",
            "--out", str(out_dir), "--threads", "1", "--score-threshold", "0.01"]
    assert cli_main(argv) == 1
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [line["image"] for line in lines] == [str(images[0]), str(images[1])]
    assert "corrupt.jpg" in captured.err and "error" in captured.err
    for line, path in zip(lines, images):
        assert set(line) == {"image", "detections", "drawn"} and line["drawn"] == str(out_dir / path.name)
        h, w = cv2.imread(str(path)).shape[:2]
        for d in line["detections"]:
            assert set(d) == {"box", "score", "class_id", "label"}
            assert d["label"] == NAMES[d["class_id"]] and 0.01 <= d["score"] <= 1
            x1, y1, x2, y2 = d["box"]
            assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h
        drawn = cv2.imread(str(out_dir / path.name))
        assert drawn is not None and drawn.shape[:2] == (h, w)
    assert sum(len(line["detections"]) for line in lines) > 0
    assert not (out_dir / "corrupt.jpg").exists()


def test_cli_bench_json(artifacts: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench" / "result.json"
    argv = ["bench", str(artifacts["xml"]), "--runs", "3", "--warmup", "1", "--threads", "1", "--json", "--out",
            str(out)]
    assert cli_main(argv) == 0
    stats = json.loads(capsys.readouterr().out)
    doc = json.loads(out.read_text())
    assert doc["schema"] == "efficientdet-bench/1" and doc["rows"] == [stats]
    assert "onnxruntime" in doc["versions"] and "numpy" in doc["versions"]
    for key in ("pre_ms", "infer_ms", "post_ms", "total_ms", "p90_ms", "load_ms", "rss_mb"):
        assert isinstance(stats[key], float) and stats[key] > 0, key
    assert stats["total_ms"] >= stats["infer_ms"]
    assert stats["threads"] == 1 and stats["runs"] == 3 and stats["backend"] == "openvino"
    assert stats["precision"] == "fp32" and stats["inference_precision"] == "f32"
    assert stats["model"] == str(artifacts["xml"])
    assert stats["size_bytes"] > artifacts["xml"].stat().st_size  # the .bin weights count too
    assert set(stats["machine"]) == {"platform", "processor", "cpu_count", "python", "host", "int8_class"}
    assert stats["name"] == "openvino-fp32" and stats["target"] == "openvino" and stats["sha256"]
    assert stats["fps"] == pytest.approx(1e3 / stats["total_ms"], rel=0.5)
    assert not list(out.parent.glob("*.tmp"))
    assert cli_main(["bench", str(artifacts["onnx"]), "--runs", "2", "--warmup", "0", "--out", str(out),
                     "--device", "pi5"]) == 0
    table = capsys.readouterr().out
    assert "median ms" in table and "infer" in table and "onnxruntime" in table
    rows = json.loads(out.read_text())["rows"]
    assert [(r["name"], r["device"]) for r in rows] == [("openvino-fp32", stats["device"]), ("onnx-fp32", "pi5")]
    (tmp_path / "other.json").write_text("[1, 2]")
    assert cli_main(["bench", str(artifacts["onnx"]), "--runs", "1", "--out", str(tmp_path / "other.json")]) == 2
    assert "not a efficientdet-bench/1 results file" in capsys.readouterr().err
    assert (tmp_path / "other.json").read_text() == "[1, 2]"


DETECT_AND_LIST_MODULES = """
    import sys
    import numpy as np
    import runtime
    from runtime import Detector
    for path in sys.argv[1:] or {paths!r}:
        det = Detector(path, threads=1, score_threshold=0.01)
        det(np.full((90, 120, 3), 128, np.uint8))
    print(runtime.__file__)
    print(sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r}))
"""


def test_runtime_never_imports_torch_or_tensorflow(artifacts: dict[str, Any], tflite_models: dict[str, Path]) -> None:
    paths = [str(artifacts["onnx"]), str(artifacts["xml"]), str(tflite_models["int8"])]
    code = DETECT_AND_LIST_MODULES.format(paths=paths, forbidden=set(FORBIDDEN))
    out = run_python(code, cwd=ROOT).splitlines()
    assert out[-2] == str(ROOT / "runtime" / "__init__.py")
    assert out[-1] == "[]"


def test_runtime_installs_and_runs_standalone(artifacts: dict[str, Any], tmp_path: Path) -> None:
    """``pip install ./runtime`` (from a copy, so the build leaves nothing in the repo) and run it from there."""
    src = tmp_path / "src" / "runtime"
    shutil.copytree(ROOT / "runtime", src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--no-index", "--disable-pip-version-check", "--target", str(site), str(src)],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-3000:]
    assert (site / "runtime" / "backends" / "onnx_backend.py").is_file()
    assert not (site / "runtime" / "tests").exists()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PYTHONPATH=str(site), PYTHONNOUSERSITE="1")
    code = DETECT_AND_LIST_MODULES.format(paths=[str(artifacts["onnx"]), str(artifacts["xml"])],
                                          forbidden=set(FORBIDDEN))
    out = run_python(f"import sys; sys.path[:] = [p for p in sys.path if p not in ('', {str(ROOT)!r})]\n"
                      + textwrap.dedent(code), env=env, cwd=tmp_path).splitlines()
    assert out[-2] == str(site / "runtime" / "__init__.py")
    assert out[-1] == "[]"


@pytest.mark.parametrize("precision", ["float", "int8"])
def test_tflite_outputs_mapped_by_name(tflite_models: dict[str, Path], precision: str) -> None:
    det = Detector(tflite_models[precision], threads=1)
    assert det.backend.name.startswith("tflite (ai-edge-litert")
    names = [d.name for d in det.backend.output_details()]
    assert sorted(names) == ["box_regression", "logits"]
    x, _ = det.preprocess_image(test_image())
    assert x.shape == (1, SIZE, SIZE, 3) and x.dtype == (np.int8 if precision == "int8" else np.float32)
    logits, deltas = det.infer_raw(x)
    ref = x.astype(np.float32)
    if precision == "int8":
        q = det.input_spec.quantization
        ref = (ref - q.zero_point) * q.scale
    flat = ref.reshape(-1)
    a = logits.shape[0]
    tol = 0 if precision == "float" else 0.03
    np.testing.assert_allclose(logits, flat[:a * 3].reshape(a, 3), atol=tol + 1e-6)
    np.testing.assert_allclose(deltas, flat[a * 3:a * 7].reshape(a, 4) * 0.5, atol=tol + 1e-6)
    assert det(test_image()).boxes.shape[1] == 4


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # litert's Delegate.__del__ bug
def test_edgetpu_missing_library_is_explained(tflite_models: dict[str, Path]) -> None:
    with pytest.raises(RuntimeError, match=r"libedgetpu\.so\.1.*apt-get install libedgetpu1-std"):
        Detector(tflite_models["int8"], edgetpu=True)


@pytest.mark.parametrize(("modules", "suffix", "hint"), [
    (("onnxruntime",), "onnx", "pip install onnxruntime"),
    (("openvino",), "xml", "pip install openvino"),
    (("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime", "tflite_runtime.interpreter", "tensorflow"),
     "tflite", "pip install ai-edge-litert"),
])
def test_missing_backend_package(artifacts: dict[str, Any], tflite_models: dict[str, Path],
                                 monkeypatch: pytest.MonkeyPatch, modules: tuple[str, ...], suffix: str,
                                 hint: str) -> None:
    path = tflite_models["float"] if suffix == "tflite" else artifacts[suffix]
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` fail as if not installed
    with pytest.raises(BackendUnavailableError, match=hint):
        Detector(path, threads=1)


def test_infer_raw_rejects_wrong_shape(detectors: dict[str, Detector]) -> None:
    with pytest.raises(ValueError, match=r"\(1, 3, 128, 128\)"):
        detectors["onnx"].infer_raw(np.zeros((1, SIZE, SIZE, 3), np.float32))



def test_dataset_class_ids_reach_the_detections(artifacts: dict[str, Any], tmp_path: Path) -> None:
    """A detection of "stop sign" can be reported with its COCO category id (13), not only the contiguous id."""
    path = tmp_path / "coco.onnx"
    shutil.copy(artifacts["onnx"], path)
    config = artifacts["config"].replace(class_ids=(13, 90, 5))
    write_sidecar(path, make_manifest(config, "onnx", path, *float_io(config)))
    det = Detector(path, threads=1, score_threshold=0.01)
    dicts = det(test_image()).to_dicts()
    assert dicts and all(d["dataset_id"] == (13, 90, 5)[d["class_id"]] for d in dicts)
    manifest = load_manifest(path)
    manifest["class_ids"] = [13, 90]
    with pytest.raises(ManifestError, match="'class_ids'"):
        validate_manifest(manifest)
