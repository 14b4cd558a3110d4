"""FP32 OpenVINO model -> int8 with NNCF post-training quantization.

NNCF is OpenVINO's own quantizer: it places FakeQuantize ops where the CPU plugin fuses them into
int8 kernels, and adds fast bias correction. Methods: ``mixed`` (NNCF's MIXED preset: symmetric
weights, asymmetric activations — the shared scheme), ``performance`` (symmetric activations too),
``minmax`` and ``quantile`` (MIXED with NNCF's MINMAX / MEAN_QUANTILE activation range estimators).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

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
                      exclude: Mapping[str, Sequence[str]] | None = None) -> Any:
    """``model`` (an FP32 ``openvino.Model``) with int8 FakeQuantize; ``exclude``: the ONNX nodes (name -> output
    names) to keep in float."""
    from runtime.backends.openvino_privacy import import_nncf

    nncf = import_nncf()  # with OpenVINO telemetry off (NNCF sends it through openvino-telemetry too)
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    if method not in METHODS:
        raise ValueError(f"OpenVINO calibration method must be one of {METHODS}, got {method!r}")
    logging.getLogger("nncf").setLevel(logging.WARNING)
    count = len(calib)
    dataset = nncf.Dataset(range(count), calib.nchw)
    preset = nncf.QuantizationPreset.PERFORMANCE if method == "performance" else nncf.QuantizationPreset.MIXED
    advanced = None
    if method in ("minmax", "quantile"):
        estimator = (RangeEstimatorParametersSet.MINMAX if method == "minmax"
                     else RangeEstimatorParametersSet.MEAN_QUANTILE)
        advanced = AdvancedQuantizationParameters(activations_range_estimator_params=estimator)
    names = openvino_names(model, exclude or {})
    scope = nncf.IgnoredScope(names=names) if names else None
    return nncf.quantize(model, dataset, preset=preset, subset_size=count, ignored_scope=scope,
                         advanced_parameters=advanced)
