"""The int8 kernel family a CPU gets, read from ``/proc/cpuinfo``: the same int8 artifact computes differently
on each (docs/INT8-CPU-CLASSES.md). Measured: the BCCD D0 int8 ONNX scores +0.20 mAP points against FP32 on
an AVX-512-VNNI AMD EPYC, −16.23 on an AVX2-only one (16-bit saturation without VNNI), and matches 6 % of
FP32's detections on an AMX Xeon (onnxruntime 1.23's fused int8 kernels there); TFLite int8 was within
0.1 point on all three. So the gate records the class it ran on, and the runtime warns when an int8
artifact runs on another class.

Standard library only: the runtime must stay importable on a bare device.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Most capable first: the first x86 flag present names the class.
_X86_CLASSES = (("amx_int8", "x86-amx"), ("avx512_vnni", "x86-avx512-vnni"), ("avx_vnni", "x86-avx-vnni"),
                ("avx512bw", "x86-avx512"), ("avx2", "x86-avx2"))
_ARM_CLASSES = (("i8mm", "arm-i8mm"), ("asimddp", "arm-dotprod"))


@dataclass(frozen=True)
class CpuClass:
    machine: str
    int8: str
    model: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fields(text: str) -> tuple[str, set[str]]:
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, flags


def cpu_class(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo", machine: str | None = None) -> CpuClass:
    """This CPU's int8 class ("x86-amx", "x86-avx512-vnni", "x86-avx-vnni", "x86-avx512", "x86-avx2", "x86",
    "arm-i8mm", "arm-dotprod", "arm", or "unknown" where ``cpuinfo`` cannot be read)."""
    machine = (machine or platform.machine()).lower()
    try:
        model, flags = _fields(Path(cpuinfo).read_text(errors="replace"))
    except OSError:
        return CpuClass(machine, "unknown", "")
    arm = machine in ("aarch64", "arm64") or machine.startswith("arm")
    table, fallback = (_ARM_CLASSES, "arm") if arm else (_X86_CLASSES, "x86")
    name = next((label for flag, label in table if flag in flags), fallback)
    return CpuClass(machine, name if flags else "unknown", model)


def cpu_class_warning(manifest: dict[str, Any], artifact_path: str | os.PathLike[str],
                      here: CpuClass | None = None) -> str | None:
    """The warning for an int8 artifact whose gate ran on another int8 CPU class than this one; None otherwise
    (float artifacts, artifacts gated before the class was recorded, or the same class)."""
    if not str(manifest.get("artifact", {}).get("precision", "")).startswith("int8"):
        return None
    gated = (manifest.get("gate") or {}).get("cpu")
    if not isinstance(gated, dict) or not gated.get("int8"):
        return None
    here = here or cpu_class()
    if gated["int8"] == here.int8 or "unknown" in (gated["int8"], here.int8):
        return None
    return (f"{artifact_path} is int8 and its parity gate ran on a {gated['int8']} CPU ({gated.get('model') or '?'}); "
            f"this CPU is {here.int8}, whose int8 kernels compute differently (docs/INT8-CPU-CLASSES.md: the same "
            "ONNX lost 16 mAP points on AVX2 and most detections on AMX): run its parity gate on a machine of this "
            "class (`make export` there) before relying on it")
