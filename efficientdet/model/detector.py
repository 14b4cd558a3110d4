"""The EfficientDet network: backbone -> BiFPN -> class/box nets.

Output layout (documented in docs/ARCHITECTURE.md and every manifest):
``logits [N, A, C]`` raw class logits (no sigmoid) and ``box_regression [N, A, 4]`` deltas
``(dx, dy, dw, dh)`` against the anchors of ``runtime.anchors`` in the same order
(level 3..7, row, column, anchor-in-cell).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .backbone import EfficientNet
from .bifpn import BiFPN
from .config import ModelConfig
from .head import HeadNet, class_prior_bias

OUTPUT_NAMES = ("logits", "box_regression")
INPUT_NAME = "images"


class EfficientDet(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = EfficientNet(config.backbone, num_classes=None, drop_path_rate=config.drop_path_rate,
                                     padding=config.conv_padding, bn_eps=config.backbone_bn_eps)
        levels = config.max_level - config.min_level + 1
        self.fpn = BiFPN(self.backbone.feature_channels, config.fpn_width, config.fpn_depth,
                         config.fusion, config.activation, config.pool_padding)
        a = config.num_anchors_per_location
        self.class_net = HeadNet(config.fpn_width, config.head_depth, levels, a, config.num_classes,
                                 config.activation, prior_bias=class_prior_bias())
        self.box_net = HeadNet(config.fpn_width, config.head_depth, levels, a, 4, config.activation)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.fpn(self.backbone(images))
        return self.class_net(feats), self.box_net(feats)

    def export_form(self) -> EfficientDet:
        """An eval-mode copy whose heads are per-level with BN folded (exact; for quantizers/export).
        Idempotent: the export form of an export form is a copy of it."""
        model = copy.deepcopy(self).eval()
        if hasattr(self.class_net, "unshared"):
            model.class_net = self.class_net.unshared()
            model.box_net = self.box_net.unshared()
        return model.eval()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
