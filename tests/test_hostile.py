"""Replays the hostile-input audit of issue 13 (runtime and toolchain): each case here gave a wrong answer,
a crash, lost data or an unclear error before its fix. Artifact-file cases (truncated/corrupt files,
external data) are in ``tests/test_hostile_artifacts.py``; network/telemetry in ``tests/test_network_privacy.py``.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from runtime import Detector, ImageError, ManifestError, load_manifest
from runtime.anchors import generate_anchors
from runtime.cli import main as runtime_main
from runtime.contract import AnchorSpec, PostprocessSpec
from runtime.manifest import METADATA_KEY, file_sha256, sidecar_path, write_sidecar
from runtime.postprocess import postprocess
from tests.conftest import ROOT
from tests.runtime_artifacts import test_image

DEFAULT_MODEL = ROOT / "models" / "default-d0.pt"
BCCD_MODEL = ROOT / "models" / "bccd-d0.pt"


def _images() -> list[np.ndarray]:
    base = test_image()
    return [base, test_image(200, 120), cv2.flip(base, 1), cv2.GaussianBlur(test_image(160, 160), (9, 9), 0)]


def _same(a: Any, b: Any) -> bool:
    return len(a) == len(b) and bool(np.array_equal(a.class_ids, b.class_ids)) and bool(
        np.allclose(a.boxes, b.boxes, atol=1e-3)) and bool(np.allclose(a.scores, b.scores, atol=1e-5))


@pytest.mark.parametrize("kind", ["onnx", "xml", "tflite-float", "tflite-int8"])
def test_detector_shared_by_threads_matches_single_threaded(artifacts: dict[str, Any],
                                                            tflite_models: dict[str, Path], kind: str) -> None:
    """4 threads x 25 calls on one Detector: OpenVINO returned other callers' detections (98/100), TFLite raised."""
    path = tflite_models[kind.split("-")[1]] if kind.startswith("tflite") else artifacts[kind]
    det = Detector(path, threads=2, score_threshold=0.01)  # at 1 thread OpenVINO's request showed no overlap here
    images = _images()
    reference = [det(img) for img in images]
    assert len({len(r) for r in reference}) > 1 or not _same(reference[0], reference[1]), "images must differ"
    calls = [i % len(images) for i in range(100)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda i: (i, det(images[i])), calls))
    wrong = [i for i, res in results if not _same(res, reference[i])]
    assert not wrong, f"{len(wrong)} of {len(calls)} concurrent calls differ from the single-threaded result"


def test_nonfinite_box_delta_does_not_swallow_a_class() -> None:
    """One NaN/inf delta among a class's candidates made OpenCV's NMS return only that box (then dropped): 0 kept."""
    anchors = generate_anchors(AnchorSpec(128))
    logits = np.full((len(anchors), 2), -10.0, np.float32)
    deltas = np.zeros((len(anchors), 4), np.float32)
    cells = [(r, c) for r in (0, 4, 8, 12) for c in (0, 4, 8, 12)][:10]  # level 3: 16x16 cells, 32 px apart
    real = [(r * 16 + c) * 9 for r, c in cells]
    logits[real, 0] = np.linspace(2.0, 3.0, len(real))
    post = PostprocessSpec(score_threshold=0.3, iou_threshold=0.5, max_detections=100, pre_nms_top_k=5000)
    assert len(postprocess(logits, deltas, anchors, post)) == 10
    for bad in (np.nan, np.inf, -np.inf):
        broken = deltas.copy()
        poisoned = (2 * 16 + 2) * 9  # overlaps real boxes, best score of the class
        logits[poisoned, 0] = 5.0
        broken[poisoned] = [bad, 0.0, 0.0, 0.0]  # dw/dh are clamped before exp(); a centre offset is not
        dets = postprocess(logits, broken, anchors, post)
        assert len(dets) == 10 and np.isfinite(dets.boxes).all(), bad
        assert sorted(dets.scores.tolist()) == pytest.approx(sorted(1 / (1 + np.exp(-logits[real, 0]))))


def test_float_image_outside_unit_range_is_refused(artifacts: dict[str, Any]) -> None:
    """A 0-255 float image (float TIFF) was clipped to a white frame: 0 detections, no warning."""
    det = Detector(artifacts["onnx"], threads=1)
    image = test_image().astype(np.float32)
    with pytest.raises(ImageError, match="0-255 image"):
        det(image)
    with pytest.raises(ImageError, match="infer_raw"):
        det(image / 255.0 * 4 - 2)  # an already-normalised tensor
    det(image / 255.0)
    det(np.clip(image / 255.0 * 1.02, 0, 1.02))  # rounding overshoot stays accepted


