"""TensorFlow imported once, without the start-up noise that looks like errors on a CPU machine.

Importing TensorFlow 2.19 on a machine without a GPU prints, before its logging is set up, lines such as
"Unable to register cuFFT factory", "Could not find cuda drivers" and "computation placer already
registered": E- and W-level lines that mean nothing here but read as failures to a user (issue 14).
``TF_CPP_MIN_LOG_LEVEL`` does not reach the ones written before ``absl::InitializeLog`` (measured: with
level 3, five such lines remain), so the first import runs with file descriptor 2 captured, and every
captured line that is not on the known-noise list below is written back to stderr: real warnings stay.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from types import ModuleType

NOISE = tuple(re.compile(p) for p in (
    r"Unable to register cu(FFT|DNN|BLAS) factory",
    r"Could not find cuda drivers",
    r"failed call to cuInit",
    r"computation placer already registered",
    r"All log messages before absl::InitializeLog\(\) is called",
    r"oneDNN custom operations are on",
    r"TF-TRT Warning: Could not find TensorRT",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"To enable the following instructions: .* in other operations, rebuild TensorFlow",
))


def without_noise(text: str) -> str:
    """``text`` less the lines that match :data:`NOISE`."""
    return "".join(line for line in text.splitlines(keepends=True)
                   if line.strip() and not any(p.search(line) for p in NOISE))


def import_tensorflow() -> ModuleType:
    """``tensorflow``, imported quietly the first time (see the module docstring)."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    with tempfile.TemporaryFile() as capture:
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = without_noise(capture.read().decode("utf-8", "replace"))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()
    return tensorflow
