"""The int8 recipe: one frozen object saying how every int8 artifact of an export is quantized.

All targets are calibrated on one :mod:`calib_data` set. ONNX: onnxruntime QDQ (:mod:`quantize.onnx_int8`);
OpenVINO: NNCF (:mod:`quantize.openvino_int8`); TFLite: full-integer TFLiteConverter (:mod:`quantize.tflite_int8`).
Each artifact's manifest records how it was quantized (:meth:`Int8Recipe.describe`: tool, method, calibration set
and hash, layers left in float), so a device result can always be traced to its calibration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from calib_data import CalibrationSet
from quantize import onnx_int8, openvino_int8, tflite_int8

SCHEME = {"weights": "int8 per-channel symmetric", "activations": "8-bit per-tensor affine"}
# ONNX and OpenVINO int8 run on x86 kernels that saturate 8-bit weights without VNNI (docs/INT8-CPU-CLASSES.md)
DENSE_7BIT = {**SCHEME, "weights": "int8 per-channel symmetric, 7-bit (within +-64) on convolutions that are not "
                                   "depthwise, so no x86 CPU saturates"}


@dataclass(frozen=True)
class Quantizer:
    """How one target's int8 artifacts are made: the tool, its calibration methods, the default method (chosen by
    measurement on the accuracy gate, docs/QUANTIZATION.md, not the tool's own default) and the weight scheme."""

    tool: str
    methods: tuple[str, ...]
    default: str
    scheme: Mapping[str, str]


# One row per target that has an int8 form (a new int8 target adds its row here).
QUANTIZERS: Mapping[str, Quantizer] = MappingProxyType({
    "onnx": Quantizer("onnxruntime.quantization (QDQ)", onnx_int8.METHODS, "percentile", DENSE_7BIT),
    "openvino": Quantizer("nncf", openvino_int8.METHODS, "mixed", DENSE_7BIT),
    "tflite": Quantizer("tf.lite.TFLiteConverter", tflite_int8.METHODS, "percentile", SCHEME),
})
DEFAULT_METHODS = {target: q.default for target, q in QUANTIZERS.items()}
SCHEMES = {target: q.scheme for target, q in QUANTIZERS.items()}
# What the input quantizer holds (the manifest's ``quantization.input``): the normalised image over every possible
# pixel, not the calibration images' range, which clipped 16-34 % of a darker photo's input values (issue 15), on a
# grid with no pixel value on a rounding tie (quantize/input_grid.py, since session 26; files without it say only
# the first half and are not reused by the benchmark).
INPUT_FULL_RANGE = "normalised image, quantized over the whole 0-255 pixel range, no pixel on a rounding tie"
INPUT_PIXELS = "uint8 pixels, normalisation in the graph over the whole 0-255 pixel range"
# A file whose first layers are kept in float (``--float-layers``) reads its input in float: nothing there to clip.
INPUT_FLOAT = "normalised image, read in float (its first layer is kept in float)"
INPUT_FOLDED = "pixels 0-255, each a code (scale 1, zero point 0); normalisation folded into the first convolution"
# What the post-training int8 artifacts take (``--int8-input``): the normalised image, or pixels with the
# normalisation folded into the first convolution (convert/pixel_input.py), the manifest's ``quantization.input``.
INPUT_FORMS: Mapping[str, str] = MappingProxyType({"normalised": INPUT_FULL_RANGE, "pixels": INPUT_FOLDED})
DEFAULT_INT8_INPUT = "normalised"


@dataclass(frozen=True)
class Int8Recipe:
    """What the int8 exports need beyond the FP32 model: the calibration set, a method per target, the TFLite
    I/O type, how many of the most sensitive layers to keep in float (ONNX and OpenVINO) and what the post-training
    int8 files take (:data:`INPUT_FORMS`; QAT's files keep the normalised image)."""

    calib: CalibrationSet
    methods: Mapping[str, str] = field(default_factory=lambda: MappingProxyType(dict(DEFAULT_METHODS)))
    io_dtype: str = "int8"
    fallback: int = 0
    input_form: str = DEFAULT_INT8_INPUT

    def __post_init__(self) -> None:
        if self.input_form not in INPUT_FORMS:
            raise ValueError(f"int8 input form must be one of {sorted(INPUT_FORMS)}, got {self.input_form!r}")

    def describe(self, target: str, float_layers: Sequence[str] = (), **extra: Any) -> dict[str, Any]:
        """The manifest's ``artifact.quantization`` block for ``target``."""
        from quantize.onnx_int8 import images_used

        c = self.calib
        used = images_used(self.methods[target], len(c)) if target == "onnx" else len(c)
        return {"tool": QUANTIZERS[target].tool, "method": self.methods[target], "scheme": SCHEMES[target],
                "calibration": {"path": str(c.path), "images_sha256": c.manifest["images_sha256"], "count": len(c),
                                "images_used": used, "source": c.manifest["source"], "split": c.manifest["split"],
                                "shifted": c.manifest.get("shifted", 0.0)},
                "float_layers": list(float_layers), "input": INPUT_FORMS[self.input_form], **extra}
