"""Seeded random EfficientDets that behave like trained ones, for checking converters without a trained model.

A random-init detector emits the prior bias everywhere, so every artifact "matches" it and a parity check
proves nothing. These models have image-dependent outputs and a few confident detections per image. Used by
the conversion matrix (``python -m convert.matrix``) and the tests; kept in the product so that neither
imports the other.
"""

from __future__ import annotations

import numpy as np
import torch

from runtime.postprocess import logit

from .config import ModelConfig
from .detector import EfficientDet


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


def detector_like_model_for(config: ModelConfig, images: torch.Tensor, seed: int = 0,
                            score_threshold: float = 0.3) -> EfficientDet:
    """A random but well-conditioned, image-dependent EfficientDet for ``config`` with a few confident
    detections per image (so a parity check is not vacuous); the config-generic form of
    the parity tests' and the conversion matrix's model (``python -m convert.matrix``).

    Variance-preserving conv init (otherwise the signal dies with depth and every image gives the same
    output), random BN statistics, and final layers rescaled so that the score threshold sits in a gap
    of the top scores (a score exactly on the threshold flips under any rounding).
    """
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
