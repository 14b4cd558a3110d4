"""TFLite backend: ai-edge-litert, else tflite-runtime, else TensorFlow's own interpreter.

Outputs are named by the model's signature (onnx2tf keeps the ONNX output names there) when it
has exactly one, else by tensor name: the tensor order differs between float and int8 files.

Thread safety: a TFLite interpreter holds its tensors in place, so concurrent ``invoke`` calls on one
interpreter corrupt each other (89 of 100 calls from 4 threads raised ``RuntimeError``, issue 13).
``run`` holds a lock from ``set_tensor`` to the last ``get_tensor`` (which copies). Calls from several
threads are therefore serialised; for parallel throughput give each thread its own ``Detector``.
"""

from __future__ import annotations

import importlib
import os
import platform
import threading
from typing import Any

import numpy as np

from ..errors import corrupt
from ..tflite_verify import read_verified_tflite
from . import Backend, TensorInfo, missing

_EDGETPU_LIB = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}


def import_interpreter() -> tuple[Any, Any, str]:
    """``(Interpreter, load_delegate, package)`` from the first TFLite package that imports."""
    try:
        from ai_edge_litert.interpreter import Interpreter, load_delegate

        return Interpreter, load_delegate, "ai-edge-litert"
    except ImportError as e:
        first = e
    try:
        from tflite_runtime.interpreter import Interpreter, load_delegate

        return Interpreter, load_delegate, "tflite-runtime"
    except ImportError:
        pass
    try:  # last resort, only where full TensorFlow is already installed; never a dependency of the runtime
        tf = importlib.import_module("tensorflow")

        return tf.lite.Interpreter, tf.lite.experimental.load_delegate, "tensorflow"
    except ImportError:
        raise missing("ai-edge-litert", "tflite", first) from first


def edgetpu_delegate(load_delegate: Any) -> Any:
    """Load the Edge TPU delegate, or explain which library is missing and how to install it."""
    lib = _EDGETPU_LIB.get(platform.system(), "libedgetpu.so.1")
    try:
        return load_delegate(lib)
    except (ValueError, OSError, RuntimeError) as e:
        raise RuntimeError(
            f"cannot load the Edge TPU delegate library {lib} ({e}). Install the Edge TPU runtime "
            "(Debian/Raspberry Pi OS: add Coral's apt repository, then `sudo apt-get install libedgetpu1-std`; "
            "see https://coral.ai/software/#edgetpu-runtime), plug in the Coral device, and use a model "
            "compiled with edgetpu_compiler (*_edgetpu.tflite)") from e


def _quant(detail: dict[str, Any]) -> dict[str, Any] | None:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if not scale:
        return None
    return {"scale": float(scale), "zero_point": int(zero_point)}


class TfliteBackend(Backend):
    name = "tflite"

    def __init__(self, path: str | os.PathLike[str], threads: int, precision: str = "", edgetpu: bool = False) -> None:
        interpreter_cls, load_delegate, package = import_interpreter()
        model = read_verified_tflite(path)  # a cut file segfaulted Interpreter(model_path=...): check it first
        delegates = [edgetpu_delegate(load_delegate)] if edgetpu else None
        try:  # the interpreter gets exactly the verified bytes
            self.interpreter = interpreter_cls(model_content=model, num_threads=int(threads),
                                               experimental_delegates=delegates)
        except ValueError as e:  # the interpreter's own checks (schema version, tensor sizes, names)
            raise corrupt(path, "TFLite", e) from e
        self.interpreter.allocate_tensors()
        self.name = f"tflite ({package}{', edgetpu' if edgetpu else ''})"
        self.precision = precision
        self.threads = int(threads)
        self._lock = threading.Lock()
        self._inputs = self._named(self.interpreter.get_input_details(), "inputs")
        self._outputs = self._named(self.interpreter.get_output_details(), "outputs")

    def _named(self, details: list[dict[str, Any]], kind: str) -> list[tuple[str, dict[str, Any]]]:
        """Pair each tensor with its signature name when the model has one signature, else its tensor name."""
        signatures = self.interpreter.get_signature_list()
        by_index: dict[int, str] = {}
        if len(signatures) == 1:
            runner = self.interpreter.get_signature_runner(next(iter(signatures)))
            try:
                ports = runner.get_input_details() if kind == "inputs" else runner.get_output_details()
                by_index = {int(d["index"]): name for name, d in ports.items()}
            except AttributeError:  # older tflite-runtime: only the private index map exists
                ports = next(iter(self.interpreter._get_full_signature_list().values()))[kind]
                by_index = {int(index): name for name, index in ports.items()}
        return [(by_index.get(int(d["index"]), d["name"]), d) for d in details]

    @staticmethod
    def _info(name: str, d: dict[str, Any]) -> TensorInfo:
        return TensorInfo(name, [int(v) for v in d["shape"]], np.dtype(d["dtype"]).name, _quant(d))

    def input_details(self) -> list[TensorInfo]:
        return [self._info(n, d) for n, d in self._inputs]

    def output_details(self) -> list[TensorInfo]:
        return [self._info(n, d) for n, d in self._outputs]

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        with self._lock:
            self.interpreter.set_tensor(self._inputs[0][1]["index"], x)
            self.interpreter.invoke()
            return {name: self.interpreter.get_tensor(d["index"]) for name, d in self._outputs}
