"""QAT over several seeds: how far each target's int8-qat artifact lands from FP32, per seed, with mean and spread,
beside the post-training artifact (``results/bccd-d0-qat-seeds.{json,md,png}``).

One QAT run moves by tenths of a point with its seed (the training order, augmentation and photometric shifts), so
a single run says little about whether QAT beats post-training. Input: the ``report.json`` of one
``python -m convert --precision int8 --qat --qat-seed S`` export per seed, all from the same checkpoint,
evaluation split and calibration set (checked: the post-training artifacts must then be the same files).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.figures import png_bytes
from benchmarks.results_files import write_results
from convert.gates import FIELD_DET_MATCH_MIN
from convert.report import activation_rounding_line, input_rounding_line
from efficientdet.map_bootstrap import interval_text
from runtime.fileio import atomic_write_bytes

QAT_GOAL = 0.3  # |ΔmAP| in points that QAT should hold on every target and seed (issue 15)


def _row(artifact: dict[str, Any]) -> dict[str, Any]:
    p = artifact["parity"]
    field = p.get("field") or {}
    return {"map_delta_points": round(p["map_delta"] * 100, 3), "det_match": p["det_match"],
            "det_match_reverse": p.get("det_match_reverse"),
            "field_det_match": field.get("det_match"), "field_det_match_reverse": field.get("det_match_reverse"),
            "map_delta_interval": p.get("map_delta_interval"), "gate": artifact["gate"]["status"]}


def _delta(row: dict[str, Any]) -> str:
    """ΔmAP in points, with its bootstrap interval where the export measured one."""
    interval = row.get("map_delta_interval")
    return f"{row['map_delta_points']:+.2f}" + (f" ({interval_text(interval)})" if interval else "")


def summarize_seeds(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Per target: the post-training row, one QAT row per seed, and the QAT ΔmAP's mean, spread and goal."""
    first = reports[0]
    for r in reports[1:]:
        if (r["checkpoint_sha256"], r["split"], r["num_images"]) != (first["checkpoint_sha256"], first["split"],
                                                                     first["num_images"]):
            raise ValueError("the reports are not of one checkpoint and evaluation split")
    targets: dict[str, Any] = {}
    for target in sorted({a["target"] for a in first["artifacts"]}):
        ptq = [next(a for a in r["artifacts"] if a["target"] == target and a["precision"] == "int8") for r in reports]
        if len({a["sha256"] for a in ptq}) != 1:
            raise ValueError(f"the post-training {target} artifacts differ between the reports: not the same "
                             "calibration, so the QAT runs are not comparable")
        runs = []
        for r in reports:
            a = next(a for a in r["artifacts"] if a["target"] == target and a["precision"] == "int8-qat")
            runs.append({"seed": a["quantization"]["qat"]["seed"], **_row(a)})
        deltas = [run["map_delta_points"] for run in runs]
        targets[target] = {
            "post_training": _row(ptq[0]), "qat": runs,
            "qat_mean_points": round(statistics.fmean(deltas), 3),
            "qat_spread_points": round(max(deltas) - min(deltas), 3),
            "qat_std_points": round(statistics.stdev(deltas), 3) if len(deltas) > 1 else None,
            "goal_met": all(abs(d) <= QAT_GOAL for d in deltas),
            # the one-sided reading: no QAT file loses more than the goal against FP32 (a gain is not a loss)
            "no_loss_beyond_goal": all(d >= -QAT_GOAL for d in deltas)}
    return {"schema": "efficientdet-qat-seeds/1", "model": first["model"], "input_size": first["input_size"],
            "checkpoint": first["checkpoint"], "data": first["data"], "split": first["split"],
            "num_images": first["num_images"], "cpu": first.get("cpu"), "goal_points": QAT_GOAL,
            "fp32_input_rounding": first.get("fp32_input_rounding"),
            "fp32_activation_rounding": first.get("fp32_activation_rounding"),
            "seeds": [run["seed"] for run in targets[next(iter(targets))]["qat"]], "targets": targets}


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def _field(row: dict[str, Any]) -> str:
    """Both directions of the field match: the gate bounds each, and QAT has failed on either alone."""
    return f"{_pct(row['field_det_match'])} / {_pct(row['field_det_match_reverse'])}"


def _split(row: dict[str, Any]) -> str:
    """Both directions of the evaluation split's detection match: fidelity, where ΔmAP on a small split is noisy."""
    return f"{_pct(row['det_match'])} / {_pct(row.get('det_match_reverse'))}"


