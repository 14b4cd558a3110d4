"""Detection loss: sigmoid focal loss (alpha 0.25, gamma 1.5) + Huber box loss (delta 0.1, x50),
both normalised by the number of positive anchors, as in the EfficientDet reference."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .targets import BACKGROUND

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 1.5
HUBER_DELTA = 0.1
BOX_LOSS_WEIGHT = 50.0


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = FOCAL_ALPHA,
               gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """Summed sigmoid focal loss for one-hot ``target`` of the same shape as ``logits``."""
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    return (alpha_t * (1 - p_t).pow(gamma) * ce).sum()


def detection_loss(logits: torch.Tensor, box_reg: torch.Tensor, cls_targets: torch.Tensor,
                   box_targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Total, class and box loss for a batch.

    ``logits [N,A,C]``, ``box_reg [N,A,4]``, ``cls_targets [N,A]`` (class index or -1), ``box_targets [N,A,4]``.
    """
    positive = cls_targets > BACKGROUND
    num_pos = positive.sum().clamp(min=1).to(logits.dtype)
    one_hot = F.one_hot(cls_targets.clamp(min=0), logits.shape[-1]).to(logits.dtype)
    one_hot = one_hot * positive.unsqueeze(-1).to(logits.dtype)
    cls_loss = focal_loss(logits, one_hot) / num_pos
    box_loss = F.huber_loss(box_reg[positive], box_targets[positive], delta=HUBER_DELTA, reduction="sum")
    box_loss = box_loss / (num_pos * 4)
    return cls_loss + BOX_LOSS_WEIGHT * box_loss, cls_loss.detach(), box_loss.detach()
