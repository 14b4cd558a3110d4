"""Which Android TFLite form keeps parity: TFLite's detection op in the graph (4 outputs, what ``ANDROID=1``
exports) or the 2-output "without NMS" form (raw box encodings and class logits, with the anchors and decoding
options in the detector metadata, decoded by MediaPipe's own calculators) -> ``results/android-forms.{json,md}``.

``python -m benchmarks.android_forms --ckpt models/default-d0.pt --android X-fp32-android.tflite --onnx
X-fp32.onnx``. The 2-output file is built here from the same fp32 ONNX (onnx2tf, then the same pixel input and
normalisation as the 4-output file; boxes ``ty, tx, th, tw`` as MediaPipe's YXHW reads them; unit scales,
exponential sizes, sigmoid scores; the runtime's anchors as the metadata's fixed anchors). Both files run in
MediaPipe's ObjectDetector on the same letterboxed frames at the deployment threshold, and each is matched with
the runtime's detections on the 4-output file, which its gate holds to the FP32 model. fp32 only: the question is
the form's decoding and NMS, not quantization. The 2-output file is a measurement, not an artifact: it has no
manifest and is not kept.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.android_engines import EngineTally  # noqa: E402
from convert.targets.android import center_size_anchors, order_outputs  # noqa: E402
from efficientdet.model.config import ModelConfig  # noqa: E402

RAW_OUTPUTS = ("location", "score")  # the order MediaPipe's LOCATION_SCORE metadata declares


def two_output_tflite(onnx_path: Path, config: ModelConfig, work: Path) -> bytes:
    """The fp32 2-output form with MediaPipe's "without NMS" detector metadata."""
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_info, metadata_writer, object_detector

    from convert.targets.tflite import identify_outputs, onnx_to_saved_model
    from convert.tensorflow_import import import_tensorflow
    from efficientdet.model.detector import INPUT_NAME

    tf = import_tensorflow()
    loaded = tf.saved_model.load(str(onnx_to_saved_model(onnx_path, work / "onnx2tf")))
    signature = loaded.signatures["serving_default"]
    in_key, mapping = identify_outputs(signature, onnx_path, config.input_size)
    size = config.input_size
    mean = tf.constant(np.asarray(config.preprocess.mean, np.float32).reshape(1, 1, 1, 3))
    inv_std = tf.constant((1.0 / np.asarray(config.preprocess.std, np.float64)).astype(np.float32).reshape(1, 1, 1, 3))

    @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name=INPUT_NAME)])
    def serve(pixels: Any) -> dict[str, Any]:
        out = signature(**{in_key: (pixels - mean) * inv_std})
        location = tf.gather(out[mapping["box_regression"]], [1, 0, 3, 2], axis=2)  # (dx,dy,dw,dh) -> YXHW
        return {"location": location, "score": out[mapping["logits"]]}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], loaded)
    data = order_outputs(converter.convert(), RAW_OUTPUTS)
    anchors = center_size_anchors(config)  # (y, x, h, w), normalised
    schema = object_detector.FixedAnchorsSchema(
        [object_detector.FixedAnchor(x_center=float(a[1]), y_center=float(a[0]), width=float(a[3]), height=float(a[2]))
         for a in anchors])
    decoding = object_detector.TensorsDecodingOptions(
        num_classes=config.num_classes, num_boxes=len(anchors), num_coords=4, keypoint_coord_offset=0,
        num_keypoints=0, num_values_per_keypoint=2, x_scale=1.0, y_scale=1.0, w_scale=1.0, h_scale=1.0,
        apply_exponential_on_box_size=True, sigmoid_score=True)
    writer = object_detector.MetadataWriter.create_for_models_without_nms(
        bytearray(data), [0.0], [1.0], metadata_writer.Labels().add(list(config.class_names)),
        object_detector.SsdAnchorsOptions(fixed_anchors_schema=schema), decoding,
        output_tensors_order=metadata_info.RawDetectionOutputTensorsOrder.LOCATION_SCORE)
    model, _ = writer.populate()
    return bytes(model)


