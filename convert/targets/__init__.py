"""The export targets, one module each, and their registry.

Adding a target is a module with a :class:`~convert.targets.spec.TargetSpec` called ``TARGET`` plus one line in
:data:`REGISTRY` (docs/ARCHITECTURE.md, "How to add a target"). The registry's order is the order artifacts are
written and reported in: ONNX first, since every other target converts the FP32 ONNX.
"""

from __future__ import annotations

from . import android, onnx, openvino, tflite
from .spec import FLOAT_PRECISIONS, TargetSpec

REGISTRY: tuple[TargetSpec, ...] = (
    onnx.TARGET,
    openvino.TARGET,
    tflite.TARGET,
    android.TARGET,
)

__all__ = ["FLOAT_PRECISIONS", "REGISTRY", "TargetSpec", "plan"]


def plan(targets: tuple[str, ...], precisions: tuple[str, ...], flavours: tuple[str, ...] = ()
         ) -> list[tuple[TargetSpec, str]]:
    """``(target, precision)`` in the order they are written: float files target by target, then post-training
    int8, then the flavoured files asked for, then QAT (whose fine-tuning is the slowest step)."""
    plain = [t for t in REGISTRY if not t.flavour and t.name in targets]
    floats = [p for p in precisions if p in FLOAT_PRECISIONS]
    out = [(t, p) for t in plain for p in floats if p in t.precisions]
    out += [(t, "int8") for t in plain if "int8" in precisions and "int8" in t.precisions]
    out += [(t, p) for t in REGISTRY if t.flavour and t.flavour in flavours and t.name in targets
            for p in precisions if p in t.precisions]
    out += [(t, "int8-qat") for t in plain if "int8-qat" in precisions and "int8-qat" in t.precisions]
    return out
