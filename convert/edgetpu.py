"""Edge TPU readiness: check a full-int8 TFLite without the compiler, and run/parse the compiler where it exists.

``check``: what ``edgetpu_compiler`` requires and what can be read from the flatbuffer here — uint8 (or
int8) input/output, static shapes, every tensor between input and output integer, every op on the
Edge TPU's supported list (coral.ai/docs/edgetpu/models-intro, "Supported operations"). The compiler
maps ops in graph order and hands everything from the first unsupported op on to the CPU, so the first
offender is reported as where the TPU segment would end. The compiler's own per-op limits (e.g. a
resize it decides not to map) can only be known by running it.

``compile``: runs ``edgetpu_compiler`` (Linux x86-64 only; not installable on this machine), parses its
operator table and the "will run on Edge TPU / CPU" counts, and fails when the TPU share is below a
threshold. ``make edgetpu`` drives both.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConversionError

# TFLite builtin op names the Edge TPU compiler can map (Coral documentation, compiler 16).
SUPPORTED_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEQUANTIZE", "EXPAND_DIMS",
    "FULLY_CONNECTED", "HARD_SWISH", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "MAXIMUM", "MAX_POOL_2D", "MEAN",
    "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6",
    "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX",
    "SPACE_TO_DEPTH", "SPLIT", "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "TANH",
    "TRANSPOSE", "TRANSPOSE_CONV",
})


class EdgeTpuError(ConversionError):
    """The compiler is missing or failed, or the model falls below the required TPU share."""


@dataclass
class CheckReport:
    """What the flatbuffer says about Edge TPU readiness; ``ready`` if nothing would fall back to the CPU."""

    path: str
    io: dict[str, str]
    op_counts: dict[str, int]
    unsupported: dict[str, int] = field(default_factory=dict)
    float_tensors: list[str] = field(default_factory=list)
    dynamic: list[str] = field(default_factory=list)
    first_cpu_op: str | None = None
    ops_before_first_cpu_op: int = 0
    total_ops: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ready": self.ready}


def check_tflite(path: str | Path) -> CheckReport:
    """Inspect a TFLite file's ops and tensors against the Edge TPU's requirements."""
    from runtime.backends.tflite_backend import import_interpreter

    interpreter_cls, _, _ = import_interpreter()
    interp = interpreter_cls(model_path=str(path))
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # the only interpreter API that lists ops; stable across TF/LiteRT releases
    counts: dict[str, int] = {}
    unsupported: dict[str, int] = {}
    first_cpu, before = None, len(ops)
    floats: set[str] = set()
    for i, op in enumerate(ops):
        name = op["op_name"]
        counts[name] = counts.get(name, 0) + 1
        if name not in SUPPORTED_OPS:
            unsupported[name] = unsupported.get(name, 0) + 1
            if first_cpu is None:
                first_cpu, before = f"{name} (op {i})", i
        for idx in list(op["inputs"]) + list(op["outputs"]):
            t = tensors.get(int(idx))
            if t is not None and np.issubdtype(np.dtype(t["dtype"]), np.floating):
                floats.add(t["name"])
    io = {f"input {d['name']}": np.dtype(d["dtype"]).name for d in interp.get_input_details()}
    io.update({f"output {d['name']}": np.dtype(d["dtype"]).name
               for d in interp.get_output_details()})
    dynamic = [t["name"] for t in tensors.values() if -1 in list(t.get("shape_signature", []))]
    report = CheckReport(str(path), io, counts, unsupported, sorted(floats), dynamic, first_cpu, before, len(ops))
    if any(v not in ("uint8", "int8") for v in io.values()):
        report.problems.append(f"input/output must be uint8 (or int8), got {io}")
    if floats:
        report.problems.append(f"{len(floats)} float tensors between input and output (e.g. {sorted(floats)[:3]})")
    if dynamic:
        report.problems.append(f"dynamic shapes: {dynamic[:3]}")
    if unsupported:
        report.problems.append(f"ops the Edge TPU cannot run: {unsupported}; the TPU segment would end at {first_cpu}")
    return report


@dataclass
class CompileReport:
    """Parsed ``edgetpu_compiler`` output."""

    model: str
    output: str | None
    tpu_ops: int
    cpu_ops: int
    operators: list[dict[str, Any]]
    log: str

    @property
    def tpu_fraction(self) -> float:
        total = self.tpu_ops + self.cpu_ops
        return self.tpu_ops / total if total else 0.0


_COUNT = re.compile(r"Number of operations that will run on (Edge TPU|CPU):\s*(\d+)")
_ROW = re.compile(r"^([A-Z][A-Z0-9_]+)\s+(\d+)\s+(\S.*)$")


def parse_compiler_log(text: str, model: str = "") -> CompileReport:
    """Operator table and TPU/CPU op counts from an ``edgetpu_compiler -s`` log."""
    counts = {k: int(v) for k, v in _COUNT.findall(text)}
    if "Edge TPU" not in counts or "CPU" not in counts:
        raise EdgeTpuError("edgetpu_compiler log has no 'Number of operations that will run on ...' lines; "
                           f"was it run with -s? Log tail:\n{text[-1500:]}")
    rows = [{"operator": m.group(1), "count": int(m.group(2)), "status": m.group(3).strip()}
            for line in text.splitlines() if (m := _ROW.match(line.strip()))]
    out = re.search(r"Output (?:model|file)?:?\s*(\S+\.tflite)", text)
    return CompileReport(model, out.group(1) if out else None, counts["Edge TPU"], counts["CPU"], rows, text)


def write_compiled_manifest(source: Path, compiled: Path) -> Path:
    """The source TFLite's manifest, re-pointed at the compiled file (its name and hash), so the runtime's
    ``Detector(compiled, edgetpu=True)`` finds and checks it like any artifact."""
    import json

    from runtime.fileio import file_sha256
    from runtime.manifest import sidecar_path

    from .manifest_writer import write_manifest

    manifest = json.loads(sidecar_path(source).read_text())
    manifest["artifact"].update(file=compiled.name, edgetpu_compiled_from=source.name,
                                edgetpu_compiled_from_sha256=manifest["artifact"]["sha256"])
    return write_manifest(compiled, manifest, file_sha256(compiled))


def run_compiler(model: str | Path, out_dir: str | Path, min_tpu_fraction: float) -> CompileReport:
    """Compile with ``edgetpu_compiler -s`` into ``out_dir`` and enforce the TPU share."""
    exe = shutil.which("edgetpu_compiler")
    if exe is None:
        raise EdgeTpuError("edgetpu_compiler is not installed (Debian/Ubuntu x86-64 only: "
                           "https://coral.ai/docs/edgetpu/compiler/ — `apt-get install edgetpu-compiler` from "
                           "Coral's apt repository); `python -m convert.edgetpu check` works without it")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([exe, "-s", "-o", str(out_dir), str(model)], capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise EdgeTpuError(f"edgetpu_compiler failed (exit {proc.returncode}):\n{text[-2000:]}")
    report = parse_compiler_log(text, str(model))
    compiled = Path(out_dir) / f"{Path(model).stem}_edgetpu.tflite"
    if compiled.is_file():
        write_compiled_manifest(Path(model), compiled)
        report.output = str(compiled)
    if report.tpu_fraction < min_tpu_fraction:
        cpu = [r for r in report.operators if "Mapped to Edge TPU" not in r["status"]]
        raise EdgeTpuError(f"only {report.tpu_ops}/{report.tpu_ops + report.cpu_ops} ops "
                           f"({report.tpu_fraction:.1%}) map to the Edge TPU (< {min_tpu_fraction:.0%}); "
                           f"on the CPU: {cpu}")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m convert.edgetpu", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="check a TFLite without the compiler")
    c.add_argument("model")
    k = sub.add_parser("compile", help="run edgetpu_compiler and parse its log")
    k.add_argument("model")
    k.add_argument("--out", default=None, help="output folder (default: beside the model)")
    k.add_argument("--min-tpu-fraction", type=float, default=0.95)
    args = p.parse_args(argv)
    try:
        if args.cmd == "check":
            report = check_tflite(args.model)
            print(f"{report.path}: {report.total_ops} ops {report.op_counts}; I/O {report.io}")
            for problem in report.problems:
                print(f"NOT READY: {problem}", file=sys.stderr)
            if report.ready:
                print("Edge TPU ready: every op is on the supported list, integer throughout, static shapes")
            return 0 if report.ready else 1
        report_c = run_compiler(args.model, args.out or Path(args.model).parent, args.min_tpu_fraction)
        print(f"{report_c.tpu_ops} ops on the Edge TPU, {report_c.cpu_ops} on the CPU "
              f"({report_c.tpu_fraction:.1%}); compiled model: {report_c.output}")
        return 0
    except EdgeTpuError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
