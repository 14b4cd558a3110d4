"""ONNX -> QDQ int8 ONNX with onnxruntime's static quantizer.

Why onnxruntime's quantizer: it is the reference QDQ producer for the runtime that executes these
files, exposes the calibration method and per-node exclusion directly, and its output runs with int8
kernels in onnxruntime and in OpenVINO. NNCF's ONNX backend would be the other choice, but nncf 3.4
fails to import it with this onnx/protobuf set (``TypeError`` in ``ONNXQuantizerLayerParameters``).
Methods: ``minmax`` (global), ``ema-minmax`` (moving average of per-image ranges: outliers of single
images do not set the range), ``percentile`` (99.999th) and ``entropy``; the histogram methods bin
every activation in numpy and are capped at ``HISTOGRAM_IMAGES``.
Scheme (the one every target shares): weights int8 per-channel symmetric, activations uint8 per-tensor
asymmetric (U8S8, the fast path on x86 VNNI). Graph inputs/outputs stay float32.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import onnx

from calib_data import CalibrationSet

METHODS = ("minmax", "ema-minmax", "percentile", "entropy")
HISTOGRAM_IMAGES = 64  # percentile/entropy: onnxruntime bins every activation in numpy (~6 s per image for D0)


class CalibrationReader:
    """onnxruntime's CalibrationDataReader over a calibration set (NCHW batches of one), in ranges.

    onnxruntime keeps every intermediate tensor of every image it is given at once (the histogram
    calibrators: ~100 MB per D0 image at 256 px; 200 images were killed for memory at 21 GB), so it is
    fed ``CHUNK`` images at a time through its strided-calibration hook; histograms merge across chunks.
    """

    def __init__(self, calib: CalibrationSet, input_name: str, count: int) -> None:
        self.calib, self.input_name, self.count = calib, input_name, count
        self._items: Iterator[int] = iter(range(count))

    def __len__(self) -> int:
        return self.count

    def set_range(self, start_index: int, end_index: int) -> None:
        self._items = iter(range(start_index, min(end_index, self.count)))

    def get_next(self) -> dict[str, Any] | None:
        i = next(self._items, None)
        return None if i is None else {self.input_name: self.calib.nchw(i)}


CHUNK = 8


def images_used(method: str, available: int) -> int:
    """How many calibration images ``method`` uses: histogram methods are capped; onnxruntime wants equal chunks."""
    count = min(available, HISTOGRAM_IMAGES) if method in ("percentile", "entropy") else available
    return count - count % CHUNK if count > CHUNK else count


def quantize_onnx(fp32: onnx.ModelProto, calib: CalibrationSet, method: str = "percentile",
                  exclude: Iterable[str] = ()) -> onnx.ModelProto:
    """A QDQ model of ``fp32``; ``exclude`` names nodes to keep in float (mixed-precision fallback)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    calibrate = {"minmax": CalibrationMethod.MinMax, "ema-minmax": CalibrationMethod.MinMax,
                 "percentile": CalibrationMethod.Percentile,
                 "entropy": CalibrationMethod.Entropy}
    if method not in calibrate:
        raise ValueError(f"ONNX calibration method must be one of {METHODS}, got {method!r}")
    count = images_used(method, len(calib))
    extra: dict[str, Any] = {"WeightSymmetric": True, "ActivationSymmetric": False,
                             "CalibStridedMinMax": min(CHUNK, count)}
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    if method == "ema-minmax":
        extra["CalibMovingAverage"] = True
    with tempfile.TemporaryDirectory(prefix="onnx-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32.SerializeToString())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(str(src), str(dst), CalibrationReader(calib, fp32.graph.input[0].name, count),
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=list(exclude),
                            calibrate_method=calibrate[method], extra_options=extra)
        model = onnx.load(str(dst))
    del model.metadata_props[:]
    return model

