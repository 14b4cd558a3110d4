"""Latency benchmark of the whole pipeline on the device itself (no dataset needed)."""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .detector import Detector


def synthetic_image(height: int = 480, width: int = 640) -> np.ndarray:
    """A deterministic BGR test image (gradient background plus filled shapes), the same on every device."""
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)),
                    ((x + y) * 255 // max(width + height - 2, 1))], axis=-1).astype(np.uint8)
    rng = np.random.default_rng(0)
    for _ in range(12):
        x1, y1 = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
        w, h = int(rng.integers(20, width // 3)), int(rng.integers(20, height // 3))
        img[y1:y1 + h, x1:x1 + w] = rng.integers(0, 256, 3, dtype=np.uint8)
    return img


def artifact_size(path: Path) -> int:
    """Bytes on disk, counting OpenVINO's ``.bin`` weights and ONNX external data beside the file."""
    companions = [path.with_suffix(".bin")] if path.suffix.lower() == ".xml" else [Path(str(path) + ".data")]
    return path.stat().st_size + sum(p.stat().st_size for p in companions if p.is_file())


def peak_rss_mb() -> float:
    """Peak resident memory of this process (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def machine_info() -> dict[str, Any]:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version()}


def run_benchmark(model: str | os.PathLike[str], threads: int | None = None, runs: int = 50, warmup: int = 5,
                  image: np.ndarray | None = None) -> dict[str, Any]:
    """Median pre/infer/post/total milliseconds (and total p90) over ``runs`` timed calls after ``warmup``."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    t0 = time.perf_counter()
    det = Detector(model, threads=threads)
    load_ms = (time.perf_counter() - t0) * 1e3
    img = synthetic_image() if image is None else image
    for _ in range(warmup):
        det.timed(img)
    rows = []
    for _ in range(runs):
        _, t = det.timed(img)
        rows.append((t["pre_ms"], t["infer_ms"], t["post_ms"], t["pre_ms"] + t["infer_ms"] + t["post_ms"]))
    arr = np.asarray(rows)
    med = np.median(arr, axis=0)
    p90 = np.percentile(arr, 90, axis=0)
    return {"model": str(model), "backend": det.backend.name, "precision": det.manifest["artifact"]["precision"],
            "inference_precision": det.backend.precision, "threads": det.threads, "runs": runs, "warmup": warmup,
            "pre_ms": float(med[0]), "infer_ms": float(med[1]), "post_ms": float(med[2]), "total_ms": float(med[3]),
            "p90_ms": float(p90[3]), "stage_p90_ms": dict(zip(("pre", "infer", "post"), map(float, p90[:3]))),
            "size_bytes": artifact_size(Path(model)),
            "load_ms": load_ms, "rss_mb": peak_rss_mb(), "machine": machine_info()}


def format_table(stats: dict[str, Any]) -> str:
    precision = stats["precision"]
    if stats["inference_precision"] not in ("", precision):
        precision += f" (runs as {stats['inference_precision']})"
    lines = [f"{stats['model']}  backend={stats['backend']}  precision={precision}"
             f"  threads={stats['threads']}  runs={stats['runs']}",
             f"{'stage':<8}{'median ms':>12}{'p90 ms':>10}",
             *(f"{k:<8}{stats[k + '_ms']:>12.2f}{stats['stage_p90_ms'][k]:>10.2f}" for k in ("pre", "infer", "post")),
             f"{'total':<8}{stats['total_ms']:>12.2f}{stats['p90_ms']:>10.2f}",
             f"load {stats['load_ms']:.0f} ms, size {stats['size_bytes'] / 1e6:.2f} MB, "
             f"peak RSS {stats['rss_mb']:.0f} MB"]
    return "\n".join(lines)
