"""ONNX -> TFLite (NHWC input): FP32, FP16 weights, or fully integer int8 (see :mod:`quantize.tflite_int8`).

Route (measured, see the report): onnx2tf writes a TF SavedModel (``-osd``) from the FP32 ONNX; TF's
own ``TFLiteConverter`` turns it into the .tflite. onnx2tf's own .tflite files were numerically
identical, but the converter route gives the control later steps need (representative datasets for
int8, ``supported_types=[tf.float16]``) and lets us re-sign the graph: the SavedModel's outputs are
``output_0``/``output_1`` (onnx2tf's naming, order not promised), so each is identified by shape *and*
by value against onnxruntime on a probe input, then exported under a ``serving_default`` signature whose
outputs are literally ``logits`` and ``box_regression``. The runtime reads outputs by signature name,
so nothing ever depends on tensor order (which onnx2tf changes between float and int8 files).

onnx2tf runs in a subprocess whose working directory holds a local
``calibration_image_sample_data_20x128x128x3_float32.npy``: offline, onnx2tf otherwise tries to
download that file and crashes (docs/TOOLCHAIN.md). It is deterministic pseudo-image data used only for
onnx2tf's internal output checks; it is NOT calibration data for int8 (pass ``-cind`` with real images).
Before onnx2tf, non-integer nearest upsamples are rewritten as exact Gathers (:func:`onnx2tf_safe`).
TensorFlow and onnx2tf are imported lazily (seconds to import, and only this target needs them).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from calib_data import CalibrationSet
from efficientdet.model.config import ModelConfig
from efficientdet.model.detector import INPUT_NAME, OUTPUT_NAMES
from quantize.folded_stem import FoldedStem
from quantize.input_grid import input_range
from quantize.tflite_int8 import TfliteFlatbuffer, convert_full_int8
from quantize.tflite_learned_ranges import LearnedRanges
from quantize.tflite_learned_weights import LearnedConv, qdq_convolutions
from runtime.fileio import make_temp_dir
from runtime.preprocess import pixel_extremes

from ..errors import ConversionError
from ..manifest_writer import (
    Artifact,
    build_manifest,
    publish,
    tensor_spec,
)
from .onnx import fp32_model, probe_input, run_onnx
from .spec import TargetSpec

if TYPE_CHECKING:
    from ..context import ExportContext

log = logging.getLogger(__name__)

ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"
MAPPING_RTOL = 0.05  # SavedModel vs ONNX on a probe: identifies outputs, catches gross breakage; the gate is strict
ONNX2TF_TIMEOUT_S = 3600


class TfliteExportError(ConversionError):
    """onnx2tf or the TFLite converter failed, or the converted outputs cannot be identified."""


def _quiet_env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def _static_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    inferred = onnx.shape_inference.infer_shapes(model)
    values = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    return {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


def onnx2tf_safe(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite nearest ``Resize`` nodes with a non-integer scale as two exact ``Gather`` ops.

    A BiFPN upsamples P7 to P6 with ``ceil`` sizes, so inputs that are not multiples of 128 give
    non-integer ratios (320 px: 3 -> 5). onnx2tf converts those with different rounding than ONNX's
    ``asymmetric``/``floor`` (measured on a trained D0 at 320: 2-3 % max error on real images, 6-13 %
    on noise). Gathering rows/columns ``floor(i * in / out)`` is that ONNX semantics exactly, and
    onnx2tf converts Gather exactly. The rewrite is checked bit-exact with onnxruntime. Integer-ratio
    resizes are left alone (they convert exactly).
    """
    shapes = _static_shapes(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes, changed = [], False
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        src, dst = shapes.get(node.input[0]), shapes.get(node.output[0]) if node.output else None
        if node.op_type != "Resize" or attrs.get("mode", b"nearest") != b"nearest" or not src or not dst \
                or len(src) != 4 or (dst[2] % src[2] == 0 and dst[3] % src[3] == 0):
            nodes.append(node)
            continue
        if attrs.get("coordinate_transformation_mode", b"half_pixel") != b"asymmetric" or \
                attrs.get("nearest_mode", b"round_prefer_floor") != b"floor":
            raise TfliteExportError(f"Resize {node.name!r} uses {attrs}; only asymmetric/floor nearest is rewritten")
        rows, cols = node.output[0] + "__rows", node.output[0] + "__cols"
        out.graph.initializer.extend([
            onnx.numpy_helper.from_array(np.arange(dst[2], dtype=np.int64) * src[2] // dst[2], rows),
            onnx.numpy_helper.from_array(np.arange(dst[3], dtype=np.int64) * src[3] // dst[3], cols)])
        nodes.append(onnx.helper.make_node("Gather", [node.input[0], rows], [node.output[0] + "__h"], axis=2,
                                           name=node.name + "__gather_rows"))
        nodes.append(onnx.helper.make_node("Gather", [node.output[0] + "__h", cols], [node.output[0]], axis=3,
                                           name=node.name + "__gather_cols"))
        changed = True
    if not changed:
        return model
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    used = {name for n in out.graph.node for name in n.input}
    keep = [t for t in out.graph.initializer if t.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep)
    onnx.checker.check_model(out)
    size = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][2]
    x = probe_input(size)
    before, after = run_onnx(model, x), run_onnx(out, x)
    if any(not np.array_equal(before[k], after[k]) for k in before):
        raise TfliteExportError("rewriting Resize as Gather changed the model's outputs")
    return out


def onnx_to_saved_model(onnx_path: str | Path, work_dir: str | Path) -> Path:
    """Run onnx2tf (subprocess, cwd ``work_dir``) on an :func:`onnx2tf_safe` copy; return the SavedModel dir."""
    work_dir = Path(work_dir).resolve()  # onnx2tf runs with cwd=work_dir: every path it gets must be absolute
    work_dir.mkdir(parents=True, exist_ok=True)
    sample = np.random.default_rng(0).uniform(0.0, 1.0, (20, 128, 128, 3)).astype(np.float32)
    np.save(work_dir / ONNX2TF_SAMPLE, sample)
    saved = work_dir / "saved_model"
    # onnx2tf rewrites its input file in place (its own onnxsim pass), so it only ever sees a copy.
    local = work_dir / "model.onnx"
    local.write_bytes(onnx2tf_safe(onnx.load(str(onnx_path))).SerializeToString(deterministic=True))
    cmd = [sys.executable, "-m", "onnx2tf", "-i", local.name, "-o", str(saved), "-osd", "-n"]
    try:
        proc = run_with_heartbeat(cmd, work_dir, _quiet_env(), ONNX2TF_TIMEOUT_S, "onnx2tf")
    except subprocess.TimeoutExpired as e:
        raise TfliteExportError(f"onnx2tf did not finish within {ONNX2TF_TIMEOUT_S} s") from e
    if proc.returncode != 0 or not (saved / "saved_model.pb").is_file():
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise TfliteExportError(f"onnx2tf failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return saved


HEARTBEAT_S = 60.0


def run_with_heartbeat(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float, what: str,
                       every: float = HEARTBEAT_S) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(capture_output=True)`` that says "still running" every ``every`` seconds: onnx2tf
    prints nothing of its own here and took up to 12 minutes under load, which looked like a hang."""
    start = time.monotonic()
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        while True:
            left = timeout - (time.monotonic() - start)
            try:
                out, err = proc.communicate(timeout=max(0.01, min(every, left)))
                return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - start
                if elapsed >= timeout:
                    proc.kill()
                    proc.communicate()
                    raise
                print(f"[convert] {what} still running ({elapsed / 60:.1f} min)", file=sys.stderr, flush=True)


def _import_tf() -> Any:
    from ..tensorflow_import import import_tensorflow

    return import_tensorflow()


def identify_outputs(signature: Any, onnx_path: Path, input_size: int) -> tuple[str, dict[str, str]]:
    """(SavedModel input key, {onnx output name: SavedModel output key}) matched by shape, then by value."""
    tf = _import_tf()
    inputs = signature.structured_input_signature[1]
    if len(inputs) != 1:
        raise TfliteExportError(f"SavedModel has inputs {sorted(inputs)}, expected one image input")
    in_key = next(iter(inputs))
    got = {k: v.numpy() for k, v in signature(**{in_key: tf.constant(probe_input(input_size, layout="nhwc"))}).items()}
    ref = run_onnx(onnx_path, probe_input(input_size, layout="nchw"))
    mapping: dict[str, str] = {}
    for name in OUTPUT_NAMES:
        scale = float(np.abs(ref[name]).max()) or 1.0
        errors = {k: float(np.abs(v - ref[name]).max()) / scale for k, v in got.items()
                  if v.shape == ref[name].shape and k not in mapping.values()}
        if not errors:
            raise TfliteExportError(f"no SavedModel output has the shape of {name!r} {list(ref[name].shape)}; "
                                    f"outputs: { {k: list(v.shape) for k, v in got.items()} }")
        key = min(errors, key=errors.get)
        if not errors[key] <= MAPPING_RTOL:
            raise TfliteExportError(f"onnx2tf output {key!r} (closest to {name!r}) differs from onnxruntime by "
                                    f"rel {errors[key]:.3g} > {MAPPING_RTOL:g}: the conversion is wrong")
        mapping[name] = key
    return in_key, mapping


def saved_model_to_tflite(saved_model: str | Path, onnx_path: str | Path, input_size: int, precision: str,
                          calib: CalibrationSet | None = None, io_dtype: str = "int8",
                          calib_method: str = "percentile", extremes: Sequence[np.ndarray] = (),
                          learned: LearnedRanges | None = None, stem: FoldedStem | None = None,
                          weights: Sequence[LearnedConv] = (), grid: tuple[float, float] | None = None
                          ) -> TfliteFlatbuffer:
    """TFLite flatbuffer with signature ``serving_default(images) -> {logits, box_regression}``.

    ``int8``/``int8-qat``: fully integer, calibrated on ``calib`` by ``calib_method``
    (:mod:`quantize.tflite_int8`), ``io_dtype`` (int8|uint8) inputs and outputs, the input side sized to hold
    ``extremes`` (the black and white frames as model inputs) on the input ``grid``; ``learned``: QAT's ranges,
    carried in wherever their tensors are found (``int8-qat``), and ``weights``: QAT's convolutions, whose codes and
    scales replace the converter's; ``stem``: the pixel-input form's folded first convolution.
    """
    tf = _import_tf()
    loaded = tf.saved_model.load(str(saved_model))
    signature = loaded.signatures["serving_default"]
    in_key, mapping = identify_outputs(signature, Path(onnx_path), input_size)

    @tf.function(input_signature=[tf.TensorSpec([1, input_size, input_size, 3], tf.float32, name=INPUT_NAME)])
    def serve(images: Any) -> dict[str, Any]:
        out = signature(**{in_key: images})
        return {name: out[key] for name, key in mapping.items()}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], loaded)
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision in ("int8", "int8-qat"):
        if calib is None:
            raise ValueError("TFLite int8 export needs a calibration set")
        quantized = convert_full_int8(converter, tf, calib, io_dtype, calib_method, extremes=extremes,
                                      learned=learned, stem=stem, weights=weights, grid=grid)
        _check_fully_integer(quantized.data)
        return quantized
    elif precision != "fp32":
        raise ValueError(f"TFLite export supports fp32, fp16, int8 and int8-qat, got {precision!r}")
    return TfliteFlatbuffer(converter.convert())


def _check_fully_integer(data: bytes) -> None:
    """Refuse an int8 flatbuffer with any float tensor between input and output (a silently mixed model)."""
    from ..edgetpu import check_tflite

    with tempfile.TemporaryDirectory(prefix="tflite-check-") as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(data)
        floats = check_tflite(path).float_tensors
    if floats:
        raise TfliteExportError(f"the int8 TFLite model has {len(floats)} float tensors between input and output "
                                f"(e.g. {floats[:3]}); it would not be fully integer")


def _tflite_io(path: Path) -> tuple[dict, dict]:
    """Input/output specs exactly as the runtime's TFLite backend names them (signature names)."""
    from runtime.backends.tflite_backend import TfliteBackend

    backend = TfliteBackend(path, 1)
    (inp,) = backend.input_details()
    outs = {o.name: o for o in backend.output_details()}
    if inp.name != INPUT_NAME or sorted(outs) != sorted(OUTPUT_NAMES):
        raise TfliteExportError(f"TFLite signature is {inp.name!r} -> {sorted(outs)}, expected {INPUT_NAME!r} -> "
                                f"{sorted(OUTPUT_NAMES)}")
    input_spec = tensor_spec(inp.name, inp.shape, inp.dtype, "nhwc", inp.quant)
    return input_spec, {n: tensor_spec(n, outs[n].shape, outs[n].dtype, quantization=outs[n].quant)
                        for n in OUTPUT_NAMES}


def export_tflite(onnx_path: str | Path, config: ModelConfig, out_path: str | Path, precision: str = "fp32",
                  checkpoint: str | None = None, checkpoint_sha256: str | None = None,
                  saved_model: str | Path | None = None, calib: CalibrationSet | None = None,
                  io_dtype: str = "int8", quantization: dict[str, Any] | None = None,
                  calib_method: str = "percentile", learned: LearnedRanges | None = None,
                  stem: FoldedStem | None = None, weights: Sequence[LearnedConv] = ()) -> Artifact:
    """Convert the FP32 ONNX to ``out_path`` (+ sidecar); pass ``saved_model`` to reuse one onnx2tf run.

    int8 precisions need ``calib`` (ranges by ``calib_method``; ``learned`` and ``weights``: QAT's ranges and weight
    codes, where found; ``stem``: the pixel-input form's folded first convolution, refolded for its quantized
    weights);
    ``quantization`` (how it was quantized) goes into the manifest, with what QAT ranges and weights were carried.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out_path.parent, f"{out_path.stem}.tflite")
    try:
        saved = Path(saved_model) if saved_model else onnx_to_saved_model(onnx_path, tmp / "onnx2tf")
        extremes = [frame[None] for frame in pixel_extremes(config.preprocess)]
        converted = saved_model_to_tflite(saved, onnx_path, config.input_size, precision, calib, io_dtype,
                                          calib_method, extremes, learned, stem, weights,
                                          grid=input_range(config.preprocess))
        data = converted.data
        if converted.transfer is not None:
            t = converted.transfer
            log.info(f"QAT ranges carried into {t.carried} of {t.recorded} TFLite activation tensors "
                     f"({t.used} of {t.learned} QAT ranges, worst match rel {t.worst_rtol:.1e})")
            quantization = {**(quantization or {}), "ranges": t.describe(calib_method),
                            "ranges_carried": asdict(t)}
        if converted.weights is not None:
            w = converted.weights
            log.info(f"QAT weight codes carried into {w.carried} of {w.convolutions} TFLite convolutions "
                     f"(worst match rel {w.worst_rtol:.1e})")
            quantization = {**(quantization or {}), "weights": w.describe(), "weights_carried": asdict(w)}
        tmp_file = tmp / out_path.name
        tmp_file.write_bytes(data)
        input_spec, outputs = _tflite_io(tmp_file)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    manifest = build_manifest(config, target="tflite", precision=precision, artifact_file=out_path.name,
                              input_spec=input_spec, outputs=outputs, checkpoint=checkpoint,
                              checkpoint_sha256=checkpoint_sha256,
                              extra_artifact={"quantization": quantization} if quantization else None)
    return publish(out_path, data, manifest, "tflite", precision)


def export(ctx: ExportContext, precision: str) -> Artifact:
    """The TFLite of ``precision`` from onnx2tf's SavedModel of the FP32 ONNX; int8 fully integer, calibrated on the
    recipe's set; QAT's from its float twin with the ranges QAT learned (:mod:`convert.qat_model`)."""
    path = ctx.path(precision, ".tflite")
    if precision in ("fp32", "fp16"):
        log.info(f"converting tflite {precision}")
        return export_tflite(ctx.fp32_onnx(), ctx.config, path, precision, saved_model=ctx.saved_model(),
                             **ctx.source)
    recipe = ctx.recipe()
    method = recipe.methods["tflite"]
    if precision == "int8":
        log.info(f"converting tflite full-integer int8 ({method}, {recipe.io_dtype} I/O, {recipe.input_form} in)")
        source = ctx.int8_source()
        return export_tflite(ctx.int8_onnx(), source.config, path, "int8", saved_model=ctx.int8_saved_model(),
                             calib=source.calib, io_dtype=recipe.io_dtype,
                             quantization=recipe.describe("tflite", io_dtype=recipe.io_dtype), calib_method=method,
                             stem=source.stem, **ctx.source)
    qat = ctx.qat_model()
    if qat.twin is None:
        raise TfliteExportError("the QAT step kept no float model for TFLite (the export's targets did not list it)")
    log.info(f"QAT: TFLite with QAT's weight codes and ranges ({method} where QAT had none)")
    with tempfile.TemporaryDirectory(dir=ctx.work, prefix="qat-tflite-") as tmp:
        float_onnx = Path(tmp) / f"{ctx.base}-qat-float.onnx"
        onnx.save(fp32_model(qat.twin.model, ctx.config.input_size), str(float_onnx))
        saved = onnx_to_saved_model(float_onnx, Path(tmp) / "onnx2tf")
        return export_tflite(float_onnx, ctx.config, path, "int8-qat", saved_model=saved, calib=recipe.calib,
                             io_dtype=recipe.io_dtype, calib_method=method, quantization=qat.carried(recipe),
                             learned=qat.twin.ranges, weights=qdq_convolutions(qat.qdq), **ctx.source)


TARGET = TargetSpec("tflite", ".tflite", ("fp32", "fp16", "int8", "int8-qat"), export)
