"""``python -m convert``: export a checkpoint to ONNX / OpenVINO IR / TFLite and run the parity gate.

Everything that can be wrong with the input (checkpoint missing or made for another model, OUT not
writable, dataset unusable) is checked before the slow work starts and before anything is written.
Exit status: 0 all gates passed, 1 a gate failed (the failures are printed), 2 bad input, 3 a
conversion failed, 4 the output could not be written (disk full, permissions).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from runtime.manifest import FLOAT_PRECISIONS, TARGET_NAMES

from .errors import GATE_FAILED, INTERRUPTED, UsageError, outcome
from .int8_recipe import DEFAULT_INT8_INPUT, INPUT_FORMS

TARGETS = TARGET_NAMES
PRECISIONS = (*FLOAT_PRECISIONS, "int8")  # int8-qat comes with --qat


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="all", help=f"one of {', '.join(TARGETS)}, a comma-separated list, or all")
    p.add_argument("--precision", default=None, help=f"one of {', '.join(PRECISIONS)}, a comma-separated list, "
                   "or all (default: int8 for --target tflite, the edge deployment default; fp32 otherwise)")
    p.add_argument("--phi", default="0", help="compound-scaling PHI the checkpoint must have (default 0)")
    p.add_argument("--variant", default="d", choices=["d", "lite"])
    p.add_argument("--num-classes", type=int, default=None, help="class count the checkpoint must have "
                   "(default: whatever it has)")
    p.add_argument("--input-size", type=int, default=None, help="export at this square input size, a multiple of "
                   "32 (default: the checkpoint's; the network is fully convolutional, anchors follow the size)")
    p.add_argument("--ckpt", default=None, help="checkpoint (default models/default-<variant><phi>.pt)")
    p.add_argument("--data", default="data/synthetic", help="evaluation dataset for the parity gate")
    p.add_argument("--split", default="val")
    p.add_argument("--images", default=None, metavar="DIR",
                   help="gate on this folder of unlabelled images instead of --data (a model whose classes no "
                   "labelled dataset at hand has): raw outputs and detections are compared, mAP is not measured")
    p.add_argument("--class-map", default=None, metavar="DATA=MODEL,...",
                   help="map the dataset's class names onto the model's (an empty MODEL ignores that class); "
                   "without it a dataset with classes the model does not know is refused")
    p.add_argument("--max-images", type=int, default=100, help="evaluation images for the gate (0 = all)")
    p.add_argument("--out", default=None, help="output folder (default exports/<variant><phi>)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the artifacts during the gate")
    p.add_argument("--calib", default=None, help="calibration set folder for int8 (default: built on first use "
                   "from the training split of --data, see `make calib`)")
    p.add_argument("--calib-shifted", type=float, default=0.0, metavar="SHARE",
                   help="give that share of the default calibration set's images a random photometric shift "
                   "(light, contrast, gamma, colour cast, noise, JPEG) when the gate's field figures fail "
                   "(docs/QUANTIZATION.md); the set is built once under its own name, like `make calib SHIFTED=`")
    p.add_argument("--calib-method", action="append", default=[], metavar="TARGET=METHOD",
                   help="int8 calibration method per target: onnx=minmax|ema-minmax|percentile|entropy "
                   "(default percentile), openvino=mixed|performance|minmax|quantile (default mixed), "
                   "tflite=minmax|percentile (default percentile)")
    p.add_argument("--android", action="store_true",
                   help="with the tflite target: also write <name>-<precision>-android.tflite (fp32, int8) for "
                   "Android's detector APIs (MediaPipe ObjectDetector, TFLite Task Library): pixels in, "
                   "post-processing in the graph, MediaPipe metadata; gated like the others (docs/ANDROID.md)")
    p.add_argument("--io-dtype", default="int8", choices=["int8", "uint8"], help="TFLite int8 input/output type "
                   "(uint8 for the Edge TPU)")
    p.add_argument("--int8-input", default=DEFAULT_INT8_INPUT, choices=sorted(INPUT_FORMS),
                   help="what post-training int8 files take: the normalised image, or pixels with the normalisation "
                   f"folded into the first convolution (exact input quantizer; docs/QUANTIZATION.md). Default: "
                   f"{DEFAULT_INT8_INPUT}")
    p.add_argument("--float-layers", type=int, default=0, metavar="K",
                   help="int8 mixed precision: keep the K layers that lose most when quantized alone in float "
                   "(ONNX and OpenVINO; TFLite and Edge TPU builds stay fully integer)")
    p.add_argument("--qat", action="store_true", help="with int8: also fine-tune with fake quantization (QAT) and "
                   "write int8-qat artifacts beside the post-training ones")
    p.add_argument("--qat-epochs", type=float, default=2.0, help="QAT fine-tuning epochs over the training split")
    p.add_argument("--qat-lr", type=float, default=1e-4)
    p.add_argument("--qat-photometric", type=float, default=None, metavar="P",
                   help="QAT: give each training image a random photometric shift with probability P (light, "
                   "contrast, gamma, colour cast, noise, JPEG; default: none, quantize.qat.QatConfig says why)")
    p.add_argument("--qat-seed", type=int, default=0, help="QAT: seed of the training order, augmentation and "
                   "photometric shifts (QAT moves by tenths of a point between seeds: measure more than one)")
    p.add_argument("--qat-objective", default="distill", choices=["distill", "labels"],
                   help="QAT loss: match the FP32 model's outputs (distill, default) or the detection loss on the "
                   "training labels")
    p.add_argument("--no-sensitivity", action="store_true", help="skip the per-layer sensitivity analysis that a "
                   "failing int8 gate otherwise runs (the benchmark's exports, where only the verdict is needed)")
    p.add_argument("--accept-unmeasurable", action="store_true",
                   help="exit 0 although an int8 gate could not be measured (too few FP32 detections on the "
                   "evaluation images to compare); recorded in the report and the manifests")
    p.add_argument("--gate", action="append", default=[], metavar="KEY=VALUE",
                   help="override a gate threshold for this run, e.g. rel_err_max=1e-6 (recorded in the report)")
    return p


def default_precision(targets: list[str]) -> str:
    """Full-integer int8 when TFLite (the edge format) is the only target, FP32 otherwise."""
    return "int8" if targets == ["tflite"] else "fp32"


def parse_gate_overrides(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` items as thresholds (``none`` lifts one); the keys are checked by the pipeline."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--gate expects KEY=VALUE, got {item!r}")
        try:
            out[key] = None if value.lower() in ("none", "null") else float(value)
        except ValueError:
            raise UsageError(f"--gate {key}: {value!r} is not a number") from None
    return out


def parse_methods(items: list[str]) -> dict[str, str]:
    """``TARGET=METHOD`` items; the pipeline refuses a method its target's quantizer does not have."""
    methods = {}
    for item in items:
        target, sep, method = item.partition("=")
        if not sep:
            raise UsageError(f"--calib-method expects TARGET=METHOD, got {item!r}")
        methods[target] = method
    return methods


