"""Parameter and multiply-accumulate counts, as the papers report them (conv/linear MACs).

MACs are counted with forward hooks on a meta-device model, so even D7 at 1536 costs no memory
or compute: only shapes flow.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .config import ModelConfig
from .detector import EfficientDet, count_parameters


def count_macs(model: nn.Module, input_size: int) -> int:
    """Conv2d and Linear multiply-accumulates for one ``3 x input_size x input_size`` image."""
    total = 0

    def conv_hook(module: nn.Conv2d, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += out.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * module.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            model(torch.empty(1, 3, input_size, input_size, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return total


def summarize(config: ModelConfig) -> dict[str, Any]:
    """The ``make summary`` object: params, GMACs, sizes and anchor count for a config."""
    with torch.device("meta"):
        model = EfficientDet(config).eval()
    return {
        "name": config.name,
        "params": count_parameters(model),
        "gmacs": round(count_macs(model, config.input_size) / 1e9, 3),
        "input_size": config.input_size,
        "anchors": config.num_anchors,
        "bifpn_width": config.fpn_width,
        "bifpn_depth": config.fpn_depth,
        "head_depth": config.head_depth,
        "num_classes": config.num_classes,
    }
