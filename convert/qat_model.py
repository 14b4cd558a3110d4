"""The QAT-fine-tuned model every ``int8-qat`` artifact is written from, made once per export.

ONNX and OpenVINO take the QAT model's own Q/DQ graph, so the ranges QAT learned are the ranges
they run. TFLite cannot take a Q/DQ graph (onnx2tf converts one into a wrong model without an error,
docs/TOOLCHAIN.md), so its artifact is converted from QAT's float twin (the fine-tuned weights as QAT
quantized them, :func:`quantize.qat.float_twin`), and QAT's learned ranges are written into the
converter's calibration records wherever their tensors are found by value
(:mod:`quantize.tflite_learned_ranges`); the tensors QAT did not quantize keep the post-training TFLite
method's ranges. The manifest says how many ranges were carried. Each target's module writes its own file
from :class:`QatModel`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch

from efficientdet.data.records import DetectionDataset
from efficientdet.model.config import ModelConfig
from quantize.input_grid import input_range
from quantize.onnx_int8 import hold_qdq_input_range
from quantize.qat import (
    FAKE_QUANTIZER,
    FloatTwin,
    QatConfig,
    calibrate,
    finetune,
    float_twin,
    hold_input_quantizer,
    prepare,
    to_qdq_onnx,
)

from .int8_recipe import INPUT_FULL_RANGE, Int8Recipe

QAT_TOOL = "torchao PT2E QAT (X86InductorQuantizer) -> torch.onnx dynamo QDQ"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QatRequest:
    """The training split QAT fine-tunes on and its schedule."""

    train_set: DetectionDataset
    config: QatConfig


@dataclass(frozen=True)
class QatModel:
    """The fine-tuned model as a Q/DQ ONNX (``qdq_path``: the same, saved, for OpenVINO), its float twin with the
    learned activation ranges for TFLite (None when no TFLite artifact is wanted) and the schedule's record."""

    qdq: onnx.ModelProto
    qdq_path: Path
    twin: FloatTwin | None
    info: dict[str, Any]
    calib_images: int

    def learned(self, recipe: Int8Recipe, target: str) -> dict[str, Any]:
        """The manifest's quantization block for an artifact that runs QAT's own ranges and weights (ONNX, OpenVINO);
        its weight scheme is the target's post-training one (7-bit on dense convolutions: QAT learns them so,
        :data:`quantize.qat.DENSE_WEIGHT_CODES`)."""
        block = recipe.describe(target, input=INPUT_FULL_RANGE)  # QAT trains on the normalised image
        block["calibration"]["images_used"] = self.calib_images  # the initial ranges
        return {**block, "tool": QAT_TOOL + (" -> openvino" if target == "openvino" else ""), "method": "qat",
                "ranges": "learned by QAT", **self.info}

    def carried(self, recipe: Int8Recipe) -> dict[str, Any]:
        """The block for the TFLite artifact: QAT's weights and ranges, the post-training method's ranges where QAT
        had none (the export adds how many ranges were carried)."""
        method = recipe.methods["tflite"]
        return {**recipe.describe("tflite", io_dtype=recipe.io_dtype, input=INPUT_FULL_RANGE),
                "method": f"qat + {method}", **self.info}


def qat_model(model: torch.nn.Module, config: ModelConfig, recipe: Int8Recipe, request: QatRequest, keep_float: bool,
              work_dir: Path) -> QatModel:
    """Fine-tune ``model`` with fake quantization (:mod:`quantize.qat`) and convert it."""
    from .targets.onnx import check_static

    qcfg = request.config
    t0 = time.time()
    used = min(qcfg.calib_images, len(recipe.calib))
    log.info(f"QAT: preparing {config.name} (torchao PT2E, fake quantization) and calibrating ranges on {used} images")
    qat = prepare(model, config.input_size)
    hold_input_quantizer(qat, input_range(config.preprocess))  # QAT trains on the input grid the files use
    calibrate(qat, recipe.calib, qcfg.calib_images)
    train = request.train_set
    log.info(f"QAT: fine-tuning {qcfg.epochs:g} epochs on {len(train.records)} images of {train.source} "
             f"[{train.split}] at lr {qcfg.lr:g}, objective {qcfg.objective}")
    history = finetune(qat, train, config, qcfg, teacher=model)
    # before the conversion, which rewrites the fake quantizers into quantize/dequantize ops
    twin = float_twin(qat, model, recipe.calib.nhwc(0)) if keep_float else None
    qdq = to_qdq_onnx(qat, config.input_size)
    check_static(qdq)
    qdq = hold_qdq_input_range(qdq, input_range(config.preprocess))
    # No wall time in the manifest: the same checkpoint and schedule give the same bytes.
    info = {"qat": {**qcfg.to_dict(), "fake_quantizer": FAKE_QUANTIZER, "train_split": train.split,
                    "train_images": len(train.records), "history": history}}
    log.info(f"QAT: fine-tuned and converted in {time.time() - t0:.0f} s")
    qdq_path = work_dir / f"{config.name}-{config.input_size}-int8-qat-qdq.onnx"
    onnx.save(qdq, str(qdq_path))
    return QatModel(qdq, qdq_path, twin, info, used)
