"""Shared fixtures: the repo on sys.path, the shared datasets location, non-trivial tiny models."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


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
