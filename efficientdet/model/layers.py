"""Small building blocks shared by the backbone, the BiFPN and the heads.

Everything here is export-friendly: static shapes, padding decided from static sizes, and
no -inf padding (which breaks int8 TFLite and onnxruntime, see docs/TOOLCHAIN.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import PADDINGS

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


# PADDINGS: "symmetric" (PyTorch's k//2 on every side) or "same" (TensorFlow SAME: the extra row/column
# goes bottom/right). Weights trained in TensorFlow, or with effdet's tf_ models, only reproduce their
# outputs with "same" (docs/PRETRAINED-AND-EFFDET.md).


def check_padding(padding: str) -> str:
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    return padding


def batch_norm(channels: int, eps: float = BN_EPS) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=eps, momentum=BN_MOMENTUM)


class ConvBNAct(nn.Module):
    """Conv + BN + act. Padding is k//2 on every side, or TF 'same' for strided convs with
    ``padding="same"``: an explicit zero pad of static size before an unpadded conv, which every
    converter maps to a plain PAD op (no run-time padding arithmetic in the graph)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 activation: str | None = "swish", padding: str = "symmetric", bn_eps: float = BN_EPS) -> None:
        super().__init__()
        self.same_pad = check_padding(padding) == "same" and stride > 1
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv2d(cin, cout, kernel, stride, 0 if self.same_pad else kernel // 2, groups=groups,
                              bias=False)
        self.bn = batch_norm(cout, bn_eps)
        self.act = make_activation(activation) if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same_pad:
            top, bottom = same_pad_amounts(int(x.shape[2]), self.kernel, self.stride)
            left, right = same_pad_amounts(int(x.shape[3]), self.kernel, self.stride)
            x = F.pad(x, (left, right, top, bottom))
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
    """3x3 stride-2 max pool, padding by edge replication: TF 'same' (ceil(size/2) outputs, extra
    row/column bottom/right) or ``padding="symmetric"`` (PyTorch's ``padding=1``, as in effdet's
    non-tf_ models).

    Sizes are read from the input's static shape: in a traced/exported graph they are constants,
    so no padding is computed at run time.
    """

    def __init__(self, kernel: int = 3, stride: int = 2, padding: str = "same") -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.symmetric = check_padding(padding) == "symmetric"
        self.pool = nn.MaxPool2d(kernel, stride, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.symmetric:
            p = self.kernel // 2
            return self.pool(edge_pad(x, p, p, p, p))
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
