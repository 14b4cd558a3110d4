"""The TFLite that Android's detector APIs load as is: MediaPipe Tasks ``ObjectDetector`` (and the TFLite Task
Library's), with no app-side pre- or post-processing code.

What those APIs need and how this file meets it (measured in ``results/android-mediapipe.md``):

* **Pixels in.** MediaPipe normalises the input with one mean/std for all channels (it refuses per-channel
  values) and feeds a uint8 input tensor raw 0-255 pixels. The graph therefore takes RGB pixels
  (float32 0-255, or uint8 for int8) and normalises per channel itself; the metadata says mean 0, std 1.
  For int8 the input is uint8 with scale 1 and zero point 0, so every pixel value is representable: the
  input quantizer cannot clip, whatever the scene (the regular int8 files calibrate the normalised
  image's range, which clips darker scenes). The logits' int8 range starts at :data:`SCORE_FLOOR`, so
  the scores near the app's threshold are finely quantized: without it the default D0's scores stepped by
  0.02 there and the file returned 5 % more detections than the FP32 model (its gate failed, 89.98 %).
* **Detections out, in float.** The post-processing is TFLite's own ``TFLite_Detection_PostProcess`` op
  (the 4-output form: boxes, classes, scores, count), which Android's APIs run natively. It decodes
  exactly the project's box coding (``delta_xywh`` with unit scales; only the deltas' order is swapped
  to its ``ty, tx, th, tw``; it lacks the runtime's clamp of absurd size deltas), takes sigmoid scores,
  and runs per-class ("regular") NMS like the runtime.
  Its outputs are float even in an int8 model, which those APIs require.
  Chosen over the 2-output "without NMS" form, whose anchors and decoding live in the metadata, because
  the in-graph op is executed by every TFLite host (the runtime, MediaPipe, the Task Library,
  a plain interpreter), so the parity gate measures the very thing the phone runs; the 2-output form is
  decoded only by MediaPipe's own calculators, which this project's runtime cannot run.
* **Eval-level detections.** The op keeps boxes down to the evaluation score threshold (0.05, at most 100),
  so the same file yields both the mAP the gate measures and, after the app's ``scoreThreshold`` (the
  manifest's 0.3 by default), the deployment detections. Greedy NMS over a lower threshold and then a
  higher cut-off is the same as NMS at the higher threshold.

The metadata (labels, normalisation, tensor descriptions) is written with MediaPipe's own metadata
writer, pinned in ``requirements/lock.txt``: Android reads exactly what it writes.
"""

from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from calib_data import CalibrationSet
from efficientdet.model.config import ModelConfig
from efficientdet.model.detector import INPUT_NAME
from quantize.tflite_int8 import Batches, convert_full_int8
from runtime.anchors import generate_anchors
from runtime.contract import DEFAULT_POSTPROCESS, EVAL_POSTPROCESS, InGraphNms
from runtime.fileio import make_temp_dir
from runtime.manifest import ANDROID_OUTPUTS, IN_GRAPH_NMS
from runtime.postprocess import logit

from ..manifest_writer import Artifact, build_manifest, publish, tensor_spec
from ..pixel_input import pixel_config
from ..tensorflow_import import import_tensorflow
from .spec import TargetSpec
from .tflite import TfliteExportError, identify_outputs

if TYPE_CHECKING:
    from ..context import ExportContext

log = logging.getLogger(__name__)

ANDROID_SUFFIX = "-android.tflite"
PRECISIONS = ("fp32", "int8")
# The op keeps what the evaluation keeps; the app's score threshold cuts deployment detections from it.
IN_GRAPH_SCORE_THRESHOLD = EVAL_POSTPROCESS.score_threshold
IN_GRAPH_MAX_DETECTIONS = EVAL_POSTPROCESS.max_detections
# int8: the logits' range starts at the logit of half the lowest score the op keeps, so the int8 levels go to
# the scores that are kept (quantize.tflite_int8.floor_score_logits); anything lower saturates there, at a
# score of 0.025, still below every threshold.
SCORE_FLOOR = logit(IN_GRAPH_SCORE_THRESHOLD / 2)


