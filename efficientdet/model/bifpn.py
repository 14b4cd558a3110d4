"""BiFPN: repeated top-down then bottom-up weighted fusion over levels P3-P7.

Fusion is fast normalised (``relu(w) / (sum relu(w) + eps)``), softmax, or a plain sum (Lite,
D6/D7). Resampling uses static sizes: nearest resize to the target's shape going up, and an
edge-padded 'same' 3x3/2 max pool going down.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import MaxPoolSame, SeparableConv, batch_norm, make_activation

FUSION_EPS = 1e-4


class WeightedFusion(nn.Module):
    def __init__(self, num_inputs: int, method: str) -> None:
        super().__init__()
        self.method = method
        self.weight = nn.Parameter(torch.ones(num_inputs)) if method in ("fast", "softmax") else None

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        if self.weight is None:
            out = inputs[0]
            for x in inputs[1:]:
                out = out + x
            return out
        if self.method == "fast":
            w = F.relu(self.weight)
            w = w / (w.sum() + FUSION_EPS)
        else:
            w = torch.softmax(self.weight, dim=0)
        out = inputs[0] * w[0]
        for i, x in enumerate(inputs[1:], start=1):
            out = out + x * w[i]
        return out


class FusionNode(nn.Module):
    """Fuse resampled inputs, then activation -> separable conv -> BN (the reference order)."""

    def __init__(self, width: int, num_inputs: int, method: str, activation: str) -> None:
        super().__init__()
        self.fuse = WeightedFusion(num_inputs, method)
        self.act = make_activation(activation)
        self.conv = SeparableConv(width, width, bias=True)
        self.bn = batch_norm(width)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return self.bn(self.conv(self.act(self.fuse(inputs))))


def _project(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1), batch_norm(cout))


def upsample_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=(int(like.shape[2]), int(like.shape[3])), mode="nearest")


class BiFPNLayer(nn.Module):
    """One BiFPN cell. The first one also projects backbone C3-C5 and builds P6/P7.

    As in the reference, P4 and P5 get separate 1x1 projections for their top-down and
    bottom-up uses in the first layer.
    """

    def __init__(self, width: int, method: str, activation: str, in_channels: tuple[int, int, int] | None,
                 pool_padding: str = "same") -> None:
        super().__init__()
        self.first = in_channels is not None
        if in_channels is not None:
            c3, c4, c5 = in_channels
            self.p3_proj = _project(c3, width)
            self.p4_proj_td = _project(c4, width)
            self.p5_proj_td = _project(c5, width)
            self.p4_proj_bu = _project(c4, width)
            self.p5_proj_bu = _project(c5, width)
            self.p6_proj = _project(c5, width)
        self.down = MaxPoolSame(padding=pool_padding)
        node = lambda n: FusionNode(width, n, method, activation)  # noqa: E731
        self.p6_td, self.p5_td, self.p4_td, self.p3_out = node(2), node(2), node(2), node(2)
        self.p4_out, self.p5_out, self.p6_out, self.p7_out = node(3), node(3), node(3), node(2)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.first:
            c3, c4, c5 = feats
            p6 = self.down(self.p6_proj(c5))
            p7 = self.down(p6)
            p3 = self.p3_proj(c3)
            p4_td_in, p5_td_in = self.p4_proj_td(c4), self.p5_proj_td(c5)
            p4_bu_in, p5_bu_in = self.p4_proj_bu(c4), self.p5_proj_bu(c5)
        else:
            p3, p4, p5, p6, p7 = feats
            p4_td_in = p4_bu_in = p4
            p5_td_in = p5_bu_in = p5

        p6_td = self.p6_td([p6, upsample_to(p7, p6)])
        p5_td = self.p5_td([p5_td_in, upsample_to(p6_td, p5_td_in)])
        p4_td = self.p4_td([p4_td_in, upsample_to(p5_td, p4_td_in)])
        p3_out = self.p3_out([p3, upsample_to(p4_td, p3)])

        p4_out = self.p4_out([p4_bu_in, p4_td, self.down(p3_out)])
        p5_out = self.p5_out([p5_bu_in, p5_td, self.down(p4_out)])
        p6_out = self.p6_out([p6, p6_td, self.down(p5_out)])
        p7_out = self.p7_out([p7, self.down(p6_out)])
        return [p3_out, p4_out, p5_out, p6_out, p7_out]


class BiFPN(nn.Module):
    def __init__(self, in_channels: tuple[int, int, int], width: int, depth: int, method: str, activation: str,
                 pool_padding: str = "same") -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            BiFPNLayer(width, method, activation, in_channels if i == 0 else None, pool_padding) for i in range(depth))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        for layer in self.layers:
            feats = layer(feats)
        return feats
