"""``python -m convert.matrix``: does every EfficientDet variant (D0-D7, Lite0-Lite4) convert and pass the gate?

For each variant, at a reduced input size with a few classes: a seeded, image-dependent random model
(``efficientdet.model.testing.detector_like_model_for``: a random-init detector passes any parity check trivially)
is checkpointed, reloaded the way ``python -m convert`` loads it, exported to every target through the target
registry (:mod:`convert.targets`, one artifact at a time so that one failure does not hide the others), and
compared with its FP32 PyTorch reference by the parity gate
(:func:`convert.parity.run_parity`, thresholds from :mod:`convert.gates`) on a few synthetic images.
One variant's or one target's failure is recorded and the matrix goes on. Results go to
``results/convert-matrix.json`` and ``.md``, rewritten atomically after every variant so a
long run that is interrupted keeps what it finished.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from efficientdet.model.config import input_size_problem
from runtime.manifest import FLOAT_PRECISIONS, TARGET_NAMES

PRECISIONS = FLOAT_PRECISIONS  # int8 needs a trained model and calibration data: see tests/test_int8.py

ALL_VARIANTS = ("D0", "D1", "D2", "D3", "D4", "D5", "D6", "D7", "Lite0", "Lite1", "Lite2", "Lite3", "Lite3x", "Lite4")
DEFAULT_OUT = Path("results")
ERROR_CHARS = 2000


@dataclass(frozen=True)
class MatrixSpec:
    """What to run: which variants/targets/precisions, at which size, on how many images."""

    variants: tuple[str, ...] = ALL_VARIANTS
    targets: tuple[str, ...] = TARGET_NAMES
    precisions: tuple[str, ...] = ("fp32",)
    size: int = 128
    num_classes: int = 3
    num_images: int = 4
    seed: int = 0
    threads: int | None = None


@dataclass(frozen=True)
class Seconds:
    """Wall-clock and CPU seconds (this process and its finished children, all threads): on a shared machine
    the wall time measures the load as much as the work; the CPU time bounds what an idle machine would take."""

    wall: float = 0.0
    cpu: float = 0.0

    @staticmethod
    def now() -> Seconds:
        t = os.times()
        return Seconds(time.perf_counter(), t.user + t.system + t.children_user + t.children_system)

    def since(self) -> Seconds:
        """Seconds elapsed from ``self`` (a :meth:`now`) until now."""
        end = Seconds.now()
        return Seconds(end.wall - self.wall, end.cpu - self.cpu)

    def __add__(self, other: Seconds) -> Seconds:
        return Seconds(self.wall + other.wall, self.cpu + other.cpu)


def parse_variant(label: str) -> tuple[str, str]:
    """``"D3"`` -> ``("d", "3")``, ``"Lite3x"`` -> ``("lite", "3x")`` (case-insensitive)."""
    low = label.strip().lower()
    for prefix, variant in (("lite", "lite"), ("d", "d")):
        if low.startswith(prefix) and low[len(prefix):]:
            return variant, low[len(prefix):]
    raise ValueError(f"unknown variant {label!r}; expected one of {', '.join(ALL_VARIANTS)}")


def _error(e: BaseException) -> str:
    """Exception type and message (its tail when long: onnx2tf puts the cause last)."""
    text = f"{type(e).__name__}: {e}".strip()
    return text if len(text) <= ERROR_CHARS else "..." + text[-ERROR_CHARS:]


def _row(label: str, target: str, precision: str, params: int | None) -> dict[str, Any]:
    return {"variant": label, "target": target, "precision": precision, "params": params, "export_s": None,
            "export_cpu_s": None, "size_bytes": None, "rel_err_logits": None, "rel_err_boxes": None, "pearson": None,
            "det_match": None, "det_match_reverse": None, "num_detections_ref": None, "passed": False,
            "failures": [], "error": None}


def _parity_into(row: dict[str, Any], entry: dict[str, Any]) -> None:
    p = entry["parity"]
    out = p["outputs"]
    row.update(rel_err_logits=out["logits"]["rel_err"], rel_err_boxes=out["box_regression"]["rel_err"],
               pearson=p["pearson"], det_match=p["det_match"], det_match_reverse=p["det_match_reverse"],
               num_detections_ref=p["num_detections_ref"], passed=entry["gate"]["passed"],
               failures=entry["gate"]["failures"])


class _Variant:
    """One variant's model, checkpoint and artifacts in its own work folder."""

    def __init__(self, label: str, spec: MatrixSpec, data: Path, work: Path) -> None:
        from efficientdet.checkpoint import file_sha256, load_model, save_checkpoint
        from efficientdet.data.loader import load_dataset
        from efficientdet.data.synthetic import CLASS_NAMES
        from efficientdet.model.config import make_config
        from efficientdet.model.detector import count_parameters

        from .parity import subset

        variant, phi = parse_variant(label)
        names = tuple(CLASS_NAMES[: spec.num_classes])
        config = make_config(phi, variant, num_classes=len(names), class_names=names, input_size=spec.size)
        self.label, self.spec, self.work = label, spec, work
        self.dataset = subset(load_dataset(data, "val", class_names=list(names)), spec.num_images)
        model = _seeded_model(config, self.dataset, spec.seed)
        self.params = count_parameters(model)
        self.ckpt = work / f"{label.lower()}.pt"
        state = model.state_dict()
        save_checkpoint(self.ckpt, {"config": config.to_dict(), "model": state, "ema": state, "epoch": 0, "step": 0})
        self.model, self.config = load_model(self.ckpt, expect=config)
        self.base = f"{self.config.name}-{self.config.input_size}"
        self.source = {"checkpoint": str(self.ckpt), "checkpoint_sha256": file_sha256(self.ckpt)}
        self._shared: dict[str, tuple[Any, Seconds] | Exception] = {}

    def _once(self, key: str, make: Callable[[], Any]) -> tuple[Any, Seconds]:
        """A step several artifacts share, run once: its result and seconds, or its first error re-raised."""
        if key not in self._shared:
            t0 = Seconds.now()
            try:
                self._shared[key] = (make(), t0.since())
            except Exception as e:
                self._shared[key] = e
        done = self._shared[key]
        if isinstance(done, Exception):
            raise RuntimeError(f"{key} (shared by every artifact that needs it) failed: {_error(done)}") from done
        return done

    def context(self) -> tuple[Any, Seconds]:
        """The export context of this variant: its FP32 ONNX (every target starts from it, so its seconds are charged
        to the onnx rows) and the shared steps the targets make on first use."""
        from .context import ExportContext
        from .targets.onnx import fp32_model

        return self._once("FP32 ONNX export", lambda: ExportContext(
            self.model, self.config, self.work, self.work, fp32_model(self.model, self.config.input_size),
            self.source, tuple(self.spec.targets)))

    def export(self, target: str, precision: str) -> tuple[Any, Seconds]:
        """Write one artifact; returns it and the seconds it took from the checkpoint's model (see the report)."""
        from .targets import REGISTRY

        ctx, onnx_s = self.context()
        spec = next(t for t in REGISTRY if t.name == target and not t.flavour)
        shared = Seconds()
        if target == "onnx":
            shared = onnx_s
        elif target == "tflite":
            _, shared = self._once("onnx2tf SavedModel", ctx.saved_model)
        t0 = Seconds.now()
        artifact = spec.export(ctx, precision)
        return artifact, shared + t0.since()

    def parity(self, artifacts: list[Any]) -> list[dict[str, Any]]:
        """The gate's comparison for all ``artifacts`` in one pass (one reference forward per image)."""

        from .gates import gate_for
        from .parity import run_parity

        _, entries, _ = run_parity(self.model, self.config.contract(), self.dataset,
                                   [(a, gate_for(a.precision)) for a in artifacts], threads=self.spec.threads)
        return entries


