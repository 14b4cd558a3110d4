"""ONNX -> OpenVINO IR (``.xml`` + ``.bin``), FP32 or FP16-compressed weights.

Converted from the FP32 ONNX (not from the ``nn.Module``): measured exact at f32 and faster at run
time than the module route (docs/TOOLCHAIN.md). Both precisions are meant to *run* with
``INFERENCE_PRECISION_HINT=f32`` (manifest ``inference_precision: "f32"``): this CPU otherwise runs
bf16 silently, and an FP16 IR is an FP16 *storage* format whose weights are decompressed to f32.
The manifest goes into ``rt_info`` and a sidecar; ``artifact.sha256`` hashes the ``.xml`` (the file the
runtime opens) and ``artifact.weights_sha256`` the ``.bin``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from efficientdet.checkpoint import file_sha256
from efficientdet.model.config import ModelConfig
from efficientdet.model.detector import INPUT_NAME, OUTPUT_NAMES
from runtime.fileio import make_temp_dir

from ..errors import ConversionError
from ..manifest_writer import (
    EMBED_KEY,
    Artifact,
    build_manifest,
    embedded_json,
    remove_stale_sidecar,
    seal,
    tensor_spec,
)
from .spec import TargetSpec

if TYPE_CHECKING:
    from ..context import ExportContext

log = logging.getLogger(__name__)


class OpenVinoExportError(ConversionError):
    """OpenVINO conversion produced something the runtime could not use."""


def _port_spec(port: object, layout: str | None = None) -> dict:
    import numpy as np

    shape = port.get_partial_shape()
    if not shape.is_static:
        raise OpenVinoExportError(f"OpenVINO port {port.get_any_name()!r} has a dynamic shape {shape}")
    dtype = np.dtype(port.get_element_type().to_dtype()).name
    return tensor_spec(port.get_any_name(), [d.get_length() for d in shape], dtype, layout)


def _without_metadata(onnx_path: str | Path, tmp: Path) -> Path:
    """A copy of the ONNX without ``metadata_props``: OpenVINO copies them into ``rt_info/framework``,
    which would leave a stale ONNX manifest (target "onnx", the ONNX file's name) inside the IR."""
    model = onnx.load(str(onnx_path))
    del model.metadata_props[:]
    path = tmp / Path(onnx_path).name
    path.write_bytes(model.SerializeToString(deterministic=True))
    return path


def convert_onnx(onnx_path: str | Path) -> Any:
    """``openvino.convert_model`` of an ONNX file, without its metadata (see :func:`_without_metadata`)."""
    from runtime.backends.openvino_privacy import import_openvino

    ov = import_openvino()  # with OpenVINO telemetry off

    with tempfile.TemporaryDirectory(prefix="ov-convert-") as tmp:
        return ov.convert_model(str(_without_metadata(onnx_path, Path(tmp))))


def export_openvino(onnx_path: str | Path, config: ModelConfig, out_path: str | Path, precision: str = "fp32",
                    checkpoint: str | None = None, checkpoint_sha256: str | None = None, model: Any = None,
                    quantization: dict[str, Any] | None = None) -> Artifact:
    """Convert the FP32 ONNX at ``onnx_path`` to ``out_path`` (``.xml``; ``.bin`` beside it) + sidecar.

    int8 precisions write ``model`` (an int8 ``openvino.Model`` from NNCF or a QDQ ONNX via :func:`convert_onnx`);
    ``quantization`` (how) goes into the manifest.
    """
    from runtime.backends.openvino_privacy import import_openvino

    ov = import_openvino()  # with OpenVINO telemetry off

    if precision not in ("fp32", "fp16", "int8", "int8-qat"):
        raise ValueError(f"OpenVINO export supports fp32, fp16, int8 and int8-qat, got {precision!r}")
    if precision.startswith("int8") and model is None:
        raise ValueError("OpenVINO int8 export writes a quantized model: pass model=")
    out_path = Path(out_path)
    if out_path.suffix != ".xml":
        raise ValueError(f"OpenVINO IR path must end in .xml, got {out_path}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    bin_path = out_path.with_suffix(".bin")
    tmp = make_temp_dir(out_path.parent, f"{out_path.stem}.ov")
    try:
        if model is None:
            model = convert_onnx(onnx_path)
        inputs = {p.get_any_name(): p for p in model.inputs}
        outputs = {p.get_any_name(): p for p in model.outputs}
        if INPUT_NAME not in inputs or any(n not in outputs for n in OUTPUT_NAMES):
            raise OpenVinoExportError(f"converted IR has inputs {sorted(inputs)} and outputs {sorted(outputs)}, "
                                      f"expected {INPUT_NAME!r} and {list(OUTPUT_NAMES)}")
        manifest = build_manifest(
            config, target="openvino", precision=precision, artifact_file=out_path.name,
            input_spec=_port_spec(inputs[INPUT_NAME], "nchw"),
            outputs={n: _port_spec(outputs[n]) for n in OUTPUT_NAMES},
            inference_precision="f32", checkpoint=checkpoint, checkpoint_sha256=checkpoint_sha256,
            extra_artifact={"weights_file": bin_path.name, **({"quantization": quantization} if quantization else {})})
        # The .bin hash goes into the embedded copy too: the .bin does not contain the .xml, so it is not circular.
        tmp_xml, tmp_bin = tmp / out_path.name, tmp / bin_path.name
        ov.save_model(model, str(tmp_xml), compress_to_fp16=(precision == "fp16"))
        manifest["artifact"]["weights_sha256"] = file_sha256(tmp_bin)
        model.set_rt_info(embedded_json(manifest), EMBED_KEY)
        ov.save_model(model, str(tmp_xml), compress_to_fp16=(precision == "fp16"))
        if file_sha256(tmp_bin) != manifest["artifact"]["weights_sha256"]:
            raise OpenVinoExportError("re-saving the IR with its manifest changed the weights file")
        remove_stale_sidecar(out_path)
        os.replace(tmp_bin, bin_path)  # .bin first: the .xml is the entry point, so it lands last
        os.replace(tmp_xml, out_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return seal(out_path, manifest, "openvino", precision, extra_bytes=bin_path.stat().st_size)


def export(ctx: ExportContext, precision: str) -> Artifact:
    """The IR of ``precision``: the FP32 ONNX converted (fp16: compressed weights), NNCF's int8 of it, or QAT's QDQ
    graph converted (FakeQuantize keeps the learned ranges)."""
    path = ctx.path(precision, ".xml")
    if precision in ("fp32", "fp16"):
        log.info(f"converting openvino {precision}")
        return export_openvino(ctx.fp32_onnx(), ctx.config, path, precision, **ctx.source)
    recipe = ctx.recipe()
    if precision == "int8":
        from quantize.openvino_int8 import quantize_openvino

        log.info(f"quantizing openvino int8 with NNCF ({recipe.methods['openvino']}, {recipe.input_form} in)")
        kept = ctx.float_layers("openvino")
        source = ctx.int8_source()
        model = quantize_openvino(convert_onnx(ctx.int8_onnx()), source.calib, recipe.methods["openvino"],
                                  exclude={n.name: list(n.output) for n in source.proto.graph.node if n.name in kept},
                                  input_range=source.input_range, stem=source.stem)
        return export_openvino(ctx.int8_onnx(), source.config, path, "int8", model=model,
                               quantization=ctx.int8_described("openvino", kept), **ctx.source)
    qat = ctx.qat_model()
    log.info("QAT: converting the QDQ ONNX to OpenVINO IR (FakeQuantize keeps the learned ranges)")
    return export_openvino(qat.qdq_path, ctx.config, path, "int8-qat", model=convert_onnx(qat.qdq_path),
                           quantization=qat.learned(recipe, "openvino"), **ctx.source)


TARGET = TargetSpec("openvino", ".xml", ("fp32", "fp16", "int8", "int8-qat"), export)
