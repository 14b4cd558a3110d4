"""The one pre-processing path: image -> network input. Training, evaluation, calibration and
every backend call this module, so what the device runs is what the model was trained on.

Steps: validate/convert the image to 8-bit 3-channel, convert colour order, aspect-preserving
resize so the longer side fits ``input_size`` (optionally jittered, for training), place at the
top-left (training may offset), pad bottom/right with the mean colour (zero after
normalisation) or the spec's ``pad_color``, normalise with mean/std. Boxes map back with ``box / scale + offset``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .contract import PreprocessSpec

_INTERP = {"linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST, "area": cv2.INTER_AREA}


class ImageError(ValueError):
    """The input cannot be turned into a 3-channel 8-bit image."""


@dataclass(frozen=True)
class Letterbox:
    """How the original image sits in the network input: ``input = original * scale - offset``."""

    scale: float
    offset_x: float
    offset_y: float
    orig_width: int
    orig_height: int

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Map ``[N, 4]`` xyxy boxes in input pixels back to the original image, clipped to it."""
        out = boxes.astype(np.float32, copy=True)
        out[:, [0, 2]] = (out[:, [0, 2]] + self.offset_x) / self.scale
        out[:, [1, 3]] = (out[:, [1, 3]] + self.offset_y) / self.scale
        out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, self.orig_width)
        out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, self.orig_height)
        return out

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        out = boxes.astype(np.float32, copy=True)
        out[:, [0, 2]] = out[:, [0, 2]] * self.scale - self.offset_x
        out[:, [1, 3]] = out[:, [1, 3]] * self.scale - self.offset_y
        return out


