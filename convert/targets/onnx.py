"""PyTorch -> ONNX (opset 18, static batch-1 shapes, one self-contained file), FP32 and FP16.

* Exporter: torch 2.13's default dynamo exporter (``external_data=False`` so weights stay in the file),
  applied to ``model.export_form()`` (per-level heads, BN folded; exact).
* Simplifier: **onnxsim**, not onnxslim. Both were exact on dynamo exports here, but onnxslim has been
  measured silently rewriting a graph wrongly (docs/TOOLCHAIN.md), and onnxsim also drops the exporter's
  per-node debug metadata. Whichever tool runs, its result is re-checked against the un-simplified model
  with onnxruntime and the export fails loudly (:class:`OnnxExportError`) if they diverge.
* FP16: ``onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)``
  (onnxconverter-common is not installed; this is the same converter vendored in onnxruntime). Its
  output is not topologically sorted (input casts are appended last), which ``onnx.checker`` rejects,
  so nodes are re-sorted stably before checking.
* Determinism: the exporter, onnxsim and the fp16 converter are deterministic for the same weights;
  bytes come from ``SerializeToString(deterministic=True)`` and the embedded manifest is JSON with
  sorted keys, so the same checkpoint (given by the same path) exports to the same sha256. Every file is
  written without per-node metadata: QAT's Q/DQ graph, which onnxsim never sees, carried the exporter's stack
  traces, so its bytes held this machine's source paths and changed with them (session 11).
* The module's :func:`export` is the ONNX entry of the target registry (:mod:`convert.targets`).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import torch

from efficientdet.model.config import ModelConfig
from efficientdet.model.detector import INPUT_NAME, OUTPUT_NAMES

from ..errors import ConversionError
from ..manifest_writer import (
    EMBED_KEY,
    Artifact,
    build_manifest,
    embedded_json,
    publish,
    tensor_spec,
)
from .spec import TargetSpec

if TYPE_CHECKING:
    from ..context import ExportContext

log = logging.getLogger(__name__)
OPSET = 18
SIMPLIFY_RTOL = 1e-4  # the fp32 gate's bound: float reassociation passes, a wrong rewrite (~1e-1) does not


class OnnxExportError(ConversionError):
    """The export, the simplifier's numerics or the ONNX checker failed."""


def probe_input(input_size: int, seed: int = 0, layout: str = "nchw") -> np.ndarray:
    """A deterministic normalised-image-like input for numeric self-checks of a conversion."""
    x = np.random.default_rng(seed).standard_normal((1, input_size, input_size, 3)).astype(np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if layout == "nchw" else x


def run_onnx(model: onnx.ModelProto | str | Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs by name under onnxruntime (one thread, no spinning: a check, not a benchmark)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {session.get_inputs()[0].name: x})))


def torch_to_onnx(model: torch.nn.Module, input_size: int) -> onnx.ModelProto:
    """The raw dynamo export of the model's export form (FP32, batch 1, static shapes)."""
    export_model = model.export_form() if hasattr(model, "export_form") else model.eval()
    x = torch.from_numpy(probe_input(input_size))
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(export_model, (x,), input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                                    opset_version=OPSET, dynamo=True, external_data=False, verbose=False)
    if program is None:
        raise OnnxExportError("torch.onnx.export returned no program")
    return program.model_proto


def _compare(reference: dict[str, np.ndarray], other: dict[str, np.ndarray], rtol: float, what: str) -> None:
    for name, ref in reference.items():
        if name not in other or other[name].shape != ref.shape:
            raise OnnxExportError(f"{what}: output {name!r} missing or reshaped")
        err = float(np.abs(other[name].astype(np.float32) - ref).max())
        scale = float(np.abs(ref).max()) or 1.0
        if not err <= rtol * scale:
            raise OnnxExportError(f"{what}: output {name!r} diverges (max abs err {err:.3g}, rel {err / scale:.3g} "
                                  f"> {rtol:g}); refusing to write a silently wrong model")


def simplify(model: onnx.ModelProto, input_size: int) -> onnx.ModelProto:
    """onnxsim, then a numeric check of the result against the input model on a probe image."""
    import onnxsim

    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise OnnxExportError("onnxsim could not validate the simplified model")
    x = probe_input(input_size)
    _compare(run_onnx(model, x), run_onnx(simplified, x), SIMPLIFY_RTOL, "onnxsim simplification")
    return simplified


