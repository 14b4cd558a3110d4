"""Turn an int8 export's ``report.json`` into the committed results: accuracy per target x {post-training, QAT}
plus int8 latency measured here through the runtime (``results/bccd-d0-int8.{json,md}``).

Latency: ``runtime.Detector.timed`` on the evaluation images, median and p90 of ``--runs`` calls after a
warm-up, every artifact interleaved in this one process (benchmarks.interleave: ratios hold on a noisy
machine; absolute numbers do not).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any

from convert.report import activation_rounding_line, input_rounding_line
from efficientdet.map_bootstrap import interval_text
from runtime.bench import summarize
from runtime.detector import Detector
from runtime.fileio import atomic_write_bytes
from runtime.preprocess import read_image

from .interleave import interleaved_samples


def _field(p: dict[str, Any]) -> tuple[str, str, str]:
    """Field det match (both ways), field logits rel L2, input clipped (split / field)."""
    f = p.get("field")
    if not f:
        return "—", "—", "—"
    rel = "—" if f.get("logits_rel_l2") is None else f"{f['logits_rel_l2']:.3f}"
    clipped = "—" if p.get("input_clipped") is None else f"{p['input_clipped']:.2%} / {f['input_clipped']:.2%}"
    return f"{f['det_match']:.1%} / {f['det_match_reverse']:.1%}", rel, clipped


def table(report: dict[str, Any]) -> list[str]:
    rows = ["| target | precision | mAP@[.5:.95] | mAP@.5 | ΔmAP (points) | ΔmAP 95 % interval | det match "
            "| field det match | field logits rel L2 | input clipped (split / field) | size (MB) | median ms (p90) "
            "| gate |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    ref = report["artifacts"][0]["parity"]
    rows.append(f"| PyTorch | fp32 (reference) | {ref['map_ref']:.4f} | {ref['map50_ref']:.4f} | — | — | — | — | — | — "
                "| — | — | — |")
    for a in sorted(report["artifacts"], key=lambda a: (a["target"], a["precision"])):
        p, lat = a["parity"], a.get("latency", {})
        rows.append(f"| {a['target']} | {a['precision']} | {p['map']:.4f} | {p['map50']:.4f} "
                    f"| {p['map_delta'] * 100:+.2f} | {interval_text(p.get('map_delta_interval'))} "
                    f"| {p['det_match']:.1%} | {' | '.join(_field(p))} "
                    f"| {a['size_bytes'] / 1e6:.2f} | {lat.get('total_ms', '—')} ({lat.get('p90_ms', '—')}) "
                    f"| {'PASS' if a['gate']['passed'] else 'FAIL'} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--report", required=True, help="report.json of `python -m convert --precision int8 [--qat]`")
    p.add_argument("--out", required=True, help="results path without suffix (writes .json and .md)")
    p.add_argument("--command", required=True, help="the command that produced the report (printed in the .md)")
    p.add_argument("--note", default=None, help="a paragraph printed under the table")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=50)
    args = p.parse_args(argv)
    report = json.loads(Path(args.report).read_text())
    from efficientdet.data.loader import load_dataset

    records = load_dataset(report["data"], report["split"], verify_images=False).records
    images = [read_image(r.path) for r in records[:10]]
    detectors = [Detector(a["path"], threads=args.threads) for a in report["artifacts"]]
    for a, samples in zip(report["artifacts"], interleaved_samples(detectors, images, args.runs, warmup=3)):
        stats = summarize(samples)
        a["latency"] = {**{k: round(stats[k], 2) for k in ("pre_ms", "infer_ms", "post_ms", "total_ms", "p90_ms")},
                        "threads": args.threads, "runs": args.runs}
        print(f"{a['target']:8s} {a['precision']:8s} {a['latency']}")
    report["machine"] = {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                         "load_average": [round(x, 2) for x in os.getloadavg()]}
    report["command"] = args.command
    out = Path(args.out)
    atomic_write_bytes(out.with_suffix(".json"), (json.dumps(report, indent=2) + "\n").encode())
    n = report["num_images"]
    own = [*input_rounding_line(report.get("fp32_input_rounding")),  # the FP32 model's own readings, where measured
           *activation_rounding_line(report.get("fp32_activation_rounding"))]
    md = [f"# int8 on {report['model']} ({report['input_size']} px): post-training vs QAT, per target", "",
          f"Checkpoint `{report['checkpoint']}`; evaluation: `{report['data']}` split `{report['split']}`, {n} images "
          "(COCO mAP via pycocotools, evaluation post-processing). ΔmAP against the FP32 PyTorch model on the same "
          "images, with its 95 % interval from a paired bootstrap over those images (efficientdet/map_bootstrap.py: "
          "how far another split of that size could move it; — where the export predates it); det match = share "
          "of FP32 detections (deployment threshold) matched by the artifact, same "
          "class, IoU ≥ 0.5. Field = the same comparison on images unlike the calibration set (photometric shifts "
          "of the evaluation images and other scenes, convert/field.py): det match FP32→artifact / artifact→FP32, "
          "logits relative L2 error, and the share of input values beyond the int8 input quantizer. "
          "Latency: end to end through the runtime (pre + infer + post), "
          f"{args.threads} threads, {args.runs} runs, on {platform.machine()} with {os.cpu_count()} cores, "
          "all artifacts interleaved in one process.", "", *table(report), "",
          *([*own, ""] if own else []), *([args.note, ""] if args.note else []),
          "Reproduce:", "", "```bash", args.command, "```", ""]
    q = [a for a in report["artifacts"] if a.get("quantization")]
    if q:
        md += ["How each artifact was quantized:", ""]
        md += [f"- {a['target']} {a['precision']}: {a['quantization']['tool']}, method "
               f"`{a['quantization']['method']}`, ranges {a['quantization'].get('ranges', 'calibrated')}, "
               f"{a['quantization']['calibration'].get('images_used', a['quantization']['calibration']['count'])} "
               "calibration images" + (f", then {a['quantization']['qat']['epochs']:g} QAT epochs"
                                       if a["quantization"].get("qat") else "")
               + (f"; {a['quantization']['bias_correction']}" if a["quantization"].get("bias_correction") else "")
               + (f"; input: {a['quantization']['input']}" if a["quantization"].get("input") else "")
               for a in q]
        md.append("")
    atomic_write_bytes(out.with_suffix(".md"), "\n".join(md).encode())
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
