"""Distillation objective for QAT: make the fake-quantized model reproduce the FP32 model's outputs.

Why not the training loss: the int8 gate asks whether the artifact still finds what the *FP32 model*
found, not whether it fits the labels better. Fine-tuning on the labels moves the model as a whole
(measured: QAT with the detection loss ended 0.7-1.1 mAP points from FP32 on BCCD and the default
model, and 12-20 % of its detections were ones FP32 did not make, while post-training ONNX and OpenVINO
int8 stayed within 0.5 point); matching the FP32 model's own outputs spends the fine-tune on the quantization
error only, needs no labels, and is the usual QAT-with-teacher recipe.

Class outputs: the Bernoulli KL divergence of each sigmoid output from the teacher's (soft-target
BCE minus the teacher's entropy, so a perfect student scores 0). Box outputs: the training loss's
Huber form against the teacher's regression, weighted by the teacher's best class probability, so
only anchors the teacher believes hold an object pull on the boxes. Both are normalised by that
soft object count, like the detection loss by its positive anchors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from efficientdet.train.loss import BOX_LOSS_WEIGHT, HUBER_DELTA


def distillation_loss(logits: torch.Tensor, box_reg: torch.Tensor, teacher_logits: torch.Tensor,
                      teacher_box: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Total, class and box distillation loss: ``logits [N,A,C]``, ``box_reg [N,A,4]`` against the teacher's."""
    target = torch.sigmoid(teacher_logits)
    entropy = F.binary_cross_entropy_with_logits(teacher_logits, target, reduction="sum")
    weight = target.max(dim=-1).values
    norm = weight.sum().clamp(min=1.0)
    cls_loss = (F.binary_cross_entropy_with_logits(logits, target, reduction="sum") - entropy) / norm
    box = F.huber_loss(box_reg, teacher_box, delta=HUBER_DELTA, reduction="none").sum(dim=-1)
    box_loss = (box * weight).sum() / (norm * 4)
    return cls_loss + BOX_LOSS_WEIGHT * box_loss, cls_loss.detach(), box_loss.detach()
