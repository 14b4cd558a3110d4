"""How far int8 rounding alone moves a model's mAP on one evaluation split: the FP32 model under random draws of
the two roundings every int8 file makes, nothing else changed.

Every int8 file rounds its input to the input quantizer's codes (about one grey level apart, so each value moves by
up to half a grey level: :mod:`convert.input_rounding`) and its convolution weights to int8 codes per output
channel (up to half a step of ``max |w| / 127``). Which way each value rounds is, for the mAP, an accident of the
bytes; draws of the same size show how far that accident alone carries the mAP on a given split. Their spread is
the resolution at which one int8 file's ΔmAP on that split says anything about its recipe: a file inside it may be
as faithful as int8 gets, on whichever side of FP32 it lands. (The paired bootstrap of
:mod:`efficientdet.map_bootstrap` answers another question: how far another split of that size could move the same
file.) Measured on the BCCD Lite0 at 512 px, 72 test images (``make bccd-lite0-512-augfix-rounding-noise``, 10 draws
each): input and weights drawn together moved its mAP by -0.32 … +0.69 point (sd 0.38), the weights on their
nearest codes alone by +0.56, and its twelve int8 files lie at -0.01 … +0.78: a file's ΔmAP on that split is known
to within a band about a point wide from rounding alone.

Uniform draws rather than round-to-nearest: rounding to the nearest code is one fixed draw of the same size
(reported too, ``weights rounded``); the uniform draws give the distribution it is one sample of. BatchNorm is not
folded first: folding scales each output channel, and a per-channel step scales with it, so every weight's error
relative to its step is the same. Weights move on an 8-bit grid (TFLite's, QAT's); the post-training ONNX and
OpenVINO files use 7-bit weights on convolutions that are not depthwise (twice the step), so their own rounding is
larger than these draws.

Nothing of the activations' quantization is drawn. The draws bound a file's ΔmAP only where the file moves the raw
outputs about as far as they do (compare the relative L2 columns first): true of the BCCD Lite0 at 512, whose files
move its logits 0.019-0.035 against the draws' 0.028; not of the BCCD D0 at 320, whose files move them 4-13 times
as far as its draws (results/bccd-d0-rounding-noise.md): there the activations' quantization is most of the error
(:mod:`convert.activation_rounding` reads what activation steps alone do to a model's detections).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from efficientdet.data.records import DetectionDataset
from efficientdet.evaluate import coco_metrics, to_detections, torch_outputs
from runtime.anchors import generate_anchors
from runtime.contract import Contract

from .input_rounding import rounded_input

WEIGHT_LEVELS = 127  # symmetric int8 per output channel: codes -127..127

# kind -> (input moved, weights moved)
KINDS: dict[str, tuple[bool, bool]] = {
    "input": (True, False),
    "weights": (False, True),
    "input+weights": (True, True),
}
ROUNDED = "weights rounded"


def weight_step(weight: torch.Tensor, levels: int = WEIGHT_LEVELS) -> torch.Tensor:
    """The symmetric per-output-channel int8 step of a convolution weight, shaped to broadcast against it."""
    return weight.abs().amax(dim=tuple(range(1, weight.dim())), keepdim=True) / levels


def _moved_weights(model: nn.Module, move: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> nn.Module:
    out = copy.deepcopy(model).eval()
    with torch.no_grad():
        for m in out.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(move(m.weight, weight_step(m.weight)))
    return out


def jittered_weights(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` whose every convolution weight moved by a uniform draw of up to half its int8 step."""
    g = torch.Generator().manual_seed(seed)
    return _moved_weights(model, lambda w, step: w + (torch.rand(w.shape, generator=g) - 0.5) * step)


