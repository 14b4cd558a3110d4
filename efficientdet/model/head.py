"""Class and box prediction nets, shared across levels P3-P7 with a BatchNorm per level.

Quantizers (PT2E ``convert_pt2e``) fold all levels' BNs into one shared weight, so
:meth:`HeadNet.unshared` gives the exact export form: each level its own conv copy with that
level's BN folded in.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .layers import SeparableConv, batch_norm, make_activation

PRIOR_PROBABILITY = 0.01


class HeadNet(nn.Module):
    """``depth`` x (separable conv -> per-level BN -> act), then a separable conv to anchors*outputs."""

    def __init__(self, width: int, depth: int, num_levels: int, num_anchors: int, num_outputs: int,
                 activation: str, prior_bias: float = 0.0) -> None:
        super().__init__()
        self.num_outputs = num_outputs
        self.convs = nn.ModuleList(SeparableConv(width, width) for _ in range(depth))
        self.bns = nn.ModuleList(nn.ModuleList(batch_norm(width) for _ in range(depth)) for _ in range(num_levels))
        self.act = make_activation(activation)
        self.predict = SeparableConv(width, num_anchors * num_outputs)
        nn.init.constant_(self.predict.pointwise.bias, prior_bias)

    def forward_level(self, x: torch.Tensor, level: int) -> torch.Tensor:
        for conv, bn in zip(self.convs, self.bns[level]):
            x = self.act(bn(conv(x)))
        return self.predict(x)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Returns ``[N, sum(H*W*A), num_outputs]`` ordered level, row, column, anchor."""
        outs = []
        for level, x in enumerate(feats):
            y = self.forward_level(x, level)
            n = y.shape[0]
            outs.append(y.permute(0, 2, 3, 1).reshape(n, -1, self.num_outputs))
        return torch.cat(outs, dim=1)

    def unshared(self) -> UnsharedHeadNet:
        return UnsharedHeadNet(self)


def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A copy of ``conv`` with the following eval-mode ``bn`` folded into its weight and bias."""
    fused = copy.deepcopy(conv)
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.weight = nn.Parameter(conv.weight.detach() * scale.reshape(-1, 1, 1, 1))
    fused.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias.detach())
    return fused


class UnsharedHeadNet(nn.Module):
    """Export form of :class:`HeadNet`: per-level conv copies with BN folded; numerically the same."""

    def __init__(self, head: HeadNet) -> None:
        super().__init__()
        self.num_outputs = head.num_outputs
        self.act = copy.deepcopy(head.act)
        levels = []
        for bns in head.bns:
            layers: list[nn.Module] = []
            for conv, bn in zip(head.convs, bns):
                layers += [copy.deepcopy(conv.depthwise), _fold_bn(conv.pointwise, bn), copy.deepcopy(head.act)]
            layers += [copy.deepcopy(head.predict.depthwise), copy.deepcopy(head.predict.pointwise)]
            levels.append(nn.Sequential(*layers))
        self.levels = nn.ModuleList(levels)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        outs = []
        for net, x in zip(self.levels, feats):
            y = net(x)
            outs.append(y.permute(0, 2, 3, 1).reshape(y.shape[0], -1, self.num_outputs))
        return torch.cat(outs, dim=1)


def class_prior_bias() -> float:
    return -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)
