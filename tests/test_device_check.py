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
