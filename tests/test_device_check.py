"""`make device-check` pieces: the aarch64-vs-x86 comparison, the emulated system's completeness rule and the
messages for missing tools; and, where qemu-user-static and debootstrap are installed, a real emulated run."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks import device_check as dc


def _image(boxes: list[list[float]], scores: list[float], classes: list[int], shift: float = 0.0) -> dict:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 3)).astype(np.float32)
    return {"logits": logits + shift, "deltas": logits[:, :1].repeat(4, 1) * 0.1,
            "boxes": np.asarray(boxes, np.float32), "scores": np.asarray(scores, np.float32),
            "classes": np.asarray(classes, np.int64)}


def test_identical_dumps_compare_exactly() -> None:
    host = [_image([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8], [0, 1])]
    result = dc.compare(host, host)
    assert result["logits"]["max_abs_err"] == 0.0 and result["box_regression"]["rel_err"] == 0.0
    assert result["detections"] == {"host": 2, "device": 2}
    assert result["matched_iou0.99"] == {"host_in_device": 1.0, "device_in_host": 1.0}


def test_moved_box_missing_box_and_shifted_logits_are_measured() -> None:
    host = [_image([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8], [0, 1])]
    device = [_image([[0, 0, 10, 10.5]], [0.9], [0], shift=0.01)]  # IoU 0.95; the second box lost
    result = dc.compare(host, device)
    assert result["logits"]["max_abs_err"] == pytest.approx(0.01, abs=1e-6)
    assert result["matched_iou0.5"] == {"host_in_device": 0.5, "device_in_host": 1.0}
    assert result["matched_iou0.99"] == {"host_in_device": 0.0, "device_in_host": 0.0}


def test_an_incomplete_rootfs_is_not_used_and_missing_tools_are_named(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "rootfs"
    (root / "usr/bin").mkdir(parents=True)
    (root / dc.PYTHON_IN_ROOTFS).write_text("")  # an interrupted build: files, but no completion mark
    assert not dc.rootfs_ok(root)
    (root / dc.COMPLETE).write_text("{}")
    assert dc.rootfs_ok(root)
    (root / dc.COMPLETE).unlink()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # neither debootstrap nor qemu on PATH
    with pytest.raises(dc.DeviceCheckError, match="apt-get install debootstrap qemu-user-static"):
        dc.build_rootfs(tmp_path)
    with pytest.raises(dc.DeviceCheckError, match="qemu-user-static"):
        dc.qemu_binary()
    assert root.exists()  # nothing deleted before the tools are there


def test_missing_non_default_models_are_refused(tmp_path: Path) -> None:
    with pytest.raises(dc.DeviceCheckError, match="not found"):
        dc.ensure_models([tmp_path / "nope.tflite"])


@pytest.mark.slow
def test_runtime_wheel_runs_on_emulated_aarch64(artifacts: dict, tmp_path: Path) -> None:
    """The wheel alone, on Debian arm64 under qemu: a float ONNX gives x86's outputs to float rounding."""
    if not (shutil.which("qemu-aarch64-static") and shutil.which("debootstrap")):
        pytest.skip("qemu-user-static and debootstrap are not installed (make device-check needs them)")
    emulator = dc.Emulator(dc.qemu_binary(), dc.build_rootfs(), dc.install_site()[0])
    probe = emulator.python(["-c", "import platform, runtime, sys; print(platform.machine(), runtime.__file__)"])
    assert probe.returncode == 0, probe.stderr
    machine, where = probe.stdout.split()
    assert machine == "aarch64" and "site-" in where  # the installed wheel, not this checkout
    for board, expected in (("pi5", "arm-dotprod"), ("pi4", "arm")):  # the emulated CPU's capabilities decide
        on_board = dc.Emulator(emulator.qemu, emulator.root, emulator.site, board)
        probe = on_board.python(["-c", "from runtime.cpu_class import cpu_class; print(cpu_class().int8)"])
        assert probe.stdout.split() == [expected], probe.stderr
    image = sorted((dc.ROOT / "data/synthetic/images/val").glob("*.jpg"))[:1] or pytest.skip("no synthetic data")
    dump = str(dc.ROOT / "benchmarks/device_dump.py")
    run = emulator.python([dump, str(artifacts["onnx"]), str(tmp_path / "d.npz"), str(image[0])])
    assert run.returncode == 0, run.stderr
    import subprocess
    import sys

    subprocess.run([sys.executable, dump, str(artifacts["onnx"]), str(tmp_path / "h.npz"), str(image[0])],
                   check=True, env={"PYTHONPATH": str(dc.ROOT), "PATH": "/usr/bin:/bin"})
    info, device = dc.load_dump(tmp_path / "d.npz")
    assert info["machine"] == "aarch64" and info["versions"]["ai-edge-litert"] == dc.DEVICE_PACKAGES["ai-edge-litert"]
    result = dc.compare(dc.load_dump(tmp_path / "h.npz")[1], device)
    assert result["logits"]["rel_err"] < 1e-4 and result["box_regression"]["rel_err"] < 1e-4


