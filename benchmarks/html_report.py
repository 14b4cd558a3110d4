"""``make report``: one self-contained HTML page from an export's ``report.json``, the benchmark's
``results.json`` and any device results files (``python -m runtime bench --out`` on a Pi or Coral).

Self-contained means every image is inlined as a data URI and there is no script or stylesheet from
anywhere else: the page is mailed around and opened offline. Device rows get their accuracy from the
parity report by the artifact's sha256, where the same bytes score the same mAP: float artifacts anywhere, int8
ones only on the CPU class their gate ran on (their kernels differ by class, TFLite's too: session 31).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import html
import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from runtime.bench import RESULTS_SCHEMA, ROW_FIELDS
from runtime.detector import Detector
from runtime.draw import draw_detections
from runtime.fileio import atomic_write_bytes
from runtime.preprocess import read_image

from .bench_output import (
    ROW_ALIGN,
    Table,
    goal_cells,
    latency_breakdown_png,
    latency_vs_accuracy_png,
    profile_lines,
    roofline_cells,
    row_cells,
)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1500px;
color:#222;padding:0 16px}
h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:4px 8px}th{background:#f4f4f4}td.r{text-align:right}
tr.fail td{background:#fde8e8}tr.base td{background:#f7f7f0}
img.plot{max-width:100%;border:1px solid #eee;margin:6px 0}
.grid{display:grid;gap:6px;align-items:start;grid-template-columns:repeat(auto-fill,minmax(230px,1fr))}
.grid figure{margin:0}.grid img{width:100%;border:1px solid #ccc}
figcaption{font-size:12px;color:#555}.meta{color:#555;font-size:13px}
"""
# Records how many of the page's images the browser decoded, for the headless render check.
RENDER_CHECK = ("window.addEventListener('load',function(){var i=document.images,ok=0;for(var k=0;k<i.length;k++)"
                "{if(i[k].complete&&i[k].naturalWidth>0)ok++;}document.body.setAttribute('data-rendered',"
                "ok+'/'+i.length);});")