def _copy_onnx_with_sidecar(artifacts: dict[str, Any], tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    path = tmp_path / "model.onnx"
    shutil.copy(artifacts["onnx"], path)
    manifest = load_manifest(artifacts["onnx"])
    manifest.pop("_source")
    return path, manifest


def test_sidecar_without_hash_is_refused(artifacts: dict[str, Any], tmp_path: Path) -> None:
    """``sha256: null`` skipped the hash check, so a damaged file ran."""
    path, manifest = _copy_onnx_with_sidecar(artifacts, tmp_path)
    for value in (None, "", "abc", "g" * 64):
        manifest["artifact"]["sha256"] = value
        write_sidecar(path, manifest)
        with pytest.raises(ManifestError, match="'artifact.sha256'.*64 hex digits"):
            Detector(path, threads=1)


def _embed_openvino(artifacts: dict[str, Any], folder: Path, **changes: Any) -> Path:
    import openvino as ov

    manifest = load_manifest(artifacts["xml"])
    manifest.pop("_source")
    manifest["artifact"]["sha256"] = None
    model = ov.Core().read_model(str(artifacts["xml"]))
    xml = folder / "embedded.xml"
    ov.save_model(model, str(xml), compress_to_fp16=False)
    manifest["artifact"].update({"file": "embedded.xml", "weights_sha256": file_sha256(xml.with_suffix(".bin")),
                                 **changes})
    model.set_rt_info(json.dumps(manifest), METADATA_KEY)
    ov.save_model(model, str(xml), compress_to_fp16=False)
    return xml


def test_embedded_openvino_weights_hash_is_checked(artifacts: dict[str, Any], tmp_path: Path) -> None:
    """A bit-flipped ``.bin`` with the manifest embedded only (no sidecar) ran."""
    xml = _embed_openvino(artifacts, tmp_path)
    Detector(xml, threads=1)
    weights = xml.with_suffix(".bin")
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x10
    weights.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="'artifact.weights_sha256'.*embedded"):
        Detector(xml, threads=1)
    (tmp_path / "nohash").mkdir()
    with pytest.raises(ManifestError, match="'artifact.weights_sha256'.*64 hex digits"):
        Detector(_embed_openvino(artifacts, tmp_path / "nohash", weights_sha256=None), threads=1)


def test_sidecar_must_agree_with_embedded_copy(artifacts: dict[str, Any], tmp_path: Path) -> None:
    """A sidecar with swapped class names passed although the artifact embeds the right ones."""
    import onnx

    path, manifest = _copy_onnx_with_sidecar(artifacts, tmp_path)
    embedded = json.loads(json.dumps(manifest))
    embedded["artifact"]["sha256"] = None
    model = onnx.load(str(path))
    model.metadata_props.add(key=METADATA_KEY, value=json.dumps(embedded))
    onnx.save(model, str(path))
    manifest["artifact"]["sha256"] = file_sha256(path)
    write_sidecar(path, manifest)
    Detector(path, threads=1)
    swapped = json.loads(json.dumps(manifest))
    swapped["class_names"] = swapped["class_names"][::-1]
    swapped["model"]["class_names"] = swapped["class_names"]
    write_sidecar(path, swapped)
    with pytest.raises(ManifestError, match="'class_names' in .*model.onnx.json differs from the copy embedded"):
        Detector(path, threads=1)
    sidecar_path(path).unlink()
    assert Detector(path, threads=1).class_names == manifest["class_names"]


@pytest.mark.parametrize(("dotted", "value", "field"), [
    ("preprocess.std", [58.0, 0.0, 57.0], "preprocess.std"),
    ("preprocess.std", [58.0, -1.0, 57.0], "preprocess.std"),
    ("anchors.anchor_scale", 0.0, "anchors.anchor_scale"),
    ("anchors.anchor_scale", -4.0, "anchors.anchor_scale"),
    ("anchors.aspect_ratios", [[1.0, 1.0], [0.0, 1.4]], "anchors.aspect_ratios"),
    ("anchors.aspect_ratios", [], "anchors.aspect_ratios"),
    ("anchors.min_level", 0, "anchors.min_level"),
    ("anchors.num_scales", 0, "anchors.num_scales"),
])
def test_zero_or_negative_spec_numbers_are_refused(artifacts: dict[str, Any], tmp_path: Path, dotted: str,
                                                   value: Any, field: str) -> None:
    path, manifest = _copy_onnx_with_sidecar(artifacts, tmp_path)
    node = manifest
    *parents, last = dotted.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    write_sidecar(path, manifest)
    with pytest.raises(ManifestError, match=f"'{field}"):
        Detector(path, threads=1)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_in_manifest_json_is_refused(artifacts: dict[str, Any], tmp_path: Path, literal: str) -> None:
    """Python's json reads NaN/Infinity; a NaN mean or anchor scale passed validation."""
    path, manifest = _copy_onnx_with_sidecar(artifacts, tmp_path)
    manifest["preprocess"]["mean"][0] = "@@"
    text = json.dumps(manifest).replace('"@@"', literal)
    sidecar_path(path).write_text(text)
    with pytest.raises(ManifestError, match=f"model.onnx.json is not valid JSON.*{literal}"):
        Detector(path, threads=1)


