"""Get the artifacts a benchmark needs: reuse an export folder when its ``report.json`` already holds every
requested target x precision for this checkpoint and input size, else export into it (:func:`convert.pipeline.export`).

Reuse is keyed on the checkpoint's sha256, not its path or date, so a retrained model is never
benchmarked through stale artifacts, on each artifact's own sha256 as the report recorded it (an
interrupted export of another checkpoint into the same folder had replaced files under a report that
still named the old checkpoint, issue 13; the exporter now also deletes the old report first), and on
the int8 recipe: an int8 artifact made with another
calibration method, weight scheme, input range or share of photometrically shifted calibration images than today's
default (or an Android file without today's score floor), or a QAT artifact made with another objective, is
remade.
A gate failure does not stop the benchmark (the row carries the verdict); a conversion error or bad
input does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from calib_data import CalibrationError, load_calibration_set
from convert.targets.android import PRECISIONS as ANDROID_PRECISIONS
from runtime.fileio import file_sha256
from runtime.manifest import PRECISIONS


class ExportError(RuntimeError):
    """The conversion the benchmark needs could not be made."""


def current_recipe(artifact: dict[str, Any], shifted: float | None = None) -> bool:
    """Whether an int8 artifact was quantized the way ``python -m convert`` quantizes by default today: the
    calibration method, the weight scheme, what the input quantizer holds, the share of shifted calibration images
    (``shifted``: the share of the set the benchmark was given, else today's default), the Android file's score
    floor, QAT's objective and shifts, each as its manifest records it (QAT files with 8-bit weights, made before
    session 24, or trained with torchao's fused fake quantizer, whose scales were not the files', before session 25,
    are not current)."""
    from calib_data.store import SHIFTED_SHARE
    from convert.int8_recipe import (
        DEFAULT_INT8_INPUT,
        DEFAULT_METHODS,
        INPUT_FORMS,
        INPUT_FULL_RANGE,
        INPUT_PIXELS,
        SCHEMES,
    )
    from convert.targets.android import SCORE_FLOOR
    from quantize.qat import FAKE_QUANTIZER, QatConfig

    q = artifact.get("quantization") or {}
    wanted = SHIFTED_SHARE if shifted is None else shifted
    if artifact["precision"].startswith("int8") and (q.get("calibration") or {}).get("shifted") != wanted:
        return False
    android = artifact.get("flavour") == "android"
    if artifact["precision"] == "int8":
        target = artifact["target"]
        return (q.get("method") == DEFAULT_METHODS[target] and q.get("scheme") == SCHEMES[target]
                and q.get("input") == (INPUT_PIXELS if android else INPUT_FORMS[DEFAULT_INT8_INPUT])
                and (not android or q.get("score_floor_logit") == round(SCORE_FLOOR, 4)))
    if artifact["precision"] == "int8-qat":
        qat = q.get("qat") or {}
        return (qat.get("objective") == QatConfig().objective and qat.get("photometric") == QatConfig().photometric
                and qat.get("fake_quantizer") == FAKE_QUANTIZER and q.get("input") == INPUT_FULL_RANGE
                and q.get("scheme") == SCHEMES[artifact["target"]])
    return True


def _intact(artifact: dict[str, Any]) -> bool:
    """The file the report describes is still the one on disk (its sha256), not a later export's."""
    path = Path(artifact["path"])
    return path.is_file() and artifact.get("sha256") == file_sha256(path)


def _pairs(report: dict[str, Any], shifted: float | None = None) -> set[tuple[str, ...]]:
    """``(target, precision)`` of each intact artifact, ``(target, precision, flavour)`` of a flavoured one."""
    return {(a["target"], a["precision"], *((a["flavour"],) if a.get("flavour") else ()))
            for a in report.get("artifacts", []) if _intact(a) and current_recipe(a, shifted)}


def reusable(out: Path, ckpt: Path, input_size: int, wanted: set[tuple[str, ...]],
             shifted: float | None = None) -> dict[str, Any] | None:
    """The existing report in ``out`` if it covers ``wanted`` for this checkpoint and size (int8 calibrated with
    ``shifted``, :func:`current_recipe`), else None."""
    path = out / "report.json"
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text())
    except ValueError:
        return None
    same = report.get("checkpoint_sha256") == file_sha256(ckpt) and report.get("input_size") == input_size
    return report if same and wanted <= _pairs(report, shifted) else None


def ensure_exports(out: Path, ckpt: Path, config: Any, input_size: int, data: str, targets: list[str],
                   precisions: list[str], qat_epochs: float, max_images: int, calib: str | None = None,
                   log: Any = print) -> dict[str, Any]:
    """``report.json`` of an export holding ``targets`` x ``precisions`` (ONNX FP32 always, for the baseline);
    ``config`` is the checkpoint's own (its variant and PHI are what the export checks the checkpoint against:
    without them every Lite checkpoint was refused as "not the D0 requested", issue 12)."""
    unknown = set(precisions) - set(PRECISIONS)
    if unknown:
        raise ExportError(f"unknown precisions {sorted(unknown)}; choose from {', '.join(PRECISIONS)}")
    targets = sorted(set(targets) | {"onnx"})
    wanted: set[tuple[str, ...]] = {(t, p) for t in targets for p in precisions} | {("onnx", "fp32")}
    # the Android TFLite (MediaPipe's form) of each float/int8 TFLite, so MediaPipe gets a row beside the runtime
    android = {("tflite", p, "android") for p in precisions if "tflite" in targets and p in ANDROID_PRECISIONS}
    wanted |= android
    # a set the benchmark was given is used as it is: its share of shifted images is the recipe
    try:
        shifted = load_calibration_set(calib, verify=False).manifest.get("shifted", 0.0) if calib else None
    except CalibrationError as e:
        raise ExportError(str(e)) from e
    report = reusable(out, ckpt, input_size, wanted, shifted)
    if report is not None:
        log(f"reusing the artifacts in {out} (same checkpoint sha256 and input size)")
        return report
    from convert.errors import outcome
    from convert.pipeline import ExportRequest, export, log_to_stderr
    from quantize.qat import QatConfig

    plain = tuple(sorted({p for p in precisions if p != "int8-qat"} | {"fp32"}
                         | ({"int8"} if "int8-qat" in precisions else set())))
    request = ExportRequest(targets=tuple(targets), precisions=plain + (("int8-qat",) if "int8-qat" in precisions
                                                                       else ()),
                            ckpt=ckpt, variant=config.variant, phi=str(config.phi), input_size=input_size, data=data,
                            max_images=max_images, out=out, calib=calib,
                            flavours=("android",) if android else (), qat=QatConfig(epochs=qat_epochs),
                            sensitivity=False)
    log(f"exporting {', '.join(targets)} x {', '.join(request.precisions)}"
        + (" (and the Android TFLite)" if android else "") + f" into {out}")
    log_to_stderr()
    try:
        code = export(request).status
    except Exception as e:
        known = outcome(e)
        if known is None:
            raise
        raise ExportError(f"the export into {out} failed: {known.message.removeprefix('error: ')}") from e
    report = reusable(out, ckpt, input_size, wanted, shifted)
    if report is None:
        raise ExportError(f"the export into {out} did not produce every requested artifact")
    if code:
        log("note: some artifacts failed their parity gate; their rows say so (gate_passed = false)")
    return report
