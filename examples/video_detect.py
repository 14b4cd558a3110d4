"""Embedding example: detect objects in a camera stream or a video file with the runtime alone.

    python examples/video_detect.py MODEL SOURCE [--out annotated.mp4] [--show] [--threads N]

SOURCE is a video file or a camera index (``0`` for /dev/video0). Only ``runtime``'s public API, OpenCV
and numpy are used: copy ``runtime/`` and this file to a device with one backend installed and it runs.
Prints the frame rate as it goes and a summary at the end; exits 1 if the source gives no frame.
"""

from __future__ import annotations

import argparse
import sys
import time

import cv2

from runtime import Detector, draw_detections


def open_source(source: str) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(int(source) if source.isdigit() else source)
    if not cap.isOpened():
        raise SystemExit(f"error: cannot open video source {source!r}")
    return cap


def run(model: str, source: str, out: str | None = None, show: bool = False, threads: int | None = None,
        max_frames: int = 0) -> dict[str, float]:
    """Detect on every frame; returns frames, mean end-to-end FPS and mean detections per frame."""
    detector = Detector(model, threads=threads)
    cap = open_source(source)
    writer = None
    frames, detections, busy, fps = 0, 0, 0.0, 0.0
    try:
        while not max_frames or frames < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            t0 = time.perf_counter()
            result = detector(frame)
            elapsed = time.perf_counter() - t0
            busy += elapsed
            fps = 1 / elapsed if frames == 0 else 0.9 * fps + 0.1 / elapsed
            frames += 1
            detections += len(result)
            drawn = draw_detections(frame, result)
            cv2.putText(drawn, f"{fps:5.1f} FPS  {len(result)} objects", (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                        (255, 255, 255), 2, cv2.LINE_AA)
            if out:
                if writer is None:
                    h, w = drawn.shape[:2]
                    writer = cv2.VideoWriter(out, cv2.VideoWriter_fourcc(*"mp4v"), cap.get(cv2.CAP_PROP_FPS) or 15,
                                             (w, h))
                writer.write(drawn)
            if show:
                cv2.imshow("detections", drawn)
                if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                    break
            if frames % 30 == 0:
                print(f"frame {frames}: {fps:.1f} FPS, {len(result)} objects", flush=True)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
        if show:
            cv2.destroyAllWindows()
    return {"frames": frames, "fps": frames / busy if busy else 0.0,
            "detections_per_frame": detections / frames if frames else 0.0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", help="exported artifact (.tflite, .onnx or .xml) with its manifest beside it")
    p.add_argument("source", help="video file, or camera index such as 0")
    p.add_argument("--out", help="write the annotated video here (.mp4)")
    p.add_argument("--show", action="store_true", help="show a window (needs a display)")
    p.add_argument("--threads", type=int, help="CPU threads for inference")
    p.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0: all)")
    args = p.parse_args(argv)
    stats = run(args.model, args.source, args.out, args.show, args.threads, args.max_frames)
    print(f"{stats['frames']} frames, {stats['fps']:.1f} FPS end to end, "
          f"{stats['detections_per_frame']:.1f} objects per frame")
    return 0 if stats["frames"] else 1


if __name__ == "__main__":
    sys.exit(main())