@pytest.mark.parametrize("content", [b"[" * 200_000 + b"]" * 200_000, b"{\"format\": \"\xff\xfe\"}"])
def test_deep_or_non_utf8_manifest_names_the_file(artifacts: dict[str, Any], tmp_path: Path, content: bytes) -> None:
    path, _ = _copy_onnx_with_sidecar(artifacts, tmp_path)
    sidecar_path(path).write_bytes(content)
    with pytest.raises(ManifestError, match=r"model\.onnx\.json"):
        Detector(path, threads=1)


@pytest.mark.parametrize("threads", [-3, 0, 10_000])
def test_absurd_thread_counts_are_refused(artifacts: dict[str, Any], threads: int,
                                          capsys: pytest.CaptureFixture) -> None:
    """``--threads 10000`` was accepted and created ~9,400 threads."""
    with pytest.raises(ValueError, match="threads must be an integer from 1 to"):
        Detector(artifacts["onnx"], threads=threads)
    assert runtime_main(["bench", str(artifacts["onnx"]), "--threads", str(threads), "--runs", "1"]) == 2
    assert "threads must be" in capsys.readouterr().err


def test_detect_out_never_overwrites(artifacts: dict[str, Any], tmp_path: Path,
                                     capsys: pytest.CaptureFixture) -> None:
    """``--out`` = the images' folder overwrote the inputs; same-named inputs overwrote each other."""
    folders = [tmp_path / "a", tmp_path / "b"]
    inputs = []
    for i, folder in enumerate(folders):
        folder.mkdir()
        inputs.append(folder / "frame.png")
        cv2.imwrite(str(inputs[-1]), test_image(150 + 20 * i, 220))
    before = {p: p.read_bytes() for p in inputs}
    argv = ["detect", str(artifacts["onnx"]), *map(str, inputs), "--json", "--out", str(folders[0]), "--threads", "1"]
    assert runtime_main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(p.read_bytes() == data for p, data in before.items()), "an input image was overwritten"
    drawn = [Path(line["drawn"]) for line in lines]
    assert len(set(drawn)) == 2 and not set(drawn) & set(inputs)
    assert [cv2.imread(str(p)).shape[0] for p in drawn] == [150, 170]
    assert runtime_main(argv) == 0  # a second run keeps the first run's drawings too
    assert len(list(folders[0].glob("frame*.png"))) == 5
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("keep me")
    assert runtime_main(["detect", str(artifacts["onnx"]), str(inputs[0]), "--out", str(not_a_folder)]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err and not_a_folder.read_text() == "keep me"


def _bad_checkpoints(folder: Path) -> dict[str, tuple[Path, str]]:
    good = torch.load(DEFAULT_MODEL, map_location="cpu", weights_only=True)
    cases: dict[str, tuple[Path, str]] = {}

    def save(name: str, obj: Any, message: str) -> None:
        path = folder / f"{name}.pt"
        torch.save(obj, path)
        cases[name] = (path, message)

    (folder / "empty.pt").write_bytes(b"")
    cases["empty"] = (folder / "empty.pt", "is empty")
    save("no-model", {k: v for k, v in good.items() if k != "model"}, "has no 'model' weights")
    save("config-empty", {**good, "config": {}}, "invalid model config")
    save("negative-classes", {**good, "config": {**good["config"], "num_classes": -5, "class_names": []}},
         "invalid model config")
    save("pickled-code", {**good, "payload": Exploit()}, "weights-only")
    return cases


class Exploit:
    """Pickles to a call of ``os.system``: weights-only loading must refuse it without running it."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, ("touch /tmp/efficientdet-pwned",)


def test_bad_checkpoints_are_bad_input_everywhere(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Each gave a traceback, an empty message or exit 3 ("conversion failed") before; now exit 2 with the file."""
    from benchmarks.bench import main as bench_main
    from convert.cli import main as convert_main
    from efficientdet.cli import main as model_main

    for name, (path, message) in _bad_checkpoints(tmp_path).items():
        for command, argv in (("convert", ["--ckpt", str(path), "--target", "onnx", "--out", str(tmp_path / "x")]),
                              ("eval", ["eval", "--ckpt", str(path)]),
                              ("bench", ["--ckpt", str(path), "--out", str(tmp_path / "b")])):
            main = {"convert": convert_main, "eval": model_main, "bench": bench_main}[command]
            assert main(argv) == 2, (name, command)
            err = capsys.readouterr().err
            assert message in err and str(path) in err, (name, command, err)
    assert not Path("/tmp/efficientdet-pwned").exists()
    assert not (tmp_path / "x").exists() and not (tmp_path / "b").exists()


def test_checkpoint_for_other_classes_is_refused(capsys: pytest.CaptureFixture) -> None:
    """The BCCD D0 (3 classes) scored on the 6-class embedded data gave mAP 0.0 and exit 0."""
    from efficientdet.cli import main as model_main
    from efficientdet.data.loader import load_for_model
    from efficientdet.data.records import DatasetError
    from efficientdet.data.synthetic import resolve_dataset

    assert model_main(["eval", "--ckpt", str(BCCD_MODEL), "--data", "data/synthetic", "--split", "val"]) == 2
    err = capsys.readouterr().err
    assert "classes the model does not know" in err and "--class-map" in err
    data = resolve_dataset("data/synthetic")
    with pytest.raises(DatasetError, match="does not know"):
        load_for_model(data, "val", ["RBC", "WBC", "Platelets"], num_classes=3)
    mapped = load_for_model(data, "val", ["RBC", "WBC", "Platelets"], num_classes=3,
                            class_map={"circle": "RBC", "square": "WBC", "ring": "Platelets", "triangle": "",
                                       "star": "", "cross": ""})
    assert mapped.class_names == ["RBC", "WBC", "Platelets"]
    labels = np.concatenate([r.labels for r in mapped.records])
    assert set(labels.tolist()) == {0, 1, 2}
    with pytest.raises(DatasetError, match="not classes of"):
        load_for_model(data, "val", ["RBC"], num_classes=1, class_map={"platelet": "RBC"})


def _convert_cmd(out: Path) -> list[str]:
    return [sys.executable, "-m", "convert", "--ckpt", str(DEFAULT_MODEL), "--target", "onnx", "--precision", "fp32",
            "--input-size", "128", "--max-images", "4", "--out", str(out)]


@pytest.mark.slow
def test_killed_export_leaves_no_stale_report_and_is_cleaned_up(tmp_path: Path) -> None:
    """A killed export left a hidden temp file and a work folder forever, and its old report.json (of another
    checkpoint) described the new files, so ``make bench`` reused it."""
    from benchmarks.exports import reusable

    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text(json.dumps({"checkpoint_sha256": file_sha256(DEFAULT_MODEL), "input_size": 128,
                                                 "artifacts": []}))
    proc = subprocess.Popen(_convert_cmd(out), cwd=ROOT, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "writing onnx" in line:
            break
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob(".*.pid*.tmp")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    leftovers = list(out.glob(".*.pid*.tmp"))
    assert leftovers, "expected the killed export's temporaries (the test kills it mid-way)"
    assert not (out / "report.json").exists(), "the old report survived an interrupted export"
    assert reusable(out, DEFAULT_MODEL, 128, {("onnx", "fp32")}) is None
    done = subprocess.run(_convert_cmd(out), cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "left behind by an export that was killed" in done.stderr
    assert not list(out.glob(".*.tmp")) and (out / "report.json").is_file()
    report = reusable(out, DEFAULT_MODEL, 128, {("onnx", "fp32")})
    assert report is not None
    artifact = Path(report["artifacts"][0]["path"])
    artifact.write_bytes(artifact.read_bytes() + b"\0")  # another export's file under this report
    assert reusable(out, DEFAULT_MODEL, 128, {("onnx", "fp32")}) is None


@pytest.mark.slow
def test_disk_full_export_is_its_own_exit_code(tmp_path: Path) -> None:
    """A full disk gave an OSError traceback and exit 1 (the gate-failed code); nothing half-written may remain."""
    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, 2 << 20))  # writes past 2 MB fail with EFBIG

    out = tmp_path / "out"
    proc = subprocess.run(_convert_cmd(out), cwd=ROOT, capture_output=True, text=True, timeout=900,
                          preexec_fn=small_files)
    assert proc.returncode == 4, proc.stderr[-2000:]
    assert "cannot write" in proc.stderr and "disk full" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(out.glob("*.onnx")) and not list(out.glob(".*.tmp"))
