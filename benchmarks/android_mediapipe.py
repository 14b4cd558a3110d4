"""`make android-check`: the Android TFLite in MediaPipe's ObjectDetector, the engine Android apps run, against
this project's runtime on the same file and images -> ``results/android-mediapipe.{json,md}``.

MediaPipe Tasks' Python ``ObjectDetector`` is the same C++ graph (image-to-tensor, TFLite inference, the
detection op's outputs to detections) that the Android and iOS libraries wrap, so what it returns here is
what a phone returns, apart from the CPU's arithmetic. Both engines run the same ``-android.tflite`` at the
same score threshold; detections are matched one-to-one (same class, IoU >= 0.5) both ways.

Pre-processing is the one real difference, measured in three modes:

* ``letterboxed``: the app letterboxes the frame to the model's input size itself (the runtime's
  ``preprocess`` in the ``-android`` manifest yields exactly those RGB pixels) and maps boxes back. Both
  engines then see the same tensor: this mode measures the engines (model loading, metadata, output order,
  box and label conventions, the detection op), and is the one held to >= 95 % both ways.
* ``padded``: the app pads each frame to a square, bottom/right, with the manifest's pad colour, before
  ``detect`` (the lines in docs/ANDROID.md). MediaPipe then resizes square to square, which is the
  runtime's letterbox; only the resize kernels differ (OpenCV ``resize`` vs MediaPipe's ``warpAffine``).
* ``as-is``: the frame goes to MediaPipe unchanged. MediaPipe stretches it to the square input (it does not
  keep the aspect ratio), so a non-square frame shows the model a shape it was not trained on.

Misses are split into those whose counterpart exists in the other engine just below the threshold (a score
straddling it) and the rest, so a difference that comes from the engine is measured, not hidden.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from convert.parity import match_pairs, pair_iou  # noqa: E402
from runtime.postprocess import Detections, at_threshold  # noqa: E402
from runtime.preprocess import read_image  # noqa: E402

if TYPE_CHECKING:
    from runtime.detector import Detector

MODES = ("letterboxed", "padded", "as-is")
MATCH_IOU = 0.5
MIN_MATCH = 0.95  # the share of detections each engine must find in the other's, in the letterboxed mode


def mediapipe_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("mediapipe")


def pad_to_square(image: np.ndarray, color: tuple[float, float, float]) -> np.ndarray:
    """``image`` (HxWx3, BGR) padded bottom/right to a square with ``color`` (RGB), as docs/ANDROID.md's app does."""
    h, w = image.shape[:2]
    size = max(h, w)
    out = np.empty((size, size, 3), np.uint8)
    out[:] = np.round(np.asarray(color[::-1], np.float64)).astype(np.uint8)
    out[:h, :w] = image
    return out


@dataclass
class MediapipeEngine:
    """MediaPipe Tasks' ObjectDetector on one model file, with detections as the runtime's :class:`Detections`."""

    path: Path
    class_names: list[str]
    score_threshold: float

    def __post_init__(self) -> None:
        from mediapipe.tasks import python as mp_tasks
        from mediapipe.tasks.python import vision

        options = vision.ObjectDetectorOptions(base_options=mp_tasks.BaseOptions(model_asset_path=str(self.path)),
                                               score_threshold=self.score_threshold, max_results=-1)
        self._detector = vision.ObjectDetector.create_from_options(options)

    def detect(self, bgr: np.ndarray) -> Detections:
        """Detections in ``bgr``'s pixels, sorted by score, clipped to the image."""
        import mediapipe as mp

        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        found = self._detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)).detections
        if not found:
            return Detections.empty()
        h, w = bgr.shape[:2]
        # MediaPipe merges the op's detections that share a box (one anchor, several classes) into one
        # Detection with several categories: each category is a detection of its own.
        rows = [(d.bounding_box, c) for d in found for c in d.categories]
        boxes = np.array([[b.origin_x, b.origin_y, b.origin_x + b.width, b.origin_y + b.height] for b, _ in rows],
                         np.float32)
        boxes = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)
        scores = np.array([c.score for _, c in rows], np.float32)
        classes = np.array([self.class_names.index(c.category_name) for _, c in rows], np.int64)
        order = np.argsort(-scores, kind="stable")
        return Detections(boxes[order], scores[order], classes[order])

    def close(self) -> None:
        self._detector.close()


