"""The field-fidelity images: what a device's camera shows and the evaluation split does not.

The int8 gate on the evaluation split measures fidelity on images that look like the calibration images. On
30 out-of-distribution photos the BCCD D0's int8 artifacts, all within 0.2 point on BCCD test, matched only
34-60 % of the FP32 model's detections (issue 15). So the gate also compares every artifact with the FP32
model on images the calibration never resembled, built here without any download:

- photometric shifts of the evaluation images (darker, brighter, low contrast, gamma, colour casts, sensor
  noise, strong JPEG), one shift per image in turn, seeded, so the field set costs about one more pass over
  ``FIELD_SHIFTED`` images;
- scenes from another distribution: "dead leaves" (overlapping discs of random colour, size and brightness
  under uneven light: the classic stand-in for natural-image statistics) for every model, and the project's
  synthetic shapes for a model that was not trained on them.

Nothing here is labelled: the field figures are parity with FP32 (raw outputs, detections both ways), not mAP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from efficientdet.data import photometric
from efficientdet.data.records import DetectionDataset
from efficientdet.data.synthetic import CLASS_NAMES as SYNTHETIC_CLASSES
from efficientdet.data.synthetic import render_image
from runtime.preprocess import read_image

FIELD_SHIFTED = 48  # evaluation images that get a photometric shift (at most; fewer when the split is smaller)
SCENES_PER_SHIFTED = 4  # one other-distribution scene per this many shifted images (at least MIN_SCENES)
MIN_SCENES = 4
SCENE_SIZE = 320
SEED = 20261202


# Name -> shift of a BGR uint8 image. Dark and gamma are the scenes that clipped the BCCD artifacts' inputs.
SHIFTS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "dark": lambda im, rng: photometric.levels(im, 0.3),
    "bright": lambda im, rng: photometric.levels(im, 1.5, 30.0),
    "low-contrast": lambda im, rng: photometric.contrast(im, 0.4),
    "gamma-2.2": lambda im, rng: photometric.gamma(im, 2.2),
    "blue-cast": lambda im, rng: photometric.cast(im, (1.35, 1.0, 0.7)),
    "warm-cast": lambda im, rng: photometric.cast(im, (0.7, 1.0, 1.35)),
    "sensor-noise": lambda im, rng: photometric.noise(im, 12.0, rng),
    "jpeg-q15": lambda im, rng: photometric.jpeg(im, 15),
}


@dataclass(frozen=True)
class FieldImage:
    """One field image: ``kind`` is the shift's name, ``dead-leaves`` or ``synthetic-shapes``."""

    name: str
    kind: str
    image: np.ndarray  # HxWx3 uint8 BGR


def dead_leaves(seed: int, size: int = SCENE_SIZE) -> np.ndarray:
    """Overlapping discs of random colour and size (many small, few large) under a light gradient, blurred a
    little: edges at every scale, dark and saturated regions, no object the model was trained on."""
    rng = np.random.default_rng(seed)
    hsv = np.empty((size, size, 3), np.uint8)
    hsv[:] = (rng.integers(0, 180), rng.integers(0, 256), rng.integers(20, 256))
    for _ in range(400):
        radius = int(size * 0.3 * rng.uniform(0.02, 1.0) ** 3) + 2
        centre = (int(rng.integers(0, size)), int(rng.integers(0, size)))
        colour = (int(rng.integers(0, 180)), int(rng.integers(0, 256)), int(rng.integers(0, 256)))
        cv2.circle(hsv, centre, radius, colour, -1, cv2.LINE_AA)
    image = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:size, 0:size] / size
    light = 0.25 + 0.75 * np.clip((np.cos(angle) * xs + np.sin(angle) * ys + 1) / 2, 0, 1)
    image = cv2.GaussianBlur(image * light[..., None], (0, 0), 0.8)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def field_images(dataset: DetectionDataset, seed: int = SEED) -> list[FieldImage]:
    """The field set for a model evaluated on ``dataset``: shifted evaluation images, then other scenes."""
    rng = np.random.default_rng(seed)
    shifted = dataset.records[:FIELD_SHIFTED]
    names = list(SHIFTS)
    out = []
    for i, rec in enumerate(shifted):
        kind = names[i % len(names)]
        out.append(FieldImage(f"{kind}:{rec.path}", kind, SHIFTS[kind](read_image(rec.path), rng)))
    scenes = max(MIN_SCENES, len(shifted) // SCENES_PER_SHIFTED)
    synthetic_model = tuple(dataset.class_names) == SYNTHETIC_CLASSES
    for i in range(scenes):
        if synthetic_model or i % 2 == 0:
            out.append(FieldImage(f"dead-leaves:{seed + i}", "dead-leaves", dead_leaves(seed + i)))
        else:
            image = render_image(seed, "val", i, SCENE_SIZE)[0]
            out.append(FieldImage(f"synthetic-shapes:{i}", "synthetic-shapes", image))
    return out
