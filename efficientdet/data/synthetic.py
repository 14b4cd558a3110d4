"""The embedded default dataset: a deterministic COCO-format shapes set the project generates itself.

It exists so training, evaluation, export and calibration can run end to end with no download, and it is
hard enough to tell a working detector from a broken one: six shape classes whose colours and textures
overlap, sizes from 10 px to half the image side, occlusion, unlabeled clutter, varied backgrounds,
blur/noise/brightness jitter and non-square images (so letterboxing is exercised).

Every image has its own random stream (``seed``, split, index), so one image never depends on another.
Output is written into a temporary directory beside ``out_dir`` and moved into place, and a
``synthetic.json`` stamp makes a repeated call with the same parameters a no-op.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

GENERATOR_VERSION = 1
STAMP = "synthetic.json"
CLASS_NAMES = ("circle", "square", "triangle", "star", "ring", "cross")
SPLITS = ("train", "val")
MIN_OBJECT_SIZE = 10
MAX_OCCLUDED = 0.7
_SPLIT_CODES = {"train": 0, "val": 1}
_AA = cv2.LINE_AA
_SHIFT = 4
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class _Style:
    """Class-typical colour/texture statistics; ranges overlap between classes on purpose."""

    hue: tuple[int, int]
    sat: tuple[int, int]
    val: tuple[int, int]
    texture: str
    outline_p: float


_STYLES = {
    "circle": _Style((0, 28), (120, 255), (140, 255), "radial", 0.3),
    "square": _Style((14, 48), (80, 230), (110, 240), "stripes", 0.5),
    "triangle": _Style((38, 90), (90, 255), (90, 235), "flat", 0.4),
    "star": _Style((18, 38), (140, 255), (170, 255), "flat", 0.2),
    "ring": _Style((82, 132), (70, 255), (100, 255), "noise", 0.3),
    "cross": _Style((120, 178), (60, 230), (80, 240), "checker", 0.5),
}
_TEXTURES = ("flat", "radial", "stripes", "noise", "checker")


def _hsv_to_bgr(h: float, s: float, v: float) -> np.ndarray:
    pixel = np.array([[[h % 180, s, v]]], np.uint8)
    return cv2.cvtColor(pixel, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _random_colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> np.ndarray:
    return rng.integers(lo, hi, 3).astype(np.float32)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    kind = rng.integers(4)
    if kind == 0:
        theta = rng.uniform(0, 2 * math.pi)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        t = xs * math.cos(theta) + ys * math.sin(theta)
        t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
        img = _random_colour(rng) * (1 - t[..., None]) + _random_colour(rng) * t[..., None]
    elif kind == 1:
        img = np.broadcast_to(_random_colour(rng, 30, 226), (h, w, 3)).astype(np.float32)
    elif kind == 2:
        tile = int(rng.integers(12, 64))
        grid = rng.integers(20, 236, (h // tile + 1, w // tile + 1, 3)).astype(np.float32)
        img = np.repeat(np.repeat(grid, tile, 0), tile, 1)[:h, :w]
    else:
        cell = int(rng.integers(4, 24))
        small = rng.uniform(0, 255, (h // cell + 2, w // cell + 2, 3)).astype(np.float32)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        img = img * rng.uniform(0.3, 0.9) + _random_colour(rng) * rng.uniform(0.1, 0.6)
    img = img + rng.normal(0, rng.uniform(2, 18), (h, w, 1)).astype(np.float32)
    return np.ascontiguousarray(np.clip(img, 0, 255), np.float32)


def _clutter(rng: np.random.Generator, img: np.ndarray) -> None:
    """Unlabeled distractors: lines, arcs, small blobs and text-like strokes."""
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(0, 16))):
        colour = tuple(float(c) for c in _random_colour(rng))
        kind = rng.integers(4)
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        if kind == 0:
            end = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(img, (x, y), end, colour, int(rng.integers(1, 4)), _AA)
        elif kind == 1:
            axes = (int(rng.integers(5, max(6, w // 4))), int(rng.integers(5, max(6, h // 4))))
            start = float(rng.uniform(0, 360))
            cv2.ellipse(img, (x, y), axes, float(rng.uniform(0, 180)), start, start + float(rng.uniform(30, 200)),
                        colour, int(rng.integers(1, 3)), _AA)
        elif kind == 2:
            cv2.circle(img, (x, y), int(rng.integers(1, 4)), colour, -1, _AA)
        else:
            text = "".join(chr(int(c)) for c in rng.integers(65, 91, int(rng.integers(2, 7))))
            cv2.putText(img, text, (x, y), int(rng.choice([0, 1, 2, 3])), float(rng.uniform(0.3, 0.9)), colour,
                        int(rng.integers(1, 3)), _AA)


def _polygon(kind: str, rng: np.random.Generator, r: float, angle: float) -> np.ndarray:
    """Unit-centred outline points (pixels) for the polygonal classes."""
    if kind == "square":
        aspect = rng.uniform(0.8, 1.0)
        pts = np.array([[-1, -aspect], [1, -aspect], [1, aspect], [-1, aspect]]) * r / math.hypot(1, aspect)
    elif kind == "triangle":
        angles = np.deg2rad([90, 210, 330]) + rng.uniform(-0.15, 0.15, 3)
        pts = np.stack([np.cos(angles), np.sin(angles)], 1) * r
    elif kind == "star":
        inner = rng.uniform(0.38, 0.52)
        angles = np.arange(10) * math.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.0, inner) * r
        pts = np.stack([np.cos(angles) * radii, np.sin(angles) * radii], 1)
    else:
        a = rng.uniform(0.26, 0.38)
        pts = np.array([[a, 1], [-a, 1], [-a, a], [-1, a], [-1, -a], [-a, -a], [-a, -1], [a, -1], [a, -a],
                        [1, -a], [1, a], [a, a]]) * r / math.hypot(1, a)
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]])


def _draw_shape(canvas: np.ndarray, kind: str, geometry: dict[str, Any], thickness: int) -> None:
    """Draw the shape into a single-channel patch (255 = inside) with anti-aliasing; thickness -1 fills."""
    cx, cy, r = geometry["cx"], geometry["cy"], geometry["r"]
    centre = (round(cx * _ONE), round(cy * _ONE))
    if kind in ("circle", "ring"):
        axes = (round(r * _ONE), round(r * geometry["aspect"] * _ONE))
        cv2.ellipse(canvas, centre, axes, geometry["angle_deg"], 0, 360, 255, thickness, _AA, _SHIFT)
        if kind == "ring":
            inner = (round(axes[0] * geometry["hole"]), round(axes[1] * geometry["hole"]))
            cv2.ellipse(canvas, centre, inner, geometry["angle_deg"], 0, 360, 0 if thickness < 0 else 255,
                        thickness, _AA, _SHIFT)
        return
    pts = np.round((geometry["points"] + [cx, cy]) * _ONE).astype(np.int32)
    if thickness < 0:
        cv2.fillPoly(canvas, [pts], 255, _AA, _SHIFT)
    else:
        cv2.polylines(canvas, [pts], True, 255, thickness, _AA, _SHIFT)


def _texture(rng: np.random.Generator, style: _Style, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    hue = rng.uniform(0, 180) if rng.random() < 0.1 else rng.uniform(*style.hue)
    colour = _hsv_to_bgr(hue, rng.uniform(*style.sat), rng.uniform(*style.val))
    texture = style.texture if rng.random() > 0.15 else _TEXTURES[int(rng.integers(len(_TEXTURES)))]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    if texture == "radial":
        hx, hy = rng.uniform(0.25, 0.75) * w, rng.uniform(0.25, 0.75) * h
        factor = 1.25 - 0.6 * np.hypot(xs - hx, ys - hy) / max(h, w)
        tex = colour * factor[..., None]
    elif texture == "stripes":
        theta = rng.uniform(0, math.pi)
        period = rng.uniform(3, 10)
        wave = np.sin((xs * math.cos(theta) + ys * math.sin(theta)) * 2 * math.pi / period)
        tex = colour * (0.8 + 0.2 * wave)[..., None]
    elif texture == "checker":
        cell = int(rng.integers(3, 9))
        second = _hsv_to_bgr(hue + rng.uniform(10, 40), rng.uniform(*style.sat), rng.uniform(*style.val))
        mask = ((xs // cell + ys // cell) % 2)[..., None]
        tex = colour * (1 - mask) + second * mask
    else:
        sigma = 18.0 if texture == "noise" else 4.0
        tex = colour + rng.normal(0, sigma, (h, w, 1)).astype(np.float32)
    return tex.astype(np.float32)


def _place_object(rng: np.random.Generator, img: np.ndarray, owner: np.ndarray, index: int,
                  label: int) -> dict[str, Any] | None:
    """Draw one object over ``img``; record its full-extent box and pixel mask ownership in ``owner``."""
    h, w = img.shape[:2]
    kind = CLASS_NAMES[label]
    style = _STYLES[kind]
    size = math.exp(rng.uniform(math.log(MIN_OBJECT_SIZE), math.log(min(h, w) / 2)))
    r = size / 2
    outline = int(rng.integers(1, max(2, int(r / 6)) + 1)) if rng.random() < style.outline_p else 0
    half = math.ceil(r) + outline + 2
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    x0, y0 = max(int(cx) - half, 0), max(int(cy) - half, 0)
    x1, y1 = min(int(cx) + half + 1, w), min(int(cy) + half + 1, h)
    angle = rng.uniform(0, 2 * math.pi)
    geometry = {"cx": cx - x0, "cy": cy - y0, "r": r, "angle_deg": math.degrees(angle),
                "aspect": rng.uniform(0.8, 1.0), "hole": rng.uniform(0.45, 0.65),
                "points": _polygon(kind, rng, r, angle) if kind not in ("circle", "ring") else None}
    fill = np.zeros((y1 - y0, x1 - x0), np.uint8)
    _draw_shape(fill, kind, geometry, -1)
    edge = np.zeros_like(fill)
    if outline:
        _draw_shape(edge, kind, geometry, outline)
    mask = (fill >= 128) | (edge >= 128)
    if not mask.any():
        return None
    roi = img[y0:y1, x0:x1]
    alpha = fill[..., None].astype(np.float32) / 255
    roi[:] = roi * (1 - alpha) + _texture(rng, style, fill.shape) * alpha
    if outline:
        shade = rng.uniform(0.2, 0.6) if rng.random() < 0.7 else rng.uniform(1.3, 1.8)
        colour = np.clip(roi[mask].mean(0) * shade, 0, 255)
        beta = edge[..., None].astype(np.float32) / 255
        roi[:] = roi * (1 - beta) + colour * beta
    owner[y0:y1, x0:x1][mask] = index
    ys, xs = np.nonzero(mask)
    box = [x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1]
    return {"label": label, "box": box, "area": int(mask.sum())}


def _image_size(rng: np.random.Generator, size: int) -> tuple[int, int]:
    """(height, width): mostly square, sometimes 4:3 landscape or portrait."""
    short = round(size * 0.75)
    return [(size, size), (short, size), (size, short)][int(rng.choice(3, p=[0.6, 0.2, 0.2]))]


def render_image(seed: int, split: str, index: int, image_size: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One BGR uint8 image and its objects (label, xyxy box, visibility), from its own random stream."""
    rng = np.random.default_rng([seed, _SPLIT_CODES[split], index])
    h, w = _image_size(rng, image_size)
    img = _background(rng, h, w)
    _clutter(rng, img)
    owner = np.full((h, w), -1, np.int32)
    placed = []
    for _ in range(int(rng.integers(1, 13))):
        obj = _place_object(rng, img, owner, len(placed), int(rng.integers(len(CLASS_NAMES))))
        if obj is not None:
            placed.append(obj)
    for _ in range(int(rng.integers(0, 3))):
        p, q = (int(rng.integers(0, w)), int(rng.integers(0, h))), (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(img, p, q, tuple(float(c) for c in _random_colour(rng)), 1, _AA)
    visible = np.bincount(owner.ravel() + 1, minlength=len(placed) + 1)[1:]
    objects = []
    for obj, vis in zip(placed, visible, strict=True):
        visibility = vis / obj["area"]
        if visibility >= 1 - MAX_OCCLUDED:
            objects.append({"label": obj["label"], "box": obj["box"], "visibility": round(float(visibility), 3)})
    img = img * rng.uniform(0.75, 1.25) + rng.uniform(-25, 25)
    if rng.random() < 0.35:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.3))
    img = img + rng.normal(0, rng.uniform(0, 6), (*img.shape[:2], 1)).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), objects


