"""Photometric shifts of a BGR uint8 image: what another camera, other light or strong compression do to it.

Three users: the field-fidelity set (``convert/field.py``) applies each shift at one fixed, named strength to
evaluation images; the calibration set (``calib_data``) applies every family in turn at random strengths to half
its training images (:func:`cycled_shifts`), so int8 ranges cover what a device's camera shows; QAT shifts its
training images at random (:func:`random_shift`) for the same reason. The families are shared, the images and
strengths are not, so the field figures stay a measurement on images the calibration never saw.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np


def levels(im: np.ndarray, gain: float, bias: float = 0.0) -> np.ndarray:
    """Exposure: every channel times ``gain`` plus ``bias``, clipped to 0..255."""
    return np.clip(im.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)


def contrast(im: np.ndarray, factor: float) -> np.ndarray:
    """Contrast around mid-grey: ``factor`` < 1 flattens the image."""
    return np.clip((im.astype(np.float32) - 128.0) * factor + 128.0, 0, 255).astype(np.uint8)


def gamma(im: np.ndarray, exponent: float) -> np.ndarray:
    """Tone curve ``x ** exponent`` on 0..1 (> 1 darkens the mid-tones, as an uncorrected sensor does)."""
    table = np.clip(255.0 * (np.arange(256) / 255.0) ** exponent + 0.5, 0, 255).astype(np.uint8)
    return cv2.LUT(im, table)


def cast(im: np.ndarray, bgr_gain: tuple[float, float, float]) -> np.ndarray:
    """Colour cast (white balance): one gain per channel, blue-green-red."""
    return np.clip(im.astype(np.float32) * np.asarray(bgr_gain, np.float32), 0, 255).astype(np.uint8)


def noise(im: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian sensor noise of standard deviation ``sigma`` pixel levels."""
    return np.clip(im.astype(np.float32) + rng.normal(0.0, sigma, im.shape), 0, 255).astype(np.uint8)


def jpeg(im: np.ndarray, quality: int) -> np.ndarray:
    """A JPEG round trip at ``quality`` (blocking and ringing of a cheap camera or a compressed stream)."""
    ok, data = cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


@dataclass(frozen=True)
class Shift:
    """One drawn shift: its family, a readable description of its strength, and the shifted image."""

    family: str
    description: str
    image: np.ndarray


def _draw_levels(im: np.ndarray, rng: np.random.Generator) -> Shift:
    gain = float(np.exp(rng.uniform(np.log(0.25), np.log(1.6))))
    bias = float(rng.uniform(-20.0, 30.0))
    return Shift("levels", f"gain {gain:.2f} bias {bias:+.0f}", levels(im, gain, bias))


def _draw_contrast(im: np.ndarray, rng: np.random.Generator) -> Shift:
    factor = float(rng.uniform(0.3, 1.6))
    return Shift("contrast", f"factor {factor:.2f}", contrast(im, factor))


def _draw_gamma(im: np.ndarray, rng: np.random.Generator) -> Shift:
    exponent = float(np.exp(rng.uniform(np.log(0.45), np.log(2.5))))
    return Shift("gamma", f"exponent {exponent:.2f}", gamma(im, exponent))


def _draw_cast(im: np.ndarray, rng: np.random.Generator) -> Shift:
    gains = tuple(float(g) for g in np.exp(rng.uniform(np.log(0.65), np.log(1.45), 3)))
    return Shift("cast", "bgr gains " + " ".join(f"{g:.2f}" for g in gains), cast(im, gains))  # type: ignore[arg-type]


def _draw_noise(im: np.ndarray, rng: np.random.Generator) -> Shift:
    sigma = float(rng.uniform(3.0, 16.0))
    return Shift("noise", f"sigma {sigma:.1f}", noise(im, sigma, rng))


def _draw_jpeg(im: np.ndarray, rng: np.random.Generator) -> Shift:
    quality = int(rng.integers(10, 60))
    return Shift("jpeg", f"quality {quality}", jpeg(im, quality))


# The families a random shift is drawn from, each with a strength range a little wider than the field set's
# fixed strengths (dark x0.3, bright x1.5+30, contrast 0.4, gamma 2.2, casts 0.7-1.35, noise 12, JPEG 15).
FAMILIES: dict[str, Callable[[np.ndarray, np.random.Generator], Shift]] = {
    "levels": _draw_levels,
    "contrast": _draw_contrast,
    "gamma": _draw_gamma,
    "cast": _draw_cast,
    "noise": _draw_noise,
    "jpeg": _draw_jpeg,
}


def cycled_shifts(count: int, rng: np.random.Generator) -> list[str]:
    """The families for ``count`` shifted images: every family in turn from a seeded start, so a small set still
    covers each one (independent draws gave five exposure shifts out of five for one seed)."""
    names = list(FAMILIES)
    start = int(rng.integers(len(names)))
    return [names[(start + k) % len(names)] for k in range(count)]


def random_shift(im: np.ndarray, rng: np.random.Generator) -> Shift:
    """``im`` under a random family at a random strength (training augmentation, one image at a time)."""
    names = list(FAMILIES)
    return FAMILIES[names[int(rng.integers(len(names)))]](im, rng)


def draw_shift(family: str, im: np.ndarray, rng: np.random.Generator) -> Shift:
    """``im`` under ``family`` at a random strength (seeded through ``rng``)."""
    return FAMILIES[family](im, rng)
