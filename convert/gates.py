"""Parity-gate thresholds, the one place they live (the CLI, the report and the tests read them here).

Units: ``rel_err_max`` is max |artifact - reference| / max |reference| per raw output; ``det_match_min`` is a
fraction in [0, 1] of detections matched one-to-one (same class, IoU >= ``det_match_iou``), required in both
directions; ``map_delta_max`` bounds |mAP(artifact) - mAP(FP32 PyTorch)| for COCO mAP@[.5:.95] in 0-1 units
(0.001 = 0.1 mAP point). ``None`` means "not gated" (still measured and reported).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class GateThresholds:
    rel_err_max: float | None
    det_match_min: float
    det_match_iou: float
    map_delta_max: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def tightened(self, **changes: Any) -> GateThresholds:
        """A copy with some thresholds changed (tests use it to exercise the failure path)."""
        return replace(self, **changes)


GATES: dict[str, GateThresholds] = {
    "fp32": GateThresholds(rel_err_max=1e-4, det_match_min=1.0, det_match_iou=0.99, map_delta_max=None),
    "fp16": GateThresholds(rel_err_max=1e-2, det_match_min=0.98, det_match_iou=0.99, map_delta_max=0.001),
    # int8 (implemented later): raw outputs are not gated, accuracy and detections are.
    "int8": GateThresholds(rel_err_max=None, det_match_min=0.90, det_match_iou=0.5, map_delta_max=0.010),
    "int8-qat": GateThresholds(rel_err_max=None, det_match_min=0.90, det_match_iou=0.5, map_delta_max=0.005),
}


def gate_for(precision: str) -> GateThresholds:
    try:
        return GATES[precision]
    except KeyError:
        raise ValueError(f"no parity gate for precision {precision!r}; known: {sorted(GATES)}") from None


def check(parity: dict[str, Any], gate: GateThresholds) -> list[str]:
    """Human-readable failures of ``parity`` (see :func:`convert.parity.measure`) against ``gate``; [] = pass."""
    failures = []
    if gate.rel_err_max is not None:
        for name, stats in parity["outputs"].items():
            if not stats["rel_err"] <= gate.rel_err_max:  # also catches NaN
                failures.append(f"{name} rel_err {stats['rel_err']:.3g} > {gate.rel_err_max:.3g}")
    for key, label in (("det_match", "reference detections matched"), ("det_match_reverse",
                                                                        "artifact detections matched")):
        if not parity[key] >= gate.det_match_min:
            failures.append(f"{label} {parity[key]:.2%} < {gate.det_match_min:.2%} (IoU >= {gate.det_match_iou})")
    if gate.map_delta_max is not None and not abs(parity["map_delta"]) <= gate.map_delta_max:
        failures.append(f"|mAP delta| {abs(parity['map_delta']) * 100:.3f} points > "
                        f"{gate.map_delta_max * 100:.3f} points (mAP {parity['map']:.4f} vs {parity['map_ref']:.4f})")
    return failures