def _params(num_train: int, num_val: int, image_size: int, seed: int) -> dict[str, int]:
    return {"version": GENERATOR_VERSION, "num_train": num_train, "num_val": num_val,
            "image_size": image_size, "seed": seed}


def _is_complete(out: Path, params: dict[str, int]) -> bool:
    try:
        stamp = json.loads((out / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if stamp.get("params") != params:
        return False
    for split in SPLITS:
        count = params[f"num_{split}"]
        if not (out / "annotations" / f"instances_{split}.json").is_file():
            return False
        if sum(1 for _ in (out / "images" / split).glob("*.jpg")) != count:
            return False
    return True


def _write_split(root: Path, split: str, count: int, params: dict[str, int]) -> dict[str, Any]:
    image_dir = root / "images" / split
    image_dir.mkdir(parents=True)
    images, annotations = [], []
    for index in range(count):
        img, objects = render_image(params["seed"], split, index, params["image_size"])
        file_name = f"{index:06d}.jpg"
        if not cv2.imwrite(str(image_dir / file_name), img, [cv2.IMWRITE_JPEG_QUALITY, 92]):
            raise OSError(f"could not write {image_dir / file_name}")
        images.append({"id": index + 1, "file_name": file_name, "width": img.shape[1], "height": img.shape[0]})
        for obj in objects:
            x1, y1, x2, y2 = obj["box"]
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": obj["label"] + 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
                                "visibility": obj["visibility"]})
    info = {"description": "efficientdet synthetic shapes", "generator": "efficientdet.data.synthetic",
            "version": GENERATOR_VERSION, "seed": params["seed"], "split": split, "num_images": count,
            "num_annotations": len(annotations), "image_size": params["image_size"]}
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASS_NAMES)]
    coco = {"info": info, "images": images, "annotations": annotations, "categories": categories}
    (root / "annotations").mkdir(exist_ok=True)
    with open(root / "annotations" / f"instances_{split}.json", "w", encoding="utf-8") as f:
        json.dump(coco, f, indent=1)
    return info


