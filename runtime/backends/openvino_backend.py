"""OpenVINO backend (CPU) for IR (``.xml`` + ``.bin``).

The precision hint is always set: on CPUs with AVX512-BF16 OpenVINO silently runs an f32 IR in
bf16 otherwise (max error 0.07 measured, docs/TOOLCHAIN.md, "Exporting"). The precision reported is the one
the compiled model says it uses, not the one asked for.

Thread safety: one compiled model, one infer request per calling thread. A single shared request
returned another caller's outputs to 98 of 100 calls from 4 threads (issue 13); per-thread requests
keep concurrent calls independent and let them run in parallel on OpenVINO's streams.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import corrupt
from . import METADATA_KEY, Backend, TensorInfo, missing


class OpenVinoBackend(Backend):
    name = "openvino"

    def __init__(self, path: str | os.PathLike[str], threads: int, inference_precision: str | None = None,
                 device: str = "CPU", config: dict[str, Any] | None = None) -> None:
        try:
            from .openvino_privacy import import_openvino

            ov = import_openvino()  # with OpenVINO telemetry off (house rule: nothing phones home)
        except ImportError as e:
            raise missing("openvino", "openvino", e) from e
        weights = Path(path).with_suffix(".bin")
        if not weights.is_file():
            raise FileNotFoundError(f"OpenVINO weights {weights} not found: an IR is the .xml and its .bin together")
        core = ov.Core()
        settings = {"INFERENCE_NUM_THREADS": int(threads), "INFERENCE_PRECISION_HINT": inference_precision or "f32"}
        settings.update(config or {})
        try:  # a cut or damaged .xml/.bin fails here; compile errors below are about the device, not the file
            model = core.read_model(str(path))
        except RuntimeError as e:
            raise corrupt(f"{path} (with {weights.name})", "OpenVINO IR", e) from e
        self._embedded = str(model.get_rt_info(METADATA_KEY).astype(str)) if model.has_rt_info(METADATA_KEY) else None
        self.compiled = core.compile_model(model, device, settings)
        self._local = threading.local()
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        self.threads = int(threads)

    @staticmethod
    def _info(port: Any) -> TensorInfo:
        shape = port.get_partial_shape()
        dims = [d.get_length() if d.is_static else -1 for d in shape]
        return TensorInfo(port.get_any_name(), dims, np.dtype(port.get_element_type().to_dtype()).name, None)

    def input_details(self) -> list[TensorInfo]:
        return [self._info(p) for p in self.compiled.inputs]

    def output_details(self) -> list[TensorInfo]:
        return [self._info(p) for p in self.compiled.outputs]

    def _request(self) -> Any:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return request

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        results = self._request().infer({0: x})
        return {port.get_any_name(): np.asarray(value) for port, value in results.items()}

    def embedded_manifest(self) -> str | None:
        return self._embedded
