"""``python -m convert``: export a checkpoint to ONNX / OpenVINO IR / TFLite and run the parity gate.

Everything that can be wrong with the input (checkpoint missing or made for another model, OUT not
writable, dataset unusable) is checked before the slow work starts and before anything is written.
Exit status: 0 all gates passed, 1 a gate failed (the failures are printed), 2 bad input, 3 a
conversion failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGETS = ("onnx", "openvino", "tflite")
PRECISIONS = ("fp32", "fp16")
DEFAULT_MODEL = Path("models/default-d0.pt")  # the project's default model (Makefile: default-model-train)


class UsageError(ValueError):
    """Bad arguments or an unusable input; the message says what to do."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="all", choices=[*TARGETS, "all"])
    p.add_argument("--precision", default="fp32", choices=[*PRECISIONS, "all"])
    p.add_argument("--phi", default="0", help="compound-scaling PHI the checkpoint must have (default 0)")
    p.add_argument("--variant", default="d", choices=["d", "lite"])
    p.add_argument("--num-classes", type=int, default=None, help="class count the checkpoint must have "
                   "(default: whatever it has)")
    p.add_argument("--ckpt", default=None, help="checkpoint (default models/default-<variant><phi>.pt)")
    p.add_argument("--data", default="data/synthetic", help="evaluation dataset for the parity gate")
    p.add_argument("--split", default="val")
    p.add_argument("--max-images", type=int, default=100, help="evaluation images for the gate (0 = all)")
    p.add_argument("--out", default=None, help="output folder (default exports/<variant><phi>)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the artifacts during the gate")
    p.add_argument("--gate", action="append", default=[], metavar="KEY=VALUE",
                   help="override a gate threshold for this run, e.g. rel_err_max=1e-6 (recorded in the report)")
    return p


def default_checkpoint(variant: str, phi: str) -> Path:
    return Path("models") / f"default-{variant}{phi}.pt"


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
    return load_model(ckpt, expect=expect)


def _dataset(args: argparse.Namespace, config: Any) -> Any:
    from efficientdet.data.loader import load_dataset
    from efficientdet.data.synthetic import resolve_dataset

    from .parity import subset

    data = resolve_dataset(args.data)
    names = list(config.class_names) or None
    dataset = load_dataset(data, args.split, class_names=names)
    if len(dataset.class_names) != config.num_classes:
        raise UsageError(f"dataset {data} has {len(dataset.class_names)} classes but the model has "
                         f"{config.num_classes}; evaluate on the data the model was trained for")
    dataset = subset(dataset, args.max_images or None)
    if not dataset.records:
        raise UsageError(f"dataset {data} split {args.split!r} has no usable images for the parity gate")
    return dataset


def _export_all(model: Any, config: Any, targets: list[str], precisions: list[str], out: Path, ckpt: Path,
                ckpt_sha: str) -> list[Any]:
    from .onnx_export import export_onnx, fp32_model, write_onnx

    base = f"{config.name}-{config.input_size}"
    source = {"checkpoint": str(ckpt), "checkpoint_sha256": ckpt_sha}
    artifacts = []
    _log("exporting FP32 ONNX (torch dynamo exporter + onnxsim, numerically checked)")
    proto = fp32_model(model, config.input_size)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".convert-") as tmp:
        onnx_fp32 = out / f"{base}-fp32.onnx"
        if "onnx" in targets:
            for precision in precisions:
                _log(f"writing onnx {precision}")
                artifacts.append(export_onnx(model, config, out / f"{base}-{precision}.onnx", precision, fp32=proto,
                                             **source))
        if "onnx" not in targets or "fp32" not in precisions:
            onnx_fp32 = write_onnx(proto, config, Path(tmp) / f"{base}-fp32.onnx", "fp32", **source).path
        if "openvino" in targets:
            from .openvino_export import export_openvino

            for precision in precisions:
                _log(f"converting openvino {precision}")
                artifacts.append(export_openvino(onnx_fp32, config, out / f"{base}-{precision}.xml", precision,
                                                 **source))
        if "tflite" in targets:
            from .tflite_export import export_tflite, onnx_to_saved_model

            _log("converting ONNX -> TF SavedModel (onnx2tf)")
            saved = onnx_to_saved_model(onnx_fp32, Path(tmp) / "onnx2tf")
            for precision in precisions:
                _log(f"converting tflite {precision}")
                artifacts.append(export_tflite(onnx_fp32, config, out / f"{base}-{precision}.tflite", precision,
                                               saved_model=saved, **source))
    return artifacts


def _log(message: str) -> None:
    print(f"[convert] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    if args.max_images is not None and args.max_images < 0:
        raise UsageError("--max-images must be >= 0")
    overrides = parse_gate_overrides(args.gate)
    targets = list(TARGETS) if args.target == "all" else [args.target]
    precisions = list(PRECISIONS) if args.precision == "all" else [args.precision]
    ckpt = _resolve_checkpoint(args)
    out = Path(args.out) if args.out else Path("exports") / f"{args.variant}{args.phi}"
    check_writable(out)

    from efficientdet.checkpoint import file_sha256
    from runtime.anchors import anchor_spec_from_config
    from runtime.preprocess import read_image

    from .gates import gate_for
    from .parity import original_coords, run_parity
    from .report import parity_image, write_report

    model, config = _load(args, ckpt)
    dataset = _dataset(args, config)
    gates = {p: gate_for(p).tightened(**overrides) for p in precisions}
    t0 = time.time()
    ckpt_sha = file_sha256(ckpt)
    _log(f"model {config.name} at {config.input_size} on {len(dataset.records)} images of {args.data}")
    artifacts = _export_all(model, config, targets, precisions, out, ckpt, ckpt_sha)
    _log("parity gate: " + ", ".join(f"{a.target} {a.precision}" for a in artifacts))
    reference, entries, detections = run_parity(
        model, config.preprocess.to_dict(), anchor_spec_from_config(config.to_dict()), dataset,
        [(a, gates[a.precision]) for a in artifacts], threads=args.threads)
    best = max(range(len(dataset.records)), key=lambda i: len(reference.detections[i]))
    image = parity_image(read_image(dataset.records[best].path),
                         original_coords(reference.detections[best], reference.letterboxes[best]),
                         [(f"{a.target} {a.precision}", d[best]) for a, d in zip(artifacts, detections)],
                         list(dataset.class_names))
    report = {
        "model": config.name, "input_size": config.input_size, "checkpoint": str(ckpt), "checkpoint_sha256": ckpt_sha,
        "data": str(args.data), "split": args.split, "num_images": len(dataset.records),
        "map_ref": reference.metrics["map"], "gates": {p: g.to_dict() for p, g in gates.items()},
        "gate_overrides": overrides, "artifacts": entries, "wall_time_s": round(time.time() - t0, 1),
    }
    paths = write_report(out, report, image)
    return _summarise(entries, paths)


def _summarise(entries: list[dict[str, Any]], paths: dict[str, Path]) -> int:
    failed = [e for e in entries if not e["gate"]["passed"]]
    for e in entries:
        p = e["parity"]
        print(f"{'PASS' if e['gate']['passed'] else 'FAIL'} {e['target']:8s} {e['precision']}  rel_err "
              f"{p['rel_err']:.2e}  det_match {p['det_match']:.2%}/{p['det_match_reverse']:.2%}  mAP {p['map']:.4f} "
              f"(ref {p['map_ref']:.4f})  {e['path']}")
    print(f"report: {paths['md']}")
    for e in failed:
        for f in e["gate"]["failures"]:
            print(f"GATE FAILED: {e['target']} {e['precision']} ({e['path']}): {f}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