def _readme(params: dict[str, int], infos: Sequence[dict[str, Any]]) -> str:
    counts = "\n".join(f"- {i['split']}: {i['num_images']} images, {i['num_annotations']} boxes" for i in infos)
    return (f"# Synthetic shapes (generated)\n\nWritten by `python -m efficientdet.data.synthetic` "
            f"(generator version {GENERATOR_VERSION}, seed {params['seed']}, image size {params['image_size']}).\n"
            f"COCO format: `annotations/instances_{{train,val}}.json`, `images/{{train,val}}/`.\n"
            f"Classes: {', '.join(CLASS_NAMES)}.\n\n{counts}\n")


def generate_synthetic(out_dir: str | Path, num_train: int = 600, num_val: int = 120, image_size: int = 320,
                       seed: int = 0) -> Path:
    """Write (or reuse, when already complete with the same parameters) the synthetic COCO dataset at ``out_dir``."""
    if num_train < 1 or num_val < 1 or image_size < 64:
        raise ValueError("need num_train >= 1, num_val >= 1 and image_size >= 64")
    out = Path(out_dir).expanduser().resolve()
    params = _params(num_train, num_val, image_size, seed)
    if _is_complete(out, params):
        return out
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / STAMP).is_file())):
        raise FileExistsError(f"{out} exists and is not a synthetic dataset (no {STAMP}); refusing to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    old = None
    try:
        infos = [_write_split(tmp, split, params[f"num_{split}"], params) for split in SPLITS]
        (tmp / "README.md").write_text(_readme(params, infos), encoding="utf-8")
        stamp = {"generator": "efficientdet.data.synthetic", "params": params,
                 "counts": {i["split"]: i["num_images"] for i in infos}, "classes": list(CLASS_NAMES)}
        (tmp / STAMP).write_text(json.dumps(stamp, indent=1), encoding="utf-8")
        os.chmod(tmp, 0o755)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / "data")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return out


DEFAULT_DIR = "data/synthetic"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def is_default_dataset(path: str | Path) -> bool:
    """Whether ``path`` names the embedded default dataset (relative to here or to the project root)."""
    return Path(path).resolve() in {Path(DEFAULT_DIR).resolve(), (PROJECT_ROOT / DEFAULT_DIR).resolve()}


def resolve_dataset(path: str | Path) -> Path:
    """``path`` as given, except that the embedded default dataset is generated on first use."""
    path = Path(path)
    if is_default_dataset(path) and not (path / "annotations").is_dir():
        print(f"generating the embedded default dataset in {path} ...", file=sys.stderr)
        generate_synthetic(path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m efficientdet.data.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="output directory (COCO layout)")
    parser.add_argument("--train", type=int, default=600, help="number of training images")
    parser.add_argument("--val", type=int, default=120, help="number of validation images")
    parser.add_argument("--size", type=int, default=320, help="longer image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args(argv)
    print(generate_synthetic(args.out, args.train, args.val, args.size, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
