"""The export as a library call: ``export(ExportRequest(...)) -> ExportResult``.

One request says what to export (targets x precisions, flavours), from which checkpoint, gated on which images,
quantized how. :func:`export` checks everything that can be wrong with the input before the slow work starts and
before anything is written, writes each artifact through its target's module (:mod:`convert.targets`), runs the
parity gate on all of them at once (:mod:`convert.parity`: the split, then the field images) and writes
``report.json``/``report.md``. ``python -m convert``, ``make bench`` and the conversion matrix call it (the matrix
calls the registry directly, per artifact). Errors are :mod:`convert.errors`' types; progress goes to the
``convert`` logger (:func:`log_to_stderr` prints it as ``[convert] ...`` lines).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from runtime.manifest import FLOAT_PRECISIONS, TARGET_NAMES

from .errors import GATE_FAILED, UsageError
from .int8_recipe import DEFAULT_INT8_INPUT, DEFAULT_METHODS

if TYPE_CHECKING:
    import torch

    from efficientdet.data.records import DetectionDataset
    from efficientdet.model.config import ModelConfig
    from quantize.qat import QatConfig

    from .int8_recipe import Int8Recipe
    from .manifest_writer import Artifact
    from .qat_model import QatRequest

log = logging.getLogger("convert")
DEFAULT_MODEL = Path("models/default-d0.pt")  # the project's default model (Makefile: default-model-train)


@dataclass(frozen=True)
class ExportRequest:
    """Everything one export needs. ``precisions`` may hold ``int8-qat`` (with ``int8``: the report compares the two)
    and then ``qat`` is its schedule; ``flavours`` adds flavoured files (``android``); ``ckpt`` None is the default
    model for ``variant``/``phi``; ``num_classes``/``phi``/``variant`` are what the checkpoint must be."""

    targets: tuple[str, ...] = TARGET_NAMES
    precisions: tuple[str, ...] = ("fp32",)
    ckpt: Path | None = None
    variant: str = "d"
    phi: str = "0"
    num_classes: int | None = None
    input_size: int | None = None
    data: str = "data/synthetic"
    split: str = "val"
    images: str | None = None  # a folder of unlabelled images to gate on instead of ``data``
    class_map: str | None = None
    max_images: int = 100  # 0: every evaluation image
    out: Path | None = None  # default exports/<variant><phi>
    threads: int | None = None
    calib: str | None = None  # default: built on first use from the training split of ``data``
    calib_shifted: float = 0.0  # the share of photometrically shifted images in that default set (calib_data)
    methods: Mapping[str, str] = field(default_factory=lambda: MappingProxyType(dict(DEFAULT_METHODS)))
    flavours: tuple[str, ...] = ()
    io_dtype: str = "int8"
    float_layers: int = 0
    int8_input: str = DEFAULT_INT8_INPUT  # what post-training int8 files take (convert.int8_recipe.INPUT_FORMS)
    qat: QatConfig | None = None  # None: its defaults
    sensitivity: bool = True  # rank layers when an int8 gate fails
    accept_unmeasurable: bool = False
    gate_overrides: Mapping[str, float | None] = field(default_factory=lambda: MappingProxyType({}))

    def checkpoint(self) -> Path:
        """The checkpoint to export: ``ckpt``, or the default model of ``variant``/``phi`` (refused if missing)."""
        if self.ckpt is not None:
            if not Path(self.ckpt).is_file():
                raise UsageError(f"checkpoint not found: {self.ckpt}")
            return Path(self.ckpt)
        path = Path("models") / f"default-{self.variant}{self.phi}.pt"
        if not path.is_file():
            how = ("build it with `make default-model-train` (D0 on the embedded synthetic data)"
                   if path == DEFAULT_MODEL else
                   f"train one with `make train PHI={self.phi} VARIANT={self.variant}` and copy the run's best.pt "
                   "there")
            raise UsageError(f"no --ckpt given and the default model {path} does not exist: pass a checkpoint with "
                             f"--ckpt PATH (make export CKPT=PATH), or {how}")
        return path

    def folder(self) -> Path:
        return Path(self.out) if self.out else Path("exports") / f"{self.variant}{self.phi}"

    def check(self) -> None:
        """Refuse what cannot work, with what to do instead (before the slow work)."""
        from efficientdet.model.config import input_size_problem

        if self.max_images < 0:
            raise UsageError("--max-images must be >= 0")
        if self.input_size is not None and (problem := input_size_problem(self.input_size)):
            raise UsageError(f"--input-size {problem} (Lite0's own size is 320)")
        if not self.targets or any(t not in TARGET_NAMES for t in self.targets):
            raise UsageError(f"--target must be one of {', '.join(TARGET_NAMES)}, a comma-separated list of them, "
                             f"or all; got {','.join(self.targets)!r}")
        plain = FLOAT_PRECISIONS + ("int8",)
        if not self.precisions or any(p not in plain + ("int8-qat",) for p in self.precisions):
            raise UsageError(f"--precision must be one of {', '.join(plain)}, a comma-separated list of them, or all; "
                             f"got {','.join(self.precisions)!r}")
        from .targets import REGISTRY

        flavours = sorted({t.flavour for t in REGISTRY if t.flavour})
        if set(self.flavours) - set(flavours):
            raise UsageError(f"unknown flavours {sorted(set(self.flavours) - set(flavours))}; known: {flavours}")
        check_methods(self.methods)
        check_gate_overrides(self.gate_overrides)
        if "android" in self.flavours and ("tflite" not in self.targets or not {"fp32", "int8"} & set(self.precisions)):
            raise UsageError("--android (ANDROID=1) needs --target tflite (or all) and --precision fp32, int8 or all")
        qat = "int8-qat" in self.precisions
        if qat and "int8" not in self.precisions:
            raise UsageError("--qat (QAT=1) needs --precision int8 or all")
        if qat and self.qat is not None and (self.qat.epochs <= 0 or self.qat.lr <= 0):
            raise UsageError("--qat-epochs and --qat-lr must be > 0")
        if self.calib and self.calib_shifted:
            raise UsageError("--calib-shifted (SHIFTED=) shapes the default calibration set; a set given with --calib "
                             "(CALIB=) already has its own share of shifted images")
        if not 0.0 <= self.calib_shifted <= 1.0:
            raise UsageError(f"--calib-shifted (SHIFTED=) is a share within 0..1, got {self.calib_shifted}")
        if self.images and ("int8" in self.precisions and not self.calib or qat):
            raise UsageError("int8 with --images (IMAGES=) needs a calibration set of the model's own domain: build "
                             "one with `make calib DATA=<dataset> CKPT=...` and pass CALIB=; QAT needs labelled "
                             "training data (DATA=)")


@dataclass(frozen=True)
class ExportResult:
    """The report (as written to ``report.json``) and the files it was written to."""

    report: dict[str, Any]
    paths: dict[str, Path]

    @property
    def entries(self) -> list[dict[str, Any]]:
        return self.report["artifacts"]

    @property
    def status(self) -> int:
        """0, or :data:`~convert.errors.GATE_FAILED` when a gate failed or could not be measured."""
        return GATE_FAILED if failed(self.entries) else 0


def failed(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Artifacts whose gate failed, or could not be measured without that being accepted."""
    from .gates import FAIL, NOT_MEASURABLE

    return [e for e in entries if e["gate"]["status"] == FAIL
            or (e["gate"]["status"] == NOT_MEASURABLE and not e["gate"].get("accepted"))]