def _seeded_model(config: Any, dataset: Any, seed: int) -> Any:
    """The seeded detector-like model (efficientdet.model.testing), calibrated on the evaluation images themselves."""
    import torch

    from efficientdet.model.testing import detector_like_model_for
    from efficientdet.train.batches import DetectionBatches

    batches = DetectionBatches(dataset, config.preprocess, config.anchor_spec)
    images = torch.stack([batches[i][0] for i in range(len(batches))])
    return detector_like_model_for(config, images, seed)


def _gate(v: _Variant, exported: list[tuple[dict[str, Any], Any]]) -> None:
    """Parity for every exported artifact together; if that fails, one at a time to find the culprit."""
    try:
        entries = v.parity([a for _, a in exported])
    except Exception:
        traceback.print_exc()
        for row, artifact in exported:
            try:
                _parity_into(row, v.parity([artifact])[0])
            except Exception as e:
                row["error"] = "parity: " + _error(e)
        return
    for (row, _), entry in zip(exported, entries):
        _parity_into(row, entry)


def run_variant(label: str, spec: MatrixSpec, data: Path, work: Path) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """All (target, precision) rows of one variant and its timings; errors are caught per artifact (or per
    variant, when the model cannot even be built), so the matrix goes on."""
    t_start = Seconds.now()
    rows = [_row(label, t, p, None) for t in spec.targets for p in spec.precisions]
    try:
        v = _Variant(label, spec, data, work)
    except Exception as e:
        for row in rows:
            row["error"] = "setup: " + _error(e)
        traceback.print_exc()
        return rows, _timing(total=t_start.since())
    setup = t_start.since()
    exported = []
    for row in rows:
        row["params"] = v.params
        try:
            artifact, took = v.export(row["target"], row["precision"])
            row["export_s"], row["export_cpu_s"] = round(took.wall, 2), round(took.cpu, 2)
            row["size_bytes"] = artifact.size_bytes
            exported.append((row, artifact))
        except Exception as e:
            row["error"] = _error(e)
            traceback.print_exc()
    t0 = Seconds.now()
    if exported:
        _gate(v, exported)
    return rows, _timing(setup=setup, parity=t0.since(), total=t_start.since())


