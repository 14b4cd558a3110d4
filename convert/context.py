"""What every target's export reads, and the intermediate results targets share, each made once on first use.

The FP32 ONNX is where every target starts (OpenVINO converts it, onnx2tf turns it into the SavedModel TFLite
is converted from); the SavedModel, the per-layer sensitivity ranking and the QAT-fine-tuned model are costly
(seconds to minutes) and shared by several artifacts, so they are made here lazily and kept for the export.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch

from calib_data import CalibrationSet
from efficientdet.model.config import ModelConfig
from quantize.folded_stem import FoldedStem
from quantize.input_grid import input_range

from .int8_recipe import INPUT_FLOAT, Int8Recipe
from .qat_model import QatModel, QatRequest

log = logging.getLogger(__name__)
SENSITIVITY_IMAGES = 4
FLOAT_FALLBACK_TARGETS = ("onnx", "openvino")  # TFLite and Edge TPU builds stay fully integer


@dataclass(frozen=True)
class Int8Source:
    """What post-training int8 quantizes (the recipe's ``input_form``): the graph, the config its
    artifacts' manifests describe, the calibration images in the units of its input, the whole range every
    possible pixel covers there (the input quantizer's range, whatever the calibration images held, on a grid with
    no pixel value on a rounding tie: :mod:`quantize.input_grid`) and, for the
    pixel-input form, its folded first convolution."""

    proto: onnx.ModelProto
    config: ModelConfig
    calib: CalibrationSet
    input_range: tuple[float, float]
    stem: FoldedStem | None = None  # pixels in: the folded first convolution, whose bias each quantizer refolds


@dataclass
class ExportContext:
    """One export's inputs (model, config, output folder, checkpoint provenance, int8 recipe, QAT request) and its
    shared intermediates. ``work`` is a temporary folder the caller removes after the export."""

    model: torch.nn.Module
    config: ModelConfig
    out: Path
    work: Path
    fp32: onnx.ModelProto
    source: dict[str, Any]  # checkpoint path and sha256, written into every manifest
    targets: tuple[str, ...]  # every target of this export (the QAT step keeps a float model only for TFLite)
    int8: Int8Recipe | None = None
    qat: QatRequest | None = None
    fp32_onnx_artifact: Path | None = None  # set when the FP32 ONNX artifact itself is written into ``out``
    _fp32_onnx: Path | None = dataclasses.field(default=None, repr=False)
    _saved_model: Path | None = dataclasses.field(default=None, repr=False)
    _sensitivity: list[Any] | None = dataclasses.field(default=None, repr=False)
    _qat_model: QatModel | None = dataclasses.field(default=None, repr=False)
    _int8_source: Int8Source | None = dataclasses.field(default=None, repr=False)
    _int8_onnx: Path | None = dataclasses.field(default=None, repr=False)
    _int8_saved_model: Path | None = dataclasses.field(default=None, repr=False)

    @property
    def base(self) -> str:
        """The artifacts' common file name stem, e.g. ``efficientdet-d0-512``."""
        return f"{self.config.name}-{self.config.input_size}"

    def path(self, precision: str, suffix: str) -> Path:
        """``out/<base>-<precision><suffix>``."""
        return self.out / f"{self.base}-{precision}{suffix}"

    def recipe(self) -> Int8Recipe:
        if self.int8 is None:
            raise ValueError("an int8 artifact needs an int8 recipe (a calibration set): none was given")
        return self.int8

    def fp32_onnx(self) -> Path:
        """The FP32 ONNX file other targets convert: the ONNX artifact when this export writes it, else a copy in
        ``work`` (the same bytes, written by the same function)."""
        if self.fp32_onnx_artifact is not None:
            return self.fp32_onnx_artifact
        if self._fp32_onnx is None:
            from .targets.onnx import write_onnx

            self._fp32_onnx = write_onnx(self.fp32, self.config, self.work / f"{self.base}-fp32.onnx", "fp32",
                                         **self.source).path
        return self._fp32_onnx

    def saved_model(self) -> Path:
        """onnx2tf's SavedModel of the FP32 ONNX (every TFLite artifact but QAT's is converted from it)."""
        if self._saved_model is None:
            from .targets.tflite import onnx_to_saved_model

            log.info("converting ONNX -> TF SavedModel (onnx2tf)")
            self._saved_model = onnx_to_saved_model(self.fp32_onnx(), self.work / "onnx2tf")
        return self._saved_model

    def int8_source(self) -> Int8Source:
        """The normalised FP32 graph as is, or its pixel-input form (:mod:`convert.pixel_input`), made once."""
        if self._int8_source is None:
            recipe = self.recipe()
            if recipe.input_form == "pixels":
                from .pixel_input import PIXEL_RANGE, fold_normalisation, folded_stem, pixel_calibration, pixel_config

                log.info("int8 takes pixels: folding the normalisation into the first convolution")
                proto = fold_normalisation(self.fp32, self.config.preprocess)
                self._int8_source = Int8Source(proto, pixel_config(self.config),
                                               pixel_calibration(recipe.calib, self.config.preprocess), PIXEL_RANGE,
                                               folded_stem(proto, self.config.preprocess))
            else:
                self._int8_source = Int8Source(self.fp32, self.config, recipe.calib,
                                               input_range(self.config.preprocess))
        return self._int8_source

    def int8_onnx(self) -> Path:
        """:meth:`int8_source`'s graph as a file (OpenVINO and onnx2tf read files): the FP32 ONNX's, or the pixel
        form written once into ``work``; the ONNX quantizer takes the graph itself and needs neither."""
        source = self.int8_source()
        if source.proto is self.fp32:
            return self.fp32_onnx()
        if self._int8_onnx is None:
            from .targets.onnx import write_onnx

            self._int8_onnx = write_onnx(source.proto, source.config, self.work / f"{self.base}-pixels-fp32.onnx",
                                         "fp32", **self.source).path
        return self._int8_onnx

    def int8_saved_model(self) -> Path:
        """onnx2tf's SavedModel of :meth:`int8_source`'s graph (the FP32 one's when that is the graph)."""
        source = self.int8_source()
        if source.proto is self.fp32:
            return self.saved_model()
        if self._int8_saved_model is None:
            from .targets.tflite import onnx_to_saved_model

            log.info("converting the pixel-input ONNX -> TF SavedModel (onnx2tf)")
            self._int8_saved_model = onnx_to_saved_model(self.int8_onnx(), self.work / "onnx2tf-pixels")
        return self._int8_saved_model

    def sensitivity(self) -> list[Any]:
        """Per-layer sensitivity on the calibration set (:mod:`quantize.sensitivity`), most sensitive first."""
        if self._sensitivity is None:
            from quantize.sensitivity import layer_sensitivity

            log.info(f"per-layer sensitivity: each layer quantized alone, {SENSITIVITY_IMAGES} calibration images")
            self._sensitivity = layer_sensitivity(self.fp32, self.recipe().calib, images=SENSITIVITY_IMAGES)
        return self._sensitivity

    def measured_sensitivity(self) -> list[Any] | None:
        """The ranking if this export measured it already, else None (nothing is measured here)."""
        return self._sensitivity

    def float_layers(self, target: str) -> list[str]:
        """The ONNX node names ``target`` keeps in float: the recipe's K most sensitive layers (never the pixel-input
        form's folded stem), or none."""
        from quantize.sensitivity import fallback_layers

        recipe = self.recipe()
        if not recipe.fallback or target not in FLOAT_FALLBACK_TARGETS:
            return []
        first = self._sensitivity is None
        stem = self.int8_source().stem
        names = fallback_layers(self.sensitivity(), recipe.fallback, [stem.node] if stem else [])
        if first:
            log.info(f"keeping {recipe.fallback} most sensitive layers in float for onnx/openvino: {names} "
                     "(TFLite stays fully integer)")
        return names

    def int8_described(self, target: str, kept: Sequence[str], **extra: Any) -> dict[str, Any]:
        """The manifest's quantization block of ``target``'s post-training int8 file that keeps ``kept`` in float:
        a file whose first layer is among them reads its input in float, and says so."""
        from quantize.onnx_int8 import reads_input_in_float

        if reads_input_in_float(self.int8_source().proto, kept):
            extra = {**extra, "input": INPUT_FLOAT}
        return self.recipe().describe(target, kept, **extra)

    def qat_model(self) -> QatModel:
        """The QAT-fine-tuned model (:mod:`convert.qat_model`), made on first use."""
        if self.qat is None:
            raise ValueError("an int8-qat artifact needs a QAT request (training data and schedule): none was given")
        if self._qat_model is None:
            from .qat_model import qat_model

            self._qat_model = qat_model(self.model, self.config, self.recipe(), self.qat,
                                        keep_float="tflite" in self.targets, work_dir=self.work)
        return self._qat_model
