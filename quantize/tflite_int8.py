"""Full-integer TFLite: TF's own TFLiteConverter with a representative dataset from the calibration set.

Chosen over onnx2tf's ``-oiqt`` (identical int8 results here, TOOLCHAIN-FACTS) because the converter
route takes the shared calibration array directly and lets the I/O type be chosen. Every op is int8
(``TFLITE_BUILTINS_INT8``: conversion fails rather than leaving a float op), inputs and outputs int8 or
uint8 (uint8 for the Edge TPU). The converter's calibration is min-max; it has no other method.
"""

from __future__ import annotations

from typing import Any

from calib_data import CalibrationSet

IO_DTYPES = ("int8", "uint8")


def configure_full_int8(converter: Any, tf: Any, calib: CalibrationSet, io_dtype: str = "int8") -> None:
    """Set ``converter`` (a ``tf.lite.TFLiteConverter``) up for a fully integer model calibrated on ``calib``."""
    if io_dtype not in IO_DTYPES:
        raise ValueError(f"TFLite int8 I/O type must be one of {IO_DTYPES}, got {io_dtype!r}")
    count = len(calib)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([calib.nhwc(i)] for i in range(count))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8 if io_dtype == "int8" else tf.uint8
    converter.inference_output_type = tf.int8 if io_dtype == "int8" else tf.uint8
