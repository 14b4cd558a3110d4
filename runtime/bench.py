"""Latency benchmark of the whole pipeline on the device itself (no dataset, no toolchain needed).

One result row has the same fields wherever it was measured (``make bench`` on the build machine,
``python -m runtime bench`` on a Raspberry Pi or a Coral board), and a results file is
``{"schema", "machine", "versions", "rows": [...]}`` either way, so ``make report DEVICE_RESULTS=...``
merges device files beside the build machine's rows; accuracy is joined later by the artifact's sha256.
"""

from __future__ import annotations

import os
import platform
import resource
import socket
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .cpu_class import cpu_class
from .detector import Detector

if TYPE_CHECKING:
    from .mediapipe_engine import MediapipeDetector

RESULTS_SCHEMA = "efficientdet-bench/1"
ROW_FIELDS = ("name", "target", "precision", "threads", "pre_ms", "infer_ms", "post_ms", "total_ms", "p90_ms",
              "fps", "size_bytes", "rss_mb", "load_ms", "map")
VERSION_PACKAGES = ("numpy", "opencv-python-headless", "opencv-python", "onnxruntime", "openvino", "ai-edge-litert",
                    "tflite-runtime", "mediapipe", "tensorflow", "torch")
ENGINES = ("runtime", "mediapipe")  # who runs the file: this runtime, or MediaPipe's ObjectDetector (-android only)


class Timed(Protocol):
    def timed(self, image: np.ndarray) -> tuple[Any, dict[str, float]]: ...


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
    """Peak resident memory of this process image.

    Linux: ``VmHWM`` of /proc/self/status, because ``ru_maxrss`` survives ``exec`` and a process started
    from a big parent would report the parent's peak. Elsewhere ``ru_maxrss`` (KiB; bytes on macOS).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def machine_info() -> dict[str, Any]:
    """Where a row was measured; ``int8_class`` decides whether the build machine's int8 accuracy applies here."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "host": socket.gethostname(),
            "int8_class": cpu_class().int8}


def package_versions(packages: tuple[str, ...] = VERSION_PACKAGES) -> dict[str, str]:
    """Installed versions of the runtime's possible backends, without importing them."""
    found = {}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def time_calls(det: Timed, image: np.ndarray, runs: int, warmup: int) -> np.ndarray:
    """``[runs, 3]`` pre/infer/post milliseconds of ``runs`` calls after ``warmup`` untimed ones."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    for _ in range(warmup):
        det.timed(image)
    return np.asarray([[t["pre_ms"], t["infer_ms"], t["post_ms"]] for t in (det.timed(image)[1] for _ in range(runs))])


def summarize(samples: np.ndarray) -> dict[str, Any]:
    """Median per stage and end to end, p90s, and single-stream throughput from ``[N, 3]`` stage times."""
    samples = np.asarray(samples, dtype=np.float64).reshape(-1, 3)
    totals = samples.sum(axis=1)
    med = np.median(samples, axis=0)
    p90 = np.percentile(samples, 90, axis=0)
    return {"pre_ms": float(med[0]), "infer_ms": float(med[1]), "post_ms": float(med[2]),
            "total_ms": float(np.median(totals)), "p90_ms": float(np.percentile(totals, 90)),
            "stage_p90_ms": dict(zip(("pre", "infer", "post"), map(float, p90))),
            "fps": float(1e3 * len(totals) / totals.sum()), "runs": int(len(totals))}


def artifact_row(det: Detector | MediapipeDetector, name: str | None = None) -> dict[str, Any]:
    """The fields of a result row that describe the artifact rather than its timing."""
    art = det.manifest.data["artifact"]
    engine = None if det.engine == "runtime" else det.engine
    default = "-".join(filter(None, (art["target"], art["precision"], art.get("flavour"), engine)))
    return {"name": name or default, "target": art["target"], "precision": art["precision"], "engine": det.engine,
            "backend": det.engine_name, "inference_precision": det.inference_precision, "threads": det.threads,
            "model": str(det.model_path),
            "sha256": art.get("sha256"), "source_sha256": art.get("edgetpu_compiled_from_sha256"),
            "size_bytes": artifact_size(det.model_path),
            "input_size": list(det.manifest.input.shape), "map": None}


def run_benchmark(model: str | os.PathLike[str], threads: int | None = None, runs: int = 50, warmup: int = 5,
                  image: np.ndarray | None = None, name: str | None = None, edgetpu: bool = False,
                  device: str | None = None, engine: str = "runtime") -> dict[str, Any]:
    """One result row: medians of ``runs`` calls after ``warmup``, load time and this process's peak RSS.
    ``engine="mediapipe"`` runs an ``-android.tflite`` in MediaPipe's ObjectDetector instead of the runtime."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "mediapipe" and (threads is not None or edgetpu):
        raise ValueError("the mediapipe engine takes no thread count and no Edge TPU (MediaPipe's Python API has "
                         "neither option)")
    t0 = time.perf_counter()
    if engine == "mediapipe":
        from .mediapipe_engine import MediapipeDetector

        det: Detector | MediapipeDetector = MediapipeDetector(model)
    else:
        det = Detector(model, threads=threads, edgetpu=edgetpu)
    load_ms = (time.perf_counter() - t0) * 1e3
    samples = time_calls(det, synthetic_image() if image is None else image, runs, warmup)
    row = artifact_row(det, name)
    if edgetpu:
        row["target"] = "edgetpu"
    row.update(summarize(samples), warmup=warmup, load_ms=load_ms, rss_mb=peak_rss_mb(),
               device=device or machine_info()["host"], machine=machine_info())
    return row


def results_document(rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """The results-file format shared by ``make bench`` and ``python -m runtime bench --out``."""
    return {"schema": RESULTS_SCHEMA, "machine": machine_info(), "versions": package_versions(), **extra,
            "rows": rows}


def format_table(stats: dict[str, Any]) -> str:
    precision = stats["precision"]
    if stats["inference_precision"] not in ("", None, precision):  # None: the engine reports no kernel precision
        precision += f" (runs as {stats['inference_precision']})"
    lines = [f"{stats['model']}  backend={stats['backend']}  precision={precision}"
             f"  threads={stats['threads']}  runs={stats['runs']}",
             f"{'stage':<8}{'median ms':>12}{'p90 ms':>10}",
             *(f"{k:<8}{stats[k + '_ms']:>12.2f}{stats['stage_p90_ms'][k]:>10.2f}" for k in ("pre", "infer", "post")),
             f"{'total':<8}{stats['total_ms']:>12.2f}{stats['p90_ms']:>10.2f}",
             f"{stats['fps']:.1f} images/s single stream, load {stats['load_ms']:.0f} ms, "
             f"size {stats['size_bytes'] / 1e6:.2f} MB, peak RSS {stats['rss_mb']:.0f} MB"]
    return "\n".join(lines)
