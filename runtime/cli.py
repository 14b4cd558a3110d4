"""Command line: ``python -m runtime detect MODEL IMAGE...`` and ``python -m runtime bench MODEL``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2

from .backends import BackendUnavailableError
from .bench import ENGINES, RESULTS_SCHEMA, format_table, results_document, run_benchmark
from .detector import Detector
from .draw import draw_detections
from .fileio import atomic_write_json
from .manifest import ManifestError
from .preprocess import ImageError, read_image


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime", description="EfficientDet on-device runtime")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("detect", help="detect objects in image files")
    d.add_argument("model", help="model file (.onnx, .xml or .tflite) with its manifest")
    d.add_argument("images", nargs="+", help="image files")
    d.add_argument("--json", action="store_true", help="print one JSON object per image per line")
    d.add_argument("--out", type=Path, help="write each image with its boxes drawn into this folder (never "
                   "overwrites: a name that exists or is an input gets a -1, -2... suffix)")
    d.add_argument("--threads", type=int, help="CPU threads (default: all available)")
    d.add_argument("--score-threshold", type=float, help="override the manifest's score threshold")
    d.add_argument("--edgetpu", action="store_true", help="run a *_edgetpu.tflite model on a Coral Edge TPU")
    b = sub.add_parser("bench", help="time pre-processing, inference and post-processing")
    b.add_argument("model", help="model file (.onnx, .xml or .tflite) with its manifest")
    b.add_argument("--threads", type=int, help="CPU threads (default: all available)")
    b.add_argument("--runs", type=int, default=50, help="timed runs (default 50)")
    b.add_argument("--warmup", type=int, default=5, help="untimed warm-up runs (default 5)")
    b.add_argument("--image", help="image to time on (default: a deterministic synthetic image)")
    b.add_argument("--json", action="store_true", help="print the result row as one JSON object")
    b.add_argument("--out", type=Path, help="add the row to this results file (created if absent; the format of "
                   "`make bench`, merged into the report by `make report DEVICE_RESULTS=...`)")
    b.add_argument("--name", help="row name (default TARGET-PRECISION, e.g. tflite-int8)")
    b.add_argument("--device", help="device label for the report (default: this host's name)")
    b.add_argument("--edgetpu", action="store_true", help="run a *_edgetpu.tflite model on a Coral Edge TPU")
    b.add_argument("--engine", choices=ENGINES, default="runtime",
                   help="who runs the file: this runtime (default) or, for an -android.tflite, MediaPipe's "
                   "ObjectDetector (pip install mediapipe), the engine Android apps run")
    return p


def drawn_path(out_dir: Path, image_path: str, taken: set[Path]) -> Path:
    """Where the drawn copy of ``image_path`` goes: its own name in ``out_dir``, suffixed ``-1``, ``-2``... when
    that name is an input, an existing file or already written in this run. Nothing is ever overwritten
    (``--out`` = the images' own folder overwrote the inputs, and same-named inputs overwrote each other)."""
    name = Path(image_path)
    candidate, n = out_dir / name.name, 0
    while candidate.resolve() in taken or candidate.exists():
        n += 1
        candidate = out_dir / f"{name.stem}-{n}{name.suffix}"
    taken.add(candidate.resolve())
    return candidate


def _detect(args: argparse.Namespace) -> int:
    if args.out and args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} exists and is not a folder; give a folder for the drawn images")
    det = Detector(args.model, threads=args.threads, score_threshold=args.score_threshold, edgetpu=args.edgetpu)
    taken = {Path(p).resolve() for p in args.images}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in args.images:
        try:
            image = read_image(path)
        except ImageError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        result = det(image)
        target = drawn_path(args.out, path, taken) if args.out else None
        if target is not None and not cv2.imwrite(str(target), draw_detections(image, result)):
            print(f"error: cannot write {target}", file=sys.stderr)
            failed += 1
            target = None
        if args.json:
            line = {"image": path, "detections": result.to_dicts(), **({"drawn": str(target)} if target else {})}
            print(json.dumps(line), flush=True)
        else:
            print(f"{path}: {len(result)} detections" + (f" (drawn: {target})" if target else ""))
            for d in result.to_dicts():
                print(f"  {d['label']:<16} {d['score']:.3f}  box {d['box']}")
    return 1 if failed else 0


def _bench(args: argparse.Namespace) -> int:
    doc = read_results(args.out) if args.out else None  # a bad --out fails now, not after the benchmark
    image = read_image(args.image) if args.image else None
    stats = run_benchmark(args.model, threads=args.threads, runs=args.runs, warmup=args.warmup, image=image,
                          name=args.name, edgetpu=args.edgetpu, device=args.device, engine=args.engine)
    if args.image:
        stats["image"] = args.image
    print(json.dumps(stats) if args.json else format_table(stats))
    if args.out:
        key = (stats["name"], stats["threads"], stats["device"])
        doc["rows"] = [r for r in doc["rows"] if (r.get("name"), r.get("threads"), r.get("device")) != key]
        doc["rows"].append(stats)
        atomic_write_json(args.out, doc)
    return 0


def read_results(path: Path) -> dict:
    """The results document at ``path`` (an empty one where there is none yet); rows are added to it."""
    if not path.is_file():
        return results_document([])
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} exists but is not a results file ({e}); choose another --out") from None
    if not isinstance(doc, dict) or doc.get("schema") != RESULTS_SCHEMA or not isinstance(doc.get("rows"), list):
        raise ValueError(f"{path} exists but is not a {RESULTS_SCHEMA} results file; choose another --out")
    return doc


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _detect(args) if args.command == "detect" else _bench(args)
    except (ManifestError, BackendUnavailableError, ImageError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
