"""mAP of one artifact on both sides of `make device-check DATA=...`: the same raw outputs the parity check compares,
scored on a labelled split as the export's gate scores them.

Why: device rows are joined to the gate's accuracy by sha256 only where the same bytes score the same mAP
(docs/ON-DEVICE.md). For TFLite that rested on four synthetic images of one model (session 6); issue 15 asks that
int8 artifacts be correct on ARM too. Scoring each side's raw outputs on a real split turns "the outputs differ by
X" into "aarch64 scores Y points from x86", with the paired bootstrap interval (efficientdet/map_bootstrap.py) that
says whether Y is more than the split can resolve. The host side is also checked against the gate: its mAP must be
the figure the export's ``report.json`` recorded for these bytes, or the comparison is not of the gated file.

Scoring runs on the host only (pycocotools and the labels are not on the device); the emulated side only dumps.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from efficientdet.data.loader import load_for_model
from efficientdet.data.records import DetectionDataset
from efficientdet.evaluate import Predictions, coco_metrics
from efficientdet.map_bootstrap import PairedBootstrap
from runtime.anchors import generate_anchors
from runtime.contract import EVAL_POSTPROCESS
from runtime.fileio import file_sha256
from runtime.manifest import Manifest, load_manifest
from runtime.postprocess import postprocess
from runtime.preprocess import letterbox_geometry

# The host's mAP and the gate's recorded mAP of the same bytes on the same images: pycocotools on identical
# detections gives identical figures, so anything above float noise means another file, split or CPU class.
GATE_AGREEMENT = 1e-6


@dataclass(frozen=True)
class GateRecord:
    """What the export's report.json says of these bytes: the gate's mAP, the FP32 model's, and the CPU class."""

    map: float
    map_ref: float
    images: int
    cpu_int8_class: str | None
    report: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _manifest(model: Path) -> Manifest:
    """The artifact's manifest (classes, anchors, box coding): scoring raw outputs needs no inference engine, so
    none is opened on the host (an OpenVINO IR would be compiled for nothing)."""
    return Manifest.from_dict(load_manifest(model))


def gate_record(model: Path, sha256: str | None = None) -> GateRecord | None:
    """The gate's figures for ``model`` from ``report.json`` beside it (matched by sha256, hashed here unless the
    caller already has it), if it holds them."""
    report = model.parent / "report.json"
    if not report.is_file():
        return None
    doc = json.loads(report.read_text())
    sha = sha256 or file_sha256(model)
    entry = next((a for a in doc.get("artifacts", []) if a.get("sha256") == sha), None)
    parity = (entry or {}).get("parity") or {}
    if parity.get("map") is None or parity.get("map_ref") is None:
        return None
    return GateRecord(float(parity["map"]), float(parity["map_ref"]), int(parity.get("num_images") or 0),
                      (doc.get("cpu") or {}).get("int8"), str(report))


def labelled_split(models: list[Path], data: str, split: str, max_images: int) -> DetectionDataset:
    """The split, labelled with the artifacts' class ids (their manifests' names, which must agree), first
    ``max_images`` images (0: all). Raises ``ValueError`` (``DatasetError``) naming the file and the problem."""
    names = [list(_manifest(m).class_names) for m in models]
    odd = [m.name for m, n in zip(models, names) if n != names[0]]
    if odd:
        raise ValueError(f"{', '.join(odd)}: other classes than {models[0].name} ({names[0]}); one labelled split "
                         "scores one model's artifacts: run the check once per model")
    dataset = load_for_model(data, split, names[0], num_classes=len(names[0]))
    if not dataset.labelled or not dataset.records:
        raise ValueError(f"{data} split {split}: no labelled images to score (give a labelled split, or --images)")
    if max_images:
        dataset.records = dataset.records[:max_images]
    return dataset


def predictions(model: Path, dataset: DetectionDataset, raw: list[dict[str, np.ndarray]]) -> Predictions:
    """One side's raw outputs post-processed as the gate's mAP is (evaluation thresholds, original pixels)."""
    contract = _manifest(model).contract
    anchors, size, coding = generate_anchors(contract.anchors), contract.input_size, contract.box_coding
    return [postprocess(r["logits"], r["deltas"], anchors, EVAL_POSTPROCESS, coding).to_original(
        letterbox_geometry(rec.height, rec.width, size)) for rec, r in zip(dataset.records, raw, strict=True)]


def split_accuracy(model: Path, dataset: DetectionDataset, host: list[dict[str, np.ndarray]],
                   device: list[dict[str, np.ndarray]], sha256: str | None = None) -> dict[str, Any]:
    """mAP on each side, aarch64 - x86 with its 95 % paired-bootstrap interval, and the gate's record."""
    host_pred, device_pred = predictions(model, dataset, host), predictions(model, dataset, device)
    host_map = coco_metrics(dataset, host_pred)["map"]
    device_map = coco_metrics(dataset, device_pred)["map"]
    interval = PairedBootstrap(dataset, host_pred).delta_interval(device_pred)
    gate = gate_record(model, sha256)
    out: dict[str, Any] = {
        "images": len(dataset.records), "split": dataset.split, "source": dataset.source,
        "map_x86": host_map, "map_aarch64": device_map, "map_delta_aarch64_vs_x86": device_map - host_map,
        "map_delta_interval": interval.to_dict(), "gate": None if gate is None else gate.to_dict()}
    if gate is not None and gate.images == len(dataset.records):  # the gate's figures are of the whole split
        out["map_delta_vs_fp32"] = {"x86": host_map - gate.map_ref, "aarch64": device_map - gate.map_ref}
        out["host_reproduces_gate"] = abs(host_map - gate.map) <= GATE_AGREEMENT
    return out
