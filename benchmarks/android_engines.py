"""`make android-check`: the Android TFLite in the engines Android apps run, MediaPipe's ObjectDetector and the
TFLite Task Library's, against this project's runtime on the same file and images
-> ``results/android-mediapipe.{json,md}``.

MediaPipe Tasks' Python ``ObjectDetector`` is the same C++ graph (image-to-tensor, TFLite inference, the
detection op's outputs to detections) that the Android and iOS libraries wrap, so what it returns here is
what a phone returns, apart from the CPU's arithmetic. The Task Library's Python ``ObjectDetector``
(tflite-support) likewise wraps the C++ detector of ``org.tensorflow.lite.task.vision.detector``; it cannot be
imported beside TensorFlow, so it runs in its own environment and process (``benchmarks/task_library_detect.py``,
``make task-library-env``). Every engine runs the same ``-android.tflite`` at the same score threshold;
detections are matched one-to-one (same class, IoU >= 0.5) both ways.

Pre-processing is the one real difference, measured in three modes for MediaPipe (the Task Library in the
first, the one that measures the engine):

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

from convert.matching import match_pairs  # noqa: E402
from runtime.contract import PostprocessSpec  # noqa: E402
from runtime.iou import paired_iou  # noqa: E402
from runtime.mediapipe_engine import MediapipeDetector, mediapipe_version  # noqa: E402
from runtime.postprocess import Detections, at_threshold  # noqa: E402
from runtime.preprocess import read_image  # noqa: E402

if TYPE_CHECKING:
    from runtime.detector import Detector

MODES = ("letterboxed", "padded", "as-is")
MATCH_IOU = 0.5
TASK_LIBRARY_ENV = ROOT / ".venv-task-library"
# The Task Library as an app gets it (the library's own thread count), and with setNumThreads(2): TFLite's
# detection op (per-class NMS) lost detections with two threads in both ai-edge-litert 2.1.0 and the Task
# Library's own TFLite (3 frames: 95, 88, 65 rows instead of 100, 100, 83). The second is measured to show what
# an app risks, and is not held to the engines' match.
TASK_LIBRARY_THREADS = {"task_library": -1, "task_library_2_threads": 2}
HELD_ENGINES = ("mediapipe", "task_library")
MIN_MATCH = 0.95  # the share of detections each engine must find in the other's, in the letterboxed mode


def pad_to_square(image: np.ndarray, color: tuple[float, float, float]) -> np.ndarray:
    """``image`` (HxWx3, BGR) padded bottom/right to a square with ``color`` (RGB), as docs/ANDROID.md's app does."""
    h, w = image.shape[:2]
    size = max(h, w)
    out = np.empty((size, size, 3), np.uint8)
    out[:] = np.round(np.asarray(color[::-1], np.float64)).astype(np.uint8)
    out[:h, :w] = image
    return out


@dataclass
class EngineTally:
    """One engine against the runtime over a set of images: detections each side, matches, near misses."""

    images: int = 0
    runtime: int = 0
    engine: int = 0
    matched: int = 0
    runtime_near: int = 0  # runtime detections unmatched at the threshold, found by the engine just below it
    engine_near: int = 0
    score_diffs: list[float] | None = None
    ious: list[float] | None = None

    def add(self, rt_low: Detections, engine_low: Detections, spec: dict[str, Any]) -> None:
        rt, en = at_threshold(rt_low, spec), at_threshold(engine_low, spec)
        pairs = match_pairs(rt, en, MATCH_IOU)
        self.images += 1
        self.runtime += len(rt)
        self.engine += len(en)
        self.matched += len(pairs)
        if pairs:
            i, j = (np.array(v) for v in zip(*pairs))
            self.score_diffs = (self.score_diffs or []) + np.abs(rt.scores[i] - en.scores[j]).tolist()
            self.ious = (self.ious or []) + paired_iou(rt.boxes[i], en.boxes[j]).tolist()
        self.runtime_near += _found_below(rt, engine_low, pairs, 0)
        self.engine_near += _found_below(en, rt_low, pairs, 1)

    def to_dict(self) -> dict[str, Any]:
        diffs, ious = self.score_diffs or [0.0], self.ious or [1.0]
        return {
            "images": self.images, "runtime_detections": self.runtime, "engine_detections": self.engine,
            "matched": self.matched,
            "runtime_in_engine": self.matched / self.runtime if self.runtime else 1.0,
            "engine_in_runtime": self.matched / self.engine if self.engine else 1.0,
            "unmatched_runtime_straddling_threshold": self.runtime_near,
            "unmatched_engine_straddling_threshold": self.engine_near,
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
    from runtime.manifest import require_in_graph_nms

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UngatedArtifactWarning)
        detector = Detector(path)
    require_in_graph_nms(detector.manifest, path)
    return detector