class MediapipeTimed:
    """MediaPipe's ObjectDetector as a bench row (``runtime.bench.Timed``): the app-side letterbox (the
    runtime's pre-processing of the ``-android`` manifest, what docs/ANDROID.md's Kotlin does), MediaPipe's
    ``detect`` (its own tensor conversion, inference and detection decoding), then boxes back to the frame."""

    def __init__(self, detector: Any) -> None:
        self.detector = detector
        self.engine = MediapipeEngine(detector.model_path, detector.class_names,
                                      float(detector.post_spec["score_threshold"]))

    def timed(self, image: np.ndarray) -> tuple[Detections, dict[str, float]]:
        t0 = time.perf_counter()
        x, box = self.detector.preprocess_image(image)
        frame = np.ascontiguousarray(np.asarray(x[0] if x.dtype == np.uint8 else np.round(x[0]), np.uint8)[:, :, ::-1])
        t1 = time.perf_counter()
        found = self.engine.detect(frame)
        t2 = time.perf_counter()
        dets = box_to_image(found, box)
        t3 = time.perf_counter()
        return dets, {"pre_ms": (t1 - t0) * 1e3, "infer_ms": (t2 - t1) * 1e3, "post_ms": (t3 - t2) * 1e3}


@dataclass
class _Tally:
    images: int = 0
    runtime: int = 0
    mediapipe: int = 0
    matched: int = 0
    runtime_near: int = 0  # runtime detections unmatched at the threshold, found by MediaPipe just below it
    mediapipe_near: int = 0
    score_diffs: list[float] | None = None
    ious: list[float] | None = None

    def add(self, rt_low: Detections, mp_low: Detections, spec: dict[str, Any]) -> None:
        rt, mp = at_threshold(rt_low, spec), at_threshold(mp_low, spec)
        pairs = match_pairs(rt, mp, MATCH_IOU)
        self.images += 1
        self.runtime += len(rt)
        self.mediapipe += len(mp)
        self.matched += len(pairs)
        if pairs:
            i, j = (np.array(v) for v in zip(*pairs))
            self.score_diffs = (self.score_diffs or []) + np.abs(rt.scores[i] - mp.scores[j]).tolist()
            self.ious = (self.ious or []) + pair_iou(rt.boxes[i], mp.boxes[j]).tolist()
        self.runtime_near += _found_below(rt, mp_low, pairs, 0)
        self.mediapipe_near += _found_below(mp, rt_low, pairs, 1)

    def to_dict(self) -> dict[str, Any]:
        diffs, ious = self.score_diffs or [0.0], self.ious or [1.0]
        return {
            "images": self.images, "runtime_detections": self.runtime, "mediapipe_detections": self.mediapipe,
            "matched": self.matched,
            "runtime_in_mediapipe": self.matched / self.runtime if self.runtime else 1.0,
            "mediapipe_in_runtime": self.matched / self.mediapipe if self.mediapipe else 1.0,
            "unmatched_runtime_straddling_threshold": self.runtime_near,
            "unmatched_mediapipe_straddling_threshold": self.mediapipe_near,
            "score_abs_diff_mean": float(np.mean(diffs)), "score_abs_diff_max": float(np.max(diffs)),
            "matched_iou_mean": float(np.mean(ious)), "matched_iou_min": float(np.min(ious)),
        }


def _found_below(side: Detections, other_low: Detections, pairs: list[tuple[int, int]], pos: int) -> int:
    """How many of ``side``'s unmatched detections (``pos``: its place in ``pairs``) the other engine has below
    the threshold (``other_low``: its detections down to the graph's own threshold)."""
    matched = {p[pos] for p in pairs}
    rest = [k for k in range(len(side)) if k not in matched]
    if not rest:
        return 0
    sub = Detections(side.boxes[rest], side.scores[rest], side.class_ids[rest])
    return len(match_pairs(sub, other_low, MATCH_IOU))