def _choice(value: str, known: tuple[str, ...]) -> tuple[str, ...]:
    return known if value == "all" else tuple(value.split(","))


def _qat_config(args: argparse.Namespace) -> Any:
    """QAT's schedule from the arguments (imports the QAT machinery, so only when ``--qat`` asks for it)."""
    from quantize.qat import QatConfig

    return QatConfig(epochs=args.qat_epochs, lr=args.qat_lr, objective=args.qat_objective, seed=args.qat_seed,
                     **({} if args.qat_photometric is None else {"photometric": args.qat_photometric}))


def request_from_args(args: argparse.Namespace) -> Any:
    """The :class:`convert.pipeline.ExportRequest` the arguments describe (checked by the pipeline)."""
    from .pipeline import ExportRequest

    targets = _choice(args.target, TARGETS)
    precisions = _choice(args.precision or default_precision(list(targets)), PRECISIONS)
    return ExportRequest(
        targets=targets, precisions=precisions + (("int8-qat",) if args.qat else ()),
        ckpt=Path(args.ckpt) if args.ckpt else None, variant=args.variant, phi=args.phi,
        num_classes=args.num_classes, input_size=args.input_size, data=args.data, split=args.split,
        images=args.images, class_map=args.class_map, max_images=args.max_images,
        out=Path(args.out) if args.out else None, threads=args.threads, calib=args.calib,
        calib_shifted=args.calib_shifted,
        methods=parse_methods(args.calib_method), flavours=("android",) if args.android else (),
        io_dtype=args.io_dtype, float_layers=args.float_layers, int8_input=args.int8_input,
        qat=_qat_config(args) if args.qat else None,
        sensitivity=not args.no_sensitivity, accept_unmeasurable=args.accept_unmeasurable,
        gate_overrides=parse_gate_overrides(args.gate))


def _summarise(entries: list[dict[str, Any]], paths: dict[str, Path]) -> int:
    """One line per artifact, then every failure with what to try next; 1 if a gate failed or could not be
    measured (unless that was accepted explicitly)."""
    from .gates import FAIL, NOT_MEASURABLE, next_steps
    from .pipeline import failed

    labels = {"pass": "PASS", FAIL: "FAIL", NOT_MEASURABLE: "NOT MEASURABLE"}
    for e in entries:
        p, g = e["parity"], e["gate"]
        label = labels[g["status"]] + (" (accepted)" if g.get("accepted") else "")
        what = " ".join(filter(None, (e["precision"], e.get("flavour"))))
        rel = "n/a (detections out)" if p["rel_err"] is None else f"{p['rel_err']:.2e}"
        field = p.get("field") or {}
        print(f"{label} {e['target']:8s} {what}  rel_err {rel}  det_match "
              f"{p['det_match']:.2%}/{p['det_match_reverse']:.2%} of {p['num_detections_ref']} reference detections  "
              + (f"mAP {p['map']:.4f} (ref {p['map_ref']:.4f})" if p["map"] is not None else "mAP not measured "
                 "(unlabelled images)")
              + (f"  field {field['det_match']:.2%}/{field['det_match_reverse']:.2%} of "
                 f"{field['num_detections_ref']}" if field else "") + f"  {e['path']}")
    print(f"report: {paths['md']}")
    bad = failed(entries)
    for e in bad:
        word = "GATE FAILED" if e["gate"]["status"] == FAIL else "GATE NOT MEASURABLE"
        for f in e["gate"]["failures"]:
            print(f"{word}: {e['target']} {e['precision']} ({e['path']}): {f}", file=sys.stderr)
    failed_precisions = sorted({e["precision"] for e in bad if e["gate"]["status"] == FAIL})
    for precision in failed_precisions:
        print(f"what to try next for {precision}, in order:", file=sys.stderr)
        for i, step in enumerate(next_steps(precision), 1):
            print(f"  {i}. {step}", file=sys.stderr)
    return GATE_FAILED if bad else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .pipeline import export, log_to_stderr

    log_to_stderr()
    try:
        result = export(request_from_args(args))
    except KeyboardInterrupt:
        print("interrupted: the artifacts written so far are marked 'not gated' (report.json lists them)",
              file=sys.stderr)
        return INTERRUPTED
    except Exception as e:
        known = outcome(e)
        if known is None:
            raise
        print(known.message, file=sys.stderr)
        return known.status
    return _summarise(result.entries, result.paths)
