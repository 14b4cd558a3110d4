"""EfficientNet B0-B7 and EfficientNet-Lite0-4, written here because timm cannot be imported
beside the CPU torch wheel (docs/TOOLCHAIN.md: every timm release imports torchvision).

The detector uses ``features_only=True`` (stride 8/16/32 outputs); the classifier form exists so
parameter counts can be checked against the published EfficientNets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .config import EFFICIENTNET_SCALING
from .layers import BN_EPS, ConvBNAct, DropPath, batch_norm, make_activation


@dataclass(frozen=True)
class StageArgs:
    kernel: int
    stride: int
    expand: int
    cin: int
    cout: int
    repeats: int


# EfficientNet-B0 stages (EFFICIENTDET-FACTS); every other size is scaled from these.
B0_STAGES: tuple[StageArgs, ...] = (
    StageArgs(3, 1, 1, 32, 16, 1),
    StageArgs(3, 2, 6, 16, 24, 2),
    StageArgs(5, 2, 6, 24, 40, 2),
    StageArgs(3, 2, 6, 40, 80, 3),
    StageArgs(5, 1, 6, 80, 112, 3),
    StageArgs(5, 2, 6, 112, 192, 4),
    StageArgs(3, 1, 6, 192, 320, 1),
)
FEATURE_STAGES = (2, 4, 6)  # ends of stages 3, 5, 7: strides 8, 16, 32
SE_RATIO = 0.25


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Scale channels by width, round to a multiple of 8, never losing more than 10%."""
    c = channels * width
    new = max(divisor, int(c + divisor / 2) // divisor * divisor)
    if new < 0.9 * c:
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(repeats * depth))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int, activation: str) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.act = make_activation(activation)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))


class MBConv(nn.Module):
    """Inverted residual: expand 1x1, depthwise kxk, optional squeeze-excite, project 1x1."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int,
                 use_se: bool, activation: str, drop_path: float, padding: str = "symmetric",
                 bn_eps: float = BN_EPS) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = (ConvBNAct(cin, mid, 1, activation=activation, bn_eps=bn_eps) if expand != 1
                       else nn.Identity())
        self.depthwise = ConvBNAct(mid, mid, kernel, stride, groups=mid, activation=activation, padding=padding,
                                   bn_eps=bn_eps)
        self.se = SqueezeExcite(mid, max(1, int(cin * SE_RATIO)), activation) if use_se else nn.Identity()
        self.project = ConvBNAct(mid, cout, 1, activation=None, bn_eps=bn_eps)
        self.residual = stride == 1 and cin == cout
        self.drop_path = DropPath(drop_path) if self.residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + self.drop_path(y) if self.residual else y


class EfficientNet(nn.Module):
    """EfficientNet / EfficientNet-Lite. ``num_classes=None`` gives the detector's feature extractor.

    ``padding``/``bn_eps``: "same" and 1e-3 for TensorFlow-trained weights (the EfficientNet-Lite
    packages, timm's tf_ models); timm's PyTorch-trained ``efficientnet_b*`` use "symmetric" and 1e-5.
    """

    def __init__(self, name: str = "b0", num_classes: int | None = None, drop_path_rate: float = 0.2,
                 padding: str = "symmetric", bn_eps: float = BN_EPS) -> None:
        super().__init__()
        if name not in EFFICIENTNET_SCALING:
            raise ValueError(f"unknown EfficientNet {name!r}; known: {sorted(EFFICIENTNET_SCALING)}")
        self.name = name
        width, depth, _, dropout = EFFICIENTNET_SCALING[name]
        lite = name.startswith("lite")
        activation = "relu6" if lite else "swish"
        stem = 32 if lite else round_filters(32, width)  # Lite keeps stem and head unscaled
        self.stem = ConvBNAct(3, stem, 3, 2, activation=activation, padding=padding, bn_eps=bn_eps)

        stages = []
        for i, s in enumerate(B0_STAGES):
            fixed = lite and i in (0, len(B0_STAGES) - 1)
            stages.append(StageArgs(s.kernel, s.stride, s.expand, round_filters(s.cin, width),
                                    round_filters(s.cout, width),
                                    s.repeats if fixed else round_repeats(s.repeats, depth)))
        total_blocks = sum(s.repeats for s in stages)
        block_idx = 0
        cin = stem
        self.stages = nn.ModuleList()
        for s in stages:
            blocks = []
            for r in range(s.repeats):
                rate = drop_path_rate * block_idx / total_blocks
                blocks.append(MBConv(cin, s.cout, s.kernel, s.stride if r == 0 else 1, s.expand,
                                     not lite, activation, rate, padding, bn_eps))
                cin = s.cout
                block_idx += 1
            self.stages.append(nn.Sequential(*blocks))
        self.feature_channels = tuple(stages[i].cout for i in FEATURE_STAGES)

        self.num_classes = num_classes
        if num_classes is not None:
            head = 1280 if lite else round_filters(1280, width)
            self.head = ConvBNAct(cin, head, 1, activation=activation, bn_eps=bn_eps)
            self.dropout = nn.Dropout(dropout)
            self.classifier = nn.Linear(head, num_classes)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in FEATURE_STAGES:
                feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        feats = self.forward_features(x)
        if self.num_classes is None:
            return feats
        x = self.head(feats[-1]).mean((2, 3))
        return self.classifier(self.dropout(x))


def classifier_param_count(name: str, num_classes: int = 1000) -> int:
    """Parameters of the full ImageNet classifier, for checking against the published counts."""
    model = EfficientNet(name, num_classes=num_classes)
    return sum(p.numel() for p in model.parameters())


__all__ = ["EfficientNet", "MBConv", "classifier_param_count", "round_filters", "round_repeats", "batch_norm"]
