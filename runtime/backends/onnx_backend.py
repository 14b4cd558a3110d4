"""onnxruntime backend (CPU).

Spinning is off by default: onnxruntime's busy-waiting thread pool doubles latency when another
process holds a core (docs/TOOLCHAIN.md, "Running"), which is the normal case on a phone or a Pi.

Thread safety: ``InferenceSession.run`` is safe to call from several threads at once (onnxruntime
documents it; 4 threads x 25 calls gave the single-threaded results, issue 13), so no lock is taken.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..onnx_external_data import open_session
from . import METADATA_KEY, Backend, TensorInfo, missing

_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
               "tensor(int8)": "int8", "tensor(int32)": "int32", "tensor(int64)": "int64"}


class OnnxBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike[str], threads: int, precision: str = "",
                 allow_spinning: bool = False, providers: list[str] | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise missing("onnxruntime", "onnx", e) from e
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        self.session = open_session(ort, path, opts, providers or ["CPUExecutionProvider"])
        self.precision = precision
        self.threads = int(threads)
        self._input = self.session.get_inputs()[0].name
        self._outputs = [o.name for o in self.session.get_outputs()]

    @staticmethod
    def _info(arg: Any) -> TensorInfo:
        return TensorInfo(arg.name, list(arg.shape), _ORT_DTYPES.get(arg.type, arg.type), None)

    def input_details(self) -> list[TensorInfo]:
        return [self._info(a) for a in self.session.get_inputs()]

    def output_details(self) -> list[TensorInfo]:
        return [self._info(a) for a in self.session.get_outputs()]

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(self._outputs, {self._input: x})
        return dict(zip(self._outputs, values))

    def embedded_manifest(self) -> str | None:
        return self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
