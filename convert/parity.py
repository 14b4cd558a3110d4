"""The parity gate: does an exported artifact behave like the FP32 PyTorch model it came from?

The artifact runs through the runtime's :class:`runtime.detector.Detector` (its manifest, its backend,
its pre-processing), the reference is the PyTorch model fed the *same* ``runtime.preprocess`` output
(checked bit-for-bit for float inputs; a pixel-input artifact's pixels are checked to normalise to it), and both
go through the same ``runtime.postprocess`` and letterbox inversion. All artifacts are compared in one pass over
the images, so no image or raw output is kept (a 90-class D0 at 512 has 4.4 M logits per image). Measured per raw
output: max abs error, rel error (max abs err / max |reference|), SNR in dB and Pearson r (centred: class logits
share a large prior-bias offset); on detections: the fraction of reference detections matched
one-to-one by the artifact (same class, IoU >= threshold) and vice versa, with the deployment
post-processing; on accuracy: COCO mAP@[.5:.95] (0-1 units) of both with the evaluation
post-processing, with a paired bootstrap interval of ΔmAP over the evaluation images
(:mod:`efficientdet.map_bootstrap`: reported, not gated). Then the same comparison (no mAP: no labels)
on the field images of :mod:`convert.field`, which the calibration never resembled, with the share of input
values an int8 artifact's first quantizer clips (:mod:`convert.input_quantizer`). Beside int8 gates, the FP32
model is also matched with itself under the input quantizer's rounding alone (:mod:`convert.input_rounding`) and,
given the calibration set's activation ranges, under every activation's 8-bit rounding alone
(:mod:`convert.activation_rounding`): how much of a detection mismatch is the model's own instability, and how much
room the model leaves an int8 recipe (a pointer, not a bound on any file). Thresholds live in :mod:`convert.gates`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from efficientdet.data.records import DetectionDataset
from efficientdet.evaluate import coco_metrics
from efficientdet.map_bootstrap import PairedBootstrap
from runtime.anchors import generate_anchors
from runtime.contract import EVAL_POSTPROCESS, Contract, PostprocessSpec, PreprocessSpec
from runtime.detector import Detector, UngatedArtifactWarning
from runtime.postprocess import Detections, at_threshold, postprocess
from runtime.preprocess import Letterbox, preprocess, read_image, to_layout

from .activation_rounding import SEED as ACTIVATION_SEED
from .activation_rounding import ActivationRanges, rounded_activations
from .errors import ConversionError
from .field import FieldImage
from .gates import PASS, GateThresholds, gate_for, verdict
from .input_quantizer import InputQuantizer, input_quantizer
from .input_rounding import HALF_STEP_GREY, SEED, rounded_input
from .manifest_writer import Artifact
from .matching import MatchCounts

OUTPUTS = ("logits", "box_regression")
UNITS_ATOL = 1e-5  # a pixel-input artifact's pixels, normalised, against the reference input (float32 rounding)


class ParityError(ConversionError):
    """The comparison itself could not be made (e.g. the runtime pre-processing differs from the reference's)."""


class _Stats:
    """Streaming error statistics for one output over all images (float64 sums)."""

    def __init__(self) -> None:
        self.max_abs_err = 0.0
        self.max_ref = 0.0
        self.n = 0
        self.sums = np.zeros(6)  # x, y, xx, yy, xy, err^2 with x = reference, y = artifact

    def add(self, ref: np.ndarray, out: np.ndarray) -> None:
        x, y = ref.astype(np.float64).ravel(), out.astype(np.float64).ravel()
        err = y - x
        self.max_abs_err = max(self.max_abs_err, float(np.abs(err).max()) if err.size else 0.0)
        self.max_ref = max(self.max_ref, float(np.abs(x).max()) if x.size else 0.0)
        self.n += x.size
        self.sums += [x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum(), (err * err).sum()]

    def result(self) -> dict[str, float | None]:
        sx, sy, sxx, syy, sxy, see = self.sums
        n = max(self.n, 1)
        cov = sxy - sx * sy / n
        var_x, var_y = sxx - sx * sx / n, syy - sy * sy / n
        pearson = float(cov / math.sqrt(var_x * var_y)) if var_x > 0 and var_y > 0 else None
        return {
            "max_abs_err": self.max_abs_err,
            "rel_err": self.max_abs_err / self.max_ref if self.max_ref > 0 else self.max_abs_err,
            "snr_db": float(10 * math.log10(sxx / see)) if see > 0 and sxx > 0 else None,  # None = exact
            "rel_l2": math.sqrt(see / sxx) if sxx > 0 else math.sqrt(see),  # ||artifact - reference|| / ||reference||
            "pearson": pearson,
        }


@dataclass
class Reference:
    """The FP32 PyTorch model's detections and mAP on the evaluation images (no images or raw outputs kept)."""

    dataset: DetectionDataset
    letterboxes: list[Letterbox]
    detections: list[Detections]  # deployment post-processing, network-input pixels (unclipped)
    eval_detections: list[Detections]  # evaluation post-processing, original-image pixels
    metrics: dict[str, Any]
    post_spec: PostprocessSpec
    bootstrap: PairedBootstrap | None  # the split's draws for ΔmAP's interval; None without labels
    # FP32 against itself under the int8 input quantizer's rounding alone (split, field); None without int8 gates
    input_rounding: dict[str, Any] | None = None
    # ... and under every activation's 8-bit rounding alone; None without int8 gates or activation ranges
    activation_rounding: dict[str, Any] | None = None


@dataclass
class _Tally(MatchCounts):
    """Running totals of one artifact on one image set: raw-output errors, detection matches, input clipping."""

    stats: dict[str, _Stats] = dataclasses.field(default_factory=lambda: {n: _Stats() for n in OUTPUTS})
    input_values: int = 0
    input_clipped: int = 0
    kinds: dict[str, list[int]] = dataclasses.field(default_factory=dict)  # kind -> [matched, ref, out, images]

    def clipped_share(self) -> float | None:
        return self.input_clipped / self.input_values if self.input_values else None


@dataclass
class _Comparison:
    """One artifact under test and the running totals of its comparison on the split and on the field set."""

    artifact: Artifact
    gate: GateThresholds
    detector: Detector
    quantizer: InputQuantizer | None
    # The artifact's own pre-processing where it takes other units than the reference (pixels in, the
    # normalisation folded into its first convolution: convert/pixel_input.py), with the reference's; else None.
    units: tuple[PreprocessSpec, PreprocessSpec] | None = None
    split: _Tally = dataclasses.field(default_factory=_Tally)
    field: _Tally = dataclasses.field(default_factory=_Tally)
    detections: list[Detections] = dataclasses.field(default_factory=list)  # original-image pixels
    eval_detections: list[Detections] = dataclasses.field(default_factory=list)


def subset(dataset: DetectionDataset, max_images: int | None) -> DetectionDataset:
    """The first ``max_images`` records (all when None), keeping everything else."""
    if max_images is None or max_images >= len(dataset.records):
        return dataset
    return dataclasses.replace(dataset, records=list(dataset.records[:max_images]))


def _open(artifact: Artifact, gate: GateThresholds, contract: Contract, threads: int | None) -> _Comparison:
    with warnings.catch_warnings():  # "not gated yet" is exactly what is being fixed here
        warnings.simplefilter("ignore", UngatedArtifactWarning)
        detector = Detector(artifact.path, threads=threads)
    if detector.post_spec != contract.postprocess or detector.contract.box_coding != contract.box_coding:
        mine = f"{detector.post_spec} ({detector.contract.box_coding})"
        raise ParityError(f"{artifact.path.name} post-processes with {mine}, the reference with {contract.postprocess} "
                          f"({contract.box_coding}): detections would not be comparable")
    own = detector.contract.preprocess
    units = (own, contract.preprocess) if own != contract.preprocess and not detector.in_graph_nms else None
    return _Comparison(artifact, gate, detector, input_quantizer(artifact.path), units=units)


def _own_input(c: _Comparison, image: np.ndarray, x_ref: np.ndarray, where: str) -> np.ndarray:
    """The float input in the artifact's own units (HxWx3): the reference's, or for a pixel-input artifact its pixels,
    checked to be exactly what the reference normalised."""
    if c.units is None:
        return x_ref
    own, ref = c.units
    x = preprocess(image, own)[0]
    back = (x - np.asarray(ref.mean, np.float32)) / np.asarray(ref.std, np.float32)
    if not np.allclose(back, x_ref, rtol=0, atol=UNITS_ATOL):
        raise ParityError(f"{c.artifact.path.name} takes {own.to_dict()}, which does not normalise to the reference's "
                          f"input on {where} (max diff {float(np.abs(back - x_ref).max()):.3g})")
    return x


def _step(c: _Comparison, tally: _Tally, image: np.ndarray, x_ref: np.ndarray, raw: tuple[np.ndarray, np.ndarray],
          ref_dets: Detections, where: str, kind: str | None = None) -> tuple[Detections, Detections]:
    """Run the artifact on one image, add to ``tally``; its detections (deployment, evaluation) in input pixels."""
    d = c.detector
    x, box = d.preprocess_image(image)
    x_own = _own_input(c, image, x_ref, where)
    if d.in_graph_nms:  # the graph ends in the detection op: detections and mAP only, no raw outputs
        eval_det = d.infer_detections(x, EVAL_POSTPROCESS)
        det = at_threshold(eval_det, d.post_spec)
    else:
        if d.input_spec.dtype == "float32" and not np.array_equal(x, to_layout(x_own, d.input_spec.layout)):
            raise ParityError(f"the runtime's pre-processing for {c.artifact.path.name} differs from the "
                              f"reference's on {where}")
        logits, deltas = d.infer_raw(x)
        for name, ref, out in zip(OUTPUTS, raw, (logits, deltas)):
            if ref.shape != out.shape:
                raise ParityError(f"{c.artifact.path.name}: {name} has shape {out.shape}, the reference {ref.shape}")
            tally.stats[name].add(ref, out)
        det = postprocess(logits, deltas, d.anchors, d.post_spec, d.contract.box_coding)
        eval_det = postprocess(logits, deltas, d.anchors, EVAL_POSTPROCESS, d.contract.box_coding)
    matched = tally.add(ref_dets, det, c.gate.det_match_iou)
    if c.quantizer is not None:
        tally.input_values += x_own.size
        tally.input_clipped += c.quantizer.clipped(x_own)
    if kind is not None:
        counts = tally.kinds.setdefault(kind, [0, 0, 0, 0])
        for k, v in enumerate((matched, len(ref_dets), len(det), 1)):
            counts[k] += v
    return det, eval_det


def _raw(c: _Comparison, tally: _Tally) -> dict[str, Any]:
    """Raw-output figures of one tally (none for an artifact with the detection op in its graph)."""
    per_output = {} if c.detector.in_graph_nms else {name: s.result() for name, s in tally.stats.items()}
    snrs = [v["snr_db"] for v in per_output.values() if v["snr_db"] is not None]
    pearsons = [v["pearson"] for v in per_output.values() if v["pearson"] is not None]
    return {
        "outputs": per_output,
        "max_abs_err": max((v["max_abs_err"] for v in per_output.values()), default=None),
        "rel_err": max((v["rel_err"] for v in per_output.values()), default=None),
        "snr_db": min(snrs) if snrs else None,
        "pearson": min(pearsons) if pearsons else None,
    }


def _field_result(c: _Comparison) -> dict[str, Any] | None:
    """The field figures (:mod:`convert.field`): raw-output error and detections both ways, per kind too."""
    t = c.field
    if not t.num_images:
        return None
    logits = _raw(c, t)["outputs"].get("logits")
    return {
        **_raw(c, t), **t.detections(), "num_images": t.num_images,
        "logits_rel_l2": None if logits is None else logits["rel_l2"],
        "input_clipped": t.clipped_share(),
        "by_kind": {kind: {"det_match": m / r if r else 1.0, "det_match_reverse": m / o if o else 1.0,
                           "num_detections_ref": r, "num_images": n} for kind, (m, r, o, n) in t.kinds.items()},
    }


def _result(c: _Comparison, reference: Reference) -> dict[str, Any]:
    metrics = coco_metrics(reference.dataset, c.eval_detections)
    result = {
        **_raw(c, c.split),
        **c.split.detections(),
        "det_match_iou": c.gate.det_match_iou,
        "input_clipped": c.split.clipped_share(),
        "map": metrics["map"],
        "map_ref": reference.metrics["map"],
        "map_delta": None if metrics["map"] is None else metrics["map"] - reference.metrics["map"],
        "map_delta_interval": None if reference.bootstrap is None
        else reference.bootstrap.delta_interval(c.eval_detections).to_dict(),
        "map50": metrics["map50"],
        "map50_ref": reference.metrics["map50"],
        "num_images": len(reference.dataset.records),
        "backend_precision": str(getattr(c.detector.backend, "precision", "")),
        "field": _field_result(c),
    }
    return result


ParityOutcome = tuple[Reference, list[dict[str, Any]], list[list[Detections]]]


def _int8(artifact: Artifact) -> bool:
    return artifact.precision.startswith("int8")


def run_parity(model: torch.nn.Module, contract: Contract, dataset: DetectionDataset,
               artifacts: list[tuple[Artifact, GateThresholds]], threads: int | None = None,
               field: Sequence[FieldImage] = (), input_rounding: bool | None = None,
               activations: ActivationRanges | None = None) -> ParityOutcome:
    """Compare every artifact with the FP32 PyTorch ``model`` (pre- and post-processed by ``contract``, which every
    artifact's manifest must also promise) on ``dataset`` in one pass over the images, then on the ``field``
    images (:mod:`convert.field`: parity only, no labels). ``input_rounding`` (default: when an artifact has an
    int8 gate) also matches the FP32 model with itself under the input quantizer's rounding
    (:mod:`convert.input_rounding`; ``Reference.input_rounding``), at the int8 gates' IoU, and, given
    ``activations`` (ranges over the calibration set), under its activations' rounding
    (:mod:`convert.activation_rounding`; ``Reference.activation_rounding``; image ``k`` of each set seeded
    ``SEED + k``, as :func:`convert.activation_rounding.own_match` draws it).

    Returns the reference, one report entry per artifact (numbers + gate verdict) and, per artifact, its
    per-image detections in original-image pixels (for the picture).
    """
    if not dataset.records:
        raise ParityError(f"no evaluation images in {dataset.source} split {dataset.split!r}")
    post, coding = contract.postprocess, contract.box_coding
    anchors = generate_anchors(contract.anchors)
    comparisons = [_open(a, g, contract, threads) for a, g in artifacts]
    model = model.eval()
    boxes, dets, eval_dets = [], [], []
    # int8 gates match detections, so the model's own stability under the input quantizer's rounding is measured
    # beside them (convert/input_rounding.py); float files round nothing (the float `-android` file's gate matches
    # detections too, its graph having no raw outputs, but its mismatch is no rounding's)
    int8_ious = [g.det_match_iou for a, g in artifacts if _int8(a)]
    rounding_iou = min(int8_ious, default=gate_for("int8").det_match_iou)
    measure_rounding = bool(int8_ious) if input_rounding is None else input_rounding
    rounding = {"split": MatchCounts(), "field": MatchCounts()} if measure_rounding else {}
    stepped = {"split": MatchCounts(), "field": MatchCounts()} if measure_rounding and activations else {}
    rng = np.random.default_rng(SEED)

    def infer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            logits, deltas = model(torch.from_numpy(to_layout(x, "nchw")))
        return logits[0].numpy(), deltas[0].numpy()

    def reference_step(image: np.ndarray, where: str) -> tuple[np.ndarray, Letterbox, tuple[np.ndarray, np.ndarray],
                                                                Detections]:
        x, box = preprocess(image, contract.preprocess)
        raw = infer(x)
        det = postprocess(*raw, anchors, post, coding)
        if rounding:
            moved = postprocess(*infer(rounded_input(x, contract.preprocess, rng)), anchors, post, coding)
            rounding[where].add(det, moved, rounding_iou)
        if stepped:
            with rounded_activations(model, activations, ACTIVATION_SEED + stepped[where].num_images):
                moved = postprocess(*infer(x), anchors, post, coding)
            stepped[where].add(det, moved, rounding_iou)
        return x, box, raw, det

    for rec in dataset.records:
        image = read_image(rec.path)
        x, box, raw, ref_det = reference_step(image, "split")
        boxes.append(box)
        dets.append(ref_det)
        eval_dets.append(postprocess(*raw, anchors, EVAL_POSTPROCESS, coding).to_original(box))
        for c in comparisons:
            det, eval_det = _step(c, c.split, image, x, raw, ref_det, rec.path)
            c.detections.append(det.to_original(box))
            c.eval_detections.append(eval_det.to_original(box))
    for item in field:
        x, box, raw, ref_det = reference_step(item.image, "field")
        for c in comparisons:
            _step(c, c.field, item.image, x, raw, ref_det, item.name, item.kind)
    own = {"half_step_grey": HALF_STEP_GREY, "det_match_iou": rounding_iou,
           **{where: {**t.detections(), "num_images": t.num_images} for where, t in rounding.items()
              if t.num_images}} if rounding else None
    steps = {"range_images": activations.images, "tensors": len(activations.ranges), "seed": ACTIVATION_SEED,
             "det_match_iou": rounding_iou, **{where: {**t.detections(), "num_images": t.num_images}
                                               for where, t in stepped.items() if t.num_images}} if stepped else None
    reference = Reference(dataset, boxes, dets, eval_dets, coco_metrics(dataset, eval_dets), post,
                          PairedBootstrap(dataset, eval_dets) if dataset.labelled else None, own, steps)
    entries = []
    for c in comparisons:
        parity = _result(c, reference)
        if own and _int8(c.artifact) and c.units is None:  # a pixel-input artifact rounds no input
            parity["fp32_input_rounding"] = own["split"]
            if parity["field"] is not None:
                parity["field"]["fp32_input_rounding"] = own["field"]
        if steps and _int8(c.artifact):  # every int8 file rounds its activations, whatever its input
            parity["fp32_activation_rounding"] = steps["split"]
            if parity["field"] is not None and "field" in steps:
                parity["field"]["fp32_activation_rounding"] = steps["field"]
        status, failures = verdict(parity, c.gate)
        entries.append({
            "target": c.artifact.target,
            "precision": c.artifact.precision,
            **({"flavour": c.artifact.flavour} if c.artifact.flavour else {}),
            "path": str(Path(c.artifact.path)),
            "manifest": str(Path(c.artifact.manifest_path)),
            "size_bytes": c.artifact.size_bytes,
            "sha256": c.artifact.sha256,
            "quantization": c.detector.manifest.data["artifact"].get("quantization"),
            "parity": parity,
            "gate": {"passed": status == PASS, "status": status, "thresholds": c.gate.to_dict(),
                     "failures": failures},
        })
    return reference, entries, [c.detections for c in comparisons]
