"""``convert-matrix.json`` and ``convert-matrix.md`` for :mod:`convert.matrix`, and the machine they came from.

Timings on a shared 2-core box mean little without the machine and its load, so both go into the report.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

from runtime.fileio import atomic_write_bytes, atomic_write_json

from .manifest_writer import tool_versions
from .report import finite

JSON_NAME = "convert-matrix.json"
MD_NAME = "convert-matrix.md"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return round(kib / 2**20, 1)


def machine_info() -> dict[str, Any]:
    """CPU, cores this process may use, memory, load, niceness and the converter versions."""
    return {
        "platform": platform.platform(), "python": sys.version.split()[0], "cpu": _cpu_model(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": _memory_gib(), "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "nice": os.nice(0), "tools": tool_versions(),
    }


def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _size(n: int | None) -> str:
    return "–" if n is None else f"{n / 2**20:.1f} MiB"


def _status(row: dict[str, Any]) -> str:
    return "PASS" if row["passed"] else ("ERROR" if row["error"] else "FAIL")


def _one_line(row: dict[str, Any]) -> str:
    """A failure in one line: the first line of an error (what failed) and its last (the cause, for onnx2tf)."""
    lines = [ln.strip()[:200] for ln in (row["error"] or "; ".join(row["failures"])).splitlines() if ln.strip()]
    return " … ".join(dict.fromkeys([lines[0], lines[-1]])) if lines else "unknown"


NOTES = (
    "*export s (CPU s)*: wall seconds, and in brackets CPU seconds of this process and its children over all "
    "threads (on a loaded machine the wall time measures the load as much as the work; the CPU time is about what "
    "an idle machine needs at most). onnx = PyTorch -> FP32 ONNX (dynamo + onnxsim, numerically checked; fp16 adds "
    "its conversion); openvino and tflite start from that ONNX, and tflite includes the onnx2tf SavedModel step its "
    "precisions share. *ref dets*: detections of the PyTorch reference at the deployment threshold over all gate "
    "images; *det match*: the share of those matched by the artifact / the reverse."
)


def _seconds(t: dict[str, Any], key: str) -> str:
    return f"{_fmt(t.get(f'{key}_s'), '.1f')} ({_fmt(t.get(f'{key}_cpu_s'), '.0f')})"


def _table_row(r: dict[str, Any]) -> str:
    params = "–" if r["params"] is None else f"{r['params'] / 1e6:.2f} M"
    match = "–" if r["det_match"] is None else f"{r['det_match']:.0%}/{r['det_match_reverse']:.0%}"
    cells = [r["variant"], params, r["target"], r["precision"], _seconds(r, "export"), _size(r["size_bytes"]),
             _fmt(r["rel_err_logits"], ".1e"), _fmt(r["rel_err_boxes"], ".1e"), _fmt(r["num_detections_ref"], "d"),
             match, _status(r)]
    return "| " + " | ".join(cells) + " |"


def markdown(result: dict[str, Any]) -> str:
    """A table per variant x target x precision, the per-variant timings, then every failure."""
    spec, m, rows = result["spec"], result["machine"], result["rows"]
    passed = sum(r["passed"] for r in rows)
    lines = [
        "# Conversion matrix: every EfficientDet variant through every exporter and the parity gate", "",
        f"Produced by `{result['command']}` (started {result['started']}; total {_seconds(result, 'total')} s "
        "wall (CPU)).", "",
        f"Models: seeded random, image-dependent weights (`efficientdet.model.testing.detector_like_model_for`, seed "
        f"{spec['seed']}), {spec['num_classes']} classes, input {spec['size']}x{spec['size']}; gate on "
        f"{spec['num_images']} synthetic images with the thresholds of `convert/gates.py`.", "",
        f"Machine: {m['cpu']}, {m['cpus_usable']} usable CPUs, {m['memory_gib']} GiB, {m['platform']}, Python "
        f"{m['python']}; load average at start {m['load_avg_at_start']}, nice {m['nice']}. Tools: "
        + ", ".join(f"{k} {v}" for k, v in m["tools"].items()) + ".", "",
        f"**{passed}/{len(rows)} passed.**", "",
        "| variant | params | target | precision | export s (CPU s) | size | rel_err logits | rel_err boxes "
        "| ref dets | det match | gate |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---|",
        *(_table_row(r) for r in rows), "", NOTES, "",
        "| variant | setup s (CPU s) | parity s, all targets (CPU s) | total s (CPU s) |", "|---|---:|---:|---:|",
        *(f"| {label} | {_seconds(t, 'setup')} | {_seconds(t, 'parity')} | {_seconds(t, 'total')} |"
          for label, t in result["timings"].items()),
    ]
    bad = [r for r in rows if not r["passed"]]
    if bad:
        lines += ["", "## Failures", "", *(f"- {r['variant']} {r['target']} {r['precision']}: `{_one_line(r)}`"
                                           for r in bad)]
    return "\n".join(lines) + "\n"


def write_results(out: Path, result: dict[str, Any]) -> tuple[Path, Path]:
    """Both files, each atomically (a reader never sees half a table)."""
    out = Path(out)
    return (atomic_write_json(out / JSON_NAME, finite(result)),
            atomic_write_bytes(out / MD_NAME, markdown(result).encode()))