def compare_forms(android: Path, two_output: Path, images: list[str]) -> dict[str, Any]:
    """MediaPipe on each form vs the runtime on the 4-output file, per image shape, at the deployment threshold."""
    from mediapipe.tasks import python as mp_tasks
    from mediapipe.tasks.python import vision

    from runtime.detector import Detector
    from runtime.mediapipe_engine import MediapipeDetector, as_detections
    from runtime.postprocess import Detections
    from runtime.preprocess import read_image

    runtime = Detector(android)
    spec = runtime.post_spec
    four = MediapipeDetector(android)
    two = vision.ObjectDetector.create_from_options(vision.ObjectDetectorOptions(
        base_options=mp_tasks.BaseOptions(model_asset_path=str(two_output)),
        score_threshold=float(spec.score_threshold), max_results=spec.max_detections))
    import mediapipe as mp

    tallies = {f"{form} {shape}": EngineTally() for form in ("4-output", "2-output")
               for shape in ("square", "non-square")}
    try:
        for name in images:
            image = read_image(name)
            shape = "square" if image.shape[0] == image.shape[1] else "non-square"
            frame, box = four.letterbox(image)
            rt = runtime(image)
            rt_dets = Detections(rt.boxes, rt.scores, rt.class_ids)
            tallies[f"4-output {shape}"].add(rt_dets, four.detect_frame(frame).to_original(box), spec)
            found = two.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame))).detections
            tallies[f"2-output {shape}"].add(
                rt_dets, as_detections(found, runtime.class_names, frame.shape[:2]).to_original(box), spec)
    finally:
        four.close()
        two.close()
    return {k: v.to_dict() for k, v in tallies.items() if v.images}


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        "# Android TFLite forms: detection op in the graph vs the 2-output form decoded by MediaPipe",
        "",
        f"Produced by `{doc['command']}`. MediaPipe {doc['mediapipe']}, {doc['machine']}. {doc['images']} images "
        f"of {doc['data']}, fp32, letterboxed by the app; each form run in MediaPipe's ObjectDetector at score "
        f"threshold {doc['score_threshold']} and matched one-to-one (class, IoU >= 0.5) with the runtime's "
        "detections on the 4-output file (which its gate holds to the FP32 model).",
        "",
        "| form | images | runtime dets | MediaPipe dets | runtime in MediaPipe | MediaPipe in runtime "
        "| score diff mean / max | IoU mean / min |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, m in doc["forms"].items():
        lines.append(f"| {key} | {m['images']} | {m['runtime_detections']} | {m['engine_detections']} | "
                     f"{m['runtime_in_engine']:.1%} | {m['engine_in_runtime']:.1%} | "
                     f"{m['score_abs_diff_mean']:.4f} / {m['score_abs_diff_max']:.4f} | "
                     f"{m['matched_iou_mean']:.3f} / {m['matched_iou_min']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.android_forms", description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", required=True, help="the checkpoint the files were exported from")
    p.add_argument("--android", required=True, help="its fp32 -android.tflite (the 4-output form)")
    p.add_argument("--onnx", required=True, help="its fp32 .onnx (the 2-output form is built from it)")
    p.add_argument("--data", default="data/synthetic")
    p.add_argument("--split", default="val")
    p.add_argument("--max-images", type=int, default=120)
    p.add_argument("--out", default=str(ROOT / "results/android-forms"), help="results path without suffix")
    args = p.parse_args(argv)
    from efficientdet.checkpoint import load_checkpoint
    from efficientdet.data import load_dataset
    from efficientdet.data.synthetic import resolve_dataset
    from runtime.fileio import atomic_write_bytes, atomic_write_json
    from runtime.manifest import load_manifest
    from runtime.mediapipe_engine import mediapipe_version

    manifest = load_manifest(args.android)
    config = ModelConfig.from_dict(load_checkpoint(args.ckpt)["config"])
    config = config.replace(input_size=int(manifest["preprocess"]["input_size"]))
    images = [r.path for r in load_dataset(resolve_dataset(args.data), args.split).records[: args.max_images]]
    with tempfile.TemporaryDirectory(prefix="android-forms-") as tmp:
        two_output = Path(tmp) / "two-output.tflite"
        print("[android-forms] building the 2-output form (onnx2tf, converter, metadata)", file=sys.stderr, flush=True)
        two_output.write_bytes(two_output_tflite(Path(args.onnx), config, Path(tmp)))
        print(f"[android-forms] MediaPipe on both forms, {len(images)} images", file=sys.stderr, flush=True)
        forms = compare_forms(Path(args.android), two_output, images)
    doc = {"command": "python -m benchmarks.android_forms " + " ".join(argv if argv is not None else sys.argv[1:]),
           "mediapipe": mediapipe_version(), "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
           "data": f"{args.data} [{args.split}]", "images": len(images),
           "score_threshold": float(manifest["postprocess"]["score_threshold"]), "forms": forms}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out.with_suffix(".json"), doc)
    atomic_write_bytes(out.with_suffix(".md"), markdown(doc).encode())
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
