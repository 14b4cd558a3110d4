"""The int8 CPU class: read from real cpuinfo texts of the three x86 classes the project has met (and ARM), recorded
by the gate, and warned about by the runtime when an int8 artifact runs on another class."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from runtime.cpu_class import CpuClass, cpu_class, cpu_class_warning

# Excerpts of /proc/cpuinfo of the machines in docs/INT8-CPU-CLASSES.md (flags shortened to the deciding ones).
CPUINFO = {
    "x86-amx": ("model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni "
                "avx_vnni amx_bf16 amx_tile amx_int8\n", "x86_64"),
    "x86-avx512-vnni": ("model name\t: AMD EPYC 9R14\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n",
                        "x86_64"),
    "x86-avx2": ("model name\t: AMD EPYC 7R13 Processor\nflags\t\t: fpu sse2 avx avx2 fma\n", "x86_64"),
    "arm-dotprod": ("processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid asimdrdm asimddp\n"
                    "CPU implementer\t: 0x41\n", "aarch64"),
    "arm": ("processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\nModel\t\t: Raspberry Pi 4 Model B\n",
            "aarch64"),
}


@pytest.mark.parametrize("expected", sorted(CPUINFO))
def test_class_is_read_from_cpuinfo(tmp_path: Path, expected: str) -> None:
    text, machine = CPUINFO[expected]
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    assert cpu_class(path, machine).int8 == expected


def test_unreadable_cpuinfo_is_unknown_and_never_warns(tmp_path: Path) -> None:
    assert cpu_class(tmp_path / "missing", "x86_64").int8 == "unknown"
    manifest = {"artifact": {"precision": "int8"}, "gate": {"status": "pass", "cpu": {"int8": "x86-amx"}}}
    assert cpu_class_warning(manifest, "m.onnx", CpuClass("x86_64", "unknown", "")) is None


def test_int8_artifact_on_another_class_warns_float_and_same_class_do_not() -> None:
    gated = {"artifact": {"precision": "int8"},
             "gate": {"status": "pass", "cpu": {"machine": "x86_64", "int8": "x86-avx512-vnni", "model": "EPYC"}}}
    avx2 = CpuClass("x86_64", "x86-avx2", "Celeron")
    text = cpu_class_warning(gated, "m.onnx", avx2)
    assert text and "x86-avx512-vnni" in text and "x86-avx2" in text
    assert cpu_class_warning(gated, "m.onnx", CpuClass("x86_64", "x86-avx512-vnni", "other")) is None
    assert cpu_class_warning({**gated, "artifact": {"precision": "fp32"}}, "m.onnx", avx2) is None
    assert cpu_class_warning({**gated, "gate": {"status": "pass"}}, "m.onnx", avx2) is None  # gated before recording


def test_detector_warns_when_the_gate_ran_on_another_class(tflite_models: dict, tmp_path: Path) -> None:
    """A real int8 TFLite whose sidecar says it was gated on a CPU class this machine is not."""
    import json
    import shutil

    from runtime import CpuClassWarning, Detector
    from runtime.manifest import sidecar_path

    src = Path(tflite_models["int8"])
    dst = tmp_path / src.name
    shutil.copy(src, dst)
    manifest = json.loads(sidecar_path(src).read_text())
    here = cpu_class().int8
    other = "x86-avx2" if here != "x86-avx2" else "x86-amx"
    manifest["gate"] = {"status": "pass", "cpu": {"machine": "x86_64", "int8": other, "model": "test"}}
    sidecar_path(dst).write_text(json.dumps(manifest))
    with pytest.warns(CpuClassWarning, match=other):
        Detector(dst)
    manifest["gate"]["cpu"]["int8"] = here
    sidecar_path(dst).write_text(json.dumps(manifest))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CpuClassWarning)
        Detector(dst)


def _auxv_file(path: Path, entries: dict[int, int]) -> Path:
    """An aarch64 auxiliary vector as the kernel lays it out: 8-byte little-endian key/value pairs, AT_NULL last."""
    words = [w for k, v in entries.items() for w in (k, v)] + [0, 0]
    path.write_bytes(b"".join(w.to_bytes(8, "little") for w in words))
    return path


@pytest.mark.parametrize(("hwcap", "hwcap2", "expected"), [(1 << 20, 0, "arm-dotprod"),
                                                           (1 << 20, 1 << 13, "arm-i8mm"),
                                                           (0b11, 0, "arm")])
def test_aarch64_class_is_read_from_the_kernels_hwcaps(tmp_path: Path, hwcap: int, hwcap2: int,
                                                       expected: str) -> None:
    """Under qemu-user the guest's /proc/cpuinfo is the x86 host's; the auxv holds the emulated CPU's capabilities,
    which the int8 kernels dispatch on, so they decide the class (AT_HWCAP = 16, AT_HWCAP2 = 26)."""
    host_text, _ = CPUINFO["x86-avx512-vnni"]
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(host_text)
    auxv = _auxv_file(tmp_path / "auxv", {6: 4096, 16: hwcap, 26: hwcap2})
    assert cpu_class(cpuinfo, "aarch64", auxv=auxv).int8 == expected
    assert cpu_class(cpuinfo, "x86_64", auxv=auxv).int8 == "x86-avx512-vnni"  # an x86 machine has no arm64 hwcaps
    arm_text, _ = CPUINFO["arm-dotprod"]
    cpuinfo.write_text(arm_text)
    assert cpu_class(cpuinfo, "aarch64", auxv=tmp_path / "missing").int8 == "arm-dotprod"  # no auxv: cpuinfo
