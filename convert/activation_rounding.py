"""The FP32 model against itself when every activation moves by up to half of its int8 step: the size of the rounding
an int8 file makes inside the network, without its grid, its clipping or its weights.

An int8 file holds each activation tensor on 256 codes over a range calibrated on its calibration images. How
many of its own detections the FP32 model keeps when each such tensor moves by a uniform draw of up to half a
code (ranges per tensor, min-max over a calibration set) tells whether a failing int8 detection match is the
quantizer's (its ranges, its clipping: a better recipe helps) or the model's own (its detections hang on
smaller moves than 8-bit steps: no choice of ranges gives them back). :mod:`convert.input_rounding` reads the
same for the input's rounding alone.

Measured (``make bccd-input-rounding``, results/bccd-fp32-input-rounding.md, 3 draws): the BCCD D0 keeps 86.7 % of
its field detections (its int8 files 61-72 %), the ImageNet-pretrained BCCD Lite0s 93.6-97.5 %; on the test split
the D0 keeps 93.8 %, about what its files match (94-98 %). So the D0's field failure is its own fragility to 8-bit
steps and its calibrated ranges' clipping, in about equal parts (docs/QUANTIZATION.md, "The gate"). The gate reads
one draw (the first seed, ranges over the export's calibration set) beside every int8 export (:mod:`convert.parity`)
and, where it leaves the field bound little room, says so in the failure (:mod:`convert.gates`). It is no bound on a
file: its min-max ranges step wider than a percentile file's (the default D0's TFLite keeps 90.9 % of its field
against its reading's 86.6 %). Nor is a reading that holds a promise: the BCCD D0 fine-tuned 10 more epochs reads
93.3 % of its field and its files keep 70-81 %; the same epochs with half its images under other light read 93.8 % and
its files hold, 90-95 % (results/bccd-d0-noshift-int8.md, results/bccd-d0-photometric-int8.md).

The tensors are PyTorch module outputs: every activation's, the BiFPN's fusions and poolings, a BatchNorm's (the
export folds it into the convolution before it, whose output the files quantize) and a convolution's own, each of the
last two only where it is not read by a module every target fuses into it (a BatchNorm; a ReLU or ReLU6, whose
clamp the converters fold into the layer's output quantizer: the Lite models' only tensor there is the activation's;
a SiLU is not fused, so the D0 has both). A module run more than once (the heads' shared activation and last
convolution) gets one range over all its calls, where the files have one per level: its steps here are the wider
of theirs. Residual additions and the squeeze-excite products are functional, not modules, and stay float.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from calib_data import CalibrationSet
from efficientdet.model.bifpn import WeightedFusion
from runtime.anchors import generate_anchors
from runtime.contract import Contract
from runtime.postprocess import postprocess
from runtime.preprocess import preprocess

from .matching import MatchCounts

QUANTIZED_OUTPUTS = (nn.Conv2d, nn.BatchNorm2d, nn.SiLU, nn.ReLU, nn.ReLU6, nn.MaxPool2d, WeightedFusion)
FUSED_INTO_PRODUCER = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6)  # the output they read is no tensor of the files
LEVELS = 256  # uint8 activations
RANGE_IMAGES = 64  # calibration images the ranges are taken over (the ONNX quantizer's count)
SEED = 20261205


@dataclass(frozen=True)
class ActivationRanges:
    """Module name -> (low, high) of its output over the calibration images, zero included (the files' grids hold
    an exact zero)."""

    ranges: Mapping[str, tuple[float, float]]
    images: int = 0  # calibration images the ranges were taken over

    def step(self, name: str) -> float:
        low, high = self.ranges[name]
        return (high - low) / (LEVELS - 1)


def _quantized_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, QUANTIZED_OUTPUTS)}


@torch.no_grad()
def activation_ranges(model: nn.Module, calib: CalibrationSet, count: int = RANGE_IMAGES) -> ActivationRanges:
    """Min-max of every quantized module output of ``model`` (eval mode) over ``count`` calibration images."""
    modules = _quantized_modules(model)
    seen: dict[str, tuple[float, float]] = {}
    outputs: dict[str, torch.Tensor] = {}  # this image's outputs, to find the ones a fused module reads
    fused: set[str] = set()

    def observe(name: str) -> Any:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            if isinstance(module, FUSED_INTO_PRODUCER):
                fused.update(n for n, t in outputs.items() if t is inputs[0] and n != name)
            outputs[name] = out
            low, high = float(out.min()), float(out.max())
            old = seen.get(name, (0.0, 0.0))
            seen[name] = (min(old[0], low), max(old[1], high))
        return hook

    handles = [m.register_forward_hook(observe(n)) for n, m in modules.items()]
    images = min(count, len(calib))
    try:
        model.eval()
        for i in range(images):
            outputs.clear()
            model(torch.from_numpy(calib.nchw(i)))
    finally:
        for h in handles:
            h.remove()
    return ActivationRanges({n: r for n, r in seen.items() if n not in fused and r[1] > r[0]}, images)


@contextmanager
def rounded_activations(model: nn.Module, ranges: ActivationRanges, seed: int = SEED) -> Iterator[None]:
    """Within the block, every ranged module output of ``model`` moves by a seeded uniform draw of up to half its
    step."""
    generator = torch.Generator().manual_seed(seed)
    modules = _quantized_modules(model)

    def move(step: float) -> Any:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
            return out + (torch.rand(out.shape, generator=generator) - 0.5) * step
        return hook

    handles = [modules[n].register_forward_hook(move(ranges.step(n))) for n in ranges.ranges]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def own_match(model: nn.Module, contract: Contract, images: Iterable[np.ndarray], ranges: ActivationRanges,
              iou: float, seeds: Sequence[int] = (SEED,)) -> list[dict[str, Any]]:
    """The FP32 model's detections (deployment threshold) on ``images`` (BGR uint8) matched with its own under
    :func:`rounded_activations`, both ways, at ``iou``: one :meth:`MatchCounts.detections` plus ``num_images`` per
    draw of ``seeds`` (image ``k`` of the draw seeded ``s`` gets seed ``s + k``). Each image is pre-processed and
    run unmoved once for all draws."""
    anchors = generate_anchors(contract.anchors)
    model.eval()
    counts = [MatchCounts() for _ in seeds]

    def detect(x: torch.Tensor) -> Any:
        logits, deltas = model(x)
        return postprocess(logits[0].numpy(), deltas[0].numpy(), anchors, contract.postprocess, contract.box_coding)

    for k, image in enumerate(images):
        x = torch.from_numpy(np.ascontiguousarray(preprocess(image, contract.preprocess)[0].transpose(2, 0, 1)[None]))
        ref = detect(x)
        for seed, count in zip(seeds, counts):
            with rounded_activations(model, ranges, seed + k):  # one seeded draw per image
                count.add(ref, detect(x), iou)
    return [{**c.detections(), "num_images": c.num_images} for c in counts]
