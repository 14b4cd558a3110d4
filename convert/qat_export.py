"""QAT int8 artifacts (precision ``int8-qat``) for every target from one fine-tuned model.

ONNX and OpenVINO take the QAT model's own Q/DQ graph, so the ranges QAT learned are the ranges
they run. TFLite cannot: onnx2tf converts a QDQ ONNX into a wrong model without an error
(docs/TOOLCHAIN.md) and the TFLite converter has no way to import ranges, so the TFLite artifact is
the QAT-fine-tuned *weights* calibrated again (the post-training TFLite method, on the same
calibration set). Its manifest says so (``ranges: "recalibrated"``) and the report's QAT-vs-PTQ comparison shows
what that costs.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx

from efficientdet.data.records import DetectionDataset
from efficientdet.model.config import ModelConfig
from quantize.onnx_int8 import hold_qdq_input_range
from quantize.qat import QatConfig, calibrate, finetune, finetuned_float_model, prepare, to_qdq_onnx
from runtime.preprocess import normalised_range

from .int8_export import SCHEME, Int8Options
from .manifest_writer import Artifact

QAT_TOOL = "torchao PT2E QAT (X86InductorQuantizer) -> torch.onnx dynamo QDQ"


def export_qat(model: Any, config: ModelConfig, targets: list[str], out: Path, base: str, train_set: DetectionDataset,
               opts: Int8Options, qcfg: QatConfig, source: dict[str, Any], log: Callable[[str], None],
               work_dir: Path) -> list[Artifact]:
    """Fine-tune with fake quantization, then write ``<base>-int8-qat.<ext>`` for each target."""
    from .onnx_export import check_static, fp32_model, write_onnx

    t0 = time.time()
    log(f"QAT: preparing {config.name} (torchao PT2E, fake quantization) and calibrating ranges on "
        f"{min(qcfg.calib_images, len(opts.calib))} images")
    qat = prepare(model, config.input_size)
    calibrate(qat, opts.calib, qcfg.calib_images)
    log(f"QAT: fine-tuning {qcfg.epochs:g} epochs on {len(train_set.records)} images of {train_set.source} "
        f"[{train_set.split}] at lr {qcfg.lr:g}, objective {qcfg.objective}")
    history = finetune(qat, train_set, config, qcfg, teacher=model)
    tuned = finetuned_float_model(qat, model) if "tflite" in targets else None
    qdq = to_qdq_onnx(qat, config.input_size)
    check_static(qdq)
    qdq = hold_qdq_input_range(qdq, normalised_range(config.preprocess.to_dict()))
    info = {"qat": {**qcfg.to_dict(), "train_split": train_set.split, "train_images": len(train_set.records),
                    "history": history, "wall_time_s": round(time.time() - t0, 1)}}
    def learned(target: str) -> dict[str, Any]:
        block = opts.describe(target)
        block["calibration"]["images_used"] = min(qcfg.calib_images, len(opts.calib))  # initial ranges
        return {**block, "tool": QAT_TOOL + (" -> openvino" if target == "openvino" else ""), "method": "qat",
                "ranges": "learned by QAT",
                "scheme": SCHEME, **info}

    artifacts = []
    qdq_path = work_dir / f"{base}-int8-qat-qdq.onnx"
    onnx.save(qdq, str(qdq_path))
    if "onnx" in targets:
        artifacts.append(write_onnx(qdq, config, out / f"{base}-int8-qat.onnx", "int8-qat",
                                    quantization=learned("onnx"), **source))
    if "openvino" in targets:
        from .openvino_export import convert_onnx, export_openvino

        log("QAT: converting the QDQ ONNX to OpenVINO IR (FakeQuantize keeps the learned ranges)")
        artifacts.append(export_openvino(qdq_path, config, out / f"{base}-int8-qat.xml", "int8-qat",
                                         model=convert_onnx(qdq_path),
                                         quantization=learned("openvino"), **source))
    if "tflite" in targets:
        from .tflite_export import export_tflite, onnx_to_saved_model

        method = opts.methods["tflite"]
        log(f"QAT: TFLite from the fine-tuned weights, ranges recalibrated ({method})")
        with tempfile.TemporaryDirectory(dir=work_dir, prefix="qat-tflite-") as tmp:
            fpath = Path(tmp) / f"{base}-qat-float.onnx"
            onnx.save(fp32_model(tuned, config.input_size), str(fpath))
            saved = onnx_to_saved_model(fpath, Path(tmp) / "onnx2tf")
            artifacts.append(export_tflite(
                fpath, config, out / f"{base}-int8-qat.tflite", "int8-qat", saved_model=saved, calib=opts.calib,
                io_dtype=opts.io_dtype, calib_method=method,
                quantization={**opts.describe("tflite", io_dtype=opts.io_dtype), "method": f"qat weights + {method}",
                              "ranges": "recalibrated: the TFLite converter cannot import QAT ranges and onnx2tf "
                                        "converts QDQ ONNX wrongly", **info}, **source))
    return artifacts
