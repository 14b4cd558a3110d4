"""A quiet, honest console (issue 14): TensorFlow's CUDA start-up noise is gone on a CPU machine while real
warnings stay, and a long silent subprocess (onnx2tf) shows a heartbeat."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from convert.targets.tflite import run_with_heartbeat
from convert.tensorflow_import import NOISE, without_noise
from tests.conftest import ROOT


def test_importing_tensorflow_prints_no_start_up_noise() -> None:
    plain = subprocess.run([sys.executable, "-c", "import tensorflow"], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    quiet = subprocess.run([sys.executable, "-c", "from convert.tensorflow_import import import_tensorflow; "
                            "import_tensorflow()"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert plain.returncode == quiet.returncode == 0
    noisy = [line for line in plain.stderr.splitlines() if any(p.search(line) for p in NOISE)]
    assert noisy, "expected TensorFlow's CUDA noise on a plain import (else this test proves nothing)"
    assert not [line for line in quiet.stderr.splitlines() if any(p.search(line) for p in NOISE)], quiet.stderr


def test_real_warnings_survive_the_filter() -> None:
    text = ("E0000 cuda_dnn.cc:8579] Unable to register cuDNN factory: Attempting to register factory\n"
            "W tensorflow/core/framework/op_kernel.cc:1830] OP_REQUIRES failed: out of memory\n")
    assert without_noise(text) == "W tensorflow/core/framework/op_kernel.cc:1830] OP_REQUIRES failed: out of memory\n"


def test_a_long_subprocess_shows_a_heartbeat(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cmd = [sys.executable, "-c", "import time; time.sleep(2.6); print('done')"]
    proc = run_with_heartbeat(cmd, tmp_path, {}, timeout=60, what="sleeper", every=1.0)
    assert proc.returncode == 0 and proc.stdout == "done\n"
    beats = [line for line in capsys.readouterr().err.splitlines() if "sleeper still running" in line]
    assert len(beats) >= 2
    with pytest.raises(subprocess.TimeoutExpired):
        run_with_heartbeat([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path, {}, timeout=1.5,
                           what="sleeper", every=0.5)