def markdown(doc: dict[str, Any], command: str, note: str | None, png: str) -> str:
    seeds = doc["seeds"]
    lines = [f"# QAT over {len(seeds)} seeds: {doc['model']} at {doc['input_size']} px", "",
             f"Checkpoint `{doc['checkpoint']}`; evaluation `{doc['data']}` split `{doc['split']}`, "
             f"{doc['num_images']} images. ΔmAP (points, mAP@[.5:.95]) of each artifact against the FP32 PyTorch "
             f"model; goal: QAT within ±{doc['goal_points']} point on every target and seed (\"no loss\": the "
             f"one-sided reading, no QAT file more than {doc['goal_points']} point below FP32). Det match = share "
             "of FP32's detections the artifact matches / share of the artifact's detections FP32 also makes, on "
             "the evaluation split. Field = share of FP32 "
             "detections the artifact matches / share of the artifact's detections FP32 also makes, on images "
             "unlike the calibration set (convert/field.py; the gate needs both >= "
             f"{FIELD_DET_MATCH_MIN * 100:.0f} %). In brackets, where measured: ΔmAP's 95 % interval from a paired "
             "bootstrap over the evaluation images "
             "(efficientdet/map_bootstrap.py).", "",
             "| target | post-training ΔmAP | " + " | ".join(f"QAT seed {s}" for s in seeds)
             + " | QAT mean | spread (max − min) | goal | no loss | post-training field | QAT field per seed "
             "| QAT det match per seed |",
             "|---|---:|" + "---:|" * len(seeds) + "---:|---:|---|---|---:|---:|---:|"]
    for target, t in doc["targets"].items():
        lines.append(f"| {target} | {_delta(t['post_training'])} | " + " | ".join(_delta(r) for r in t["qat"])
                     + f" | {t['qat_mean_points']:+.2f} | {t['qat_spread_points']:.2f} | "
                     f"{'met' if t['goal_met'] else 'not met'} | "
                     f"{'met' if t.get('no_loss_beyond_goal') else 'not met'} | {_field(t['post_training'])} | "
                     + "; ".join(_field(r) for r in t["qat"]) + " | " + "; ".join(_split(r) for r in t["qat"]) + " |")
    own = [*input_rounding_line(doc.get("fp32_input_rounding")),  # the FP32 model's own readings, where measured
           *activation_rounding_line(doc.get("fp32_activation_rounding"))]
    lines += ["", *([*own, ""] if own else []), "Reproduce:", "", "```bash", command, "```", "",
              f"![QAT ΔmAP per seed]({png})", ""]
    if note:
        lines += [note, ""]
    return "\n".join(lines)


def plot(doc: dict[str, Any], path: Path) -> None:
    """ΔmAP per target: the post-training artifact and each QAT seed, with the goal band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    names = list(doc["targets"])
    goal = doc["goal_points"]
    ax.axhspan(-goal, goal, color="#d8f0d8", label=f"QAT goal ±{goal}")
    ax.axhline(0, color="#888", lw=0.8)
    for i, name in enumerate(names):
        t = doc["targets"][name]
        ax.scatter([i - 0.12], [t["post_training"]["map_delta_points"]], marker="s", color="#555",
                   label="post-training" if i == 0 else None)
        ys = [r["map_delta_points"] for r in t["qat"]]
        ax.scatter([i + 0.12] * len(ys), ys, color="#1f77b4", label="QAT, one dot per seed" if i == 0 else None)
        ax.plot([i + 0.05, i + 0.19], [t["qat_mean_points"]] * 2, color="#1f77b4")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("ΔmAP vs FP32 (points)")
    ax.set_title(f"{doc['model']} {doc['input_size']} px, {doc['split']} split: int8 vs FP32")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    atomic_write_bytes(path, png_bytes(fig))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--reports", required=True, nargs="+", help="report.json files, one QAT seed each")
    p.add_argument("--out", required=True, help="results path without suffix (writes .json, .md and .png)")
    p.add_argument("--command", required=True, help="the commands that produced the reports (printed in the .md)")
    p.add_argument("--note", default=None, help="a paragraph printed under the table")
    args = p.parse_args(argv)
    reports = [json.loads(Path(r).read_text()) for r in args.reports]
    doc = summarize_seeds(reports)
    md = write_results(args.out, doc, plot, lambda d, png: markdown(d, args.command, args.note, png))
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
