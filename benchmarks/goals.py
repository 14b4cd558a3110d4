"""The issue's speed and size goals, checked as ratios within one benchmark run (one thread count at a time).

- the best int8 artifact end to end >= 4x faster than PyTorch FP32 eager and >= 1.5x faster than
  onnxruntime FP32. "Best" counts only artifacts that passed their accuracy gate (a fast int8 model that
  lost the detections is no answer); the fastest int8 row regardless of its gate is reported beside it;
- post-processing <= 3 ms median (every artifact row);
- every int8 artifact <= 30 % of the same target's FP32 artifact on disk.
"""

from __future__ import annotations

from typing import Any

SPEEDUP_VS_TORCH = 4.0
SPEEDUP_VS_ORT = 1.5
POST_MS_MAX = 3.0
INT8_SIZE_FRACTION_MAX = 0.30


def _goal(goal: str, threads: int | None, value: float, limit: float, passed: bool, detail: str) -> dict[str, Any]:
    return {"goal": goal, "threads": threads, "value": value, "limit": limit, "passed": passed, "detail": detail}


def check_goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    goals = []
    for threads in sorted({r["threads"] for r in rows}):
        at = {r["name"]: r for r in rows if r["threads"] == threads}
        # a MediaPipe row has no accuracy of its own (its file was gated through the runtime): not a candidate
        int8 = [r for r in at.values() if r["precision"].startswith("int8") and r.get("engine") != "mediapipe"]
        if int8 and "torch-fp32" in at and "onnxruntime-fp32" in at:
            passing = [r for r in int8 if r.get("gate_passed") is not False]
            fastest = min(int8, key=lambda r: r["total_ms"])
            for base, limit in (("torch-fp32", SPEEDUP_VS_TORCH), ("onnxruntime-fp32", SPEEDUP_VS_ORT)):
                ms = at[base]["total_ms"]
                aside = (f"; fastest int8 regardless of gate: {fastest['name']} {fastest['total_ms']:.1f} ms "
                         f"({ms / fastest['total_ms']:.2f}x)")
                if not passing:
                    goals.append(_goal(f"best int8 end to end vs {base}", threads, 0.0, limit, False,
                                       "no int8 artifact passed its accuracy gate" + aside))
                    continue
                best = min(passing, key=lambda r: r["total_ms"])
                ratio = ms / best["total_ms"]
                goals.append(_goal(f"best int8 end to end vs {base}", threads, ratio, limit, ratio >= limit,
                                   f"{best['name']} {best['total_ms']:.1f} ms vs {ms:.1f} ms"
                                   + (aside if fastest is not best else "")))
        arts = [r for r in at.values() if not r.get("baseline")]
        if arts:
            worst = max(arts, key=lambda r: r["post_ms"])
            goals.append(_goal("post-processing median (ms, worst artifact)", threads, worst["post_ms"],
                               POST_MS_MAX, worst["post_ms"] <= POST_MS_MAX, worst["name"]))
    first = min((r["threads"] for r in rows), default=None)
    sizes = {(r["target"], r["precision"]): r["size_bytes"] for r in rows if r["threads"] == first
             and not r.get("flavour")}
    for (target, precision), size in sorted(sizes.items()):
        fp32 = sizes.get((target, "fp32"))
        if precision.startswith("int8") and fp32:
            frac = size / fp32
            goals.append(_goal(f"{target}-{precision} size vs {target}-fp32", None, frac, INT8_SIZE_FRACTION_MAX,
                               frac <= INT8_SIZE_FRACTION_MAX, f"{size / 1e6:.2f} MB vs {fp32 / 1e6:.2f} MB"))
    return goals
