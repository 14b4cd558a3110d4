"""Inference backends behind one small interface, chosen from the artifact suffix.

Each backend module imports its inference package lazily, so a device needs only the one
package its artifact uses (onnxruntime, openvino or a TFLite interpreter).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

METADATA_KEY = "efficientdet_manifest"  # where ONNX metadata_props / OpenVINO rt_info hold the manifest


class BackendUnavailableError(ImportError):
    """The inference package for this artifact is not installed; the message says what to pip install."""


class TensorInfo(NamedTuple):
    """One input or output: ``quant`` is ``{"scale", "zero_point"}`` for integer tensors that carry it, else None."""

    name: str
    shape: list[Any]
    dtype: str
    quant: dict[str, Any] | None


class Backend:
    """Common interface: outputs are returned keyed by name, never by position (converters reorder them)."""

    name: str = ""
    precision: str = ""

    def input_details(self) -> list[TensorInfo]:
        raise NotImplementedError

    def output_details(self) -> list[TensorInfo]:
        raise NotImplementedError

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs for one input; safe to call from several threads (each backend says how)."""
        raise NotImplementedError

    def embedded_manifest(self) -> str | None:
        """The manifest text stored inside the artifact itself, where the format has a place for it."""
        return None


def default_threads() -> int:
    """CPUs this process may use (respects taskset/cgroup affinity where the OS reports it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def missing(package: str, extra: str, error: ImportError) -> BackendUnavailableError:
    return BackendUnavailableError(
        f"the {extra} backend needs the '{package}' package, which is not importable ({error}); "
        f"install it with: pip install {package}  (or: pip install 'efficientdet-runtime[{extra}]')")


def check_threads(threads: int | None) -> int:
    """The thread count to use: ``None`` means all this process may use; more than 4 per CPU is refused
    (10000 was accepted and made ~9,400 threads, issue 13); oversubscribing beyond that never helps."""
    if threads is None:
        return default_threads()
    limit = 4 * (os.cpu_count() or 1)
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= limit:
        raise ValueError(f"threads must be an integer from 1 to {limit} (4 x the {os.cpu_count()} CPUs here), "
                         f"got {threads!r}")
    return threads


def open_backend(path: str | os.PathLike[str], threads: int | None = None, *, precision: str = "",
                 inference_precision: str | None = None, edgetpu: bool = False,
                 options: dict[str, Any] | None = None) -> Backend:
    """Open ``path`` with the backend its suffix names (.onnx, .xml, .tflite).

    ``precision`` is the artifact's precision (reported by backends that cannot query it);
    ``inference_precision`` is the OpenVINO hint; ``options`` go to the backend constructor.
    """
    suffix = Path(path).suffix.lower()
    threads = check_threads(threads)
    opts = dict(options or {})
    if edgetpu and suffix != ".tflite":
        raise ValueError(f"edgetpu=True needs a .tflite model compiled for the Edge TPU, got {path}")
    if suffix == ".onnx":
        from .onnx_backend import OnnxBackend

        return OnnxBackend(path, threads, precision=precision, **opts)
    if suffix == ".xml":
        from .openvino_backend import OpenVinoBackend

        return OpenVinoBackend(path, threads, inference_precision=inference_precision, **opts)
    if suffix == ".tflite":
        from .tflite_backend import TfliteBackend

        return TfliteBackend(path, threads, precision=precision, edgetpu=edgetpu, **opts)
    raise ValueError(f"unsupported model file {path}: expected .onnx (onnxruntime), .xml (OpenVINO IR) or .tflite")
