"""``report.json`` (machine-readable), ``report.md`` (a table for people) and ``parity.png`` (one picture).

``parity.png`` shows the same evaluation image (the one with the most reference detections) as
detected by the FP32 PyTorch reference and by every artifact, side by side, drawn with the runtime's
own ``runtime.draw`` so it looks exactly like ``detect --out``. OpenCV only, no matplotlib.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from efficientdet.map_bootstrap import interval_text
from runtime.detector import Result
from runtime.draw import draw_detections
from runtime.fileio import atomic_write_bytes
from runtime.postprocess import Detections

from .gates import MIN_REFERENCE_DETECTIONS, next_steps

PANEL_HEIGHT = 360
PANELS_PER_ROW = 4
TITLE_HEIGHT = 28


def finite(value: Any) -> Any:
    """JSON has no NaN/Infinity: non-finite floats become null (the gate failures say what happened)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def _panel(image: np.ndarray, dets: Detections, class_names: list[str], title: str) -> np.ndarray:
    scale = PANEL_HEIGHT / image.shape[0]
    resized = cv2.resize(image, (max(1, round(image.shape[1] * scale)), PANEL_HEIGHT), interpolation=cv2.INTER_LINEAR)
    labels = [class_names[c] if 0 <= c < len(class_names) else str(c) for c in dets.class_ids.tolist()]
    drawn = draw_detections(resized, Result(dets.boxes * scale, dets.scores, dets.class_ids, labels))
    bar = np.full((TITLE_HEIGHT, drawn.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, f"{title}: {len(dets)} dets", (6, TITLE_HEIGHT - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.55,
                (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([bar, drawn])


def parity_image(image: np.ndarray, reference: Detections, artifacts: list[tuple[str, Detections]],
                 class_names: list[str]) -> np.ndarray:
    """Reference and artifact detections on the same image, side by side (rows of up to 4 panels)."""
    panels = [_panel(image, reference, class_names, "PyTorch fp32")]
    panels += [_panel(image, dets, class_names, title) for title, dets in artifacts]
    width = max(p.shape[1] for p in panels)
    panels = [np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in panels]
    blank = np.full_like(panels[0], 255)
    rows = []
    for start in range(0, len(panels), PANELS_PER_ROW):
        row = panels[start:start + PANELS_PER_ROW]
        if rows:
            row += [blank] * (PANELS_PER_ROW - len(row))
        rows.append(np.hstack(row))
    return np.vstack(rows)


def _fmt(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _field_match(field: dict[str, Any] | None) -> str:
    """``reference→artifact / artifact→reference`` on the field images; a dagger when too few to gate."""
    if not field:
        return "—"
    few = "" if field["num_detections_ref"] >= MIN_REFERENCE_DETECTIONS else " †"
    return f"{field['det_match']:.1%} / {field['det_match_reverse']:.1%}{few}"


def _clipped(parity: dict[str, Any]) -> str:
    field = parity.get("field") or {}
    if parity.get("input_clipped") is None:
        return "—"
    return f"{parity['input_clipped']:.2%} / {_fmt(field.get('input_clipped'), '.2%')}"


def _kept(figures: dict[str, Any]) -> str:
    """A reading's split and field matches, both ways."""
    return ", ".join(f"{name} {f['det_match']:.1%} / {f['det_match_reverse']:.1%}"
                     for name, f in (("evaluation images", figures.get("split")), ("field", figures.get("field")))
                     if f)


def input_rounding_line(figures: dict[str, Any] | None) -> list[str]:
    """The FP32 model against itself under the int8 input quantizer's rounding (convert/input_rounding.py)."""
    if not figures:
        return []
    return [f"- FP32 against itself with every input value moved by up to {figures['half_step_grey']:g} grey level "
            f"(the int8 input quantizer's rounding alone; convert/input_rounding.py): {_kept(figures)} of its "
            "detections kept, both ways: an int8 det match near these is the model's own instability, one far under "
            "them the artifact's"]


def activation_rounding_line(figures: dict[str, Any] | None) -> list[str]:
    """The FP32 model against itself under its activations' 8-bit rounding (convert/activation_rounding.py)."""
    if not figures:
        return []
    return [f"- FP32 against itself with each of its {figures['tensors']} activation tensors moved by up to half of "
            f"its 8-bit step (ranges over {figures['range_images']} calibration images, one seeded draw; the int8 "
            f"files' activation rounding alone, no clipping; convert/activation_rounding.py): {_kept(figures)} of "
            "its detections kept, both ways: near the bound, the model leaves an int8 recipe little room"]


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Export parity report: {report['model']}",
        "",
        f"- checkpoint: `{report['checkpoint']}` (sha256 `{(report['checkpoint_sha256'] or '')[:16]}…`)",
        (f"- evaluation data: `{report['data']}` split `{report['split']}`, {report['num_images']} images"
         if report.get("labelled", True) else
         f"- evaluation data: `{report['data']}`, {report['num_images']} **unlabelled** images: raw outputs and "
         "detections are compared with FP32 PyTorch; mAP and ΔmAP are **not measured** (—)"),
        f"- reference mAP@[.5:.95] (FP32 PyTorch): {_fmt(report['map_ref'], '.4f')} (0-1 units)",
        f"- gated on a `{(report.get('cpu') or {}).get('int8', 'unrecorded')}` CPU "
        f"({(report.get('cpu') or {}).get('model') or 'model unknown'}): int8 kernels differ by CPU class, and the "
        "runtime warns when an int8 artifact runs on another class (docs/INT8-CPU-CLASSES.md)",
        "- rel err = max |artifact - reference| / max |reference| per raw output; det match = share of detections "
        "matched one-to-one (same class, IoU ≥ threshold), reference→artifact / artifact→reference; "
        "ΔmAP in mAP points (1 point = 0.01 in 0-1 units); its 95 % interval = a paired bootstrap over the "
        "evaluation images (efficientdet/map_bootstrap.py): how far another split of that size could move it",
        "- field = the same comparison on images unlike the calibration set (photometric shifts of the evaluation "
        "images, other scenes; convert/field.py): det match both ways; input clipped = share of input values beyond "
        "the int8 input quantizer's range, evaluation / field images",
        *input_rounding_line(report.get("fp32_input_rounding")),
        *activation_rounding_line(report.get("fp32_activation_rounding")),
        "",
        "| target | precision | size (MB) | rel err logits | rel err boxes | SNR dB (min) | Pearson (min) "
        "| det match | det match rev | mAP | ΔmAP (points) | ΔmAP 95 % interval | field det match | input clipped "
        "| gate |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for a in report["artifacts"]:
        p = a["parity"]
        outs = p["outputs"]
        verdict = {"pass": "PASS", "fail": "**FAIL**"}.get(a["gate"]["status"], "**NOT MEASURABLE**") + (
            " (accepted)" if a["gate"].get("accepted") else "")
        rel = {k: outs[k]["rel_err"] if k in outs else None for k in ("logits", "box_regression")}
        lines.append(
            f"| {a['target']}{' ' + a['flavour'] if a.get('flavour') else ''} | {a['precision']} "
            f"| {a['size_bytes'] / 1e6:.2f} | {_fmt(rel['logits'], '.2e')} | {_fmt(rel['box_regression'], '.2e')} "
            f"| {_fmt(p['snr_db'], '.1f')} "
            f"| {_fmt(p['pearson'], '.6f')} | {p['det_match']:.2%} | {p['det_match_reverse']:.2%} "
            f"| {_fmt(p['map'], '.4f')} | {_fmt(None if p['map_delta'] is None else p['map_delta'] * 100, '+.3f')} "
            f"| {interval_text(p.get('map_delta_interval'))} "
            f"| {_field_match(p.get('field'))} | {_clipped(p)} | {verdict} |")
    failures = [(a, f) for a in report["artifacts"] for f in a["gate"]["failures"]]
    if failures:
        lines += ["", "## Gate failures", ""]
        lines += [f"- {a['target']} {a['precision']} (`{a['path']}`): {f}" for a, f in failures]
        failed = sorted({a["precision"] for a in report["artifacts"] if a["gate"]["status"] == "fail"})
        for precision in failed:
            lines += ["", f"What to try next for {precision}, in order:", ""]
            lines += [f"{i}. {step}" for i, step in enumerate(next_steps(precision), 1)]
    lines += ["", f"int8 gates need at least {MIN_REFERENCE_DETECTIONS} FP32 detections on the evaluation images; "
              "with fewer they are reported NOT MEASURABLE, never PASS (float gates also bound the raw outputs). "
              "† = fewer on the field images: the field figures are reported, not gated."]
    others = [a for a in report.get("folder", []) if not a["in_this_report"]]
    if others:
        lines += ["", "## Other artifacts in this folder (not gated by this run)", "", *_folder_table(others)]
    quantized = [a for a in report["artifacts"] if a.get("quantization")]
    if quantized:
        lines += ["", "## Quantization", "", "| target | precision | tool | method | ranges | calibration | "
                  "layers in float |", "|---|---|---|---|---|---|---|"]
        for a in quantized:
            q = a["quantization"]
            cal = q["calibration"]
            lines.append(f"| {a['target']} | {a['precision']} | {q['tool']} | {q['method']} "
                         f"| {q.get('ranges', 'calibrated')} | {cal['count']} images of {cal['source']} "
                         f"[{cal['split']}] | {len(q['float_layers']) or 'none'} |")
    effects = [a for a in report["artifacts"] if a.get("float_layers_effect")]
    if effects:
        lines += ["", "## Layers kept in float, against the previous export in this folder", "",
                  "| target | precision | kept in float | ΔmAP before → now (points) | det match before → now |",
                  "|---|---|---|---|---|"]
        for a in effects:
            f = a["float_layers_effect"]
            lines.append(f"| {a['target']} | {a['precision']} | {', '.join(f'`{n}`' for n in f['kept_in_float'])} "
                         f"| {f['map_delta_before'] * 100:+.2f} → {f['map_delta_now'] * 100:+.2f} "
                         f"| {f['det_match_before']:.1%} → {f['det_match_now']:.1%} |")
    if report.get("sensitivity"):
        layers = report["sensitivity"]["layers"]
        lines += ["", "## Most sensitive layers", "", report["sensitivity"]["method"] + ".", "",
                  "| layer | op | worst output SNR (dB) |", "|---|---|---:|"]
        lines += [f"| `{s['node']}` | {s['op_type']} | {s['worst_snr_db']:.1f} |" for s in layers[:10]]
    lines += ["", "## Thresholds", "", "| precision | rel err max | det match min | IoU | |ΔmAP| max (points) "
              "| field det match min |", "|---|---:|---:|---:|---:|---:|"]
    for precision, g in report["gates"].items():
        delta = None if g["map_delta_max"] is None else g["map_delta_max"] * 100
        lines.append(f"| {precision} | {_fmt(g['rel_err_max'], 'g')} | {g['det_match_min']:.0%} "
                     f"| {g['det_match_iou']} | {_fmt(delta, 'g')} | {_fmt(g.get('field_det_match_min'), '.0%')} |")
    lines += ["", "![reference vs artifacts](parity.png)", ""]
    return "\n".join(lines)


def _folder_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| artifact | target | precision | gate (from its manifest) |", "|---|---|---|---|"]
    return lines + [f"| `{Path(a['path']).name}` | {a['target']} | {a['precision']} | {a['gate']} |" for a in rows]


def write_interrupted_report(out_dir: str | Path, report: dict[str, Any]) -> None:
    """report.json/report.md of an export stopped before its gate: every artifact in the folder, with its state."""
    out_dir = Path(out_dir)
    lines = ["# Export interrupted", "", "No parity gate ran. The artifacts in this folder and their state:", ""]
    atomic_write_bytes(out_dir / "report.json", (json.dumps(report, indent=2) + "\n").encode())
    atomic_write_bytes(out_dir / "report.md", "\n".join(lines + _folder_table(report["folder"]) + [""]).encode())


def write_report(out_dir: str | Path, report: dict[str, Any], image: np.ndarray | None = None) -> dict[str, Path]:
    """Write report.json, report.md and (when ``image`` is given) parity.png into ``out_dir``, atomically."""
    out_dir = Path(out_dir)
    paths = {"json": out_dir / "report.json", "md": out_dir / "report.md"}
    if image is not None:
        ok, png = cv2.imencode(".png", image)
        if not ok:
            raise RuntimeError("OpenCV could not encode parity.png")
        paths["png"] = out_dir / "parity.png"
        atomic_write_bytes(paths["png"], png.tobytes())
    clean = finite(report)
    atomic_write_bytes(paths["json"], (json.dumps(clean, indent=2) + "\n").encode())
    atomic_write_bytes(paths["md"], markdown(clean).encode())
    return paths