def android_path(out_dir: str | Path, base: str, precision: str) -> Path:
    """``<base>-<precision>-android.tflite``: the suffix Android users look for."""
    return Path(out_dir) / f"{base}-{precision}{ANDROID_SUFFIX}"


def postprocess_op_signature(num_classes: int, iou_threshold: float) -> str:
    """The ``experimental_implements`` text the TFLite converter turns into ``TFLite_Detection_PostProcess``.

    Unit scales: the project's coding has no variances. ``use_regular_nms``: per-class NMS, as the runtime
    does (the "fast" variant suppresses across classes).
    """
    attrs = {
        "max_detections": ("i", IN_GRAPH_MAX_DETECTIONS),
        "max_classes_per_detection": ("i", 1),
        "detections_per_class": ("i", IN_GRAPH_MAX_DETECTIONS),
        "use_regular_nms": ("b", "true"),
        "nms_score_threshold": ("f", IN_GRAPH_SCORE_THRESHOLD),
        "nms_iou_threshold": ("f", float(iou_threshold)),
        "num_classes": ("i", int(num_classes)),
        "y_scale": ("f", 1.0),
        "x_scale": ("f", 1.0),
        "h_scale": ("f", 1.0),
        "w_scale": ("f", 1.0),
    }
    parts = [f'name: "{IN_GRAPH_NMS}"']
    parts += [f'attr {{ key: "{k}" value {{ {t}: {v} }} }}' for k, (t, v) in attrs.items()]
    return " ".join(parts)


def center_size_anchors(config: ModelConfig) -> np.ndarray:
    """The runtime's anchors as ``[A, 4]`` (y_center, x_center, height, width), normalised by the input size."""
    xyxy = generate_anchors(config.anchor_spec).astype(np.float64)
    size = float(config.input_size)
    w, h = xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]
    out = np.stack([xyxy[:, 1] + 0.5 * h, xyxy[:, 0] + 0.5 * w, h, w], axis=1) / size
    return out.astype(np.float32)


def _graph(tf: Any, signature: Any, in_key: str, mapping: dict[str, str], config: ModelConfig,
           iou_threshold: float) -> Any:
    """A concrete function: RGB pixels ``[1,S,S,3]`` -> the op's four outputs under the signature names
    (:func:`order_outputs` then puts them in the order MediaPipe reads)."""
    size = config.input_size
    mean = tf.constant(np.asarray(config.preprocess.mean, np.float32).reshape(1, 1, 1, 3))
    inv_std = tf.constant((1.0 / np.asarray(config.preprocess.std, np.float64)).astype(np.float32).reshape(1, 1, 1, 3))
    anchors = tf.constant(center_size_anchors(config))
    num_classes = config.num_classes

    @tf.function(experimental_implements=postprocess_op_signature(num_classes, iou_threshold))
    def detection_postprocess(box_encodings: Any, class_scores: Any, anchor_boxes: Any) -> tuple[Any, ...]:
        # The converter replaces this body by the op; it only fixes the outputs' count and dtype.
        del box_encodings, class_scores, anchor_boxes
        zero = tf.constant(0.0, tf.float32)
        return zero, zero, zero, zero

    @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name=INPUT_NAME)])
    def serve(pixels: Any) -> dict[str, Any]:
        out = signature(**{in_key: (pixels - mean) * inv_std})
        deltas = out[mapping["box_regression"]]  # [1, A, 4] as (dx, dy, dw, dh)
        encodings = tf.gather(deltas, [1, 0, 3, 2], axis=2)  # the op's (ty, tx, th, tw)
        scores = tf.sigmoid(out[mapping["logits"]])
        boxes, classes, probs, count = detection_postprocess(encodings, scores, anchors)
        return dict(zip(ANDROID_OUTPUTS, (boxes, classes, probs, count)))

    return serve.get_concrete_function()


