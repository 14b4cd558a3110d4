"""How far int8 rounding alone moves one model's mAP on its evaluation split (:mod:`convert.rounding_noise`), with
the int8 files of that model placed among the draws (``results/bccd-lite0-512-augfix-rounding-noise.{json,md,png}``).

A ΔmAP goal tighter than the draws' spread cannot be met reliably by any recipe on that split: the table says how
often a draw of int8's size stays within the goal, and how often several independent files all would.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from benchmarks.figures import png_bytes
from benchmarks.qat_seeds import QAT_GOAL
from convert.rounding_noise import KINDS, RoundingNoise, summary
from efficientdet.checkpoint import load_model
from efficientdet.data.loader import load_for_model
from efficientdet.data.synthetic import resolve_dataset
from runtime.bench import machine_info
from runtime.fileio import atomic_write_bytes, file_sha256

GOAL_POINTS = QAT_GOAL  # the tightest ΔmAP bound the project reads int8 files against


def int8_files(report_paths: list[str], checkpoint_sha256: str) -> list[dict[str, Any]]:
    """Every int8 artifact of some ``convert`` reports of the same checkpoint: ΔmAP and how far its raw outputs
    moved, the figures a draw is compared on."""
    files = []
    for path in report_paths:
        report = json.loads(Path(path).read_text())
        if report["checkpoint_sha256"] != checkpoint_sha256:
            raise ValueError(f"{path}: its checkpoint is not the one measured here (sha256 "
                             f"{report['checkpoint_sha256'][:12]} vs {checkpoint_sha256[:12]}); pass reports of "
                             "exports of --ckpt")
        for a in report["artifacts"]:
            if not a["precision"].startswith("int8") or a["parity"].get("map_delta") is None:
                continue
            seed = (a["quantization"].get("qat") or {}).get("seed")
            outputs = a["parity"]["outputs"]
            files.append({"report": str(path), "target": a["target"], "precision": a["precision"],
                          "qat_seed": seed, "map_delta_points": 100.0 * a["parity"]["map_delta"],
                          "logits_rel_l2": outputs["logits"]["rel_l2"],
                          "boxes_rel_l2": outputs["box_regression"]["rel_l2"]})
    unique = {(f["target"], f["precision"], f["qat_seed"]): f for f in files}  # post-training files repeat
    return list(unique.values())


def measure(ckpt: str, data: str, split: str, draws: int, progress: bool = True) -> dict[str, Any]:
    model, config = load_model(ckpt)
    dataset = load_for_model(resolve_dataset(data), split, list(config.class_names), num_classes=config.num_classes)
    noise = RoundingNoise(model, config.contract(), dataset)
    if progress:
        print(f"FP32 mAP {noise.map_ref:.4f} on {len(dataset.records)} images", flush=True)
    rows = []
    for kind in KINDS:
        for seed in range(draws):
            rows.append(noise.draw(kind, seed))
            if progress:
                d = rows[-1]
                print(f"{kind} seed {seed}: ΔmAP {100 * (d.map - noise.map_ref):+.2f}, logits rel L2 "
                      f"{d.logits_rel_l2:.4f}, boxes {d.boxes_rel_l2:.4f}", flush=True)
    rows.append(noise.rounded())
    return {"schema": "efficientdet-rounding-noise/1", "checkpoint": ckpt, "checkpoint_sha256": file_sha256(ckpt),
            "model": config.name, "input_size": config.input_size, "data": str(data), "split": split,
            "num_images": len(dataset.records), "map_ref": noise.map_ref, "goal_points": GOAL_POINTS,
            "draws": [d.to_dict() for d in rows],
            "summary": {kind: summary(noise.map_ref, [d for d in rows if d.kind == kind], GOAL_POINTS)
                        for kind in dict.fromkeys(d.kind for d in rows)}}


def markdown(doc: dict[str, Any], png: str) -> str:
    goal, files = doc["goal_points"], doc.get("files", [])
    n_files = len(files)
    lines = [f"# How far int8 rounding alone moves the mAP: {doc['model']} at {doc['input_size']} px, "
             f"{doc['data']} [{doc['split']}]", "",
             f"The FP32 model (mAP@[.5:.95] {doc['map_ref']:.4f} on {doc['num_images']} images) under random draws "
             "of the roundings an int8 file makes, nothing else changed (convert/rounding_noise.py): every input "
             "value moved by up to half a grey level, every convolution weight by up to half its int8 step (per "
             "output channel, max |w| / 127), or both; and the weights on their nearest codes (one fixed draw). "
             "Raw outputs' relative L2 against the unperturbed model, median over the draws. The activations' "
             "quantization is not drawn: where a file moves the raw outputs about as far as the draws do, a ΔmAP "
             "within their spread may be as faithful as int8 gets, on whichever side of FP32 it lands; where it moves "
             "them much further, the draws do not bound its ΔmAP.", "",
             f"| perturbation | draws | logits rel L2 | boxes rel L2 | ΔmAP mean | ΔmAP sd | ΔmAP min … max "
             f"| within ±{goal} |" + (f" {n_files} files all within ±{goal} |" if files else ""),
             "|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if files else "")]
    for kind, s in doc["summary"].items():
        all_within = f" {s['within_goal'] ** n_files:.0%} |" if s["draws"] > 1 else " — |"
        lines.append(f"| {kind} | {s['draws']} | {s['logits_rel_l2']:.4f} | {s['boxes_rel_l2']:.4f} | "
                     f"{s['mean']:+.2f} | {s['sd']:.2f} | {s['min']:+.2f} … {s['max']:+.2f} | "
                     f"{s['within_goal']:.0%} |" + (all_within if files else ""))
    if files:
        lines += ["", f"The int8 files of this checkpoint (on the same split, from their reports), for comparison; "
                  f"'{n_files} files all within' above = the share within ±{goal} to the power {n_files}, as if "
                  "each file were one independent draw:", "",
                  "| file | ΔmAP | logits rel L2 | boxes rel L2 |", "|---|---:|---:|---:|"]
        lines += [f"| {f['target']} {f['precision']}" + (f" seed {f['qat_seed']}" if f["qat_seed"] is not None else "")
                  + f" | {f['map_delta_points']:+.2f} | {f['logits_rel_l2']:.4f} | {f['boxes_rel_l2']:.4f} |"
                  for f in files]
    lines += ["", "Reproduce:", "", "```bash", doc["command"], "```", "", f"![ΔmAP of the draws and the files]({png})",
              ""]
    if doc.get("note"):
        lines += [doc["note"], ""]
    return "\n".join(lines)


def plot(doc: dict[str, Any], path: Path) -> None:
    """One row per perturbation (a dot per draw) and the int8 files, on one ΔmAP axis, with the goal band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(doc["summary"])
    files = doc.get("files", [])
    rows = kinds + (["int8 files"] if files else [])
    fig, ax = plt.subplots(figsize=(6.4, 0.55 * len(rows) + 1.4), dpi=120)
    goal = doc["goal_points"]
    ax.axvspan(-goal, goal, color="#d8f0d8", label=f"±{goal}")
    ax.axvline(0, color="#888", lw=0.8)
    for y, kind in enumerate(kinds):
        xs = [100 * (d["map"] - doc["map_ref"]) for d in doc["draws"] if d["kind"] == kind]
        ax.scatter(xs, [y] * len(xs), color="#1f77b4", alpha=0.7, s=18)
    colours = {"int8": "#555", "int8-qat": "#d62728"}
    for f in files:
        ax.scatter([f["map_delta_points"]], [len(kinds)], color=colours.get(f["precision"], "#555"), s=22,
                   marker="s" if f["precision"] == "int8" else "o")
    for precision, colour in colours.items():
        if any(f["precision"] == precision for f in files):
            ax.scatter([], [], color=colour, marker="s" if precision == "int8" else "o", label=precision)
    ax.set_yticks(range(len(rows)), rows)
    ax.invert_yaxis()
    ax.set_xlabel("ΔmAP vs FP32 (points)")
    ax.set_title(f"{doc['model']} {doc['input_size']} px, {doc['split']} split ({doc['num_images']} images)",
                 fontsize=10)
    ax.legend(fontsize=8, loc="upper right")  # the files crowd the lower right
    fig.tight_layout()
    atomic_write_bytes(path, png_bytes(fig))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.rounding_noise", description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--data", required=True, help="a labelled dataset of the checkpoint's classes")
    ap.add_argument("--split", default="test")
    ap.add_argument("--draws", type=int, default=10, help="seeded draws per perturbation (>= 2)")
    ap.add_argument("--reports", nargs="*", default=[], help="report.json of int8 exports of --ckpt to compare")
    ap.add_argument("--out", required=True, help="results path without suffix (writes .json, .md and .png)")
    ap.add_argument("--command", default="", help="the command to print under 'Reproduce'")
    ap.add_argument("--note", default="")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.draws < 2:
        ap.error("--draws must be at least 2: a spread needs two draws")
    if args.threads:
        torch.set_num_threads(args.threads)
    files = int8_files(args.reports, file_sha256(args.ckpt))  # before the long part: a wrong report fails at once
    doc = measure(args.ckpt, args.data, args.split, args.draws)
    doc.update(files=files, machine=machine_info(),
               command=args.command or "python -m benchmarks.rounding_noise " + " ".join(sys.argv[1:]),
               note=args.note)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out.with_suffix(".json"), (json.dumps(doc, indent=2) + "\n").encode())
    plot(doc, out.with_suffix(".png"))
    md = markdown(doc, out.with_suffix(".png").name)
    atomic_write_bytes(out.with_suffix(".md"), md.encode())
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