def to_uint8_bgr(image: Any) -> np.ndarray:
    """Accept greyscale, BGR, BGRA, 8- or 16-bit or float [0,1] arrays; return HxWx3 uint8 BGR.

    Raises :class:`ImageError` with the reason for anything else (empty, wrong rank, NaN...).
    """
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a numpy image array, got {type(image).__name__}")
    if image.size == 0 or image.ndim not in (2, 3) or min(image.shape[:2]) == 0:
        raise ImageError(f"expected a non-empty HxW or HxWxC image, got shape {image.shape}")
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        raise ImageError(f"expected 1, 3 or 4 channels, got {image.shape[2]} (shape {image.shape})")
    if image.dtype == np.uint8:
        img = image
    elif image.dtype == np.uint16:
        img = (image >> 8).astype(np.uint8)
    elif image.dtype in (np.float32, np.float64, np.float16):
        img = _float_to_uint8(image)
    elif image.dtype == np.bool_ or np.issubdtype(image.dtype, np.signedinteger):
        raise ImageError(f"unsupported image dtype {image.dtype}; use uint8, uint16 or float in [0, 1]")
    else:
        raise ImageError(f"unsupported image dtype {image.dtype}")
    if img.ndim == 2 or img.shape[2] == 1:
        img = cv2.cvtColor(img.reshape(img.shape[0], img.shape[1]), cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(img)


# A float image is read as [0, 1]. Values up to FLOAT_MAX are rounding overshoot and are clipped; anything
# larger is a 0-255 float image (e.g. a float TIFF), which clipping turned into a white frame with no
# detections and no warning (issue 13); below FLOAT_MIN it is an already-normalised tensor.
FLOAT_MIN, FLOAT_MAX = -0.5, 1.5


def _float_to_uint8(image: np.ndarray) -> np.ndarray:
    if not np.isfinite(image).all():
        raise ImageError("image contains NaN or infinite values")
    lo, hi = float(image.min()), float(image.max())
    if lo < FLOAT_MIN:
        raise ImageError(f"float image values go down to {lo:.4g}, but float images must lie in [0, 1]; an "
                         "already-normalised network input goes to Detector.infer_raw, not to detection")
    if hi > FLOAT_MAX:
        raise ImageError(f"float image values reach {hi:.4g}, but float images must lie in [0, 1]; this looks "
                         "like a 0-255 image: pass it as uint8 (image.astype(np.uint8)) or divide it by 255")
    return np.clip(image.astype(np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def read_image(path: str) -> np.ndarray:
    """Read any image file OpenCV can decode as 8-bit BGR; a clear error for unreadable files."""
    try:
        data = np.fromfile(path, dtype=np.uint8) if path else np.empty(0, np.uint8)
    except OSError as e:
        raise ImageError(f"cannot read image {path!r}: {e.strerror or e}") from None
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise ImageError(f"cannot decode image {path!r} (missing, empty, corrupt or not an image)")
    return to_uint8_bgr(img)


def letterbox_geometry(height: int, width: int, input_size: int, jitter: float = 1.0,
                       offset: tuple[float, float] = (0.0, 0.0)) -> Letterbox:
    """The scale/offset used by :func:`preprocess`; ``jitter``/``offset`` only for training."""
    scale = input_size / max(height, width) * jitter
    return Letterbox(scale, float(offset[0]), float(offset[1]), width, height)


def preprocess(image: np.ndarray, spec: PreprocessSpec, input_color: str = "bgr",
               jitter: float = 1.0, offset: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, Letterbox]:
    """Return the normalised ``HxWx3 float32`` network input (channel order per ``spec``) and its letterbox."""
    size = spec.input_size
    img = to_uint8_bgr(image)
    if input_color.lower() == "rgb":
        img = img[:, :, ::-1]
    elif input_color.lower() != "bgr":
        raise ValueError(f"input_color must be 'bgr' or 'rgb', got {input_color!r}")
    if spec.color_order == "rgb":
        img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2RGB)
    h, w = img.shape[:2]
    box = letterbox_geometry(h, w, size, jitter, offset)
    new_w, new_h = max(1, round(w * box.scale)), max(1, round(h * box.scale))
    interp = _INTERP[spec.interpolation]
    resized = cv2.resize(img, (new_w, new_h), interpolation=interp)
    mean = np.asarray(spec.mean, np.float32)
    std = np.asarray(spec.std, np.float32)
    out = np.zeros((size, size, 3), np.float32)
    if spec.pad_color is not None:
        out[:] = (np.asarray(spec.pad_color, np.float32) - mean) / std
    ox, oy = int(round(box.offset_x)), int(round(box.offset_y))
    src = resized[max(oy, 0):, max(ox, 0):]
    dy, dx = max(-oy, 0), max(-ox, 0)
    ch, cw = min(src.shape[0], size - dy), min(src.shape[1], size - dx)
    if ch > 0 and cw > 0:
        out[dy:dy + ch, dx:dx + cw] = (src[:ch, :cw].astype(np.float32) - mean) / std
    return out, box


def to_layout(batch_hwc: np.ndarray, layout: str) -> np.ndarray:
    """``[N,H,W,C]`` or ``[H,W,C]`` -> the artifact's layout ('nhwc' or 'nchw'), batched and contiguous."""
    x = batch_hwc[None] if batch_hwc.ndim == 3 else batch_hwc
    if layout == "nchw":
        x = x.transpose(0, 3, 1, 2)
    elif layout != "nhwc":
        raise ValueError(f"layout must be 'nchw' or 'nhwc', got {layout!r}")
    return np.ascontiguousarray(x)


def quantize_input(x: np.ndarray, scale: float, zero_point: int, dtype: str) -> np.ndarray:
    """Quantise a float input for an integer-input artifact (``q = round(x / scale) + zp``)."""
    info = np.iinfo(np.dtype(dtype))
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def pixel_extremes(spec: PreprocessSpec) -> tuple[np.ndarray, np.ndarray]:
    """The black and the white frame as network inputs (``HxWx3`` float32): per value the lowest and the highest
    input any image can give, since normalisation is monotone per channel. int8 exporters size their input
    quantizers from them instead of from the calibration images alone (docs/QUANTIZATION.md)."""
    size = spec.input_size
    black, white = (preprocess(np.full((size, size, 3), v, np.uint8), spec)[0] for v in (0, 255))
    return black, white


def normalised_range(spec: PreprocessSpec) -> tuple[float, float]:
    """``(lowest, highest)`` value of the normalised input over every possible image, all channels together."""
    black, white = pixel_extremes(spec)
    return float(black.min()), float(white.max())
