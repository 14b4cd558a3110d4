"""Post-processing latency (threshold on logits, top-k, decode, class-aware NMS) for D0 at 512.

Two logit regimes per class count: "trained" (what a trained detector emits: almost every
anchor far below threshold, a few hundred candidates) and "random" (N(0,1) logits: tens of
thousands of candidates, the worst case). Writes results/postprocess-bench.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from runtime.anchors import generate_anchors
from runtime.contract import AnchorSpec
from runtime.postprocess import DEFAULT_POSTPROCESS, postprocess

D0_ANCHORS = AnchorSpec(512)  # D0's levels 3-7, 3 scales, 3 aspect ratios, anchor scale 4


def make_logits(num_anchors: int, num_classes: int, regime: str, rng: np.random.Generator) -> np.ndarray:
    if regime == "random":
        return rng.standard_normal((num_anchors, num_classes), dtype=np.float32)
    logits = rng.normal(-7.0, 1.2, (num_anchors, num_classes)).astype(np.float32)
    hot = rng.choice(num_anchors, 300, replace=False)
    logits[hot, rng.integers(0, num_classes, 300)] = rng.normal(1.0, 1.5, 300)
    return logits


def measure(num_classes: int, regime: str, runs: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    anchors = generate_anchors(D0_ANCHORS)
    logits = make_logits(len(anchors), num_classes, regime, rng)
    deltas = (rng.standard_normal((len(anchors), 4)) * 0.1).astype(np.float32)
    for _ in range(5):
        dets = postprocess(logits, deltas, anchors, DEFAULT_POSTPROCESS)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        dets = postprocess(logits, deltas, anchors, DEFAULT_POSTPROCESS)
        times.append((time.perf_counter() - t0) * 1e3)
    return {"classes": num_classes, "regime": regime, "anchors": len(anchors), "runs": runs,
            "median_ms": round(float(np.median(times)), 3), "p90_ms": round(float(np.percentile(times, 90)), 3),
            "detections": len(dets)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--out", default="results/postprocess-bench")
    args = p.parse_args(argv)
    rows = [measure(c, r, args.runs) for c in (3, 90) for r in ("trained", "random")]
    out = {"machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
           "command": "make bench-post", "score_threshold": DEFAULT_POSTPROCESS.score_threshold, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(out, indent=2) + "\n")
    lines = ["# Post-processing latency, D0 at 512 (49,104 anchors)", "", "Produced by `make bench-post` on "
             f"{platform.machine()} with {os.cpu_count()} cores (numpy + OpenCV NMS, one process).", "",
             "| classes | logits | median ms | p90 ms | detections |", "|---|---|---|---|---|"]
    lines += [f"| {r['classes']} | {r['regime']} | {r['median_ms']} | {r['p90_ms']} | {r['detections']} |"
              for r in rows]
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