def open_android(path: str | Path) -> Detector:
    """The runtime's detector on ``path``; ValueError when it is not an ``-android.tflite`` (checked before any data
    is read, so a wrong file is refused at once)."""
    import warnings

    from runtime.detector import Detector, UngatedArtifactWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UngatedArtifactWarning)
        detector = Detector(path)
    if not detector.in_graph_nms:
        raise ValueError(f"{path} is not an Android TFLite (no detection op in its graph); export one with "
                         "`make export TARGET=tflite ANDROID=1`")
    return detector


def compare(path: str | Path, images: list[str], detector: Detector | None = None) -> dict[str, Any]:
    """Runtime vs MediaPipe on ``path`` (an ``-android.tflite``) over ``images``, per mode and image shape."""
    detector = detector or open_android(path)
    spec = detector.post_spec
    low = dict(spec, score_threshold=float(detector.manifest["postprocess"]["in_graph"]["score_threshold"]))
    engine = MediapipeEngine(Path(path), detector.class_names, low["score_threshold"])
    pad = tuple(detector.manifest["preprocess"].get("pad_color") or (0.0, 0.0, 0.0))
    tallies = {f"{mode} {shape}": _Tally() for mode in MODES for shape in ("square", "non-square")}
    ms: dict[str, list[float]] = {"runtime": [], "mediapipe": []}
    try:
        for name in images:
            image = read_image(name)
            h, w = image.shape[:2]
            shape = "square" if h == w else "non-square"
            t0 = time.perf_counter()
            x, box = detector.preprocess_image(image)  # RGB pixels, uint8 for int8 (scale 1, zero point 0)
            rt_low = box_to_image(detector.infer_detections(x, low), box)
            ms["runtime"].append((time.perf_counter() - t0) * 1e3)
            frame_pixels = np.asarray(x[0] if detector.input_spec["dtype"] == "uint8" else np.round(x[0]), np.uint8)
            x = frame_pixels[None]
            for mode in MODES:
                if mode == "as-is" and shape == "square":
                    continue  # identical to padded
                if mode == "letterboxed":
                    t0 = time.perf_counter()
                    mp_low = box_to_image(engine.detect(np.ascontiguousarray(x[0, :, :, ::-1])), box)
                    ms["mediapipe"].append((time.perf_counter() - t0) * 1e3)
                else:
                    frame = pad_to_square(image, pad) if mode == "padded" else image
                    mp_low = engine.detect(frame)
                    if mode == "padded":
                        mp_low = clip_to(mp_low, w, h)
                tallies[f"{mode} {shape}"].add(rt_low, mp_low, spec)
    finally:
        engine.close()
    tallies["as-is square"] = tallies["padded square"]
    return {
        "artifact": str(path), "precision": detector.manifest["artifact"]["precision"],
        "sha256": detector.manifest["artifact"]["sha256"], "score_threshold": spec["score_threshold"],
        "modes": {k: v.to_dict() for k, v in tallies.items() if v.images},
        "latency_ms_median": {k: statistics.median(v) for k, v in ms.items() if v},
    }


def box_to_image(dets: Detections, box: Any) -> Detections:
    return Detections(box.to_original(dets.boxes), dets.scores, dets.class_ids)


def clip_to(dets: Detections, w: int, h: int) -> Detections:
    """Detections on the padded frame, clipped to the original image (padding is bottom/right: same origin)."""
    boxes = np.clip(dets.boxes, 0, [w, h, w, h]).astype(np.float32)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return Detections(boxes[keep], dets.scores[keep], dets.class_ids[keep])


