"""Build the ``efficientdet-manifest/1`` for an artifact and write it (sidecar JSON + embedded copy).

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
from runtime.anchors import anchor_spec_from_config
from runtime.box_coding import BOX_CODING
from runtime.fileio import atomic_write_bytes
from runtime.manifest import MANIFEST_FORMAT, METADATA_KEY, sidecar_path, validate_manifest
from runtime.postprocess import DEFAULT_POSTPROCESS

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
                quantization: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name}
    if layout is not None:
        spec["layout"] = layout
    spec.update({"shape": [int(d) for d in shape], "dtype": dtype, "quantization": quantization})
    return spec


def build_manifest(config: ModelConfig, *, target: str, precision: str, artifact_file: str,
                   input_spec: dict[str, Any], outputs: dict[str, dict[str, Any]],
                   inference_precision: str | None = None, checkpoint: str | None = None,
                   checkpoint_sha256: str | None = None, sha256: str | None = None,
                   extra_artifact: dict[str, Any] | None = None) -> dict[str, Any]:
    """A validated manifest; ``sha256`` is filled in later by :func:`write_manifest` for the sidecar."""
    cfg = config.to_dict()
    names = list(config.class_names) or [str(i) for i in range(config.num_classes)]
    manifest = {
        "format": MANIFEST_FORMAT,
        "model": cfg,
        "artifact": {"target": target, "precision": precision, "file": artifact_file, "sha256": sha256,
                     **(extra_artifact or {})},
        "input": input_spec,
        "outputs": outputs,
        "preprocess": config.preprocess.to_dict(),
        "anchors": anchor_spec_from_config(cfg),
        "box_coding": dict(BOX_CODING),
        "postprocess": dict(DEFAULT_POSTPROCESS),
        "class_names": names,
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
    """Fill in the artifact's hash and write ``<artifact>.json`` atomically (after the artifact is in place)."""
    final = copy.deepcopy(manifest)
    final["artifact"]["sha256"] = sha256
    validate_manifest(final)
    return atomic_write_bytes(sidecar_path(artifact_path), (json.dumps(final, indent=2) + "\n").encode())
