"""The committed int8 table: one cell per column on every row, ΔmAP's interval where the export measured one."""

from __future__ import annotations

from typing import Any

from benchmarks.int8_results import table


def _artifact(target: str, precision: str, interval: dict[str, Any] | None) -> dict[str, Any]:
    parity = {"map": 0.42, "map50": 0.8, "map_delta": -0.003, "map_delta_interval": interval, "det_match": 0.95,
              "map_ref": 0.423, "map50_ref": 0.81, "input_clipped": 0.0,
              "field": {"det_match": 0.9, "det_match_reverse": 0.88, "logits_rel_l2": 0.05, "input_clipped": 0.0}}
    return {"target": target, "precision": precision, "parity": parity, "size_bytes": 4_000_000,
            "gate": {"passed": True}, "latency": {"total_ms": 12.5, "p90_ms": 14.0}}


def test_every_row_has_the_header_s_cells_and_the_interval_where_measured() -> None:
    interval = {"low": -0.0081, "high": 0.0024, "std_error": 0.0027, "resamples": 200, "level": 0.95}
    rows = table({"artifacts": [_artifact("onnx", "int8", interval), _artifact("tflite", "int8", None)]})
    cells = [row.count("|") for row in rows]
    assert len(set(cells)) == 1, rows
    header = [c.strip() for c in rows[0].split("|")]
    column = header.index("ΔmAP 95 % interval")
    onnx, tflite = ([c.strip() for c in r.split("|")] for r in rows[3:])
    assert onnx[column] == "-0.81 … +0.24" and tflite[column] == "—"
    assert onnx[header.index("ΔmAP (points)")] == "-0.30"
