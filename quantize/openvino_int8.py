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
from quantize.folded_stem import FoldedStem

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
                      input_range: tuple[float, float] | None = None, stem: FoldedStem | None = None) -> Any:
    """``model`` (an FP32 ``openvino.Model``) with int8 FakeQuantize; ``exclude``: the ONNX nodes (name -> output
    names) to keep in float; ``input_range``: the input quantizer's range (:func:`hold_input_range`); ``stem``: the
    model takes pixels with the normalisation folded into this first convolution, whose bias is refolded for its
    quantized weights (:func:`refold_stem_bias`)."""
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
    # with its first layers kept in float the model reads its input in float: there is no input range to hold
    if input_range is not None and not (names and not input_quantizers(quantized)):
        hold_input_range(quantized, input_range)
    if stem is not None:
        refold_stem_bias(quantized, stem)
    return quantized


def _constant_value(output: Any) -> np.ndarray:
    """The float64 value of a subgraph made of constants only: NNCF's weights (a FakeQuantize of the float weights,
    or int8 codes converted and scaled)."""
    node = output.get_node()
    kind = node.get_type_name()
    if kind == "Constant":
        return np.asarray(node.get_data(), np.float64)
    args = [_constant_value(v) for v in node.input_values()]
    if kind == "Convert":
        return args[0]
    if kind in ("Multiply", "Subtract"):
        return args[0] * args[1] if kind == "Multiply" else args[0] - args[1]
    if kind == "FakeQuantize":
        x, in_low, in_high, out_low, out_high = args
        steps = int(node.get_attributes()["levels"]) - 1
        codes = np.round((np.clip(x, in_low, in_high) - in_low) / (in_high - in_low) * steps)
        return codes / steps * (out_high - out_low) + out_low
    raise ValueError(f"cannot evaluate the weights' {kind} op {node.get_friendly_name()!r} as a constant")


def refold_stem_bias(model: Any, stem: FoldedStem) -> None:
    """Give the pixel-input stem (OpenVINO's ``<node>/WithoutBiases`` convolution and its ``<node>`` bias Add) the
    bias refolded for the weights NNCF quantized (:mod:`quantize.folded_stem`), in place. NNCF's own fast bias
    correction did not remove that layer's shift on the BCCD Lite0 (its file lost 11 mAP points without this)."""
    import openvino as ov

    ops = {op.get_friendly_name(): op for op in model.get_ops()}
    conv = ops.get(f"{stem.node}/WithoutBiases") or ops.get(f"{stem.output}/WithoutBiases")
    adds = [t.get_node() for t in conv.output(0).get_target_inputs()] if conv is not None else []
    adds = [node for node in adds if node.get_type_name() == "Add"]
    if len(adds) != 1:
        raise ValueError(f"the OpenVINO model has no convolution {stem.node!r} with a bias to refold")
    add = adds[0]
    port = next(k for k, v in enumerate(add.input_values()) if v.get_node() is not conv)
    shape = [1, len(stem.bias)] + [1] * (len(conv.output(0).get_shape()) - 2)
    bias = stem.bias_for(_constant_value(conv.input_value(1))).astype(np.float32).reshape(shape)
    add.input(port).replace_source_output(ov.op.Constant(bias).output(0))


# Ops that only move values between the model input and its first quantizer.
MOVERS = ("Pad", "Transpose", "Reshape", "Convert")


def aligned_range(low: float, high: float, levels: int) -> tuple[float, float]:
    """The narrowest ``levels``-step range holding [low, high] whose grid has 0 on it exactly (an integer zero
    point, as the CPU plugin's int8 kernels need): the better of the two zero points next to the exact one."""
    steps = levels - 1
    low, high = min(low, 0.0), max(high, 0.0)
    exact = -low * steps / (high - low)

    def needed(part: float, codes: int) -> float:  # the step that puts ``part`` ``codes`` codes from zero
        return part / codes if codes else (0.0 if part == 0 else np.inf)

    candidates = []
    for zero in {min(max(int(np.floor(exact)), 0), steps), min(max(int(np.ceil(exact)), 0), steps)}:
        scale = max(needed(-low, zero), needed(high, steps - zero))
        candidates.append((steps * scale, -zero * scale, (steps - zero) * scale))
    _, lo, hi = min(candidates)
    return lo, hi


def _fills_border(node: Any) -> bool:
    """The pixel-input form's Add of a constant that fills the padded border (convert/pixel_input.py): every value
    after it is still a pixel value, so the quantizer after it gets the input's range too."""
    constant = any(v.get_node().get_type_name() == "Constant" for v in node.input_values())
    return node.get_type_name() == "Add" and constant


def _scalar_shift(node: Any) -> float | None:
    """What an Add or Subtract of one constant adds to its first input's values (the Lite pixel form centres the
    pixels on 128, convert/pixel_input.py); None for any other op."""
    kind = node.get_type_name()
    operand = node.input_value(1).get_node() if kind in ("Add", "Subtract") else None
    if operand is None or operand.get_type_name() != "Constant":
        return None
    value = np.asarray(operand.get_data(), np.float64)
    return float(value.reshape(())) * (1.0 if kind == "Add" else -1.0) if value.size == 1 else None


def input_quantizers(model: Any) -> list[tuple[Any, float]]:
    """The FakeQuantize ops on the model input, directly or after ops that only move its values (and after each
    other), nearest first, each with the constant its values are shifted by from the input's."""
    found = []
    todo = [(out, 0.0) for param in model.get_parameters() for out in param.outputs()]
    while todo:
        output, shift = todo.pop(0)
        for target in output.get_target_inputs():
            node = target.get_node()
            step = _scalar_shift(node) if target.get_index() == 0 else None
            if step is not None:
                todo += [(out, shift + step) for out in node.outputs()]
            elif node.get_type_name() in MOVERS or _fills_border(node):
                todo += [(out, shift) for out in node.outputs()]
            elif node.get_type_name() == "FakeQuantize":
                found.append((node, shift))
                todo += [(out, shift) for out in node.outputs()]  # a quantizer after the next mover holds the same
    return found


def hold_input_range(model: Any, input_range: tuple[float, float]) -> int:
    """Give the FakeQuantize ops on the model input (directly or after ops that only move values) the whole
    ``input_range`` (the range of every possible pixel, in the input's units, shifted as the ops on the way shift
    it) instead of NNCF's calibrated one, so frames unlike the calibration images are not clipped before the first
    layer (issue 15). Returns how many changed."""
    import openvino as ov

    changed = 0
    for node, shift in input_quantizers(model):
        low, high = aligned_range(input_range[0] + shift, input_range[1] + shift, int(node.get_attributes()["levels"]))
        for k, value in ((1, low), (2, high), (3, low), (4, high)):
            shape = list(node.input(k).get_shape())
            node.input(k).replace_source_output(ov.op.Constant(np.full(shape, value, np.float32)).output(0))
        changed += 1
    if not changed:
        raise ValueError("NNCF put no quantizer on the model input: there is no input range to set")
    return changed