def pixel_calibration(calib: CalibrationSet, config: ModelConfig) -> Batches:
    """The calibration images back in RGB pixels (the set stores them normalised), then one black and one white
    frame so the input range is exactly 0-255 (scale 1, zero point 0 on a uint8 input)."""
    mean = np.asarray(config.preprocess.mean, np.float32)
    std = np.asarray(config.preprocess.std, np.float32)
    size, count = config.input_size, len(calib)

    def make(i: int) -> np.ndarray:
        if i >= count:
            return np.full((1, size, size, 3), 0.0 if i == count else 255.0, np.float32)
        return np.clip(calib.nhwc(i) * std + mean, 0.0, 255.0).astype(np.float32)

    return Batches(make, count + 2)


def android_tflite(saved_model: str | Path, onnx_path: str | Path, config: ModelConfig, precision: str,
                   calib: CalibrationSet | None = None, calib_method: str = "percentile",
                   iou_threshold: float = DEFAULT_POSTPROCESS.iou_threshold) -> bytes:
    """The flatbuffer (outputs in Android's order, no metadata yet): float32 pixels in for fp32; for int8 uint8
    pixels in, every op int8 up to the detection op, calibrated by ``calib_method`` on ``calib``."""
    if precision not in PRECISIONS:
        raise ValueError(f"the Android TFLite is made in {PRECISIONS}, got {precision!r}")
    if precision == "int8" and calib is None:
        raise ValueError("the int8 Android TFLite needs a calibration set")
    tf = import_tensorflow()
    loaded = tf.saved_model.load(str(saved_model))
    signature = loaded.signatures["serving_default"]
    in_key, mapping = identify_outputs(signature, Path(onnx_path), config.input_size)
    concrete = _graph(tf, signature, in_key, mapping, config, iou_threshold)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], loaded)
    converter.allow_custom_ops = True  # the detection op is a custom op that every TFLite runtime ships
    try:
        if precision == "fp32":
            data = converter.convert()
        else:
            frames = [np.full((1, config.input_size, config.input_size, 3), v, np.float32) for v in (0.0, 255.0)]
            data = convert_full_int8(converter, tf, pixel_calibration(calib, config), "uint8", calib_method,
                                     float_outputs=True, score_floor=SCORE_FLOOR, extremes=frames).data
    except Exception as e:  # the converter raises bare Exceptions carrying the MLIR diagnostics
        raise TfliteExportError(f"the Android TFLite ({precision}) did not convert: {e}") from e
    return order_outputs(data)


def order_outputs(data: bytes, names: tuple[str, ...] = ANDROID_OUTPUTS) -> bytes:
    """Put the subgraph's outputs in the order of ``names`` (default: boxes, classes, scores, count).

    Android's APIs take the outputs by position (their metadata names them in that order), while the
    converter emits the count first. Only the output list is permuted; tensors and the signature stay.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    (subgraph,) = model.subgraphs
    (signature,) = model.signatureDefs
    by_name = {o.name.decode(): o.tensorIndex for o in signature.outputs}
    if sorted(by_name) != sorted(names):
        raise TfliteExportError(f"the Android TFLite's signature outputs are {sorted(by_name)}, expected "
                                f"{list(names)}")
    subgraph.outputs = np.asarray([by_name[n] for n in names], np.int32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def with_mediapipe_metadata(data: bytes, class_names: list[str]) -> bytes:
    """``data`` with the TFLite metadata MediaPipe and the Task Library read: labels, input normalisation
    (mean 0, std 1: the graph takes pixels), and the four outputs' roles."""
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer, object_detector

    writer = object_detector.MetadataWriter.create_for_models_with_nms(
        bytearray(data), input_norm_mean=[0.0], input_norm_std=[1.0],
        labels=metadata_writer.Labels().add(list(class_names)))
    model, _ = writer.populate()
    return fixed_zip_times(bytes(model))


ZIP_EPOCH = (0, (1 << 5) | 1)  # DOS time 00:00:00, date 1980-01-01: the earliest a ZIP entry can carry