class ReportError(ValueError):
    """An input file is missing or not what it should be."""


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{what} {path} not found") from None
    except ValueError as e:
        raise ReportError(f"{what} {path} is not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise ReportError(f"{what} {path} is not a JSON object")
    return doc


# Every int8 target's accuracy depends on the CPU class: byte-identical int8 ONNX scored +0.20 points on AVX-512
# VNNI and -16.2 on AVX2, and the BCCD D0's post-training int8 TFLite, bit-identical under ai-edge-litert 1.4.0 and
# 2.1.0 on x86, gave other outputs on an emulated Cortex-A76 (logits up to 2.5 % of their range apart, -0.06 point;
# docs/INT8-CPU-CLASSES.md). The default model's int8 TFLite had been bit-identical there (session 6): one file
# says nothing of the next.
def _accuracy_applies(entry: dict[str, Any], report: dict[str, Any], device_class: str | None) -> str | None:
    """None when the gate's accuracy holds on the device, else why not (an int8 artifact on another class)."""
    if not entry["precision"].startswith("int8"):
        return None
    gated = (report.get("cpu") or {}).get("int8")
    if gated and device_class == gated:
        return None
    return (f"not measured on this device's CPU class ({device_class or 'unrecorded'}); the gate ran on "
            f"{gated or 'an unrecorded class'}, and int8 {entry['target']} kernels differ by class")


def load_device_rows(paths: list[Path], report: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Rows of device results files, with accuracy joined from the parity report by artifact sha256 where it
    holds there: float and TFLite artifacts anywhere, int8 ONNX/OpenVINO only on the CPU class they were gated on
    (else the row says so in ``accuracy_of`` and carries no accuracy)."""
    by_sha = {a["sha256"]: a for a in (report or {}).get("artifacts", [])}
    rows = []
    for path in paths:
        doc = _read_json(path, "device results")
        if doc.get("schema") != RESULTS_SCHEMA or not isinstance(doc.get("rows"), list):
            raise ReportError(f"device results {path} is not a {RESULTS_SCHEMA} file (write it with "
                              "`python -m runtime bench MODEL --out FILE`)")
        for row in doc["rows"]:
            missing = [f for f in ROW_FIELDS if f not in row] if isinstance(row, dict) else list(ROW_FIELDS)
            if missing:
                raise ReportError(f"device results {path}: a row lacks {', '.join(missing)}")
            row = dict(row)
            row.setdefault("device", doc.get("machine", {}).get("host", path.stem))
            entry = by_sha.get(row.get("sha256"))
            why_not = None
            if entry is None and row.get("source_sha256") in by_sha:  # an Edge TPU build: its int8 source's,
                entry = by_sha[row["source_sha256"]]  # said so (the TPU's arithmetic is no CPU class's)
                gated = ((report or {}).get("cpu") or {}).get("int8") or "an unrecorded CPU class"
                row["accuracy_of"] = (f"{entry['target']}-{entry['precision']} it was compiled from, as its gate "
                                      f"measured it on {gated}; the Edge TPU's own arithmetic is not measured")
            elif entry is not None:  # a row's own class first: device-check's rows are an emulated CPU's, in a
                # file whose machine is the x86 host, so an emulated row never takes the file's class
                device_class = row.get("int8_class") or (None if row.get("emulated")
                                                         else doc.get("machine", {}).get("int8_class"))
                why_not = _accuracy_applies(entry, report or {}, device_class)
            if why_not:
                row["accuracy_of"] = why_not
            elif entry is not None and row.get("map") is None and row.get("engine", "runtime") == "runtime":
                # the gate's accuracy is the runtime's on these bytes; another engine's (MediaPipe) is not measured
                p = entry["parity"]
                row.update(map=p["map"], map_delta=p["map_delta"], det_match=p["det_match"],
                           gate_passed=entry["gate"]["passed"])
            rows.append(row)
    return rows


def html_table(table: Table, align: str = "", row_class: list[str] | None = None) -> str:
    headers, cells = table
    align = align or "l" * len(headers)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(cells):
        cls = f' class="{row_class[i]}"' if row_class and row_class[i] else ""
        body.append(f"<tr{cls}>" + "".join(f'<td class="{"r" if a == "r" else ""}">{html.escape(c)}</td>'
                                           for c, a in zip(row, align)) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _jpeg(image: np.ndarray, width: int = 360) -> bytes:
    h, w = image.shape[:2]
    if w > width:
        image = cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ReportError("could not encode a detection image")
    return buf.tobytes()


def _num(value: float | None, spec: str) -> str:
    """``value`` formatted, or "–" where it was not measured (an artifact with detections out has no raw-output
    error; an exact one no SNR)."""
    return "–" if value is None else format(value, spec)


def parity_table(report: dict[str, Any]) -> tuple[Table, list[str]]:
    headers = ["target", "precision", "size MB", "rel err", "SNR dB", "det match (both ways)", "mAP",
               "ΔmAP pts", "gate"]
    cells, classes = [], []
    for a in report["artifacts"]:
        p = a["parity"]
        cells.append([" ".join(filter(None, (a["target"], a.get("flavour")))), a["precision"],
                      f"{a['size_bytes'] / 1e6:.2f}", _num(p["rel_err"], ".2e"), _num(p["snr_db"], ".1f"),
                      f"{p['det_match']:.1%} / {p['det_match_reverse']:.1%}",
                      f"{p['map']:.4f}", f"{p['map_delta'] * 100:+.2f}", "pass" if a["gate"]["passed"] else "FAIL"])
        classes.append("" if a["gate"]["passed"] else "fail")
    return (headers, cells), classes


def detection_grid(report: dict[str, Any], images: list[Path], ckpt: Path | None) -> str:
    """Each artifact's detections (and PyTorch FP32's where the checkpoint is here) on the same images."""
    columns: list[tuple[str, Any]] = []
    arts = [a for a in report["artifacts"] if Path(a["path"]).is_file()]
    if ckpt is not None and ckpt.is_file() and arts:
        from .torch_baseline import TorchDetector

        fp32 = next((a for a in arts if a["precision"] == "fp32"), arts[0])
        columns.append(("PyTorch fp32 (reference)", TorchDetector(ckpt, fp32["path"], threads=2)))
    columns += [(" ".join(filter(None, (a["target"], a["precision"], a.get("flavour")))),
                 Detector(a["path"], threads=2)) for a in arts]
    if not columns or not images:
        return "<p>No artifacts or images available here to draw.</p>"
    blocks = []
    for path in images:
        image = read_image(str(path))
        cells = []
        for title, det in columns:
            result = det.timed(image)[0]
            uri = _data_uri(_jpeg(draw_detections(image, result)), "image/jpeg")
            cells.append(f'<figure><img src="{uri}" alt="{html.escape(title)}"><figcaption>{html.escape(title)}: '
                         f"{len(result)} detections</figcaption></figure>")
        blocks.append(f"<h3>{html.escape(path.name)}</h3><div class=\"grid\">{''.join(cells)}</div>")
    return "".join(blocks)


def build_html(report: dict[str, Any] | None, bench: dict[str, Any] | None, device_rows: list[dict[str, Any]],
               images: list[Path], ckpt: Path | None) -> str:
    title = f"EfficientDet edge report: {(bench or report or {}).get('model', '?')}"
    parts = [f"<h1>{html.escape(title)}</h1>",
             f'<p class="meta">Generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by '
             "<code>make report</code>.</p>"]
    if report:
        table, classes = parity_table(report)
        parts += ["<h2>Artifacts and the parity gate</h2>",
                  f'<p class="meta">{html.escape(report["model"])} at {report["input_size"]} px, checkpoint '
                  f"<code>{html.escape(report['checkpoint'])}</code>; FP32 PyTorch mAP {report['map_ref']:.4f} on "
                  f"{report['num_images']} images of {html.escape(report['data'])} [{html.escape(report['split'])}]."
                  "</p>", html_table(table, "llrrrrrrl", classes)]
    rows = list((bench or {}).get("rows", [])) + device_rows
    if rows:
        classes = ["base" if r.get("baseline") else ("fail" if r.get("gate_passed") is False else "") for r in rows]
        parts += ["<h2>Latency, size and accuracy</h2>"]
        if bench:
            parts.append(f'<p class="meta">Build machine: {html.escape(str(bench["machine"].get("platform")))}, '
                         f"{bench['machine'].get('cpu_count')} CPUs; {bench.get('runs')} timed calls per row, "
                         f"interleaved; command <code>{html.escape(bench.get('command', ''))}</code>.</p>")
            if bench.get("note"):
                parts.append(f"<p>{html.escape(bench['note'])}</p>")
        parts += [html_table(row_cells(rows), ROW_ALIGN, classes),
                  *(f'<p class="meta">{html.escape(r["name"])} on {html.escape(str(r.get("device")))}: accuracy '
                    f'{html.escape(r["accuracy_of"])}.</p>' for r in rows if r.get("accuracy_of")),
                  f'<img class="plot" alt="latency vs accuracy" '
                  f'src="{_data_uri(latency_vs_accuracy_png(rows), "image/png")}">',
                  f'<img class="plot" alt="latency breakdown" '
                  f'src="{_data_uri(latency_breakdown_png(rows), "image/png")}">']
    if bench and bench.get("goals"):
        goals = bench["goals"]
        parts += ["<h2>Goals</h2>", html_table(goal_cells(goals), "lrrrll",
                                               ["" if g["passed"] else "fail" for g in goals])]
    if bench and bench.get("roofline"):
        parts += ["<h2>Roofline</h2>", f"<p class=\"meta\">{html.escape(bench['roofline']['method'])}</p>",
                  html_table(roofline_cells(bench["roofline"]), "rrrrr")]
    if bench and bench.get("op_profile"):
        items = "".join(f"<li>{html.escape(line[2:].replace('**', ''))}</li>"
                        for line in profile_lines(bench["op_profile"]))
        parts += ["<h2>Where the inference time goes</h2>", f"<ul>{items}</ul>"]
    if report:
        parts += ["<h2>Detections side by side</h2>", detection_grid(report, images, ckpt)]
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body>{''.join(parts)}<script>{RENDER_CHECK}</script></body></html>")


def _eval_images(report: dict[str, Any], count: int) -> list[Path]:
    from efficientdet.data.loader import load_dataset

    dataset = load_dataset(report["data"], report["split"])
    withboxes = [r for r in dataset.records if len(r.labels)]
    return [Path(r.path) for r in withboxes[:count]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.html_report", description=__doc__.split("\n")[0])
    p.add_argument("--bench", default="bench/results.json", help="make bench results (skipped if absent)")
    p.add_argument("--report", default=None, help="export report.json (default: the one the bench used)")
    p.add_argument("--device-results", default="", help="comma-separated results files from devices")
    p.add_argument("--images", type=int, default=3, help="evaluation images to draw detections on")
    p.add_argument("--out", default="bench/report.html")
    args = p.parse_args(argv)
    try:
        bench_path = Path(args.bench)
        bench = _read_json(bench_path, "bench results") if bench_path.is_file() else None
        report_path = args.report or (bench or {}).get("export_report")
        if not report_path and bench is None:
            raise ReportError("nothing to report: run `make bench` first or pass --report exports/NAME/report.json")
        report = _read_json(Path(report_path), "export report") if report_path else None
        devices = load_device_rows([Path(s) for s in args.device_results.split(",") if s.strip()], report)
        ckpt = Path(report["checkpoint"]) if report else None
        images = _eval_images(report, args.images) if report and args.images > 0 else []
        page = build_html(report, bench, devices, images, ckpt)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, page.encode())
    print(f"report: {out} ({len(page) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
