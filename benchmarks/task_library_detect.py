"""The TFLite Task Library's ObjectDetector on given frames; runs inside ``.venv-task-library``.

``make android-check`` calls this with the environment's own Python (``make task-library-env`` builds it from
``requirements/task-library.txt``): the Task Library cannot be imported beside TensorFlow, so it runs in a
process of its own and imports nothing of the project. It reads an ``.npz`` whose ``frames`` are RGB uint8
images (N x H x W x 3: the letterboxed input the runtime built for each image), runs
``tflite_support.task.vision.ObjectDetector`` (the engine behind Android's
``org.tensorflow.lite.task.vision.detector.ObjectDetector``) on each at ``--score-threshold`` with no limit on
the number of results and ``--threads`` interpreter threads, and writes JSON: the library's version and, per
frame, one row per category ``[x0, y0, x1, y1, score, class index, class name]`` in the frame's pixels.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys

import numpy as np


def detect(model: str, frames: np.ndarray, score_threshold: float, threads: int) -> list[list[list]]:
    from tflite_support.task import core, processor, vision

    options = vision.ObjectDetectorOptions(base_options=core.BaseOptions(file_name=model, num_threads=threads),
                                           detection_options=processor.DetectionOptions(
                                               score_threshold=score_threshold, max_results=-1))
    detector = vision.ObjectDetector.create_from_options(options)
    out = []
    for frame in frames:
        found = detector.detect(vision.TensorImage.create_from_array(np.ascontiguousarray(frame)))
        rows = []
        for d in found.detections:
            b = d.bounding_box
            # one row per category: an engine may merge the op's detections that share a box into one
            rows += [[b.origin_x, b.origin_y, b.origin_x + b.width, b.origin_y + b.height, c.score, c.index,
                      c.category_name] for c in d.categories]
        out.append(rows)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", help="an -android.tflite (detection op and metadata in the file)")
    p.add_argument("frames", help=".npz with `frames`: N x H x W x 3 uint8 RGB")
    p.add_argument("--score-threshold", type=float, required=True)
    p.add_argument("--threads", type=int, default=-1, help="the interpreter's threads (default -1: the library's "
                   "own choice, what an app gets without setNumThreads)")
    p.add_argument("--out", required=True, help="JSON file to write")
    args = p.parse_args(argv)
    frames = np.load(args.frames)["frames"]
    doc = {"tflite_support": importlib.metadata.version("tflite-support"),
           "threads": args.threads, "detections": detect(args.model, frames, args.score_threshold, args.threads)}
    with open(args.out, "w") as f:
        json.dump(doc, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