def rounded_weights(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose every convolution weight sits on its nearest int8 code (weights-only int8)."""
    return _moved_weights(model, lambda w, step: torch.round(w / step.clamp_min(1e-12)) * step)


@dataclass(frozen=True)
class Draw:
    """One perturbed pass over the split: its mAP and how far its raw outputs moved (relative L2 over the split)."""

    kind: str
    seed: int | None
    map: float
    logits_rel_l2: float
    boxes_rel_l2: float

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "seed": self.seed, "map": self.map, "logits_rel_l2": self.logits_rel_l2,
                "boxes_rel_l2": self.boxes_rel_l2}


class RoundingNoise:
    """The FP32 model's unperturbed pass over a labelled split (kept in memory: every image's raw outputs), against
    which each :meth:`draw` is scored."""

    def __init__(self, model: nn.Module, contract: Contract, dataset: DetectionDataset) -> None:
        if not dataset.labelled:
            raise ValueError(f"{dataset.source} [{dataset.split}] has no labels: the rounding noise of mAP needs a "
                             "labelled evaluation split")
        self.model, self.contract, self.dataset = model.eval(), contract, dataset
        self.anchors = generate_anchors(contract.anchors)
        self.map_ref, self._ref = self._pass(self.model, None)
        self._ref_norms = [sum(float((ref[k] ** 2).sum()) for ref in self._ref) for k in (0, 1)]  # logits, boxes

    def _pass(self, model: nn.Module, transform: Callable[[np.ndarray, int], np.ndarray] | None,
              ) -> tuple[float, list[tuple[np.ndarray, np.ndarray]]]:
        spec, records = self.contract.preprocess, self.dataset.records
        raw, preds = [], []
        for i, logits, deltas in torch_outputs(model, self.dataset, spec, progress=False, transform=transform):
            raw.append((logits, deltas))
            preds.append(to_detections(logits, deltas, records[i], spec, self.anchors))
        return float(coco_metrics(self.dataset, preds)["map"]), raw

    def _scored(self, kind: str, seed: int | None, model: nn.Module,
                transform: Callable[[np.ndarray, int], np.ndarray] | None) -> Draw:
        mean_ap, raw = self._pass(model, transform)

        def rel_l2(k: int) -> float:
            err = sum(float(((out[k] - ref[k]) ** 2).sum()) for out, ref in zip(raw, self._ref))
            return float(np.sqrt(err / max(self._ref_norms[k], 1e-30)))

        return Draw(kind, seed, mean_ap, rel_l2(0), rel_l2(1))

    def draw(self, kind: str, seed: int) -> Draw:
        """The split under one seeded draw of ``kind`` (a key of :data:`KINDS`)."""
        if kind not in KINDS:
            raise ValueError(f"unknown rounding kind {kind!r}; one of {', '.join(KINDS)}")
        move_input, move_weights = KINDS[kind]
        spec = self.contract.preprocess

        def transform(x: np.ndarray, index: int) -> np.ndarray:
            return rounded_input(x, spec, np.random.default_rng((seed, index)))

        model = jittered_weights(self.model, seed) if move_weights else self.model
        return self._scored(kind, seed, model, transform if move_input else None)

    def rounded(self) -> Draw:
        """The split with the weights on their nearest int8 codes, the input untouched: one fixed draw."""
        return self._scored(ROUNDED, None, rounded_weights(self.model), None)


def summary(map_ref: float, draws: list[Draw], goal_points: float) -> dict[str, float | int]:
    """ΔmAP in points of some draws: mean, sample standard deviation, extremes and the share within ±goal."""
    deltas = np.array([100.0 * (d.map - map_ref) for d in draws])
    return {"draws": len(deltas), "mean": float(deltas.mean()),
            "sd": float(deltas.std(ddof=1)) if len(deltas) > 1 else 0.0,
            "min": float(deltas.min()), "max": float(deltas.max()),
            "within_goal": float((np.abs(deltas) <= goal_points).mean()),
            "logits_rel_l2": float(np.median([d.logits_rel_l2 for d in draws])),
            "boxes_rel_l2": float(np.median([d.boxes_rel_l2 for d in draws]))}
