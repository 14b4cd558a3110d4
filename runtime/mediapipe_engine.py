"""MediaPipe Tasks' ``ObjectDetector`` on an ``-android.tflite``: the engine Android apps run, as an engine of
the runtime (``python -m runtime bench x-android.tflite --engine mediapipe``), so its latency on a device sits
beside the runtime's own on the same file.

MediaPipe's Python ``ObjectDetector`` is the C++ graph the Android and iOS libraries wrap (image to tensor,
TFLite inference, the detection op's outputs to detections). It needs ``pip install mediapipe`` (the
runtime's ``[mediapipe]`` extra), imported only here and only when this engine is asked for: the runtime's
own path never loads it.

The app side is what docs/ANDROID.md's Kotlin does: letterbox the frame to the input size (the manifest's
pre-processing, which for an Android file yields RGB pixels), ``detect``, and map the boxes back to the frame.
MediaPipe merges the op's detections that share a box (one anchor, several classes) into one Detection with
several categories; each category is a detection here, as the Kotlin reads them.
"""

from __future__ import annotations

import importlib.metadata
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .backends import BackendUnavailableError
from .manifest import Manifest, check_artifact, load_manifest, require_in_graph_nms
from .postprocess import Detections
from .preprocess import Letterbox, preprocess


def mediapipe_version() -> str:
    return importlib.metadata.version("mediapipe")


def as_detections(found: list[Any], class_names: list[str], frame_hw: tuple[int, int]) -> Detections:
    """MediaPipe's ``Detection`` list on a frame of ``frame_hw`` as the runtime's :class:`Detections`, one per
    category, best first, boxes clipped to the frame."""
    rows = [(d.bounding_box, c) for d in found for c in d.categories]
    if not rows:
        return Detections.empty()
    h, w = frame_hw
    boxes = np.array([[b.origin_x, b.origin_y, b.origin_x + b.width, b.origin_y + b.height] for b, _ in rows],
                     np.float32)
    boxes = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)
    scores = np.array([c.score for _, c in rows], np.float32)
    classes = np.array([class_names.index(c.category_name) for _, c in rows], np.int64)
    order = np.argsort(-scores, kind="stable")
    return Detections(boxes[order], scores[order], classes[order])


class MediapipeDetector:
    """MediaPipe's ObjectDetector on one ``-android.tflite``, with the runtime's manifest checks and result types.

    ``score_threshold`` defaults to the manifest's deployment threshold and ``max_results`` to its
    ``max_detections`` (what the Kotlin sets); ``max_results=-1`` keeps everything the graph returns.
    """

    engine = "mediapipe"
    inference_precision = None  # MediaPipe picks its own kernels; there is no knob to report

    def __init__(self, model_path: str | os.PathLike[str], score_threshold: float | None = None,
                 max_results: int | None = None) -> None:
        self.model_path = Path(model_path)
        data = load_manifest(self.model_path)
        manifest = Manifest.from_dict(data)
        check_artifact(data, self.model_path)
        require_in_graph_nms(manifest, self.model_path)
        try:
            from mediapipe.tasks import python as mp_tasks
            from mediapipe.tasks.python import vision
        except ImportError as e:
            raise BackendUnavailableError(
                f"the mediapipe engine needs the 'mediapipe' package, which is not importable ({e}); install it "
                "with: pip install mediapipe  (or: pip install 'efficientdet-runtime[mediapipe]')") from None
        self.manifest = manifest
        self.class_names: list[str] = list(manifest.class_names)
        self.post_spec = manifest.contract.postprocess.replace(in_graph=None)
        if score_threshold is not None:
            self.post_spec = self.post_spec.replace(score_threshold=float(score_threshold))
        self.max_results = int(self.post_spec.max_detections if max_results is None else max_results)
        self.engine_name = f"mediapipe {mediapipe_version()} ObjectDetector"
        self.threads = 0  # MediaPipe's Python API takes no thread count
        options = vision.ObjectDetectorOptions(
            base_options=mp_tasks.BaseOptions(model_asset_path=str(self.model_path)),
            score_threshold=float(self.post_spec.score_threshold), max_results=self.max_results)
        self._detector = vision.ObjectDetector.create_from_options(options)

    def detect_frame(self, rgb: np.ndarray) -> Detections:
        """Detections on an RGB uint8 frame given as is (MediaPipe resizes it to the input, stretching a
        non-square one), in the frame's pixels, best first, clipped to it."""
        import mediapipe as mp

        frame = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb, dtype=np.uint8))
        return as_detections(self._detector.detect(frame).detections, self.class_names, rgb.shape[:2])

    def letterbox(self, image: np.ndarray, color: str = "bgr") -> tuple[np.ndarray, Letterbox]:
        """The app side: ``image`` letterboxed to the input size as RGB uint8 pixels, and the letterbox to undo."""
        pixels, box = preprocess(image, self.manifest.contract.preprocess, input_color=color)  # mean 0, std 1: pixels
        return np.clip(np.round(pixels), 0, 255).astype(np.uint8), box

    def timed(self, image: np.ndarray, color: str = "bgr") -> tuple[Detections, dict[str, float]]:
        """Detections in ``image``'s pixels and the stage times in ms (letterbox; ``detect``; boxes back)."""
        t0 = time.perf_counter()
        frame, box = self.letterbox(image, color)
        t1 = time.perf_counter()
        found = self.detect_frame(frame)
        t2 = time.perf_counter()
        dets = found.to_original(box)
        t3 = time.perf_counter()
        return dets, {"pre_ms": (t1 - t0) * 1e3, "infer_ms": (t2 - t1) * 1e3, "post_ms": (t3 - t2) * 1e3}

    def close(self) -> None:
        self._detector.close()

    def __enter__(self) -> MediapipeDetector:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
