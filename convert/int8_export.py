"""Post-training int8 artifacts for every target, all calibrated on one :mod:`calib_data` set.

ONNX: onnxruntime QDQ (:mod:`quantize.onnx_int8`); OpenVINO: NNCF (:mod:`quantize.openvino_int8`);
TFLite: full-integer TFLiteConverter (:mod:`quantize.tflite_int8`). Each artifact's manifest records
how it was quantized (tool, method, calibration set and hash, layers left in float), so a device
result can always be traced to its calibration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from calib_data import CalibrationSet
from efficientdet.model.config import ModelConfig
from runtime.preprocess import normalised_range

from .manifest_writer import Artifact

# Chosen by measurement on the accuracy gate (docs/QUANTIZATION.md), not the tools' defaults.
DEFAULT_METHODS = {"onnx": "percentile", "openvino": "mixed", "tflite": "percentile"}
TOOLS = {"onnx": "onnxruntime.quantization (QDQ)", "openvino": "nncf", "tflite": "tf.lite.TFLiteConverter"}
SCHEME = {"weights": "int8 per-channel symmetric", "activations": "8-bit per-tensor affine"}
# ONNX and OpenVINO int8 run on x86 kernels that saturate 8-bit weights without VNNI (docs/INT8-CPU-CLASSES.md)
DENSE_7BIT = {**SCHEME, "weights": "int8 per-channel symmetric, 7-bit (within +-64) on convolutions that are not "
                                   "depthwise, so no x86 CPU saturates"}
SCHEMES = {"onnx": DENSE_7BIT, "openvino": DENSE_7BIT, "tflite": SCHEME}
# What the input quantizer holds (the manifest's ``quantization.input``): the normalised image over every possible
# pixel, not the calibration images' range, which clipped 16-34 % of a darker photo's input values (issue 15).
INPUT_FULL_RANGE = "normalised image, quantized over the whole 0-255 pixel range"
INPUT_PIXELS = "uint8 pixels, normalisation in the graph over the whole 0-255 pixel range"


@dataclass
class Int8Options:
    """What the int8 exports need beyond the FP32 model: calibration, methods, TFLite I/O type, float layers."""

    calib: CalibrationSet
    methods: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_METHODS))
    io_dtype: str = "int8"
    fallback: int = 0  # keep this many of the most sensitive layers in float (ONNX, OpenVINO)
    float_layers: dict[str, list[str]] = field(default_factory=dict)  # target -> node names kept in float
    sensitivity: list[Any] | None = None  # quantize.sensitivity.LayerSensitivity, most sensitive first

    def measure_sensitivity(self, fp32: onnx.ModelProto, log: Callable[[str], None], images: int = 4) -> list[Any]:
        """Per-layer sensitivity on the calibration set (once); sets the float fallback layers if requested."""
        if self.sensitivity is None:
            from quantize.sensitivity import layer_sensitivity

            log(f"per-layer sensitivity: each layer quantized alone, {images} calibration images")
            self.sensitivity = layer_sensitivity(fp32, self.calib, images=images)
        if self.fallback:
            names = [s.node for s in self.sensitivity[: self.fallback]]
            self.float_layers = {"onnx": names, "openvino": names}
        return self.sensitivity

    def describe(self, target: str, **extra: Any) -> dict[str, Any]:
        """The manifest's ``artifact.quantization`` block for ``target``."""
        from quantize.onnx_int8 import images_used

        c = self.calib
        used = images_used(self.methods[target], len(c)) if target == "onnx" else len(c)
        return {"tool": TOOLS[target], "method": self.methods[target], "scheme": SCHEMES[target],
                "calibration": {"path": str(c.path), "images_sha256": c.manifest["images_sha256"], "count": len(c),
                                "images_used": used, "source": c.manifest["source"], "split": c.manifest["split"],
                                "shifted": c.manifest.get("shifted", 0.0)},
                "float_layers": list(self.float_layers.get(target, [])), "input": INPUT_FULL_RANGE, **extra}


def export_int8(targets: list[str], config: ModelConfig, out: Path, base: str, fp32: onnx.ModelProto,
                fp32_path: Path, saved_model: Callable[[], Path], opts: Int8Options,
                source: dict[str, Any], log: Callable[[str], None]) -> list[Artifact]:
    """Write ``<base>-int8.<ext>`` for each target; ``saved_model`` lazily gives onnx2tf's SavedModel."""
    artifacts = []
    full_range = normalised_range(config.preprocess.to_dict())
    if opts.fallback:
        opts.measure_sensitivity(fp32, log)
        log(f"keeping {opts.fallback} most sensitive layers in float for onnx/openvino: "
            f"{opts.float_layers['onnx']} (TFLite stays fully integer)")
    if "onnx" in targets:
        from quantize.onnx_int8 import quantize_onnx

        from .onnx_export import write_onnx

        log(f"quantizing onnx int8 with onnxruntime ({opts.methods['onnx']})")
        proto = quantize_onnx(fp32, opts.calib, opts.methods["onnx"], exclude=opts.float_layers.get("onnx", ()),
                              input_range=full_range)
        artifacts.append(write_onnx(proto, config, out / f"{base}-int8.onnx", "int8",
                                    quantization=opts.describe("onnx"), **source))
    if "openvino" in targets:
        from quantize.openvino_int8 import quantize_openvino

        from .openvino_export import convert_onnx, export_openvino

        log(f"quantizing openvino int8 with NNCF ({opts.methods['openvino']})")
        kept = set(opts.float_layers.get("openvino", ()))
        model = quantize_openvino(convert_onnx(fp32_path), opts.calib, opts.methods["openvino"],
                                  exclude={n.name: list(n.output) for n in fp32.graph.node if n.name in kept},
                                  input_range=full_range)
        artifacts.append(export_openvino(fp32_path, config, out / f"{base}-int8.xml", "int8", model=model,
                                         quantization=opts.describe("openvino"), **source))
    if "tflite" in targets:
        from .tflite_export import export_tflite

        log(f"converting tflite full-integer int8 ({opts.methods['tflite']}, {opts.io_dtype} I/O)")
        artifacts.append(export_tflite(fp32_path, config, out / f"{base}-int8.tflite", "int8",
                                       saved_model=saved_model(), calib=opts.calib, io_dtype=opts.io_dtype,
                                       quantization=opts.describe("tflite", io_dtype=opts.io_dtype),
                                       calib_method=opts.methods["tflite"], **source))
    return artifacts
