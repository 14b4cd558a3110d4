"""Which operators the inference time goes to, from each engine's own profiler.

onnxruntime: its session profiler (per-kernel durations in a Chrome-trace JSON). OpenVINO: the
compiled model's performance counters (per node, with the kernel it ran, e.g. ``jit_avx512_I8``).
The TFLite Python interpreter has no per-op profiler; TFLite's ``benchmark_model --enable_op_profiling``
is the tool on a device.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np


def _shares(times: Counter, top: int) -> list[dict[str, Any]]:
    total = sum(times.values()) or 1.0
    return [{"op": op, "ms": ms, "share": ms / total} for op, ms in times.most_common(top)]


def onnxruntime_ops(path: Path, x: np.ndarray, threads: int, runs: int = 10, top: int = 8) -> list[dict[str, Any]]:
    """Mean milliseconds per run and share by operator type (QLinear*/DequantizeLinear etc. kept apart)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        for _ in range(runs):
            sess.run(None, {name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    times: Counter = Counter()
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            times[e["args"].get("op_name", "?")] += e["dur"] / 1e3 / runs
    return _shares(times, top)


def openvino_ops(path: Path, x: np.ndarray, threads: int, precision: str = "f32", runs: int = 10,
                 top: int = 8) -> list[dict[str, Any]]:
    """Mean milliseconds per run and share by node type and kernel (``Convolution/jit_avx512_I8``)."""
    from runtime.backends.openvino_privacy import import_openvino

    ov = import_openvino()  # with OpenVINO telemetry off

    core = ov.Core()
    compiled = core.compile_model(str(path), "CPU", {"PERF_COUNT": True, "INFERENCE_NUM_THREADS": threads,
                                                      "INFERENCE_PRECISION_HINT": precision})
    request = compiled.create_infer_request()
    times: Counter = Counter()
    for _ in range(runs):
        request.infer({0: x})
        for info in request.profiling_info:
            if info.status == info.Status.EXECUTED:
                times[f"{info.node_type}/{info.exec_type}"] += info.real_time.total_seconds() * 1e3 / runs
    return _shares(times, top)
