"""Make a short test video for the embedding example: a camera panning and zooming over a scene of the
project's synthetic shapes (the classes the default model detects), so the example runs anywhere
without a camera or a downloaded clip.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from efficientdet.data.synthetic import render_image


def _world(seed: int, tile: int = 480) -> np.ndarray:
    """A 2x2 mosaic of the busiest of the first 16 scenes of ``seed``: enough objects in every frame."""
    scenes = [render_image(seed, "val", i, tile) for i in range(16)]
    busiest = sorted(scenes, key=lambda s: -len(s[1]))[:4]
    tiles = [cv2.resize(img, (tile, tile), interpolation=cv2.INTER_AREA) for img, _ in busiest]
    return np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])])


def make_video(out: Path, frames: int = 90, fps: float = 15.0, size: tuple[int, int] = (480, 360),
               seed: int = 7) -> Path:
    """Write ``frames`` frames of ``size`` (width, height) to ``out`` (.mp4 or .avi), atomically."""
    if frames < 1 or fps <= 0:
        raise ValueError(f"need frames >= 1 and fps > 0, got {frames}, {fps}")
    world = _world(seed)
    wh, ww = world.shape[:2]
    width, height = size
    fourcc = cv2.VideoWriter_fourcc(*("mp4v" if out.suffix.lower() == ".mp4" else "MJPG"))
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}-", suffix=out.suffix)
    os.close(fd)
    writer = cv2.VideoWriter(tmp, fourcc, fps, (width, height))
    try:
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write {out.suffix} video here")
        for i in range(frames):
            t = i / max(frames - 1, 1)
            zoom = 0.55 + 0.3 * math.sin(math.pi * t)  # window as a fraction of the scene
            cw, ch = int(ww * zoom), int(ww * zoom * height / width)
            ch = min(ch, wh)
            cx = (ww - cw) * (0.5 + 0.5 * math.sin(2 * math.pi * t))
            cy = (wh - ch) * (0.5 + 0.5 * math.cos(2 * math.pi * t))
            crop = world[int(cy):int(cy) + ch, int(cx):int(cx) + cw]
            writer.write(np.ascontiguousarray(cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)))
    except BaseException:
        writer.release()
        os.unlink(tmp)
        raise
    writer.release()
    os.replace(tmp, out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="video file to write (.mp4 or .avi)")
    p.add_argument("--frames", type=int, default=90)
    p.add_argument("--fps", type=float, default=15.0)
    args = p.parse_args(argv)
    print(make_video(args.out, args.frames, args.fps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