def _timing(**parts: Seconds) -> dict[str, float]:
    """``{"setup_s": wall, "setup_cpu_s": cpu, ...}`` rounded for the report."""
    out = {}
    for name, took in parts.items():
        out[f"{name}_s"], out[f"{name}_cpu_s"] = round(took.wall, 1), round(took.cpu, 1)
    return out


def run_matrix(spec: MatrixSpec, work: Path | None = None, out: Path | None = None,
               command: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the matrix; when ``out`` is given, (re)write ``convert-matrix.json``/``.md`` there after each variant."""
    from tqdm import tqdm

    from efficientdet.data.synthetic import generate_synthetic

    from .matrix_report import machine_info, write_results

    for label in spec.variants:
        parse_variant(label)
    t_start = Seconds.now()
    result: dict[str, Any] = {"command": command, "spec": asdict(spec), "machine": machine_info(),
                              "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "rows": [], "timings": {}}
    with tempfile.TemporaryDirectory(dir=work, prefix="convert-matrix-") as tmp:
        data = generate_synthetic(Path(tmp) / "data", num_train=2, num_val=spec.num_images, image_size=spec.size)
        bar = tqdm(spec.variants, desc="convert matrix", unit="variant", disable=not progress, file=sys.stderr)
        for label in bar:
            bar.set_postfix_str(label)
            vwork = Path(tmp) / label
            vwork.mkdir()
            rows, result["timings"][label] = run_variant(label, spec, data, vwork)
            result["rows"] += rows
            shutil.rmtree(vwork, ignore_errors=True)
            result.update(_timing(total=t_start.since()))
            if out is not None:
                write_results(out, result)
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m convert.matrix", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="all", help=f"comma-separated subset of {','.join(ALL_VARIANTS)}")
    p.add_argument("--target", default="all", choices=[*TARGET_NAMES, "all"])
    p.add_argument("--precision", default="fp32", choices=[*PRECISIONS, "all"])
    p.add_argument("--size", type=int, default=128, help="input size (multiple of 32, default 128)")
    p.add_argument("--num-classes", type=int, default=3)
    p.add_argument("--images", type=int, default=4, help="synthetic evaluation images for the gate (2-4 is plenty)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the artifacts during the gate")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="folder for convert-matrix.json/.md (default results)")
    p.add_argument("--work-dir", default=None, help="where the temporary checkpoints and artifacts go")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    variants = ALL_VARIANTS if args.variants == "all" else tuple(v.strip() for v in args.variants.split(",") if v)
    try:
        for label in variants:
            parse_variant(label)
        if problem := input_size_problem(args.size):
            raise ValueError(f"--size {problem}")
        if not 1 <= args.num_classes <= 6 or args.images < 1:
            raise ValueError("--num-classes must be 1-6 (the synthetic classes) and --images at least 1")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    spec = MatrixSpec(variants=variants, targets=TARGET_NAMES if args.target == "all" else (args.target,),
                      precisions=PRECISIONS if args.precision == "all" else (args.precision,), size=args.size,
                      num_classes=args.num_classes, num_images=args.images, seed=args.seed, threads=args.threads)
    command = "python -m convert.matrix " + shlex.join(sys.argv[1:] if argv is None else argv)
    result = run_matrix(spec, Path(args.work_dir) if args.work_dir else None, Path(args.out), command.strip())
    failed = [r for r in result["rows"] if not r["passed"]]
    print(f"{len(result['rows']) - len(failed)}/{len(result['rows'])} passed in {result['total_s']:.0f} s; "
          f"see {Path(args.out) / 'convert-matrix.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