def check_methods(methods: Mapping[str, str]) -> None:
    """Refuse a calibration method a target's quantizer does not have."""
    from .int8_recipe import QUANTIZERS

    known = {target: q.methods for target, q in QUANTIZERS.items()}
    for target, method in methods.items():
        if target not in known or method not in known[target]:
            raise UsageError(f"--calib-method expects TARGET=METHOD with {known}, got {target}={method}")


def check_gate_overrides(overrides: Mapping[str, float | None]) -> None:
    from .gates import GateThresholds

    known = set(GateThresholds.__dataclass_fields__)
    for key in overrides:
        if key not in known:
            raise UsageError(f"--gate expects KEY=VALUE with KEY one of {sorted(known)}, got {key!r}")


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


def log_to_stderr() -> None:
    """Print the export's progress as ``[convert] ...`` lines on stderr (once per process)."""
    if not any(getattr(h, "convert_stderr", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[convert] %(message)s"))
        handler.convert_stderr = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def _load(request: ExportRequest, ckpt: Path) -> tuple[torch.nn.Module, ModelConfig]:
    """The model, with its config checked against the requested PHI/variant/class count."""
    from efficientdet.checkpoint import load_checkpoint, load_model
    from efficientdet.model.config import ModelConfig, make_config

    stored = ModelConfig.from_dict(load_checkpoint(ckpt)["config"])
    expect = make_config(request.phi, request.variant, num_classes=request.num_classes or stored.num_classes)
    model, config = load_model(ckpt, expect=expect)
    if request.input_size and request.input_size != config.input_size:
        config = config.replace(input_size=request.input_size)
    return model, config


def _dataset(request: ExportRequest, config: ModelConfig) -> DetectionDataset:
    from efficientdet.data.loader import load_for_model, parse_class_map
    from efficientdet.data.synthetic import resolve_dataset

    from .parity import subset

    if request.images:
        from efficientdet.data.image_folder import load_image_folder

        return subset(load_image_folder(request.images, list(config.class_names)), request.max_images or None)
    data = resolve_dataset(request.data)
    dataset = load_for_model(data, request.split, list(config.class_names), num_classes=config.num_classes,
                             class_map=parse_class_map(request.class_map))
    if len(dataset.class_names) != config.num_classes:
        raise UsageError(f"dataset {data} has {len(dataset.class_names)} classes but the model has "
                         f"{config.num_classes}; evaluate on the data the model was trained for")
    dataset = subset(dataset, request.max_images or None)
    if not dataset.records:
        raise UsageError(f"dataset {data} split {request.split!r} has no usable images for the parity gate")
    return dataset


def _recipe(request: ExportRequest, config: ModelConfig, dataset: DetectionDataset) -> Int8Recipe:
    """The int8 recipe: the calibration set (checked against the model's preprocessing and the evaluation images)
    and the methods."""
    from calib_data.store import default_set, load_calibration_set

    from .int8_recipe import Int8Recipe

    spec = config.preprocess
    if request.calib:
        calib = load_calibration_set(request.calib)
        calib.check_preprocess(spec)
    else:
        from efficientdet.data.synthetic import resolve_dataset

        calib = default_set(resolve_dataset(request.data), spec, shifted=request.calib_shifted)
    calib.check_disjoint(dataset)
    log.info(f"calibration set {calib.path}: {len(calib)} images of {calib.manifest['source']} "
             f"[{calib.manifest['split']}]")
    return Int8Recipe(calib, MappingProxyType({**DEFAULT_METHODS, **request.methods}), request.io_dtype,
                      request.float_layers, request.int8_input)


def _qat_request(request: ExportRequest, config: ModelConfig) -> QatRequest:
    """The training split QAT fine-tunes on (of ``data``) and its schedule."""
    from efficientdet.data.loader import load_for_model, parse_class_map
    from efficientdet.data.synthetic import resolve_dataset
    from quantize.qat import QatConfig

    from .qat_model import QatRequest

    train = load_for_model(resolve_dataset(request.data), "train", list(config.class_names),
                           num_classes=config.num_classes, class_map=parse_class_map(request.class_map))
    return QatRequest(train, request.qat or QatConfig())


def _label(artifact: Artifact) -> str:
    return " ".join(filter(None, (artifact.target, artifact.precision, artifact.flavour)))


def _clean(out: Path) -> None:
    """Remove what a killed export left in ``out`` and the report that no longer describes it."""
    from runtime.fileio import remove_stale_temporaries

    out.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_temporaries(out):
        log.info(f"removed {stale.name}, left behind by an export that was killed")
    # The old report no longer describes the folder once artifacts change: an interrupted export must not
    # leave it pairing new files with old verdicts (make bench reused such a report, issue 13).
    (out / "report.json").unlink(missing_ok=True)


def export(request: ExportRequest) -> ExportResult:
    """Export, gate and report (see the module docstring); raises :mod:`convert.errors`' types."""
    request.check()
    ckpt = request.checkpoint()
    out = request.folder()
    check_writable(out)

    from efficientdet.checkpoint import file_sha256
    from runtime.cpu_class import cpu_class
    from runtime.fileio import temp_dir
    from runtime.preprocess import read_image

    from .context import ExportContext
    from .field import field_images
    from .gates import FAIL, NOT_MEASURABLE, gate_for
    from .manifest_writer import folder_inventory, gate_record, mark_gate
    from .parity import run_parity
    from .report import parity_image, write_interrupted_report, write_report
    from .targets import plan
    from .targets.onnx import fp32_model

    model, config = _load(request, ckpt)
    dataset = _dataset(request, config)
    int8 = _recipe(request, config, dataset) if "int8" in request.precisions else None
    qat = _qat_request(request, config) if "int8-qat" in request.precisions else None
    overrides = dict(request.gate_overrides)
    gates = {p: gate_for(p).tightened(**overrides) for p in request.precisions}
    t0 = time.time()
    ckpt_sha = file_sha256(ckpt)
    previous = _previous_report(out, ckpt_sha, config.input_size)
    source = request.images or request.data
    log.info(f"model {config.name} at {config.input_size} on {len(dataset.records)} images of {source}"
             + ("" if dataset.labelled else " (unlabelled: tensor and detection parity only, mAP not measured)"))
    try:
        log.info("exporting FP32 ONNX (torch dynamo exporter + onnxsim, numerically checked)")
        fp32 = fp32_model(model, config.input_size)
        _clean(out)
        with temp_dir(out, "convert") as tmp:
            ctx = ExportContext(model, config, out, Path(tmp), fp32,
                                {"checkpoint": str(ckpt), "checkpoint_sha256": ckpt_sha}, tuple(request.targets),
                                int8, qat)
            artifacts = [target.export(ctx, precision)
                         for target, precision in plan(request.targets, request.precisions, request.flavours)]
        log.info("parity gate: " + ", ".join(_label(a) for a in artifacts))
        field_set = field_images(dataset)
        kinds = ", ".join(sorted({f.kind for f in field_set}))
        log.info(f"field fidelity: {len(field_set)} images unlike the calibration set ({kinds})")
        activations = None
        if int8 is not None:  # the model's own reading under 8-bit activation steps, beside the int8 gates
            from .activation_rounding import activation_ranges

            activations = activation_ranges(model, int8.calib)
            log.info(f"FP32 under its activations' 8-bit rounding alone: {len(activations.ranges)} tensors, ranges "
                     f"over {activations.images} calibration images (convert/activation_rounding.py)")
        # The detection op in the Android graph leaves no raw outputs: its gate bounds detections and mAP.
        reference, entries, detections = run_parity(
            model, config.contract(), dataset,
            [(a, gates[a.precision].tightened(rel_err_max=None) if a.flavour else gates[a.precision])
             for a in artifacts], threads=request.threads, field=field_set, activations=activations)
    except KeyboardInterrupt:  # Ctrl-C: say in OUT what is there, each artifact with its (missing) verdict
        write_interrupted_report(out, {"interrupted": True, "checkpoint": str(ckpt), "checkpoint_sha256": None,
                                       "artifacts": [], "folder": folder_inventory(out, [])})
        raise
    best = max(range(len(dataset.records)), key=lambda i: len(reference.detections[i]))
    image = parity_image(read_image(dataset.records[best].path),
                         reference.detections[best].to_original(reference.letterboxes[best]),
                         [(_label(a), d[best]) for a, d in zip(artifacts, detections)],
                         list(dataset.class_names))
    report = {
        "model": config.name, "input_size": config.input_size, "checkpoint": str(ckpt), "checkpoint_sha256": ckpt_sha,
        "data": str(source), "split": request.split if dataset.labelled else None, "labelled": dataset.labelled,
        "cpu": cpu_class().to_dict(),
        "num_images": len(dataset.records),
        "map_ref": reference.metrics["map"], "fp32_input_rounding": reference.input_rounding,
        "fp32_activation_rounding": reference.activation_rounding,
        "gates": {p: g.to_dict() for p, g in gates.items()}, "gate_overrides": overrides, "artifacts": entries,
        "wall_time_s": round(time.time() - t0, 1),
    }
    if request.accept_unmeasurable:
        for e in entries:
            if e["gate"]["status"] == NOT_MEASURABLE:
                e["gate"]["accepted"] = True  # the user's explicit choice, recorded beside the verdict
    for e in entries:
        mark_gate(e["path"], gate_record(e, report))
        _compare_float_layers(e, previous)
    report["folder"] = folder_inventory(out, entries)
    failed_int8 = any(e["gate"]["status"] == FAIL for e in entries if e["precision"].startswith("int8"))
    if int8 is not None and (ctx.measured_sensitivity() is not None or (failed_int8 and request.sensitivity)):
        worst = ctx.sensitivity()
        report["sensitivity"] = {"method": "each layer quantized alone (int8 weight per-channel + uint8 input), "
                                           "SNR of the raw outputs vs FP32 on calibration images",
                                 "layers": [s.to_dict() for s in worst]}
        for e in entries:
            if e["precision"].startswith("int8") and e["gate"]["status"] == FAIL:
                e["gate"]["failures"].append("most sensitive layers: " + ", ".join(
                    f"{s.node} ({s.worst_snr_db:.1f} dB)" for s in worst[:5]))
    return ExportResult(report, write_report(out, report, image))


def _previous_report(out: Path, ckpt_sha: str, input_size: int) -> dict[str, Any] | None:
    """The report an earlier export of the same checkpoint and size left in ``out`` (read before it is replaced)."""
    try:
        report = json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        return None
    same = report.get("checkpoint_sha256") == ckpt_sha and report.get("input_size") == input_size
    return report if same else None


def _compare_float_layers(entry: dict[str, Any], previous: dict[str, Any] | None) -> None:
    """A re-run with float layers says which layers it kept in float and what that changed against the previous
    export of the same artifact in OUT (stored in the entry as ``float_layers_effect`` and logged)."""
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
    log.info(f"{entry['target']} {entry['precision']}: kept in float {kept} (before: {was or 'none'}); ΔmAP "
             f"{q['map_delta'] * 100:+.2f} -> {p['map_delta'] * 100:+.2f} points, det match {q['det_match']:.1%} -> "
             f"{p['det_match']:.1%}")
