"""Draw detections onto a copy of an image (for ``detect --out``, the reports and the examples).

OpenCV's built-in fonts are ASCII only: "Känguru" came out as "K??nguru" (issue 14). ASCII labels are drawn
with OpenCV as before; other labels with Pillow's FreeType renderer when Pillow is installed (it is not a
runtime dependency), in DejaVu Sans where the system has it (Debian and Raspberry Pi OS ship it; it covers
Latin, Greek and Cyrillic) or Pillow's own default font; without Pillow they are transliterated to ASCII
("Kanguru"), which stays readable where accents are all that differ.
"""

from __future__ import annotations

import functools
import unicodedata
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .detector import Result

FONT_SCALE, FONT_PIXELS = 0.5, 15  # OpenCV's scale and the matching FreeType size in pixels
FONT_FILES = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans.ttf",
              "/System/Library/Fonts/Supplemental/Arial Unicode.ttf", "C:/Windows/Fonts/arial.ttf")


def _colour(class_id: int) -> tuple[int, int, int]:
    hue = (int(class_id) * 47) % 180
    bgr = cv2.cvtColor(np.uint8([[[hue, 220, 255]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


def ascii_label(text: str) -> str:
    """``text`` in ASCII: accents dropped ("Känguru" -> "Kanguru"), other characters as ``?``."""
    plain = unicodedata.normalize("NFKD", text)
    return "".join(ch if ord(ch) < 128 else "?" for ch in plain if not unicodedata.combining(ch))


@functools.lru_cache(maxsize=1)
def _unicode_font() -> Any | None:
    """A FreeType font through Pillow, or None when Pillow is not installed."""
    try:
        from PIL import ImageFont
    except ImportError:
        return None
    for path in FONT_FILES:
        if Path(path).is_file():
            return ImageFont.truetype(path, FONT_PIXELS)
    return ImageFont.load_default(size=FONT_PIXELS)


def _unicode_text(out: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int], font: Any) -> None:
    """``text`` on a filled ``colour`` box whose top-left corner is at (x, y) - or above the image edge."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = font.getbbox(text)
    w, h = right - left + 2, bottom - top + 4
    y = max(0, y - h)
    x2, y2 = min(out.shape[1], x + w), min(out.shape[0], y + h)
    if x2 <= x or y2 <= y:
        return
    patch = Image.new("RGB", (w, h), colour[::-1])
    ImageDraw.Draw(patch).text((1 - left, 2 - top), text, font=font, fill=(0, 0, 0))
    out[y:y2, x:x2] = np.asarray(patch)[: y2 - y, : x2 - x, ::-1]


def draw_detections(image: np.ndarray, result: Result) -> np.ndarray:
    """BGR uint8 copy of ``image`` with each box and ``label score`` drawn."""
    out = image.copy()
    for box, score, cid, label in zip(result.boxes, result.scores, result.class_ids, result.labels):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        colour = _colour(int(cid))
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 2)
        text = f"{label} {float(score):.2f}"
        font = None if text.isascii() else _unicode_font()
        if font is not None:
            _unicode_text(out, text, x1, y1, colour, font)
            continue
        text = ascii_label(text)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE, 1)
        ty = max(y1, th + base)
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw, ty), colour, -1)
        cv2.putText(out, text, (x1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE, (0, 0, 0), 1, cv2.LINE_AA)
    return out
