"""Calibration sets for int8: a seeded, stratified sample of a training split, pre-processed by the runtime.

A set is a folder: ``images.npy`` (``[N, S, S, 3]`` float32, exactly what :func:`runtime.preprocess.preprocess`
returns, NHWC) and ``manifest.json`` (source, split, image files and their hashes, the preprocessing spec,
the array's sha256). Every quantizer reads the same array, so ONNX, OpenVINO and TFLite are calibrated on
bit-identical inputs.
"""

from .store import CalibrationError, CalibrationSet, build_calibration_set, load_calibration_set

__all__ = ["CalibrationError", "CalibrationSet", "build_calibration_set", "load_calibration_set"]
