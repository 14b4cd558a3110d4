"""How many of its own detections each FP32 model keeps when its input moves by the int8 input quantizer's rounding
alone (:mod:`convert.input_rounding`), and when every activation moves by up to half of its 8-bit step instead
(:mod:`convert.activation_rounding`), on an evaluation split and on the field images of :mod:`convert.field`:
the readings an int8 artifact's detection match is held against, measured without exporting anything
(``results/bccd-fp32-input-rounding.{json,md}``).

The parity gate measures the same beside every int8 export (report.json ``fp32_input_rounding``); this runs it for
several committed models at once, so the int8 tables' field figures can be read against each model's own.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calib_data.store import SHIFTED_SHARE, default_set
from convert.activation_rounding import SEED, activation_ranges, own_match
from convert.field import field_images
from convert.parity import run_parity
from efficientdet.checkpoint import load_model
from efficientdet.data.loader import load_for_model
from efficientdet.data.synthetic import resolve_dataset
from runtime.fileio import atomic_write_bytes, file_sha256
from runtime.preprocess import read_image


def measure(ckpt: str | Path, data: str | Path, split: str, draws: int, shifted: float) -> dict[str, Any]:
    """One model's own detection match under input rounding, on ``split`` of ``data`` and its field images, and
    under activation rounding (``draws`` seeded draws, ranges over the default calibration set with that share of
    ``shifted`` images)."""
    model, config = load_model(ckpt)
    dataset = load_for_model(resolve_dataset(data), split, list(config.class_names), num_classes=config.num_classes)
    field = field_images(dataset)
    reference, _, _ = run_parity(model, config.contract(), dataset, [], field=field, input_rounding=True)
    calib = default_set(data, config.preprocess, shifted=shifted)
    ranges = activation_ranges(model, calib)
    iou = reference.input_rounding["det_match_iou"]
    images = {"split": [read_image(r.path) for r in dataset.records], "field": [f.image for f in field]}
    activations: dict[str, Any] = {"tensors": len(ranges.ranges), "calibration": str(calib.path),
                                   "range_images": ranges.images, "draws": draws}
    for where, frames in images.items():
        activations[where] = own_match(model, config.contract(), frames, ranges, iou,
                                       seeds=[SEED + 1000 * d for d in range(draws)])
    return {"checkpoint": str(ckpt), "checkpoint_sha256": file_sha256(ckpt), "model": config.name,
            "input_size": config.input_size, **reference.input_rounding, "activation_rounding": activations}


def _both(figures: dict[str, Any]) -> str:
    return (f"{figures['det_match']:.1%} / {figures['det_match_reverse']:.1%} "
            f"({figures['num_detections_ref']} on {figures['num_images']} images)")


def _draws(figures: list[dict[str, Any]]) -> str:
    """Mean over the draws both ways, and the lowest and highest reference-side share."""
    ref = [f["det_match"] for f in figures]
    rev = [f["det_match_reverse"] for f in figures]
    return f"{np.mean(ref):.1%} / {np.mean(rev):.1%} ({min(ref):.1%} … {max(ref):.1%})"


def markdown(result: dict[str, Any]) -> str:
    rows = result["models"]
    lines = [
        f"# FP32 models against themselves under int8 rounding (the input's; the activations'): {result['data']} "
        f"[{result['split']}]",
        "",
        f"Every input value moved by a uniform draw of up to {rows[0]['half_step_grey']:g} grey level "
        "(convert/input_rounding.py); detections at the deployment threshold matched one-to-one with the unmoved "
        f"input's (same class, IoU ≥ {rows[0]['det_match_iou']:g}), kept / found both ways. Field = the parity "
        "gate's field images (convert/field.py). An int8 artifact makes this error and every layer's.",
        "",
        "Activations: every activation tensor moved by a uniform draw of up to half of its 8-bit step instead, the "
        "input left alone (convert/activation_rounding.py; per-tensor min-max ranges over the first "
        f"{rows[0]['activation_rounding']['range_images']} images of each model's default calibration set "
        f"(the first model's: `{rows[0]['activation_rounding']['calibration']}`), "
        f"{rows[0]['activation_rounding']['draws']} seeded draws: mean both ways, then the lowest … highest "
        "kept share): the size of an int8 file's rounding inside the network without its grid, clipping or weights.",
        "",
        "| model | checkpoint | input | input: evaluation images | input: field images | activations: evaluation "
        "images | activations: field images |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['model']} | `{r['checkpoint']}` | {r['input_size']} | {_both(r['split'])} | {_both(r['field'])} "
              f"| {_draws(r['activation_rounding']['split'])} | {_draws(r['activation_rounding']['field'])} |"
              for r in rows]
    lines += ["", "Reproduce:", "", "```bash", result["command"], "```", ""]
    if result.get("note"):
        lines += [result["note"], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.input_rounding", description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", nargs="+", required=True, help="checkpoints, all of models of the data's classes")
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
    ap.add_argument("--command", default="", help="the command to print under 'Reproduce'")
    ap.add_argument("--note", default="")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--draws", type=int, default=3, help="seeded draws of the activation rounding per model")
    ap.add_argument("--calib-shifted", type=float, default=SHIFTED_SHARE, metavar="SHARE",
                    help="the activation ranges' calibration set: the default set with this share of shifted images")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for ckpt in args.ckpt:
        rows.append(measure(ckpt, args.data, args.split, args.draws, args.calib_shifted))
        r, a = rows[-1], rows[-1]["activation_rounding"]
        print(f"{r['model']} {r['input_size']}: input rounding: evaluation images {_both(r['split'])}, field "
              f"{_both(r['field'])}; activation rounding: {_draws(a['split'])}, field {_draws(a['field'])}",
              flush=True)
    result = {"data": str(args.data), "split": args.split, "models": rows,
              "command": args.command or "python -m benchmarks.input_rounding " + " ".join(sys.argv[1:]),
              "note": args.note}
    atomic_write_bytes(f"{args.out}.json", (json.dumps(result, indent=2) + "\n").encode())
    atomic_write_bytes(f"{args.out}.md", markdown(result).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
