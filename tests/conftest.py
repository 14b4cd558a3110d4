"""Shared fixtures: the repo on sys.path, the shared datasets location, non-trivial tiny models."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch

if TYPE_CHECKING:
    from efficientdet.model.config import ModelConfig
    from efficientdet.model.detector import EfficientDet

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from runtime.backends.openvino_privacy import disable_telemetry  # noqa: E402  (needs ROOT on sys.path)

disable_telemetry()  # before any test imports openvino or nncf: the suite sends nothing either


def shared_dir() -> Path:
    return Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared"))


def bccd_dir() -> Path:
    return Path(os.environ.get("BCCD_DIR", shared_dir() / "datasets" / "bccd"))


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm random statistics and affine params so outputs are not the prior bias
    everywhere (a random-init detector passes any parity check otherwise)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    for name, m in model.named_modules():
        if name.endswith("predict.pointwise"):  # default init leaves outputs at the prior bias
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=g) * 0.5)
    return model


@pytest.fixture
def bccd() -> Path:
    path = bccd_dir()
    if not (path / "BCCD" / "Annotations").is_dir():
        pytest.skip(f"BCCD not found at {path} (set BCCD_DIR or provide ../shared/datasets/bccd)")
    return path


def detector_like_model_for(config: ModelConfig, images: torch.Tensor, seed: int = 0,
                            score_threshold: float = 0.3) -> EfficientDet:
    """A random but well-conditioned, image-dependent EfficientDet for ``config`` with a few confident
    detections per image (so a parity check is not vacuous); the config-generic form of
    ``tests.test_convert.detector_like_model``, for the other variants (the conversion matrix).

    Variance-preserving conv init (otherwise the signal dies with depth and every image gives the same
    output), random BN statistics, and final layers rescaled so that the score threshold sits in a gap
    of the top scores (a score exactly on the threshold flips under any rounding).
    """
    import numpy as np

    from efficientdet.model.detector import EfficientDet
    from runtime.postprocess import logit

    torch.manual_seed(seed)
    model = EfficientDet(config)
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=g) / m.weight[0].numel() ** 0.5)
    randomize_bn(model, seed).eval()
    with torch.no_grad():
        logits, boxes = model(images)
        cls = model.class_net.predict.pointwise
        pre = (logits - cls.bias[0]) * (1.5 / (logits - cls.bias[0]).std())
        cls.weight.mul_(1.5 / (logits - cls.bias[0]).std())
        top = torch.sort(pre.flatten(), descending=True).values[: 20 * len(images)].numpy()
        k = 3 * len(images) + int(np.argmax(top[3 * len(images):-1] - top[3 * len(images) + 1:]))
        cls.bias.fill_(logit(score_threshold) - float(top[k] + top[k + 1]) / 2)
        box = model.box_net.predict.pointwise
        box.weight.mul_(0.1 / boxes.std())
        box.bias.zero_()
    return model


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
