"""Shared fixtures: the repo on sys.path, the shared datasets location, non-trivial tiny models."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from efficientdet.model.testing import detector_like_model_for, randomize_bn  # noqa: E402, F401  (for the tests)
from runtime.backends.openvino_privacy import disable_telemetry  # noqa: E402  (needs ROOT on sys.path)

disable_telemetry()  # before any test imports openvino or nncf: the suite sends nothing either


def shared_dir() -> Path:
    return Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared"))


def bccd_dir() -> Path:
    return Path(os.environ.get("BCCD_DIR", shared_dir() / "datasets" / "bccd"))


@pytest.fixture
def bccd() -> Path:
    path = bccd_dir()
    if not (path / "BCCD" / "Annotations").is_dir():
        pytest.skip(f"BCCD not found at {path} (set BCCD_DIR or provide ../shared/datasets/bccd)")
    return path


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """ONNX + OpenVINO IR of a tiny Lite0 with sidecars (``tests/runtime_artifacts.py``), shared by the session."""
    from tests.runtime_artifacts import build_artifacts

    return build_artifacts(tmp_path_factory.mktemp("runtime"))


@pytest.fixture(scope="session")
def tflite_models(artifacts: dict[str, Any]) -> dict[str, Path]:
    """Float and int8 ``.tflite`` files beside ``artifacts`` (made by TensorFlow in a child process)."""
    from tests.runtime_artifacts import build_tflite_models

    return build_tflite_models(artifacts)


def write_bright_images(root: Path, size: int, count: int = 8) -> Any:
    """``count`` bright, pale random images (pixels 150-255) in ``root/images``: a calibration source that never shows
    a dark pixel. Returns the random generator, drawn past the images, for what the test draws next."""
    import cv2
    import numpy as np

    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        cv2.imwrite(str(root / "images" / f"{i}.png"), rng.integers(150, 256, (size, size, 3)).astype(np.uint8))
    return rng
