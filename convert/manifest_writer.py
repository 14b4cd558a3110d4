"""Build the ``efficientdet-manifest/2`` for an artifact and write it (sidecar JSON + embedded copy).

The runtime trusts only the manifest, so every manifest is validated with the runtime's own
``validate_manifest`` before it is written: an exporter bug fails here, not on a device.
An embedded copy cannot contain the hash of the file that holds it, so its ``artifact.sha256`` is null;
the sidecar carries the real hash.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from efficientdet.model.config import ModelConfig
from runtime.contract import DEFAULT_POSTPROCESS, PostprocessSpec, Quantization, TensorSpec
from runtime.fileio import atomic_write_bytes, file_sha256
from runtime.manifest import MANIFEST_FORMAT, METADATA_KEY, NOT_GATED, TARGETS, sidecar_path, validate_manifest

TOOL_PACKAGES = ("torch", "onnx", "onnxruntime", "onnxsim", "onnxscript", "openvino", "onnx2tf", "tensorflow",
                 "ai-edge-litert", "numpy")
EMBED_KEY = METADATA_KEY


@dataclass(frozen=True)
class Artifact:
    """One written artifact: ``path`` is the file the runtime opens (``.xml`` for OpenVINO)."""

    target: str
    precision: str
    path: Path
    manifest_path: Path
    sha256: str
    size_bytes: int
    flavour: str = ""  # "android": the TFLite for Android's detector APIs (post-processing in the graph)




def tool_versions(packages: tuple[str, ...] = TOOL_PACKAGES) -> dict[str, str]:
    """Installed versions of the conversion tool chain (absent packages are left out)."""
    out = {}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def tensor_spec(name: str, shape: list[int], dtype: str = "float32", layout: str | None = None,
                quantization: dict[str, Any] | None = None) -> TensorSpec:
    """A tensor as a backend reports it (``quantization``: the backend's ``{"scale", "zero_point"}`` or None)."""
    return TensorSpec(name, tuple(int(d) for d in shape), dtype, layout, Quantization.from_dict(quantization))


def model_block(config: ModelConfig) -> dict[str, Any]:
    """The manifest's ``model`` block: the architecture, without the pre-processing and input size that the
    contract's blocks hold (stored once)."""
    return {k: v for k, v in config.to_dict().items() if k not in ("input_size", "preprocess")}


def build_manifest(config: ModelConfig, *, target: str, precision: str, artifact_file: str,
                   input_spec: TensorSpec, outputs: dict[str, TensorSpec],
                   inference_precision: str | None = None, checkpoint: str | None = None,
                   checkpoint_sha256: str | None = None, sha256: str | None = None,
                   extra_artifact: dict[str, Any] | None = None,
                   postprocess: PostprocessSpec = DEFAULT_POSTPROCESS) -> dict[str, Any]:
    """A validated manifest; ``sha256`` is filled in later by :func:`write_manifest` for the sidecar.

    ``postprocess``: the deployment post-processing, the runtime's default unless the artifact does it in its graph.
    """
    names = list(config.class_names) or [str(i) for i in range(config.num_classes)]
    manifest = {
        "format": MANIFEST_FORMAT,
        "model": model_block(config),
        "artifact": {"target": target, "precision": precision, "file": artifact_file, "sha256": sha256,
                     **(extra_artifact or {})},
        "input": input_spec.to_dict(),
        "outputs": {key: spec.to_dict() for key, spec in outputs.items()},
        **config.contract(postprocess).to_manifest(),
        "class_names": names,
        **({"class_ids": list(config.class_ids)} if config.class_ids else {}),
        "inference_precision": inference_precision,
        "source": {"checkpoint": checkpoint, "checkpoint_sha256": checkpoint_sha256},
        "tools": tool_versions(),
    }
    validate_manifest(manifest)
    return manifest


def embedded_json(manifest: dict[str, Any]) -> str:
    """The copy stored inside the artifact: same content, ``artifact.sha256`` null, stable key order."""
    embedded = copy.deepcopy(manifest)
    embedded["artifact"]["sha256"] = None
    return json.dumps(embedded, sort_keys=True, separators=(",", ":"))


def remove_stale_sidecar(artifact_path: str | os.PathLike[str]) -> None:
    """Delete an old sidecar before replacing its artifact, so a crash never pairs new bytes with an old hash."""
    sidecar_path(artifact_path).unlink(missing_ok=True)


def write_manifest(artifact_path: str | os.PathLike[str], manifest: dict[str, Any], sha256: str) -> Path:
    """Fill in the artifact's hash and write ``<artifact>.json`` atomically (after the artifact is in place).

    The sidecar starts as ``gate: not gated``; :func:`mark_gate` records the verdict once the gate has run,
    so a file left by an interrupted export says so itself (and the runtime warns when it loads it).
    """
    final = copy.deepcopy(manifest)
    final["artifact"]["sha256"] = sha256
    final["gate"] = {"status": NOT_GATED}
    validate_manifest(final)
    return atomic_write_bytes(sidecar_path(artifact_path), (json.dumps(final, indent=2) + "\n").encode())


def publish(out_path: Path, data: bytes, manifest: dict[str, Any], target: str, precision: str,
            flavour: str = "") -> Artifact:
    """The tail every single-file target shares: drop the old sidecar, write ``data`` atomically, then
    :func:`seal` it."""
    remove_stale_sidecar(out_path)
    atomic_write_bytes(out_path, data)
    return seal(out_path, manifest, target, precision, flavour)


def seal(out_path: Path, manifest: dict[str, Any], target: str, precision: str, flavour: str = "",
         extra_bytes: int = 0) -> Artifact:
    """Hash the artifact now in place, write its sidecar (with that hash) and describe it; ``extra_bytes``: files
    beside it that belong to it (OpenVINO's ``.bin``)."""
    sha = file_sha256(out_path)
    sidecar = write_manifest(out_path, manifest, sha)
    return Artifact(target, precision, out_path, sidecar, sha, out_path.stat().st_size + extra_bytes, flavour)


def gate_record(entry: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """What an artifact's own manifest keeps of its parity-gate verdict (the report has the rest)."""
    gate, parity = entry["gate"], entry["parity"]
    return {"status": gate["status"], **({"accepted": True} if gate.get("accepted") else {}),
            "failures": gate["failures"][:3], "data": report["data"], "split": report["split"],
            "images": parity["num_images"], "reference_detections": parity["num_detections_ref"],
            "det_match": parity["det_match"], "map_delta": parity["map_delta"], "report": "report.json",
            "cpu": report["cpu"]}


def mark_gate(artifact_path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Record the gate verdict in the artifact's sidecar (only the sidecar: the artifact's bytes, and so its
    hash and embedded copy, stay as they are)."""
    path = sidecar_path(artifact_path)
    manifest = json.loads(path.read_text())
    manifest["gate"] = record
    validate_manifest(manifest)
    atomic_write_bytes(path, (json.dumps(manifest, indent=2) + "\n").encode())


def folder_inventory(out: str | os.PathLike[str], entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every artifact in ``out`` with its gate state: those of this run, and those an earlier or interrupted
    export left there (which the report would otherwise not mention)."""
    gated = {Path(e["path"]).resolve() for e in entries}
    rows = []
    for path in sorted(Path(out).iterdir()):
        if path.suffix not in TARGETS or path.name.startswith("."):
            continue
        side = sidecar_path(path)
        try:
            manifest = json.loads(side.read_text())
            artifact, gate = manifest.get("artifact", {}), manifest.get("gate") or {"status": NOT_GATED}
        except (OSError, ValueError):
            artifact, gate = {}, {"status": "no manifest"}
        rows.append({"path": str(path), "target": artifact.get("target"), "precision": artifact.get("precision"),
                     "gate": gate.get("status"), "in_this_report": path.resolve() in gated})
    return rows