def fixed_zip_times(data: bytes) -> bytes:
    """``data`` with every entry of the ZIP archive appended to it (the metadata's associated files, e.g.
    ``labels.txt``) dated :data:`ZIP_EPOCH` instead of the moment of export, so one checkpoint exports to one
    sha256: two exports of the same model differed in these 4 bytes only (session 11)."""
    import struct
    import zipfile

    out = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        entries = archive.infolist()
        directory = archive.start_dir  # type: ignore[attr-defined]
    for entry in entries:
        struct.pack_into("<HH", out, entry.header_offset + 10, *ZIP_EPOCH)  # local file header
    for _ in entries:
        if out[directory:directory + 4] != b"PK\x01\x02":
            raise TfliteExportError("the metadata's ZIP central directory is not where its end record says")
        struct.pack_into("<HH", out, directory + 12, *ZIP_EPOCH)
        name, extra, comment = struct.unpack_from("<HHH", out, directory + 28)
        directory += 46 + name + extra + comment
    return bytes(out)


def export_android(saved_model: str | Path, onnx_path: str | Path, config: ModelConfig, out_dir: str | Path,
                   base: str, precision: str, calib: CalibrationSet | None = None,
                   calib_method: str = "percentile", quantization: dict[str, Any] | None = None,
                   checkpoint: str | None = None, checkpoint_sha256: str | None = None) -> Artifact:
    """Write ``<base>-<precision>-android.tflite`` (MediaPipe metadata inside) and its manifest sidecar."""
    from runtime.backends.tflite_backend import TfliteBackend

    out_path = android_path(out_dir, base, precision)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    data = with_mediapipe_metadata(android_tflite(saved_model, onnx_path, config, precision, calib, calib_method),
                                   list(config.class_names) or [str(i) for i in range(config.num_classes)])
    tmp = make_temp_dir(out_path.parent, out_path.name)
    try:
        probe = tmp / out_path.name
        probe.write_bytes(data)
        backend = TfliteBackend(probe, 1)
        (inp,) = backend.input_details()
        outs = {o.name: o for o in backend.output_details()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if inp.name != INPUT_NAME or sorted(outs) != sorted(ANDROID_OUTPUTS):
        raise TfliteExportError(f"the Android TFLite's signature is {inp.name!r} -> {sorted(outs)}, expected "
                                f"{INPUT_NAME!r} -> {list(ANDROID_OUTPUTS)}")
    if precision == "int8" and quantization:  # recorded where it is applied (android_tflite)
        quantization = {**quantization, "score_floor_logit": round(SCORE_FLOOR, 4)}
    post = DEFAULT_POSTPROCESS.replace(in_graph=InGraphNms(IN_GRAPH_NMS, IN_GRAPH_SCORE_THRESHOLD,
                                                           IN_GRAPH_MAX_DETECTIONS))
    manifest = build_manifest(
        pixel_config(config, integer_pad=True), target="tflite", precision=precision, artifact_file=out_path.name,
        input_spec=tensor_spec(inp.name, inp.shape, inp.dtype, "nhwc", inp.quant),
        outputs={n: tensor_spec(n, outs[n].shape, outs[n].dtype) for n in ANDROID_OUTPUTS}, postprocess=post,
        checkpoint=checkpoint, checkpoint_sha256=checkpoint_sha256,
        extra_artifact={"flavour": "android", **({"quantization": quantization} if quantization else {})})
    return publish(out_path, data, manifest, "tflite", precision, flavour="android")


def export(ctx: ExportContext, precision: str) -> Artifact:
    """The Android form of the TFLite (pixels in, the detection op in the graph), from the same SavedModel."""
    from ..int8_recipe import INPUT_PIXELS

    quantized = precision == "int8"
    recipe = ctx.recipe() if quantized else None
    log.info(f"converting tflite {precision} for Android (pixels in, detection op in the graph)")
    return export_android(
        ctx.saved_model(), ctx.fp32_onnx(), ctx.config, ctx.out, ctx.base, precision,
        calib=recipe.calib if recipe else None, calib_method=recipe.methods["tflite"] if recipe else "percentile",
        quantization=recipe.describe("tflite", io_dtype="uint8", input=INPUT_PIXELS) if recipe else None,
        **ctx.source)


TARGET = TargetSpec("tflite", ANDROID_SUFFIX, PRECISIONS, export, flavour="android")
