"""The int8 kernel family a CPU gets, read from ``/proc/cpuinfo``: the same int8 artifact computes differently
on each (docs/INT8-CPU-CLASSES.md). Measured: the BCCD D0 int8 ONNX scores +0.20 mAP points against FP32 on
an AVX-512-VNNI AMD EPYC, −16.23 on an AVX2-only one (16-bit saturation without VNNI), and matches 6 % of
FP32's detections on an AMX Xeon (onnxruntime 1.23's fused int8 kernels there); TFLite int8 was within
0.1 point on all three. So the gate records the class it ran on, and the runtime warns when an int8
artifact runs on another class.

On aarch64 Linux the class comes from the kernel's hardware capabilities (``AT_HWCAP``/``AT_HWCAP2`` in
``/proc/self/auxv``), the bits the int8 kernels' own CPU detection reads, and ``/proc/cpuinfo`` only where that
cannot be read. Under qemu-user, which `make device-check` uses, the guest's
``/proc/cpuinfo`` is the x86 host's, while its auxv holds the emulated CPU's capabilities: the Cortex-A76 of a
Raspberry Pi 5 read ``arm`` from cpuinfo and ``arm-dotprod`` from auxv (session 31).

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
# The same, as Linux's arm64 hwcap bits (arch/arm64/include/uapi/asm/hwcap.h): (auxv key, bit, class).
_AT_HWCAP, _AT_HWCAP2 = 16, 26
_ARM_HWCAPS = ((_AT_HWCAP2, 1 << 13, "arm-i8mm"), (_AT_HWCAP, 1 << 20, "arm-dotprod"))


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


def _auxv(path: str | os.PathLike[str]) -> dict[int, int] | None:
    """The 64-bit auxiliary vector (key -> value) of this process, None where it cannot be read."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    words = [int.from_bytes(data[i:i + 8], "little") for i in range(0, len(data) - len(data) % 16, 8)]
    return dict(zip(words[0::2], words[1::2]))


def cpu_class(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo", machine: str | None = None,
              auxv: str | os.PathLike[str] | None = None) -> CpuClass:
    """This CPU's int8 class ("x86-amx", "x86-avx512-vnni", "x86-avx-vnni", "x86-avx512", "x86-avx2", "x86",
    "arm-i8mm", "arm-dotprod", "arm", or "unknown" where nothing can be read). ``auxv``: the auxiliary vector to
    read an aarch64 class from (default: this process's, where ``machine`` is not given, i.e. for this machine)."""
    if auxv is None and machine is None:
        auxv = "/proc/self/auxv"
    machine = (machine or platform.machine()).lower()
    try:
        model, flags = _fields(Path(cpuinfo).read_text(errors="replace"))
    except OSError:
        model, flags = "", set()
    caps = _auxv(auxv) if auxv is not None and machine in ("aarch64", "arm64") else None
    if caps is not None and _AT_HWCAP in caps:
        name = next((label for key, bit, label in _ARM_HWCAPS if caps.get(key, 0) & bit), "arm")
        return CpuClass(machine, name, model)
    if not flags:
        return CpuClass(machine, "unknown", model)
    arm = machine in ("aarch64", "arm64") or machine.startswith("arm")
    table, fallback = (_ARM_CLASSES, "arm") if arm else (_X86_CLASSES, "x86")
    return CpuClass(machine, next((label for flag, label in table if flag in flags), fallback), model)


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