def engine_match(result: dict[str, Any]) -> float:
    """The worst of both directions over both image shapes in the letterboxed mode (held to >= 95 %)."""
    rows = [v for k, v in result["modes"].items() if k.startswith("letterboxed")]
    return min(min(r["runtime_in_mediapipe"], r["mediapipe_in_runtime"]) for r in rows)


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        "# MediaPipe ObjectDetector vs the project's runtime on the Android TFLite",
        "",
        f"Produced by `{doc['command']}`. MediaPipe {doc['mediapipe']}, {doc['machine']}. "
        f"{doc['images']} images of {doc['data']}; same file, score threshold {doc['score_threshold']}, "
        f"matched one-to-one by class and IoU >= {MATCH_IOU}.",
        "",
        "- letterboxed: the app letterboxes the frame to the input size itself (docs/ANDROID.md), so both engines see "
        "the same tensor; padded: the app only pads the frame to a square (bottom/right, the manifest's pad colour) "
        "and MediaPipe resizes it; as-is: the frame unchanged, which MediaPipe stretches to the square input.",
        "- straddling: unmatched detections whose counterpart the other engine has just below the threshold.",
        "",
        "| precision | mode | images | runtime dets | MediaPipe dets | runtime in MP | MP in runtime "
        "| straddling (rt / MP) | score diff mean / max | IoU mean / min |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["artifacts"]:
        for mode, m in r["modes"].items():
            lines.append(
                f"| {r['precision']} | {mode} | {m['images']} | {m['runtime_detections']} | "
                f"{m['mediapipe_detections']} | {m['runtime_in_mediapipe']:.1%} | {m['mediapipe_in_runtime']:.1%} | "
                f"{m['unmatched_runtime_straddling_threshold']} / {m['unmatched_mediapipe_straddling_threshold']} | "
                f"{m['score_abs_diff_mean']:.4f} / {m['score_abs_diff_max']:.4f} | "
                f"{m['matched_iou_mean']:.3f} / {m['matched_iou_min']:.3f} |")
    lines += ["", "Latency, median per image on this machine (runtime: pre-processing + graph; MediaPipe: `detect` on "
              "the letterboxed frame):", "", "| precision | runtime (ms) | MediaPipe (ms) |", "|---|---:|---:|"]
    for r in doc["artifacts"]:
        lat = r["latency_ms_median"]
        lines.append(f"| {r['precision']} | {lat.get('runtime', float('nan')):.1f} | "
                     f"{lat.get('mediapipe', float('nan')):.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.android_mediapipe", description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+", help="-android.tflite files (make export TARGET=tflite ANDROID=1)")
    p.add_argument("--data", default="data/synthetic", help="dataset whose images are compared")
    p.add_argument("--split", default="val")
    p.add_argument("--max-images", type=int, default=120)
    p.add_argument("--out", default=str(ROOT / "results/android-mediapipe"), help="results path without suffix")
    args = p.parse_args(argv)
    from efficientdet.data import load_dataset
    from efficientdet.data.records import DatasetError
    from efficientdet.data.synthetic import resolve_dataset
    from runtime.fileio import atomic_write_bytes, atomic_write_json
    from runtime.manifest import ManifestError

    detectors = {}
    for model in args.models:
        try:
            detectors[model] = open_android(model)
        except (ManifestError, ValueError, OSError) as e:
            print(f"error: {model}: {e}", file=sys.stderr)
            return 2
    try:
        dataset = load_dataset(resolve_dataset(args.data), args.split)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    images = [r.path for r in dataset.records[: args.max_images]]
    results = []
    for model, detector in detectors.items():
        print(f"[android-check] {model}: MediaPipe {mediapipe_version()} vs runtime on {len(images)} images",
              file=sys.stderr, flush=True)
        results.append(compare(model, images, detector))
    doc = {"command": "python -m benchmarks.android_mediapipe " + " ".join(argv if argv is not None else sys.argv[1:]),
           "mediapipe": mediapipe_version(), "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
           "data": f"{args.data} [{args.split}]", "images": len(images),
           "score_threshold": results[0]["score_threshold"], "artifacts": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out.with_suffix(".json"), doc)
    atomic_write_bytes(out.with_suffix(".md"), markdown(doc).encode())
    print(markdown(doc))
    worst = min(engine_match(r) for r in results)
    if worst < MIN_MATCH:
        print(f"error: MediaPipe and the runtime matched only {worst:.1%} of each other's detections in the "
              f"letterboxed mode (< {MIN_MATCH:.0%}); see {out.with_suffix('.md')}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
