"""``results.md`` and the two PNG plots of a benchmark results document (also used for merged device rows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from runtime.fileio import atomic_write_bytes  # noqa: E402

from .figures import png_bytes  # noqa: E402

COLOURS = {"pytorch": "#7f7f7f", "onnxruntime": "#bcbd22", "onnx": "#1f77b4", "openvino": "#9467bd",
           "tflite": "#ff7f0e", "edgetpu": "#2ca02c"}
STAGES = (("pre_ms", "pre-processing", "#8dd3c7"), ("infer_ms", "inference", "#80b1d3"),
          ("post_ms", "post-processing", "#fb8072"))


def _f(value: Any, spec: str, scale: float = 1.0) -> str:
    return "–" if value is None else format(value * scale, spec)


def _label(row: dict[str, Any]) -> str:
    where = row.get("device")
    return row["name"] if where in (None, "build machine") else f"{row['name']} @ {where}"


Table = tuple[list[str], list[list[str]]]


def md_table(table: Table, align: str = "") -> list[str]:
    """Markdown lines of ``(headers, cells)``; ``align`` has one of l/r per column (default: numbers right)."""
    headers, cells = table
    align = align or "l" * len(headers)
    return ["| " + " | ".join(headers) + " |", "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|",
            *("| " + " | ".join(row) + " |" for row in cells)]


def row_cells(rows: list[dict[str, Any]]) -> Table:
    headers = ["name", "device", "threads", "pre ms", "infer ms", "post ms", "total ms (p90)", "img/s", "size MB",
               "RSS MB", "load ms", "mAP", "ΔmAP pts", "det match", "gate", "GMAC/s (% of peak)"]
    cells = []
    for r in rows:
        gate = {True: "pass", False: "FAIL", None: "–"}[r.get("gate_passed")]
        roof = ("–" if r.get("achieved_gmacs") is None
                else f"{r['achieved_gmacs']:.1f} ({r['peak_fraction']:.0%})")
        cells.append([r["name"], str(r.get("device", "–")), str(r["threads"]), f"{r['pre_ms']:.2f}",
                      f"{r['infer_ms']:.2f}", f"{r['post_ms']:.2f}", f"{r['total_ms']:.2f} ({r['p90_ms']:.2f})",
                      f"{r['fps']:.1f}", f"{r['size_bytes'] / 1e6:.2f}", _f(r.get("rss_mb"), ".0f"),
                      _f(r.get("load_ms"), ".0f"), _f(r.get("map"), ".4f"), _f(r.get("map_delta"), "+.2f", 100),
                      _f(r.get("det_match"), ".1%"), gate, roof])
    return headers, cells


ROW_ALIGN = "llrrrrrrrrrrrrlr"


def goal_cells(goals: list[dict[str, Any]]) -> Table:
    return (["goal", "threads", "measured", "limit", "verdict", "detail"],
            [[g["goal"], str(g["threads"] or "–"), f"{g['value']:.2f}", f"{g['limit']:g}",
              "met" if g["passed"] else "MISSED", g["detail"]] for g in goals])


def roofline_cells(roof: dict[str, Any]) -> Table:
    return (["threads", "fp32 GEMM GMAC/s", "int8 GEMM GMAC/s", "nominal fp32", "nominal int8"],
            [[t, f"{p['fp32_gmacs']:.1f}", f"{p['int8_gmacs']:.1f}", _f(p.get("fp32_nominal_gmacs"), ".1f"),
              _f(p.get("int8_nominal_gmacs"), ".1f")] for t, p in roof["peaks"].items()])


def profile_lines(profile: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = []
    for name, ops in profile.items():
        lines.append(f"- **{name}**: " + ", ".join(f"{o['op']} {o['share']:.0%} ({o['ms']:.2f} ms)" for o in ops))
    return lines


MARKERS = {"fp32": "o", "fp16": "^", "int8": "s", "int8-qat": "D"}


def latency_vs_accuracy_png(rows: list[dict[str, Any]]) -> bytes:
    """Colour = engine, marker = precision, hollow = failed its accuracy gate; one panel per thread count."""
    from matplotlib.lines import Line2D

    threads = sorted({r["threads"] for r in rows})
    fig, axes = plt.subplots(1, len(threads), figsize=(6.5 * len(threads), 4.8), squeeze=False)
    for ax, t in zip(axes[0], threads):
        for r in (r for r in rows if r["threads"] == t and r.get("map") is not None):
            colour = COLOURS.get(r["target"], "#333333")
            failed = r.get("gate_passed") is False
            ax.scatter(r["total_ms"], r["map"], s=70, marker="X" if r.get("baseline") else
                       MARKERS.get(r["precision"], "o"), facecolors="none" if failed else colour,
                       edgecolors=colour, linewidths=1.5)
            if r.get("baseline") or r.get("device") not in (None, "build machine"):
                ax.annotate(_label(r), (r["total_ms"], r["map"]), textcoords="offset points", xytext=(5, 4),
                            fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("end-to-end latency, median ms (log)")
        ax.set_ylabel("mAP@[.5:.95]")
        ax.set_title(f"latency vs accuracy, {t} thread(s)")
        ax.grid(alpha=0.3, which="both")
    present = {r["target"] for r in rows if not r.get("baseline")}
    handles = [Line2D([], [], color=COLOURS[k], marker="o", ls="", label=k) for k in COLOURS if k in present]
    handles += [Line2D([], [], color="#555", marker=m, ls="", label=p) for p, m in MARKERS.items()
                if any(r["precision"] == p for r in rows)]
    handles += [Line2D([], [], color="#555", marker="X", ls="", label="baseline"),
                Line2D([], [], color="#555", marker="o", markerfacecolor="none", ls="", label="gate failed")]
    axes[0][-1].legend(handles=handles, fontsize=8, loc="best")
    return png_bytes(fig, dpi=110)


def latency_breakdown_png(rows: list[dict[str, Any]]) -> bytes:
    fig, ax = plt.subplots(figsize=(9, 0.38 * len(rows) + 1.2))
    labels = [f"{_label(r)} ({r['threads']}T)" for r in rows]
    left = [0.0] * len(rows)
    for key, name, colour in STAGES:
        values = [r[key] for r in rows]
        ax.barh(labels, values, left=left, color=colour, label=name)
        left = [a + b for a, b in zip(left, values)]
    for y, total in enumerate(left):
        ax.text(total, y, f" {total:.1f}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("median ms per image")
    ax.set_title("latency breakdown")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return png_bytes(fig, dpi=110)


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    cpu = doc.get("roofline", {}).get("cpu", {})
    lines = [f"# Benchmark: {doc.get('model', '?')} at {doc.get('input_size', '?')} px", "",
             f"Produced by `{doc.get('command', 'make bench')}`. Machine: {cpu.get('model', m.get('processor'))}, "
             f"{m.get('cpu_count')} CPUs, {m.get('platform')}. {doc.get('runs')} timed calls per row after "
             f"{doc.get('warmup')} warm-up, rows of one thread count interleaved in one process; load time and peak "
             f"RSS from a fresh process per row. Accuracy: the parity gate's mAP on {doc.get('eval_images')} images "
             f"of {doc.get('data')} [{doc.get('split')}]. The model does {doc.get('gmacs')} GMACs per image.", "",
             *([doc["note"], ""] if doc.get("note") else []),
             *md_table(row_cells(doc["rows"]), ROW_ALIGN), "", "![latency vs accuracy](latency_vs_map.png)", "",
             "![latency breakdown](latency_breakdown.png)", ""]
    if doc.get("goals"):
        lines += ["## Goals", "", *md_table(goal_cells(doc["goals"]), "lrrrll"), ""]
    if doc.get("roofline"):
        lines += ["## Roofline", "", doc["roofline"]["method"] + "; nominal = clock x cores x MACs per cycle of the "
                  f"ISA ({cpu.get('isa')}, VNNI {cpu.get('vnni')}), assuming two 256-bit FMA pipes.", "",
                  *md_table(roofline_cells(doc["roofline"]), "rrrrr"), ""]
    if doc.get("op_profile"):
        lines += ["## Where the inference time goes", "", "Mean ms per run by operator (onnxruntime profiler; "
                  "OpenVINO performance counters, node type/kernel):", "", *profile_lines(doc["op_profile"]), ""]
    return "\n".join(lines)


def write_outputs(doc: dict[str, Any], out: Path) -> Path:
    """Write results.md and the plots into ``out``; returns the .md path."""
    atomic_write_bytes(out / "latency_vs_map.png", latency_vs_accuracy_png(doc["rows"]))
    atomic_write_bytes(out / "latency_breakdown.png", latency_breakdown_png(doc["rows"]))
    md = out / "results.md"
    atomic_write_bytes(md, markdown(doc).encode())
    return md


def main(argv: list[str] | None = None) -> int:
    """Re-render results.md and the plots from a results.json (goals re-checked; optionally a new note)."""
    import argparse
    import json

    from runtime.fileio import atomic_write_json

    from .goals import check_goals

    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_output", description=main.__doc__)
    p.add_argument("results", type=Path)
    p.add_argument("--note", help="replace the results' note paragraph")
    args = p.parse_args(argv)
    doc = json.loads(args.results.read_text())
    doc["goals"] = check_goals(doc["rows"])
    if args.note is not None:
        doc["note"] = args.note
    atomic_write_json(args.results, doc)
    print(write_outputs(doc, args.results.parent))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