def check_static(model: onnx.ModelProto) -> None:
    """onnx.checker (with shape inference) and fully static, batch-1 graph inputs/outputs."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        raise OnnxExportError(f"onnx.checker rejected the model: {e}") from e
    for value in list(model.graph.input) + list(model.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
        if not dims or any(d is None or d <= 0 for d in dims) or dims[0] != 1:
            raise OnnxExportError(f"{value.name!r} has a non-static or non-batch-1 shape {dims}")


def _topological_sort(graph: onnx.GraphProto) -> None:
    """Stable topological order (keeps the original order where it is already valid)."""
    available = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise OnnxExportError(f"graph has a cycle or undefined inputs near node {rest[0].name!r}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """FP16 weights and compute with float32 inputs/outputs (so the runtime feeds it like the FP32 model)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = convert_float_to_float16(model, keep_io_types=True)
    _topological_sort(half.graph)
    return half


def fp32_model(model: torch.nn.Module, input_size: int) -> onnx.ModelProto:
    """Export, simplify (numerically verified) and check: the FP32 ONNX every other target starts from."""
    proto = simplify(torch_to_onnx(model, input_size), input_size)
    check_static(proto)
    return proto


def _io_specs(model: onnx.ModelProto) -> tuple[dict, dict]:
    def spec(value: onnx.ValueInfoProto, layout: str | None = None) -> dict:
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name
        return tensor_spec(value.name, dims, dtype, layout)

    outputs = {v.name: v for v in model.graph.output}
    missing = [n for n in OUTPUT_NAMES if n not in outputs]
    if missing:
        raise OnnxExportError(f"exported model lacks outputs {missing}; it has {sorted(outputs)}")
    return spec(model.graph.input[0], "nchw"), {n: spec(outputs[n]) for n in OUTPUT_NAMES}


def write_onnx(proto: onnx.ModelProto, config: ModelConfig, out_path: str | Path, precision: str,
               checkpoint: str | None = None, checkpoint_sha256: str | None = None,
               quantization: dict[str, Any] | None = None) -> Artifact:
    """Embed the manifest, write the model atomically, then its sidecar (with the file's real sha256)."""
    out_path = Path(out_path)
    check_static(proto)
    input_spec, outputs = _io_specs(proto)
    manifest = build_manifest(config, target="onnx", precision=precision, artifact_file=out_path.name,
                              input_spec=input_spec, outputs=outputs, checkpoint=checkpoint,
                              checkpoint_sha256=checkpoint_sha256,
                              extra_artifact={"quantization": quantization} if quantization else None)
    final = onnx.ModelProto()
    final.CopyFrom(proto)
    del final.metadata_props[:]
    for node in final.graph.node:  # the exporter's debug records (stack traces with this machine's source paths)
        del node.metadata_props[:]
    onnx.helper.set_model_props(final, {EMBED_KEY: embedded_json(manifest)})
    return publish(out_path, final.SerializeToString(deterministic=True), manifest, "onnx", precision)


def export_onnx(model: torch.nn.Module, config: ModelConfig, out_path: str | Path, precision: str = "fp32",
                checkpoint: str | None = None, checkpoint_sha256: str | None = None,
                fp32: onnx.ModelProto | None = None) -> Artifact:
    """Write ``out_path`` (+ ``.json``) for ``precision`` fp32|fp16; ``fp32`` reuses an earlier :func:`fp32_model`."""
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"ONNX export supports fp32 and fp16, got {precision!r}")
    base = fp32 if fp32 is not None else fp32_model(model, config.input_size)
    proto = base if precision == "fp32" else to_fp16(base)
    return write_onnx(proto, config, out_path, precision, checkpoint, checkpoint_sha256)


def export(ctx: ExportContext, precision: str) -> Artifact:
    """The ONNX artifact of ``precision``: the FP32 graph as is or in fp16, onnxruntime's QDQ int8 of it, or QAT's
    own QDQ graph."""
    path = ctx.path(precision, ".onnx")
    if precision in ("fp32", "fp16"):
        log.info(f"writing onnx {precision}")
        artifact = write_onnx(ctx.fp32 if precision == "fp32" else to_fp16(ctx.fp32), ctx.config, path, precision,
                              **ctx.source)
        if precision == "fp32":
            ctx.fp32_onnx_artifact = artifact.path
        return artifact
    recipe = ctx.recipe()
    if precision == "int8":
        from quantize.onnx_int8 import quantize_onnx

        log.info(f"quantizing onnx int8 with onnxruntime ({recipe.methods['onnx']}, {recipe.input_form} in)")
        kept = ctx.float_layers("onnx")
        source = ctx.int8_source()
        proto, corrected = quantize_onnx(source.proto, source.calib, recipe.methods["onnx"], exclude=kept,
                                         input_range=source.input_range, stem=source.stem)
        described = ctx.int8_described("onnx", kept, bias_correction=corrected.describe())
        return write_onnx(proto, source.config, path, "int8", quantization=described, **ctx.source)
    qat = ctx.qat_model()
    return write_onnx(qat.qdq, ctx.config, path, "int8-qat", quantization=qat.learned(recipe, "onnx"), **ctx.source)


TARGET = TargetSpec("onnx", ".onnx", ("fp32", "fp16", "int8", "int8-qat"), export)
