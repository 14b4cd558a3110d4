"""``python -m convert``: export a checkpoint to ONNX / OpenVINO IR / TFLite and run the parity gate.

Everything that can be wrong with the input (checkpoint missing or made for another model, OUT not
writable, dataset unusable) is checked before the slow work starts and before anything is written.
Exit status: 0 all gates passed, 1 a gate failed (the failures are printed), 2 bad input, 3 a
conversion failed, 4 the output could not be written (disk full, permissions).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGETS = ("onnx", "openvino", "tflite")
PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_MODEL = Path("models/default-d0.pt")  # the project's default model (Makefile: default-model-train)


class UsageError(ValueError):
    """Bad arguments or an unusable input; the message says what to do."""


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


def default_checkpoint(variant: str, phi: str) -> Path:
    return Path("models") / f"default-{variant}{phi}.pt"


def default_precision(targets: list[str]) -> str:
    """Full-integer int8 when TFLite (the edge format) is the only target, FP32 otherwise."""
    return "int8" if targets == ["tflite"] else "fp32"


def check_writable(out: Path) -> None:
    """Fail now (not after minutes of conversion) if ``out`` cannot be created or written; creates nothing."""
    probe_dir = out
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise UsageError(f"output folder {out} cannot be created: {probe_dir} exists and is not a folder")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe_dir, prefix=".convert-write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise UsageError(f"output folder {out} is not writable ({probe_dir}: {e.strerror or e})") from None


def parse_gate_overrides(items: list[str]) -> dict[str, Any]:
    from .gates import GateThresholds

    known = set(GateThresholds.__dataclass_fields__)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise UsageError(f"--gate expects KEY=VALUE with KEY one of {sorted(known)}, got {item!r}")
        try:
            out[key] = None if value.lower() in ("none", "null") else float(value)
        except ValueError:
            raise UsageError(f"--gate {key}: {value!r} is not a number") from None
    return out


def parse_methods(items: list[str]) -> dict[str, str]:
    from quantize.onnx_int8 import METHODS as ONNX_METHODS
    from quantize.openvino_int8 import METHODS as OPENVINO_METHODS
    from quantize.tflite_int8 import METHODS as TFLITE_METHODS

    from .int8_export import DEFAULT_METHODS

    known = {"onnx": ONNX_METHODS, "openvino": OPENVINO_METHODS, "tflite": TFLITE_METHODS}
    methods = dict(DEFAULT_METHODS)
    for item in items:
        target, sep, method = item.partition("=")
        if not sep or target not in known or method not in known[target]:
            raise UsageError(f"--calib-method expects TARGET=METHOD with {known}, got {item!r}")
        methods[target] = method
    return methods


def _int8_options(args: argparse.Namespace, config: Any, dataset: Any) -> Any:
    """The calibration set (checked against the model's preprocessing and the evaluation images) and methods."""
    from calib_data.store import default_set, load_calibration_set

    from .int8_export import Int8Options

    spec = config.preprocess.to_dict()
    if args.calib:
        calib = load_calibration_set(args.calib)
        calib.check_preprocess(spec)
    else:
        from efficientdet.data.synthetic import resolve_dataset

        calib = default_set(resolve_dataset(args.data), spec)
    calib.check_disjoint(dataset)
    _log(f"calibration set {calib.path}: {len(calib)} images of {calib.manifest['source']} "
         f"[{calib.manifest['split']}]")
    return Int8Options(calib, parse_methods(args.calib_method), args.io_dtype, fallback=args.float_layers)


def _qat_inputs(args: argparse.Namespace, config: Any) -> tuple[Any, Any]:
    """The training split QAT fine-tunes on (of --data) and its schedule."""
    from efficientdet.data.loader import load_for_model, parse_class_map
    from efficientdet.data.synthetic import resolve_dataset
    from quantize.qat import QatConfig

    if args.qat_epochs <= 0 or args.qat_lr <= 0:
        raise UsageError("--qat-epochs and --qat-lr must be > 0")
    train = load_for_model(resolve_dataset(args.data), "train", list(config.class_names),
                           num_classes=config.num_classes, class_map=parse_class_map(args.class_map))
    return train, QatConfig(epochs=args.qat_epochs, lr=args.qat_lr, objective=args.qat_objective,
                                   **({} if args.qat_photometric is None else {"photometric": args.qat_photometric}))


def _resolve_checkpoint(args: argparse.Namespace) -> Path:
    if args.ckpt:
        path = Path(args.ckpt)
        if not path.is_file():
            raise UsageError(f"checkpoint not found: {path}")
        return path
    path = default_checkpoint(args.variant, args.phi)
    if not path.is_file():
        how = ("build it with `make default-model-train` (D0 on the embedded synthetic data)"
               if path == DEFAULT_MODEL else
               f"train one with `make train PHI={args.phi} VARIANT={args.variant}` and copy the run's best.pt there")
        raise UsageError(f"no --ckpt given and the default model {path} does not exist: pass a checkpoint with "
                         f"--ckpt PATH (make export CKPT=PATH), or {how}")
    return path


def _load(args: argparse.Namespace, ckpt: Path) -> tuple[Any, Any]:
    """The model, with its config checked against the requested PHI/variant/class count."""
    from efficientdet.checkpoint import load_checkpoint, load_model
    from efficientdet.model.config import ModelConfig, make_config

    stored = ModelConfig.from_dict(load_checkpoint(ckpt)["config"])
    expect = make_config(args.phi, args.variant, num_classes=args.num_classes or stored.num_classes)
    model, config = load_model(ckpt, expect=expect)
    if args.input_size and args.input_size != config.input_size:
        config = config.replace(input_size=args.input_size)
    return model, config


def _dataset(args: argparse.Namespace, config: Any) -> Any:
    from efficientdet.data.loader import load_for_model, parse_class_map
    from efficientdet.data.synthetic import resolve_dataset

    from .parity import subset

    if args.images:
        from efficientdet.data.image_folder import load_image_folder

        return subset(load_image_folder(args.images, list(config.class_names)), args.max_images or None)
    data = resolve_dataset(args.data)
    dataset = load_for_model(data, args.split, list(config.class_names), num_classes=config.num_classes,
                             class_map=parse_class_map(args.class_map))
    if len(dataset.class_names) != config.num_classes:
        raise UsageError(f"dataset {data} has {len(dataset.class_names)} classes but the model has "
                         f"{config.num_classes}; evaluate on the data the model was trained for")
    dataset = subset(dataset, args.max_images or None)
    if not dataset.records:
        raise UsageError(f"dataset {data} split {args.split!r} has no usable images for the parity gate")
    return dataset


def _export_all(model: Any, config: Any, targets: list[str], precisions: list[str], out: Path, ckpt: Path,
                ckpt_sha: str, int8: Any = None, qat: tuple[Any, Any] | None = None,
                android: bool = False) -> tuple[list[Any], Any]:
    """Every requested artifact, and the FP32 ONNX they came from."""
    from runtime.fileio import remove_stale_temporaries, temp_dir

    from .onnx_export import export_onnx, fp32_model, write_onnx

    base = f"{config.name}-{config.input_size}"
    source = {"checkpoint": str(ckpt), "checkpoint_sha256": ckpt_sha}
    floats = [p for p in precisions if p in ("fp32", "fp16")]
    artifacts = []
    _log("exporting FP32 ONNX (torch dynamo exporter + onnxsim, numerically checked)")
    proto = fp32_model(model, config.input_size)
    out.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_temporaries(out):
        _log(f"removed {stale.name}, left behind by an export that was killed")
    # The old report no longer describes the folder once artifacts change: an interrupted export must not
    # leave it pairing new files with old verdicts (make bench reused such a report, issue 13).
    (out / "report.json").unlink(missing_ok=True)
    with temp_dir(out, "convert") as tmp:
        onnx_fp32 = out / f"{base}-fp32.onnx"
        if "onnx" in targets:
            for precision in floats:
                _log(f"writing onnx {precision}")
                artifacts.append(export_onnx(model, config, out / f"{base}-{precision}.onnx", precision, fp32=proto,
                                             **source))
        if "onnx" not in targets or "fp32" not in floats:
            onnx_fp32 = write_onnx(proto, config, Path(tmp) / f"{base}-fp32.onnx", "fp32", **source).path
        if "openvino" in targets:
            from .openvino_export import export_openvino

            for precision in floats:
                _log(f"converting openvino {precision}")
                artifacts.append(export_openvino(onnx_fp32, config, out / f"{base}-{precision}.xml", precision,
                                                 **source))
        saved: list[Path] = []

        def saved_model() -> Path:
            from .tflite_export import onnx_to_saved_model

            if not saved:
                _log("converting ONNX -> TF SavedModel (onnx2tf)")
                saved.append(onnx_to_saved_model(onnx_fp32, Path(tmp) / "onnx2tf"))
            return saved[0]

        if "tflite" in targets:
            from .tflite_export import export_tflite

            for precision in floats:
                _log(f"converting tflite {precision}")
                artifacts.append(export_tflite(onnx_fp32, config, out / f"{base}-{precision}.tflite", precision,
                                               saved_model=saved_model(), **source))
        if "int8" in precisions:
            from .int8_export import export_int8

            artifacts += export_int8(targets, config, out, base, proto, onnx_fp32, saved_model, int8, source, _log)
        if android:
            from .android_export import PRECISIONS as ANDROID_PRECISIONS
            from .android_export import export_android
            from .int8_export import INPUT_PIXELS

            pixels = int8.describe("tflite", io_dtype="uint8", input=INPUT_PIXELS) if int8 is not None else None
            for precision in [p for p in precisions if p in ANDROID_PRECISIONS]:
                quantized = precision == "int8"
                _log(f"converting tflite {precision} for Android (pixels in, detection op in the graph)")
                artifacts.append(export_android(
                    saved_model(), onnx_fp32, config, out, base, precision, calib=int8.calib if quantized else None,
                    calib_method=int8.methods["tflite"] if quantized else "percentile",
                    quantization=pixels if quantized else None, **source))
        if qat is not None:
            from .qat_export import export_qat

            train_set, qcfg = qat
            artifacts += export_qat(model, config, targets, out, base, train_set, int8, qcfg, source, _log, Path(tmp))
    return artifacts, proto


def _label(artifact: Any) -> str:
    return " ".join(filter(None, (artifact.target, artifact.precision, artifact.flavour)))


def _log(message: str) -> None:
    print(f"[convert] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    if args.max_images is not None and args.max_images < 0:
        raise UsageError("--max-images must be >= 0")
    from efficientdet.model.config import input_size_problem

    if args.input_size is not None and (problem := input_size_problem(args.input_size)):
        raise UsageError(f"--input-size {problem} (Lite0's own size is 320)")
    overrides = parse_gate_overrides(args.gate)
    targets = list(TARGETS) if args.target == "all" else args.target.split(",")
    if not targets or any(t not in TARGETS for t in targets):
        raise UsageError(f"--target must be one of {', '.join(TARGETS)}, a comma-separated list of them, or all; "
                         f"got {args.target!r}")
    precision = args.precision or default_precision(targets)
    precisions = list(PRECISIONS) if precision == "all" else precision.split(",")
    if not precisions or any(p not in PRECISIONS for p in precisions):
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, a comma-separated list of them, "
                         f"or all; got {precision!r}")
    ckpt = _resolve_checkpoint(args)
    out = Path(args.out) if args.out else Path("exports") / f"{args.variant}{args.phi}"
    check_writable(out)

    from efficientdet.checkpoint import file_sha256
    from runtime.anchors import anchor_spec_from_config
    from runtime.cpu_class import cpu_class
    from runtime.preprocess import read_image

    from .field import field_images
    from .gates import FAIL, NOT_MEASURABLE, gate_for
    from .manifest_writer import folder_inventory, gate_record, mark_gate
    from .parity import original_coords, run_parity
    from .report import parity_image, write_interrupted_report, write_report

    if args.android and ("tflite" not in targets or not {"fp32", "int8"} & set(precisions)):
        raise UsageError("--android (ANDROID=1) needs --target tflite (or all) and --precision fp32, int8 or all")
    if args.qat and "int8" not in precisions:
        raise UsageError("--qat (QAT=1) needs --precision int8 or all")
    if "int8" in precisions:
        parse_methods(args.calib_method)  # bad methods fail before the slow work
    if args.images and ("int8" in precisions and not args.calib or args.qat):
        raise UsageError("int8 with --images (IMAGES=) needs a calibration set of the model's own domain: build one "
                         "with `make calib DATA=<dataset> CKPT=...` and pass CALIB=; QAT needs labelled training data "
                         "(DATA=)")
    model, config = _load(args, ckpt)
    dataset = _dataset(args, config)
    int8 = _int8_options(args, config, dataset) if "int8" in precisions else None
    qat = _qat_inputs(args, config) if args.qat else None
    gates = {p: gate_for(p).tightened(**overrides) for p in precisions + (["int8-qat"] if args.qat else [])}
    t0 = time.time()
    ckpt_sha = file_sha256(ckpt)
    previous = _previous_report(out, ckpt_sha, config.input_size)
    source = args.images or args.data
    _log(f"model {config.name} at {config.input_size} on {len(dataset.records)} images of {source}"
         + ("" if dataset.labelled else " (unlabelled: tensor and detection parity only, mAP not measured)"))
    try:
        artifacts, fp32_onnx = _export_all(model, config, targets, precisions, out, ckpt, ckpt_sha, int8, qat,
                                           args.android)
        _log("parity gate: " + ", ".join(_label(a) for a in artifacts))
        field = field_images(dataset)
        kinds = ", ".join(sorted({f.kind for f in field}))
        _log(f"field fidelity: {len(field)} images unlike the calibration set ({kinds})")
        # The detection op in the Android graph leaves no raw outputs: its gate bounds detections and mAP.
        reference, entries, detections = run_parity(
            model, config.preprocess.to_dict(), anchor_spec_from_config(config.to_dict()), dataset,
            [(a, gates[a.precision].tightened(rel_err_max=None) if a.flavour else gates[a.precision])
             for a in artifacts], threads=args.threads, field=field)
    except KeyboardInterrupt:  # Ctrl-C: say in OUT what is there, each artifact with its (missing) verdict
        write_interrupted_report(out, {"interrupted": True, "checkpoint": str(ckpt), "checkpoint_sha256": None,
                                       "artifacts": [], "folder": folder_inventory(out, [])})
        raise
    best = max(range(len(dataset.records)), key=lambda i: len(reference.detections[i]))
    image = parity_image(read_image(dataset.records[best].path),
                         original_coords(reference.detections[best], reference.letterboxes[best]),
                         [(_label(a), d[best]) for a, d in zip(artifacts, detections)],
                         list(dataset.class_names))
    report = {
        "model": config.name, "input_size": config.input_size, "checkpoint": str(ckpt), "checkpoint_sha256": ckpt_sha,
        "data": str(source), "split": args.split if dataset.labelled else None, "labelled": dataset.labelled,
        "cpu": cpu_class().to_dict(),
        "num_images": len(dataset.records),
        "map_ref": reference.metrics["map"], "gates": {p: g.to_dict() for p, g in gates.items()},
        "gate_overrides": overrides, "artifacts": entries, "wall_time_s": round(time.time() - t0, 1),
    }
    if args.accept_unmeasurable:
        for e in entries:
            if e["gate"]["status"] == NOT_MEASURABLE:
                e["gate"]["accepted"] = True  # the user's explicit choice, recorded beside the verdict
    for e in entries:
        mark_gate(e["path"], gate_record(e, report))
        _compare_float_layers(e, previous)
    report["folder"] = folder_inventory(out, entries)
    failed_int8 = any(e["gate"]["status"] == FAIL for e in entries if e["precision"].startswith("int8"))
    if int8 is not None and (int8.sensitivity is not None or (failed_int8 and not args.no_sensitivity)):
        worst = int8.measure_sensitivity(fp32_onnx, _log)
        report["sensitivity"] = {"method": "each layer quantized alone (int8 weight per-channel + uint8 input), "
                                           "SNR of the raw outputs vs FP32 on calibration images",
                                 "layers": [s.to_dict() for s in worst]}
        for e in entries:
            if e["precision"].startswith("int8") and e["gate"]["status"] == FAIL:
                e["gate"]["failures"].append("most sensitive layers: " + ", ".join(
                    f"{s.node} ({s.worst_snr_db:.1f} dB)" for s in worst[:5]))
    paths = write_report(out, report, image)
    return _summarise(entries, paths)


def _previous_report(out: Path, ckpt_sha: str, input_size: int) -> dict[str, Any] | None:
    """The report an earlier export of the same checkpoint and size left in ``out`` (read before it is replaced)."""
    try:
        report = json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        return None
    same = report.get("checkpoint_sha256") == ckpt_sha and report.get("input_size") == input_size
    return report if same else None


def _compare_float_layers(entry: dict[str, Any], previous: dict[str, Any] | None) -> None:
    """A re-run with FLOAT_LAYERS says which layers it kept in float and what that changed against the previous
    export of the same artifact in OUT (stored in the entry as ``float_layers_effect`` and printed)."""
    kept = (entry.get("quantization") or {}).get("float_layers") or []
    before = next((a for a in (previous or {}).get("artifacts", []) if (a["target"], a["precision"]) ==
                   (entry["target"], entry["precision"])), None)
    if not kept or before is None or entry["parity"]["map_delta"] is None or before["parity"]["map_delta"] is None:
        return
    was = (before.get("quantization") or {}).get("float_layers") or []
    p, q = entry["parity"], before["parity"]
    entry["float_layers_effect"] = {"kept_in_float": kept, "previously_in_float": was,
                                    "map_delta_before": q["map_delta"], "map_delta_now": p["map_delta"],
                                    "det_match_before": q["det_match"], "det_match_now": p["det_match"]}
    _log(f"{entry['target']} {entry['precision']}: kept in float {kept} (before: {was or 'none'}); ΔmAP "
         f"{q['map_delta'] * 100:+.2f} -> {p['map_delta'] * 100:+.2f} points, det match {q['det_match']:.1%} -> "
         f"{p['det_match']:.1%}")


def _summarise(entries: list[dict[str, Any]], paths: dict[str, Path]) -> int:
    """One line per artifact, then every failure with what to try next; 1 if a gate failed or could not be
    measured (unless that was accepted explicitly)."""
    from .gates import FAIL, NOT_MEASURABLE, next_steps

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
    bad = [e for e in entries if e["gate"]["status"] == FAIL
           or (e["gate"]["status"] == NOT_MEASURABLE and not e["gate"].get("accepted"))]
    for e in bad:
        word = "GATE FAILED" if e["gate"]["status"] == FAIL else "GATE NOT MEASURABLE"
        for f in e["gate"]["failures"]:
            print(f"{word}: {e['target']} {e['precision']} ({e['path']}): {f}", file=sys.stderr)
    failed_precisions = sorted({e["precision"] for e in bad if e["gate"]["status"] == FAIL})
    for precision in failed_precisions:
        print(f"what to try next for {precision}, in order:", file=sys.stderr)
        for i, step in enumerate(next_steps(precision), 1):
            print(f"  {i}. {step}", file=sys.stderr)
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from runtime.fileio import write_error
    from runtime.manifest import ManifestError

    try:
        return run(args)
    except ManifestError as e:  # a manifest we wrote was rejected by the runtime: an exporter bug, not bad input
        print(f"error: conversion failed: {e}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError) as e:  # UsageError, CheckpointError, ConfigMismatchError, DatasetError
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # the exporters' *ExportError and ParityError
        print(f"error: conversion failed: {e}", file=sys.stderr)
        return 3
    except OSError as e:  # disk full, permissions, a vanished folder: nothing half-written is left in OUT
        print(f"error: {write_error(e)}", file=sys.stderr)
        return 4
    except KeyboardInterrupt:
        print("interrupted: the artifacts written so far are marked 'not gated' (report.json lists them)",
              file=sys.stderr)
        return 130
