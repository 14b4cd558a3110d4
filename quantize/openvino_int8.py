"""FP32 OpenVINO model -> int8 with NNCF post-training quantization.

NNCF is OpenVINO's own quantizer: it places FakeQuantize ops where the CPU plugin fuses them into
int8 kernels, and adds fast bias correction. Methods: ``mixed`` (NNCF's MIXED preset: symmetric
weights, asymmetric activations — the shared scheme), ``performance`` (symmetric activations too),
``minmax`` and ``quantile`` (MIXED with NNCF's MINMAX / MEAN_QUANTILE activation range estimators).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from calib_data import CalibrationSet

METHODS = ("mixed", "performance", "minmax", "quantile")


def quantize_openvino(model: Any, calib: CalibrationSet, method: str = "mixed",
                      exclude: Iterable[str] = ()) -> Any:
    """``model`` (an FP32 ``openvino.Model``) with int8 FakeQuantize; ``exclude`` names ops kept in float."""
    import nncf
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
    names = list(exclude)
    scope = nncf.IgnoredScope(names=names, validate=False) if names else None
    return nncf.quantize(model, dataset, preset=preset, subset_size=count, ignored_scope=scope,
                         advanced_parameters=advanced)
