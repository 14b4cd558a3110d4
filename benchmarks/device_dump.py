"""Raw outputs and detections of one artifact on some images, written by the runtime alone.

`make device-check` runs this same file on the build machine and inside the emulated aarch64 system, with
only the installed runtime wheel and its dependencies importable there (no torch, no TensorFlow, no
project code), so the two ``.npz`` files differ only by the CPU architecture's kernels.

Usage: ``python device_dump.py MODEL OUT.npz IMAGE...``
"""

from __future__ import annotations

import json
import platform
import sys
import warnings

import numpy as np


def main(argv: list[str]) -> int:
    from runtime import Detector
    from runtime.bench import package_versions
    from runtime.cpu_class import cpu_class
    from runtime.postprocess import postprocess
    from runtime.preprocess import read_image

    model, out, *images = argv
    with warnings.catch_warnings(record=True) as caught:  # e.g. the int8 CPU-class warning: kept, not printed
        warnings.simplefilter("always")
        detector = Detector(model, threads=1)
    arrays: dict[str, np.ndarray] = {}
    for i, path in enumerate(images):
        image = read_image(path)
        x, _ = detector.preprocess_image(image)
        logits, deltas = detector.infer_raw(x)
        # Detections in network-input pixels, unclipped: the form IoU matching is defined on (convert/parity.py).
        dets = postprocess(logits, deltas, detector.anchors, detector.post_spec, detector.contract.box_coding)
        arrays.update({f"logits_{i}": logits, f"deltas_{i}": deltas, f"boxes_{i}": dets.boxes,
                       f"scores_{i}": dets.scores, f"classes_{i}": dets.class_ids.astype(np.int64)})
    info = {"machine": platform.machine(), "python": platform.python_version(), "versions": package_versions(),
            "backend": type(detector.backend).__name__, "warnings": [str(w.message) for w in caught],
            "int8_class": cpu_class().int8, "images": images}
    arrays["info"] = np.frombuffer(json.dumps(info).encode(), dtype=np.uint8)
    with open(out, "wb") as f:
        np.savez(f, **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