def compare(path: str | Path, images: list[str], detector: Detector | None = None,
            task_library_python: str | Path | None = None) -> dict[str, Any]:
    """Runtime vs MediaPipe on ``path`` (an ``-android.tflite``) over ``images``, per mode and image shape, and vs
    the Task Library (letterboxed) when ``task_library_python`` names its environment's interpreter."""
    detector = detector or open_android(path)
    spec = detector.post_spec
    low = spec.replace(score_threshold=detector.contract.postprocess.in_graph.score_threshold)
    engine = MediapipeDetector(path, score_threshold=low.score_threshold, max_results=-1)
    pad = detector.contract.preprocess.pad_color or (0.0, 0.0, 0.0)
    tallies = {f"{mode} {shape}": EngineTally() for mode in MODES for shape in ("square", "non-square")}
    ms: dict[str, list[float]] = {"runtime": [], "mediapipe": []}
    letterboxed: list[tuple[np.ndarray, Any, Detections, str]] = []  # frame (RGB), box, runtime detections, shape
    try:
        for name in images:
            image = read_image(name)
            h, w = image.shape[:2]
            shape = "square" if h == w else "non-square"
            t0 = time.perf_counter()
            x, box = detector.preprocess_image(image)  # RGB pixels, uint8 for int8 (scale 1, zero point 0)
            rt_low = detector.infer_detections(x, low).to_original(box)
            ms["runtime"].append((time.perf_counter() - t0) * 1e3)
            frame = np.asarray(x[0] if detector.input_spec.dtype == "uint8" else np.round(x[0]), np.uint8)
            letterboxed.append((frame, box, rt_low, shape))
            for mode in MODES:
                if mode == "as-is" and shape == "square":
                    continue  # identical to padded
                if mode == "letterboxed":
                    t0 = time.perf_counter()
                    mp_low = engine.detect_frame(frame).to_original(box)
                    ms["mediapipe"].append((time.perf_counter() - t0) * 1e3)
                else:
                    bgr = pad_to_square(image, pad) if mode == "padded" else image
                    mp_low = engine.detect_frame(bgr[:, :, ::-1])
                    if mode == "padded":
                        mp_low = clip_to(mp_low, w, h)
                tallies[f"{mode} {shape}"].add(rt_low, mp_low, spec)
    finally:
        engine.close()
    tallies["as-is square"] = tallies["padded square"]
    engines = {"mediapipe": {"version": mediapipe_version(),
                             "modes": {k: v.to_dict() for k, v in tallies.items() if v.images}}}
    if task_library_python:
        for key, threads in TASK_LIBRARY_THREADS.items():
            engines[key] = task_library(Path(path), letterboxed, task_library_python, low.score_threshold, spec,
                                        detector.class_names, threads)
    return {
        "artifact": str(path), "precision": detector.manifest.precision,
        "sha256": detector.manifest.data["artifact"]["sha256"], "score_threshold": spec.score_threshold,
        "engines": engines, "latency_ms_median": {k: statistics.median(v) for k, v in ms.items() if v},
    }