def _labelled_split(model: Path, root: Path) -> list[dict[str, np.ndarray]]:
    """Six images, the artifact's x86 dump of them with logits set to three confident anchors per image (the tiny
    model detects nothing on its own), and a COCO split labelled with exactly those detections (original pixels),
    so the x86 side scores high and a side that loses detections scores lower."""
    import json

    import cv2

    from benchmarks import device_dump
    from benchmarks.device_accuracy import predictions
    from efficientdet.data.records import DetectionDataset, ImageRecord
    from runtime.detector import Detector
    from tests.runtime_artifacts import test_image

    folder = root / "images" / "test"
    folder.mkdir(parents=True)
    paths = [folder / f"{i}.png" for i in range(6)]
    for i, path in enumerate(paths):
        cv2.imwrite(str(path), np.roll(test_image(150 + 10 * i, 220 - 8 * i), 17 * i, axis=1))
    device_dump.main([str(model), str(root / "host.npz"), *map(str, paths)])
    raw = dc.load_dump(root / "host.npz")[1]
    rng = np.random.default_rng(0)
    for r in raw:
        r["logits"][:] = -10.0
        r["logits"][rng.choice(len(r["logits"]), 3, replace=False), rng.integers(0, r["logits"].shape[1], 3)] = 5.0
    shapes = [cv2.imread(str(p)).shape[:2] for p in paths]
    records = [ImageRecord(i, str(p), w, h, np.zeros((0, 4), np.float32), np.zeros((0,), np.int64))
               for i, (p, (h, w)) in enumerate(zip(paths, shapes))]
    names = Detector(model, threads=1).class_names
    unlabelled = DetectionDataset("t", "test", str(root), "coco", list(names), records)
    images, anns = [], []
    for rec, det in zip(records, predictions(model, unlabelled, raw)):
        images.append({"id": rec.image_id + 1, "file_name": Path(rec.path).name, "width": rec.width,
                       "height": rec.height})
        for (x0, y0, x1, y1), c in zip(det.boxes.tolist(), det.class_ids.tolist()):
            anns.append({"id": len(anns) + 1, "image_id": rec.image_id + 1, "category_id": c + 1,
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    assert len(anns) >= 12
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_test.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}))
    return raw


def test_device_accuracy_scores_each_side_as_the_gate_and_joins_the_gate_by_sha256(artifacts: dict,
                                                                                  tmp_path: Path) -> None:
    """Identical outputs score identically; a side that loses half the images' detections scores lower, with an
    interval below zero; the gate's record is found by sha256 and the host must reproduce its mAP."""
    import json

    from benchmarks.device_accuracy import labelled_split, split_accuracy
    from runtime.manifest import file_sha256, sidecar_path

    model = tmp_path / "m" / "model.onnx"
    model.parent.mkdir()
    shutil.copy(artifacts["onnx"], model)
    shutil.copy(sidecar_path(artifacts["onnx"]), sidecar_path(model))
    host = _labelled_split(model, tmp_path / "data")
    dataset = labelled_split([model], str(tmp_path / "data"), "test", 0)
    same = split_accuracy(model, dataset, host, host)
    assert same["map_x86"] > 0.5 and same["map_aarch64"] == same["map_x86"]
    assert same["map_delta_aarch64_vs_x86"] == 0.0 and same["map_delta_interval"]["low"] == 0.0
    assert same["gate"] is None and "host_reproduces_gate" not in same  # no report.json beside the model

    lost = [dict(r, logits=np.full_like(r["logits"], -20.0)) if i % 2 else r for i, r in enumerate(host)]
    (model.parent / "report.json").write_text(json.dumps({"cpu": {"int8": "x86-avx512-vnni"}, "artifacts": [
        {"sha256": file_sha256(model), "parity": {"map": same["map_x86"], "map_ref": same["map_x86"] + 0.01,
                                                  "num_images": 6}}]}))
    worse = split_accuracy(model, dataset, host, lost)
    assert worse["map_aarch64"] < worse["map_x86"] - 0.1
    assert worse["map_delta_interval"]["low"] <= worse["map_delta_aarch64_vs_x86"] < 0
    assert worse["host_reproduces_gate"] is True and worse["gate"]["cpu_int8_class"] == "x86-avx512-vnni"
    assert worse["map_delta_vs_fp32"]["x86"] == pytest.approx(-0.01)
    first4 = labelled_split([model], str(tmp_path / "data"), "test", 4)  # not the gate's images: no comparison
    part = split_accuracy(model, first4, host[:4], host[:4])
    assert part["images"] == 4 and part["gate"] is not None and "host_reproduces_gate" not in part
    table = "\n".join(dc.accuracy_lines({"artifacts": [{"name": "model.onnx", "accuracy": worse}]}))
    assert f"{worse['map_aarch64']:.4f}" in table and "| yes |" in table

    other = tmp_path / "m" / "other.onnx"  # another artifact whose manifest names other classes: refused
    shutil.copy(model, other)
    manifest = json.loads(sidecar_path(model).read_text())
    manifest["class_names"] = manifest["model"]["class_names"] = ["x", "y", "z"]
    sidecar_path(other).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="other classes than model.onnx"):
        labelled_split([model, other], str(tmp_path / "data"), "test", 0)
