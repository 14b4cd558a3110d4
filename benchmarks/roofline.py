"""The compute roofline of this CPU: how many multiply-accumulates per second it can really do, fp32 and int8.

The ceiling is *measured*, not read off a spec sheet: a large GEMM through onnxruntime's MLAS kernels
(fp32 ``MatMul`` and u8·s8 ``MatMulInteger``, the kernels our int8 ONNX artifacts use, VNNI where the CPU
has it) at each thread count. A virtual machine's clock and a laptop's turbo are unknowable from inside;
a GEMM is the best a convolution network can hope to reach, so "fraction of GEMM peak" is the honest
yardstick. The nominal figure from the ISA (FMA width x cores x clock) is reported beside it for context.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np


def _gemm_model(m: int, k: int, n: int, integer: bool) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if integer:
        b = numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), "B")
        node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    else:
        b = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "B")
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("A", a_type, [m, k])],
                              [helper.make_tensor_value_info("Y", y_type, [m, n])], initializer=[b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def measured_peak_gmacs(threads: int, integer: bool, size: int = 1024, runs: int = 10) -> float:
    """Best-of-``runs`` GMAC/s of a ``size``³ GEMM in onnxruntime at ``threads`` threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(_gemm_model(size, size, size, integer), sess_options=opts,
                                providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (size, size), dtype=np.uint8) if integer else rng.standard_normal(
        (size, size), dtype=np.float32)
    for _ in range(2):
        sess.run(None, {"A": a})
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {"A": a})
        best = min(best, time.perf_counter() - t0)
    return size ** 3 / best / 1e9


def cpu_description() -> dict[str, Any]:
    """Model name, vector ISA and the nominal MAC rates per core-cycle that ISA implies."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = re.search(r"model name\s*:\s*(.+)", text)
    mhz = re.search(r"cpu MHz\s*:\s*([\d.]+)", text)
    flag_line = re.search(r"flags\s*:\s*(.+)", text)
    flags = set(flag_line.group(1).split()) if flag_line else set()
    if "avx512f" in flags:
        isa = "avx512"
    elif "avx2" in flags and "fma" in flags:
        isa = "avx2+fma"
    else:
        isa = "other"
    vnni = bool({"avx512_vnni", "avx_vnni"} & flags)
    # Per core and cycle, assuming two 256-bit FMA pipes (true of Zen 2-4 and most Intel client cores;
    # server Intel with two 512-bit pipes doubles it): 16 fp32 MACs; int8 with VNNI 64 MACs, without 32.
    fp32_per_cycle = 16 if isa != "other" else 4
    int8_per_cycle = 64 if vnni else (32 if isa != "other" else 8)
    return {"model": model.group(1).strip() if model else "unknown", "isa": isa, "vnni": vnni,
            "mhz": float(mhz.group(1)) if mhz else None, "fp32_macs_per_cycle": fp32_per_cycle,
            "int8_macs_per_cycle": int8_per_cycle}


def roofline(thread_counts: list[int]) -> dict[str, Any]:
    """Measured GEMM ceilings per thread count (and the nominal ones where the clock is known)."""
    cpu = cpu_description()
    peaks = {}
    for t in thread_counts:
        row: dict[str, Any] = {"fp32_gmacs": measured_peak_gmacs(t, integer=False),
                               "int8_gmacs": measured_peak_gmacs(t, integer=True)}
        if cpu["mhz"]:
            ghz = cpu["mhz"] / 1e3
            row["fp32_nominal_gmacs"] = ghz * t * cpu["fp32_macs_per_cycle"]
            row["int8_nominal_gmacs"] = ghz * t * cpu["int8_macs_per_cycle"]
        peaks[str(t)] = row
    return {"cpu": cpu, "method": "best of 10 runs of a 1024^3 GEMM in onnxruntime (MLAS): fp32 MatMul and "
                                  "u8*s8 MatMulInteger", "peaks": peaks}


def attach(rows: list[dict[str, Any]], roof: dict[str, Any], gmacs: float) -> None:
    """Per row: achieved GMAC/s of the inference stage and its share of the matching ceiling."""
    for row in rows:
        peak = roof["peaks"].get(str(row["threads"]))
        if not peak or not row.get("infer_ms"):
            continue
        achieved = gmacs / (row["infer_ms"] / 1e3)
        ceiling = peak["int8_gmacs"] if row["precision"].startswith("int8") else peak["fp32_gmacs"]
        row["achieved_gmacs"] = achieved
        row["peak_fraction"] = achieved / ceiling