def task_library(path: Path, letterboxed: list[tuple[np.ndarray, Any, Detections, str]], python: str | Path,
                 graph_threshold: float, spec: PostprocessSpec, class_names: list[str], threads: int
                 ) -> dict[str, Any]:
    """The Task Library's ObjectDetector (in its own environment's ``python``) on the letterboxed frames, down to
    the graph's own threshold, tallied against the runtime's detections on the same frames at ``spec``'s."""
    import json
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="task-library-") as tmp:
        frames, out = Path(tmp) / "frames.npz", Path(tmp) / "detections.json"
        np.savez(frames, frames=np.stack([f for f, *_ in letterboxed]))
        cmd = [str(python), str(ROOT / "benchmarks" / "task_library_detect.py"), str(path), str(frames),
               "--score-threshold", str(graph_threshold), "--threads", str(threads), "--out", str(out)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        except subprocess.TimeoutExpired:
            raise EngineError(f"the Task Library's ObjectDetector did not finish {path} within an hour") from None
        if proc.returncode != 0:
            raise EngineError(f"the Task Library's ObjectDetector failed on {path} (exit {proc.returncode}):\n"
                              f"{proc.stderr[-3000:]}")
        doc = json.loads(out.read_text())
    tallies = {f"letterboxed {shape}": EngineTally() for shape in ("square", "non-square")}
    for (_, box, rt_low, shape), rows in zip(letterboxed, doc["detections"], strict=True):
        found = np.array([r[:6] for r in rows], np.float32).reshape(-1, 6)
        wrong = sorted({(int(r[5]), str(r[6])) for r in rows if not 0 <= int(r[5]) < len(class_names)
                        or class_names[int(r[5])] != str(r[6])})
        if wrong:
            raise EngineError(f"the Task Library read (index, label) {wrong} from {path}'s metadata, which do not "
                              f"match the manifest's class_names {class_names}")
        order = np.argsort(-found[:, 4], kind="stable")
        dets = Detections(found[order, :4], found[order, 4], found[order, 5].astype(np.int64))
        tallies[f"letterboxed {shape}"].add(rt_low, dets.to_original(box), spec)
    return {"version": doc["tflite_support"], "threads": threads,
            "modes": {k: v.to_dict() for k, v in tallies.items() if v.images}}


def clip_to(dets: Detections, w: int, h: int) -> Detections:
    """Detections on the padded frame, clipped to the original image (padding is bottom/right: same origin)."""
    boxes = np.clip(dets.boxes, 0, [w, h, w, h]).astype(np.float32)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return Detections(boxes[keep], dets.scores[keep], dets.class_ids[keep])


class EngineError(RuntimeError):
    """An engine could not run the file, or read it otherwise than the manifest says (exit 3)."""


def task_library_python() -> Path | None:
    """The Python of the Task Library's environment where `make task-library-env` finished building it (its
    install stamp is written last), else None."""
    python = TASK_LIBRARY_ENV / "bin" / "python"
    return python if python.exists() and any(TASK_LIBRARY_ENV.glob(".installed-*")) else None


def engine_match(result: dict[str, Any]) -> float:
    """The worst of both directions, over the engines as an app gets them by default and both image shapes, in
    the letterboxed mode (held to >= 95 %)."""
    rows = [v for key, e in result["engines"].items() if key in HELD_ENGINES
            for k, v in e["modes"].items() if k.startswith("letterboxed")]
    return min(min(r["runtime_in_engine"], r["engine_in_runtime"]) for r in rows)


ENGINE_NAMES = {"mediapipe": "MediaPipe", "task_library": "Task Library",
                "task_library_2_threads": "Task Library, 2 threads"}


def markdown(doc: dict[str, Any]) -> str:
    versions = {ENGINE_NAMES[k].split(",")[0]: e["version"] for r in doc["artifacts"] for k, e in r["engines"].items()}
    lines = [
        "# Android's detector engines vs the project's runtime on the Android TFLite",
        "",
        f"Produced by `{doc['command']}`. " + ", ".join(f"{k} {v}" for k, v in versions.items()) +
        f"; {doc['machine']}. {doc['images']} images of {doc['data']}; same file, score threshold "
        f"{doc['score_threshold']}, matched one-to-one by class and IoU >= {MATCH_IOU}.",
        "",
        "- letterboxed: the app letterboxes the frame to the input size itself (docs/ANDROID.md), so the engine and "
        "the runtime see the same tensor; padded: the app only pads the frame to a square (bottom/right, the "
        "manifest's pad colour) and MediaPipe resizes it; as-is: the frame unchanged, which MediaPipe stretches to "
        "the square input.",
        "- straddling: unmatched detections whose counterpart the other side has just below the threshold.",
        "",
        "| engine | precision | mode | images | runtime dets | engine dets | runtime in engine | engine in runtime "
        "| straddling (rt / engine) | score diff mean / max | IoU mean / min |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, name in ENGINE_NAMES.items():
        for r in doc["artifacts"]:
            for mode, m in r["engines"].get(key, {}).get("modes", {}).items():
                lines.append(
                    f"| {name} | {r['precision']} | {mode} | {m['images']} | {m['runtime_detections']} | "
                    f"{m['engine_detections']} | {m['runtime_in_engine']:.1%} | {m['engine_in_runtime']:.1%} | "
                    f"{m['unmatched_runtime_straddling_threshold']} / {m['unmatched_engine_straddling_threshold']} | "
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
    p = argparse.ArgumentParser(prog="python -m benchmarks.android_engines", description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+", help="-android.tflite files (make export TARGET=tflite ANDROID=1)")
    p.add_argument("--data", default="data/synthetic", help="dataset whose images are compared")
    p.add_argument("--split", default="val")
    p.add_argument("--max-images", type=int, default=120)
    p.add_argument("--out", default=str(ROOT / "results/android-mediapipe"), help="results path without suffix")
    p.add_argument("--task-library-python", default=None,
                   help="the Python of the Task Library's environment (default .venv-task-library/bin/python "
                   "where `make task-library-env` built it; without it only MediaPipe is checked)")
    args = p.parse_args(argv)
    task_python = args.task_library_python or task_library_python()
    if args.task_library_python and not Path(args.task_library_python).exists():
        print(f"error: --task-library-python {args.task_library_python} does not exist: run "
              "`make task-library-env`", file=sys.stderr)
        return 2
    from efficientdet.data import load_dataset
    from efficientdet.data.records import DatasetError
    from efficientdet.data.synthetic import resolve_dataset
    from runtime.fileio import atomic_write_bytes, atomic_write_json
    from runtime.manifest import ManifestError

    detectors = {}
    for model in args.models:
        try:
            detectors[model] = open_android(model)
        except (ManifestError, ValueError, OSError, ImportError) as e:  # ImportError: an engine not installed
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
        print(f"[android-check] {model}: MediaPipe {mediapipe_version()}"
              f"{', the Task Library' if task_python else ''} vs runtime on {len(images)} images",
              file=sys.stderr, flush=True)
        try:
            results.append(compare(model, images, detector, task_python))
        except EngineError as e:
            print(f"error: {e}", file=sys.stderr)
            return 3
    if not task_python:
        print("[android-check] the Task Library was not checked: `make task-library-env` builds its environment",
              file=sys.stderr)
    doc = {"command": "python -m benchmarks.android_engines " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
           "data": f"{args.data} [{args.split}]", "images": len(images),
           "score_threshold": results[0]["score_threshold"], "artifacts": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out.with_suffix(".json"), doc)
    atomic_write_bytes(out.with_suffix(".md"), markdown(doc).encode())
    print(markdown(doc))
    worst = min(engine_match(r) for r in results)
    if worst < MIN_MATCH:
        print(f"error: an engine and the runtime matched only {worst:.1%} of each other's detections in the "
              f"letterboxed mode (< {MIN_MATCH:.0%}); see {out.with_suffix('.md')}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
