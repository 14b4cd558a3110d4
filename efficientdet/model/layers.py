"""Small building blocks shared by the backbone, the BiFPN and the heads.

Everything here is export-friendly: static shapes, padding decided from static sizes, and
no -inf padding (which breaks int8 TFLite and onnxruntime, see docs/TOOLCHAIN.md).
"""

from __future__ import annotations

import torch
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.1


def make_activation(name: str) -> nn.Module:
    if name == "swish":
        return nn.SiLU()
    if name == "relu6":
        return nn.ReLU6()
    if name == "relu":
        return nn.ReLU()
    raise ValueError(f"unknown activation {name!r}")


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class ConvBNAct(nn.Module):
    """Conv (symmetric 'k//2' padding, which every converter maps to a plain padded conv) + BN + act."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 activation: str | None = "swish") -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = batch_norm(cout)
        self.act = make_activation(activation) if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SeparableConv(nn.Module):
    """Depthwise 3x3 (no bias) followed by pointwise 1x1 (with bias), as in the reference heads/BiFPN."""

    def __init__(self, cin: int, cout: int, bias: bool = True) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, 1, 0, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def same_pad_amounts(size: int, kernel: int = 3, stride: int = 2) -> tuple[int, int]:
    """TF 'same' padding (before, after) for one spatial dimension of a static size."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def edge_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Replicate border rows/columns with slice + concat.

    For a max-pool this equals -inf padding (the replicated value is already inside the
    window) but it converts to plain SLICE/CONCATENATION ops that quantize and delegate
    cleanly, unlike PADV2(-inf) or MIRROR_PAD.
    """
    parts = [x[:, :, :1, :]] * top + [x] + [x[:, :, -1:, :]] * bottom
    if len(parts) > 1:
        x = torch.cat(parts, dim=2)
    parts = [x[:, :, :, :1]] * left + [x] + [x[:, :, :, -1:]] * right
    if len(parts) > 1:
        x = torch.cat(parts, dim=3)
    return x


class MaxPoolSame(nn.Module):
    """3x3 stride-2 max pool with TF 'same' output size (ceil(size/2)), padding by edge replication.

    Sizes are read from the input's static shape: in a traced/exported graph they are constants,
    so no padding is computed at run time.
    """

    def __init__(self, kernel: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.pool = nn.MaxPool2d(kernel, stride, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_pad_amounts(int(x.shape[2]), self.kernel, self.stride)
        left, right = same_pad_amounts(int(x.shape[3]), self.kernel, self.stride)
        return self.pool(edge_pad(x, top, bottom, left, right))


class DropPath(nn.Module):
    """Stochastic depth on the residual branch (training only; identity when exported)."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate <= 0.0:
            return x
        keep = 1.0 - self.rate
        mask = torch.empty((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask / keep
