"""``python -m calib_data``: build a calibration set (``make calib``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .store import DEFAULT_N, DEFAULT_ROOT, SHIFTED_SHARE, CalibrationError, build_calibration_set, default_set_path

DEFAULT_MODEL = "models/default-d0.pt"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m calib_data", description="Build an int8 calibration set: a seeded, "
                                "class- and size-stratified sample of a training split, pre-processed for a model.")
    p.add_argument("--data", default="data/synthetic", help="dataset (COCO / VOC / YOLO folder)")
    p.add_argument("--split", default="train")
    p.add_argument("--n", type=int, default=DEFAULT_N, help=f"images to sample (default {DEFAULT_N})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shifted", type=float, default=SHIFTED_SHARE, help="share of the images given a random "
                   f"photometric shift (light, contrast, gamma, colour cast, noise, JPEG; default {SHIFTED_SHARE}: "
                   "none) so int8 ranges cover other cameras and light, when the gate's field figures fail "
                   "(docs/QUANTIZATION.md)")
    p.add_argument("--ckpt", default=None, help="model whose preprocessing the set must match (required except "
                   "for the embedded default dataset, whose default is models/default-d0.pt)")
    p.add_argument("--input-size", type=int, default=None, help="override the checkpoint's input size")
    p.add_argument("--out", default=None, help=f"output folder (default {DEFAULT_ROOT}/<data>-<size>-<content key>"
                   "[-n<N>][-seed<S>][-shifted<percent>], the name the exporters look for)")
    args = p.parse_args(argv)
    from efficientdet.checkpoint import load_checkpoint
    from efficientdet.data.loader import load_dataset
    from efficientdet.data.synthetic import is_default_dataset, resolve_dataset
    from efficientdet.model.config import ModelConfig

    try:
        if args.ckpt is None and not is_default_dataset(args.data):
            raise ValueError(f"CKPT= is required for {args.data}: a calibration set is pre-processed the way the "
                             "model to quantize is (input size, normalisation), and the default model was made for "
                             "the embedded synthetic dataset, not this one")
        data = resolve_dataset(args.data)
        config = ModelConfig.from_dict(load_checkpoint(args.ckpt or DEFAULT_MODEL)["config"])
        spec = config.preprocess.at_size(args.input_size) if args.input_size else config.preprocess
        dataset = load_dataset(data, args.split, verify_images=True, class_names=list(config.class_names) or None)
        out = Path(args.out) if args.out else default_set_path(dataset, args.data, spec.input_size, n=args.n,
                                                               seed=args.seed, shifted=args.shifted)
        cset = build_calibration_set(dataset, spec, out, n=args.n, seed=args.seed, source=str(args.data),
                                     shifted=args.shifted)
    except (CalibrationError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    classes = sorted({c for img in cset.manifest["images"] for c in img["classes"]})
    print(f"wrote {cset.path}: {len(cset)} images of {args.data} [{args.split}] at {spec.input_size} px, "
          f"classes present {classes} of {len(dataset.class_names)}, "
          f"{sum(img['shift'] is not None for img in cset.manifest['images'])} photometrically shifted")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
