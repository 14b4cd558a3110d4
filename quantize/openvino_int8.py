"""FP32 OpenVINO model -> int8 with NNCF post-training quantization.

NNCF is OpenVINO's own quantizer: it places FakeQuantize ops where the CPU plugin fuses them into
int8 kernels, and adds fast bias correction. Methods: ``mixed`` (NNCF's MIXED preset: symmetric
weights, asymmetric activations — the shared scheme), ``performance`` (symmetric activations too),
``minmax`` and ``quantile`` (MIXED with NNCF's MINMAX / MEAN_QUANTILE activation range estimators).

Weights of every convolution are 7-bit (NNCF's ``overflow_fix=ENABLE``; its default protects only the
first layer): on x86 CPUs without VNNI the int8 kernels add pairs of u8 x s8 products in a saturating
int16, and the BCCD D0's int8 IR lost 3.3 mAP points on such a CPU (AMD Zen 3) while passing on
AVX-512 VNNI (docs/INT8-CPU-CLASSES.md). Weights within +-64 cannot saturate on any CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from calib_data import CalibrationSet

METHODS = ("mixed", "performance", "minmax", "quantile")


def openvino_names(model: Any, onnx_nodes: Mapping[str, Sequence[str]]) -> list[str]:
    """The OpenVINO ops that ONNX nodes (name -> output tensor names) became, by friendly name.

    OpenVINO names an op after its ONNX node, or after the node's output tensor when that is a graph
    output, and splits a Conv with a bias into ``<name>/WithoutBiases`` (the Convolution) and ``<name>``
    (the bias Add): ignoring only ``<name>`` left the convolution quantized without any warning (measured
    on the default D0: a Conv kept in float by name still ran u8). Unknown names are an error, not a no-op.
    """
    ops = {op.get_friendly_name() for op in model.get_ops()}
    names = []
    for node, outputs in onnx_nodes.items():
        found = [n for base in (node, *outputs) for n in (base, f"{base}/WithoutBiases") if n in ops]
        if not found:
            raise ValueError(f"layer {node!r} (to keep in float) is not in the OpenVINO model")
        names += found
    return names


def quantize_openvino(model: Any, calib: CalibrationSet, method: str = "mixed",
                      exclude: Mapping[str, Sequence[str]] | None = None,
                      input_range: tuple[float, float] | None = None) -> Any:
    """``model`` (an FP32 ``openvino.Model``) with int8 FakeQuantize; ``exclude``: the ONNX nodes (name -> output
    names) to keep in float; ``input_range``: the input quantizer's range (:func:`hold_input_range`)."""
    from runtime.backends.openvino_privacy import import_nncf

    nncf = import_nncf()  # with OpenVINO telemetry off (NNCF sends it through openvino-telemetry too)
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    if method not in METHODS:
        raise ValueError(f"OpenVINO calibration method must be one of {METHODS}, got {method!r}")
    logging.getLogger("nncf").setLevel(logging.WARNING)
    count = len(calib)
    dataset = nncf.Dataset(range(count), calib.nchw)
    preset = nncf.QuantizationPreset.PERFORMANCE if method == "performance" else nncf.QuantizationPreset.MIXED
    estimator = {"minmax": RangeEstimatorParametersSet.MINMAX,
                 "quantile": RangeEstimatorParametersSet.MEAN_QUANTILE}.get(method)
    # 7-bit weights on every convolution: correct on CPUs without VNNI too (module docstring)
    ranges = {"activations_range_estimator_params": estimator} if estimator else {}
    advanced = AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE, **ranges)
    names = openvino_names(model, exclude or {})
    scope = nncf.IgnoredScope(names=names) if names else None
    quantized = nncf.quantize(model, dataset, preset=preset, subset_size=count, ignored_scope=scope,
                              advanced_parameters=advanced)
    if input_range is not None:
        hold_input_range(quantized, input_range)
    return quantized


# Ops that only move values between the model input and its first quantizer.
MOVERS = ("Pad", "Transpose", "Reshape", "Convert")


def aligned_range(low: float, high: float, levels: int) -> tuple[float, float]:
    """The narrowest ``levels``-step range holding [low, high] whose grid has 0 on it exactly (an integer zero
    point, as the CPU plugin's int8 kernels need): the better of the two zero points next to the exact one."""
    steps = levels - 1
    exact = -low * steps / (high - low)
    candidates = []
    for zero in {min(max(int(np.floor(exact)), 1), steps - 1), min(max(int(np.ceil(exact)), 1), steps - 1)}:
        scale = max(-low / zero, high / (steps - zero))
        candidates.append((steps * scale, -zero * scale, (steps - zero) * scale))
    _, lo, hi = min(candidates)
    return lo, hi


def hold_input_range(model: Any, input_range: tuple[float, float]) -> int:
    """Give the FakeQuantize ops on the model input (directly or after ops that only move values) the whole
    ``input_range`` (the normalised range of every possible pixel) instead of NNCF's calibrated one, so frames
    unlike the calibration images are not clipped before the first layer (issue 15). Returns how many changed."""
    import openvino as ov

    changed = 0
    todo = [out for param in model.get_parameters() for out in param.outputs()]
    while todo:
        for target in todo.pop().get_target_inputs():
            node = target.get_node()
            kind = node.get_type_name()
            if kind in MOVERS:
                todo += list(node.outputs())
            elif kind == "FakeQuantize":
                low, high = aligned_range(*input_range, int(node.get_attributes()["levels"]))
                for k, value in ((1, low), (2, high), (3, low), (4, high)):
                    shape = list(node.input(k).get_shape())
                    node.input(k).replace_source_output(ov.op.Constant(np.full(shape, value, np.float32)).output(0))
                changed += 1
    if not changed:
        raise ValueError("NNCF put no quantizer on the model input: there is no input range to set")
    return changed
