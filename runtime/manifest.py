"""The manifest: the one contract between the exporter and the runtime.

Every artifact carries a JSON manifest (a ``<artifact>.json`` sidecar, or embedded in ONNX
``metadata_props`` / OpenVINO ``rt_info`` under ``efficientdet_manifest``) saying how to feed it,
what its outputs mean and how to post-process them. The runtime trusts nothing else, so a
wrong or stale manifest must fail loudly here, naming the field, instead of giving silently
wrong boxes on a device. A valid manifest becomes a typed :class:`Manifest` (its contract blocks are the
objects of runtime/contract.py); the JSON stays beside them for the blocks the runtime only reports.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .anchors import anchor_count
from .backends import METADATA_KEY
from .contract import AnchorSpec, Contract, TensorSpec
from .fileio import atomic_write_json, file_sha256

# Format 2 stores the input size once (preprocess.input_size); format 1 also repeated it in anchors.input_size
# and model.input_size. Artifacts exported before the change are on devices: the runtime reads both.
MANIFEST_FORMAT = "efficientdet-manifest/2"
FORMAT_1 = "efficientdet-manifest/1"
READABLE_FORMATS = (FORMAT_1, MANIFEST_FORMAT)

# The project's one vocabulary of targets and precisions (convert/, benchmarks/ and the runtime read it here).
TARGETS = {".onnx": "onnx", ".xml": "openvino", ".tflite": "tflite"}  # the file the runtime opens -> its backend
TARGET_NAMES = tuple(TARGETS.values())
PRECISIONS = ("fp32", "fp16", "int8", "int8-qat")
FLOAT_PRECISIONS = PRECISIONS[:2]
INPUT_DTYPES = ("float32", "uint8", "int8")
OUTPUT_DTYPES = ("float32", "float16", "uint8", "int8")
# Artifacts for Android's detector APIs post-process in the graph with TFLite's own op; their outputs are
# these four (boxes [1,K,4] ymin,xmin,ymax,xmax normalised to the input; classes, scores [1,K]; count [1]).
IN_GRAPH_NMS = "TFLite_Detection_PostProcess"
ANDROID_OUTPUTS = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
INTEGER_DTYPES = ("uint8", "int8")
INFERENCE_PRECISIONS = ("f32", "f16", "bf16", None)
# The parity-gate verdict a sidecar records (convert/manifest_writer.py: "not gated" until the gate has run).
NOT_GATED = "not gated"
GATE_STATES = ("pass", "fail", "not measurable", NOT_GATED)
REQUIRED = ("format", "model", "artifact", "input", "outputs", "preprocess", "anchors", "box_coding",
            "postprocess", "class_names", "inference_precision", "source", "tools")


class ManifestError(ValueError):
    """The manifest is missing, malformed, inconsistent, or does not describe the artifact beside it."""


def sidecar_path(artifact_path: str | os.PathLike[str]) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    p = Path(artifact_path)
    return p.with_name(p.name + ".json")


def write_sidecar(artifact_path: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """Write ``<artifact>.json`` atomically (temp file + ``os.replace``) so a reader never sees half a file."""
    return atomic_write_json(sidecar_path(artifact_path), manifest)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _parse(text: str | bytes, where: str) -> dict[str, Any]:
    """Parse a manifest; NaN/Infinity (which Python's json accepts) and nesting too deep to parse are refused."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ManifestError(f"manifest in {where} is not UTF-8 text ({e}); re-export the artifact") from None
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise ManifestError(f"manifest in {where} is not valid JSON ({reason}); re-export the artifact") from None
    if not isinstance(data, dict):
        raise ManifestError(f"manifest in {where} must be a JSON object, got {type(data).__name__}")
    return data


def _embedded_onnx(path: Path) -> str | None:
    """Read ``metadata_props`` through onnxruntime (the runtime never depends on the ``onnx`` package).

    Without onnxruntime the manifest cannot be read, and the honest error is the missing package (which
    the backend would need anyway), not "no manifest".
    """
    from .backends import missing
    from .onnx_external_data import open_session

    try:
        import onnxruntime as ort
    except ImportError as e:
        raise missing("onnxruntime", "onnx", e) from e
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = open_session(ort, path, opts, ["CPUExecutionProvider"])  # external data checked first
    return session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)


def _embedded_openvino(path: Path) -> str | None:
    try:
        from .backends.openvino_privacy import import_openvino

        ov = import_openvino()  # with OpenVINO telemetry off
    except ImportError as e:  # the package is the problem, not a missing manifest
        from .backends import missing

        raise missing("openvino", "openvino", e) from e
    if not path.with_suffix(".bin").is_file():
        raise FileNotFoundError(f"OpenVINO weights {path.with_suffix('.bin')} not found beside {path.name}")
    try:
        model = ov.Core().read_model(str(path))
    except RuntimeError as e:  # a cut .xml or .bin: OpenVINO's own text names neither the file nor the fix
        from .errors import corrupt

        raise corrupt(f"{path} (with {path.with_suffix('.bin').name})", "OpenVINO IR", e) from e
    if not model.has_rt_info(METADATA_KEY):
        return None
    return str(model.get_rt_info(METADATA_KEY).astype(str))


def load_manifest(artifact_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The artifact's manifest: the sidecar if present, else the copy embedded in an ONNX/OpenVINO file.

    The result carries ``"_source"`` (``"sidecar"`` or ``"embedded"``) so hash checks know what to expect.
    """
    path = Path(artifact_path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    side = sidecar_path(path)
    if side.is_file():
        try:
            raw = side.read_bytes()
        except OSError as e:
            raise ManifestError(f"cannot read manifest {side}: {e.strerror or e}") from None
        manifest = _parse(raw, str(side))
        manifest["_source"] = "sidecar"
        return manifest
    suffix = path.suffix.lower()
    text = _embedded_onnx(path) if suffix == ".onnx" else _embedded_openvino(path) if suffix == ".xml" else None
    if text is None:
        raise ManifestError(f"no manifest for {path}: expected {side} beside it or embedded metadata")
    manifest = _parse(text, f"{path} (embedded {METADATA_KEY})")
    manifest["_source"] = "embedded"
    return manifest


def _get(manifest: dict[str, Any], field: str, types: type | tuple[type, ...]) -> Any:
    node: Any = manifest
    for part in field.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ManifestError(f"manifest field '{field}' is missing")
        node = node[part]
    if types is not object and (not isinstance(node, types) or (isinstance(node, bool) and bool not in _tup(types))):
        names = "/".join(t.__name__ for t in _tup(types))
        raise ManifestError(f"manifest field '{field}' must be {names}, got {type(node).__name__} {node!r}")
    return node


def _tup(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _one_of(manifest: dict[str, Any], field: str, allowed: Iterable[Any]) -> Any:
    allowed = tuple(allowed)
    value = _get(manifest, field, object)
    if value not in allowed:
        raise ManifestError(f"manifest field '{field}' must be one of {list(allowed)}, got {value!r}")
    return value


def _int_list(manifest: dict[str, Any], field: str, length: int | None = None) -> list[int]:
    value = _get(manifest, field, list)
    if any(not isinstance(v, int) or isinstance(v, bool) for v in value) or (length and len(value) != length):
        what = f"{length} integers" if length else "a list of integers"
        raise ManifestError(f"manifest field '{field}' must be {what}, got {value!r}")
    return value


def _positive(manifest: dict[str, Any], field: str) -> float:
    """A finite number > 0 (a zero, negative or non-finite scale, std or anchor size gives garbage boxes)."""
    value = _get(manifest, field, (int, float))
    if not (math.isfinite(value) and value > 0):
        raise ManifestError(f"manifest field '{field}' must be a finite number > 0, got {value!r}")
    return float(value)


def _check_quant(manifest: dict[str, Any], field: str, dtype: str) -> None:
    quant = _get(manifest, field, (dict, type(None)))
    if quant is None:
        if dtype in INTEGER_DTYPES:
            raise ManifestError(f"manifest field '{field}' is null but the dtype is {dtype}: scale/zero_point needed")
        return
    _positive(manifest, f"{field}.scale")
    zero_point = _get(manifest, f"{field}.zero_point", int)
    if dtype in INTEGER_DTYPES:
        info = np.iinfo(np.dtype(dtype))
        if not info.min <= zero_point <= info.max:
            raise ManifestError(f"manifest field '{field}.zero_point' ({zero_point}) is outside the {dtype} range")


def _check_anchor_spec(manifest: dict[str, Any]) -> None:
    """The anchor block, field by field: generate_anchors would accept NaN/zero/negative sizes silently."""
    low, high = _get(manifest, "anchors.min_level", int), _get(manifest, "anchors.max_level", int)
    if not 1 <= low <= high <= 12:
        raise ManifestError(f"manifest fields 'anchors.min_level' ({low}) / 'anchors.max_level' ({high}) must "
                            "satisfy 1 <= min_level <= max_level <= 12")
    if not 1 <= _get(manifest, "anchors.num_scales", int) <= 16:
        raise ManifestError("manifest field 'anchors.num_scales' must lie in 1..16")
    _positive(manifest, "anchors.anchor_scale")
    ratios = _get(manifest, "anchors.aspect_ratios", list)
    ok = bool(ratios) and all(isinstance(r, list) and len(r) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in r)
        for r in ratios)
    if not ok:
        raise ManifestError(f"manifest field 'anchors.aspect_ratios' must be a non-empty list of [w, h] pairs of "
                            f"finite numbers > 0, got {ratios!r}")


def _equal(field_a: str, a: Any, field_b: str, b: Any) -> None:
    if a != b:
        raise ManifestError(f"manifest field '{field_a}' ({a!r}) does not match '{field_b}' ({b!r})")


def validate_manifest(manifest: dict[str, Any]) -> None:
    """Check required fields, their types and that the fields agree with each other and with the anchors."""
    if not isinstance(manifest, dict):
        raise ManifestError(f"manifest must be a JSON object, got {type(manifest).__name__}")
    for key in REQUIRED:
        if key not in manifest:
            raise ManifestError(f"manifest field '{key}' is missing")
    fmt = manifest["format"]
    if fmt not in READABLE_FORMATS:
        raise ManifestError(f"manifest field 'format' must be one of {list(READABLE_FORMATS)}, got {fmt!r}: an "
                            "artifact from a newer exporter needs a newer runtime")

    num_classes = _get(manifest, "model.num_classes", int)
    names = _get(manifest, "class_names", list)
    if any(not isinstance(n, str) for n in names):
        raise ManifestError("manifest field 'class_names' must be a list of strings")
    _equal("model.num_classes", num_classes, "class_names (count)", len(names))
    model_names = manifest["model"].get("class_names")
    if model_names:
        _equal("model.class_names", list(model_names), "class_names", names)
    if "class_ids" in manifest:  # the dataset's own ids (COCO category ids), one per class
        _int_list(manifest, "class_ids", num_classes)
        _equal("class_ids", manifest["class_ids"], "model.class_ids", list(manifest["model"].get("class_ids") or []))

    _one_of(manifest, "artifact.target", TARGETS.values())
    _one_of(manifest, "artifact.precision", PRECISIONS)
    _get(manifest, "artifact.file", str)
    _get(manifest, "artifact.sha256", (str, type(None)))

    _get(manifest, "input.name", str)
    layout = _one_of(manifest, "input.layout", ("nchw", "nhwc"))
    in_dtype = _one_of(manifest, "input.dtype", INPUT_DTYPES)
    shape = _int_list(manifest, "input.shape", 4)
    _check_quant(manifest, "input.quantization", in_dtype)
    channels, height, width = (shape[1], shape[2], shape[3]) if layout == "nchw" else (shape[3], shape[1], shape[2])
    if shape[0] != 1 or channels != 3 or height != width:
        expected = "[1, 3, S, S]" if layout == "nchw" else "[1, S, S, 3]"
        raise ManifestError(f"manifest field 'input.shape' {shape} does not match 'input.layout' {layout!r} "
                            f"(expected {expected})")

    pre_size = _get(manifest, "preprocess.input_size", int)
    if pre_size < 1:
        raise ManifestError("manifest field 'preprocess.input_size' must be >= 1")
    _equal("input.shape (spatial size)", height, "preprocess.input_size", pre_size)
    for copy in ("anchors.input_size", "model.input_size"):  # format 1's copies of the size
        block, key = copy.split(".")
        if key in manifest[block]:
            if fmt != FORMAT_1:
                raise ManifestError(f"manifest field '{copy}' must be absent in {fmt}: the input size is stored "
                                    "once, in 'preprocess.input_size'")
            _equal(copy, _get(manifest, copy, int), "preprocess.input_size", pre_size)
        elif fmt == FORMAT_1:
            raise ManifestError(f"manifest field '{copy}' is missing")
    _one_of(manifest, "preprocess.resize", ("letterbox",))
    _one_of(manifest, "preprocess.color_order", ("rgb", "bgr"))
    _one_of(manifest, "preprocess.interpolation", ("linear", "nearest", "area"))
    for key in ("mean", "std"):
        vals = _get(manifest, f"preprocess.{key}", list)
        if len(vals) != 3 or any(not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v)
                                 for v in vals):
            raise ManifestError(f"manifest field 'preprocess.{key}' must be 3 finite numbers, got {vals!r}")
    if any(v <= 0 for v in manifest["preprocess"]["std"]):
        raise ManifestError(f"manifest field 'preprocess.std' must be > 0, got {manifest['preprocess']['std']!r}")
    pad = manifest["preprocess"].get("pad_color")
    if pad is not None and (not isinstance(pad, list) or len(pad) != 3 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 255 for v in pad)):
        raise ManifestError(f"manifest field 'preprocess.pad_color' must be 3 numbers in 0-255, got {pad!r}")
    _check_anchor_spec(manifest)

    _one_of(manifest, "box_coding.type", ("delta_xywh",))
    order = manifest["box_coding"].get("order")
    if order is not None and list(order) != ["dx", "dy", "dw", "dh"]:
        raise ManifestError(f"manifest field 'box_coding.order' must be ['dx', 'dy', 'dw', 'dh'], got {order!r}")
    if fmt != FORMAT_1 or "clip_log" in manifest["box_coding"]:
        _positive(manifest, "box_coding.clip_log")  # decode() clamps dw/dh at it

    thr = _get(manifest, "postprocess.score_threshold", (int, float))
    iou = _get(manifest, "postprocess.iou_threshold", (int, float))
    if not (0 <= thr < 1 and 0 < iou <= 1):
        raise ManifestError(f"manifest fields 'postprocess.score_threshold' ({thr}) / 'postprocess.iou_threshold' "
                            f"({iou}) must lie in [0, 1)")
    for key in ("max_detections", "pre_nms_top_k"):
        if _get(manifest, f"postprocess.{key}", int) < 1:
            raise ManifestError(f"manifest field 'postprocess.{key}' must be >= 1")

    if "gate" in manifest:
        _get(manifest, "gate", dict)
        _one_of(manifest, "gate.status", GATE_STATES)
    _one_of(manifest, "inference_precision", INFERENCE_PRECISIONS)
    _get(manifest, "source", dict)
    _get(manifest, "tools", dict)

    try:
        num_anchors = anchor_count(AnchorSpec.from_dict(manifest["anchors"], pre_size))
    except (KeyError, TypeError, ValueError) as e:
        raise ManifestError(f"manifest field 'anchors' is malformed: {e!r}") from None
    if in_graph_nms(manifest):
        _check_in_graph_outputs(manifest)
        return
    last_dims = (("logits", num_classes, "model.num_classes"), ("box_regression", 4, "4 (dx, dy, dw, dh)"))
    for out, last, last_name in last_dims:
        _get(manifest, f"outputs.{out}.name", str)
        dtype = _one_of(manifest, f"outputs.{out}.dtype", OUTPUT_DTYPES)
        _check_quant(manifest, f"outputs.{out}.quantization", dtype)
        oshape = _int_list(manifest, f"outputs.{out}.shape", 3)
        if oshape[0] != 1:
            raise ManifestError(f"manifest field 'outputs.{out}.shape' {oshape} must have batch 1")
        _equal(f"outputs.{out}.shape[1]", oshape[1], "anchors (count from generate_anchors)", num_anchors)
        _equal(f"outputs.{out}.shape[2]", oshape[2], last_name, last)


@dataclass(frozen=True)
class Manifest:
    """A validated manifest, typed where the runtime acts on it. ``data`` is the JSON it came from (with
    ``_source``), for the blocks the runtime only checks or reports: model, artifact, source, tools,
    quantization, gate."""

    contract: Contract
    input: TensorSpec
    outputs: Mapping[str, TensorSpec]  # keyed by output_keys(): raw logits and deltas, or the detection op's four
    class_names: tuple[str, ...]
    class_ids: tuple[int, ...] | None  # the dataset's own id of each class (COCO category ids), where it has them
    target: str
    precision: str
    inference_precision: str | None
    data: Mapping[str, Any]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Validate ``data`` (:func:`validate_manifest`, ManifestError naming the field) and type it."""
        validate_manifest(data)
        ids = data.get("class_ids")
        return cls(contract=Contract.from_manifest(data), input=TensorSpec.from_dict(data["input"]),
                   outputs={k: TensorSpec.from_dict(data["outputs"][k]) for k in output_keys(data)},
                   class_names=tuple(data["class_names"]), class_ids=tuple(ids) if ids else None,
                   target=data["artifact"]["target"], precision=data["artifact"]["precision"],
                   inference_precision=data["inference_precision"], data=data)

    @property
    def in_graph_nms(self) -> bool:
        return self.contract.postprocess.in_graph is not None


def in_graph_nms(manifest: dict[str, Any]) -> bool:
    """True for an artifact whose graph ends in the detection op (Android's detector APIs need that form)."""
    return isinstance(manifest.get("postprocess"), dict) and "in_graph" in manifest["postprocess"]


def require_in_graph_nms(manifest: Manifest, artifact_path: str | os.PathLike[str]) -> None:
    """ManifestError unless the artifact is an ``-android.tflite`` (the detection op in its graph), which
    Android's detector engines need."""
    if not manifest.in_graph_nms:
        raise ManifestError(f"{artifact_path} is not an Android TFLite (no detection op in its graph), which "
                            "Android's detector engines need; export one with `make export TARGET=tflite ANDROID=1`")


def output_keys(manifest: dict[str, Any]) -> tuple[str, ...]:
    """The manifest's output keys: the detection op's four outputs, or the raw logits and box deltas."""
    return ANDROID_OUTPUTS if in_graph_nms(manifest) else ("logits", "box_regression")


def _check_in_graph_outputs(manifest: dict[str, Any]) -> None:
    _one_of(manifest, "artifact.target", ("tflite",))
    _one_of(manifest, "postprocess.in_graph.op", (IN_GRAPH_NMS,))
    thr = _get(manifest, "postprocess.in_graph.score_threshold", (int, float))
    if not thr <= manifest["postprocess"]["score_threshold"]:
        raise ManifestError(f"manifest field 'postprocess.in_graph.score_threshold' ({thr}) must not exceed "
                            f"'postprocess.score_threshold' ({manifest['postprocess']['score_threshold']}): the "
                            "graph would drop detections the threshold keeps")
    k = _get(manifest, "postprocess.in_graph.max_detections", int)
    shapes = {"detection_boxes": [1, k, 4], "detection_classes": [1, k], "detection_scores": [1, k],
              "num_detections": [1]}
    for out in ANDROID_OUTPUTS:
        _get(manifest, f"outputs.{out}.name", str)
        _one_of(manifest, f"outputs.{out}.dtype", ("float32",))
        _equal(f"outputs.{out}.shape", _int_list(manifest, f"outputs.{out}.shape", len(shapes[out])),
               f"the detection op's ({k} detections)", shapes[out])


def _norm_shape(shape: Sequence[Any]) -> list[int | None]:
    """Backend shapes may carry symbolic or -1 dims (dynamic batch); those match anything."""
    return [d if isinstance(d, int) and d >= 0 else None for d in shape]


def _shapes_match(expected: Sequence[int], actual: Sequence[Any]) -> bool:
    got = _norm_shape(actual)
    return len(got) == len(expected) and all(g is None or g == e for g, e in zip(got, expected))


_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_artifact(manifest: dict[str, Any], artifact_path: str | os.PathLike[str]) -> None:
    """The manifest describes this file: target matches the suffix and the hashes match the bytes.

    A sidecar must hash the file (``artifact.sha256``); an embedded manifest cannot hold the hash of the
    file that contains it, but an OpenVINO IR's embedded copy does hash its ``.bin``
    (``artifact.weights_sha256``), which is required and checked either way. A null or malformed hash is
    refused: it used to skip the check, so a damaged file ran (issue 13).
    """
    path = Path(artifact_path)
    target = TARGETS.get(path.suffix.lower())
    _equal("artifact.target", manifest["artifact"]["target"], f"the file suffix {path.suffix!r}", target)
    checks = []
    if manifest.get("_source") == "sidecar":
        checks.append(("artifact.sha256", path))
    if target == "openvino":
        checks.append(("artifact.weights_sha256", path.with_suffix(".bin")))
    where = sidecar_path(path) if manifest.get("_source") == "sidecar" else f"the manifest embedded in {path}"
    for field, file in checks:
        expected = manifest["artifact"].get(field.split(".")[1])
        if not isinstance(expected, str) or not _SHA256.fullmatch(expected.lower()):
            raise ManifestError(f"manifest field '{field}' in {where} must be the file's sha256 (64 hex digits), "
                                f"got {expected!r}: without it {file.name} cannot be verified; re-export it")
        if not file.is_file():
            raise FileNotFoundError(f"{file} not found beside {path.name}")
        if file_sha256(file) != expected.lower():
            raise ManifestError(f"manifest field '{field}' ({expected[:12]}...) in {where} does not match "
                                f"{file.name}: the file is damaged or the manifest was written for another file; "
                                "re-copy or re-export it")


# Fields in which a sidecar legitimately differs from the copy embedded in the same artifact (the gate
# verdict is recorded after the artifact is written, in the sidecar only).
_EMBED_EXEMPT = {("artifact", "sha256"), ("_source",), ("gate",)}


def _first_difference(a: Any, b: Any, path: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    if path in _EMBED_EXEMPT:
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                if (*path, key) not in _EMBED_EXEMPT:
                    return (*path, key)
                continue
            diff = _first_difference(a[key], b[key], (*path, key))
            if diff is not None:
                return diff
        return None
    return None if a == b else path


def check_embedded_agrees(manifest: dict[str, Any], embedded_text: str | None, artifact_path: str | os.PathLike[str]
                          ) -> None:
    """A sidecar must say what the artifact's own embedded copy says (swapped class names passed before)."""
    if embedded_text is None or manifest.get("_source") != "sidecar":
        return
    embedded = _parse(embedded_text, f"{artifact_path} (embedded {METADATA_KEY})")
    diff = _first_difference(manifest, embedded)
    if diff is not None:
        field = ".".join(diff)
        raise ManifestError(f"manifest field '{field}' in {sidecar_path(artifact_path)} differs from the copy "
                            f"embedded in {Path(artifact_path).name}: the sidecar was edited or belongs to another "
                            "export; delete it (the embedded copy is then used) or re-export")


def check_against_backend(manifest: Manifest, backend: Any) -> None:
    """The backend's real input/output names, shapes, dtypes (and integer quantization) agree with the manifest."""
    inputs = list(backend.input_details())
    if len(inputs) != 1:
        raise ManifestError(f"manifest field 'input': the artifact has {len(inputs)} inputs, expected 1")
    _check_tensor(manifest.input, "input", inputs[0])
    outputs = {d[0]: d for d in backend.output_details()}
    for key, spec in manifest.outputs.items():
        if spec.name not in outputs:
            raise ManifestError(f"manifest field 'outputs.{key}.name' ({spec.name!r}) is not an output of the "
                                f"artifact; its outputs are {sorted(outputs)}")
        _check_tensor(spec, f"outputs.{key}", outputs[spec.name])


def _check_tensor(spec: TensorSpec, field: str, detail: Sequence[Any]) -> None:
    name, shape, dtype, quant = detail
    if field == "input" and spec.name != name:
        raise ManifestError(f"manifest field 'input.name' ({spec.name!r}) does not match the artifact's "
                            f"input {name!r}")
    if not _shapes_match(spec.shape, shape):
        raise ManifestError(f"manifest field '{field}.shape' {list(spec.shape)} does not match the artifact's "
                            f"{list(shape)}")
    if spec.dtype != dtype:
        raise ManifestError(f"manifest field '{field}.dtype' ({spec.dtype!r}) does not match the artifact's "
                            f"{dtype!r}")
    mq = spec.quantization
    if mq and quant:
        if abs(mq.scale - quant["scale"]) > 1e-5 * max(abs(quant["scale"]), 1e-12) or \
                mq.zero_point != quant["zero_point"]:
            raise ManifestError(f"manifest field '{field}.quantization' {mq.to_dict()} does not match the "
                                f"artifact's {quant}")


def gate_warning(manifest: dict[str, Any], artifact_path: str | os.PathLike[str]) -> str | None:
    """The warning for an artifact whose sidecar says its parity gate failed, could not be measured or never
    ran; None when it passed or when the manifest holds no verdict (an embedded copy never does)."""
    gate = manifest.get("gate")
    if not isinstance(gate, dict) or gate.get("status") == "pass" or gate.get("accepted"):
        return None
    status = gate.get("status")
    if status == NOT_GATED:
        return (f"{artifact_path} was never checked against the FP32 model (its export was interrupted or the "
                "parity gate did not run): its detections may be wrong; re-export it")
    reasons = "; ".join(gate.get("failures") or [])
    return (f"{artifact_path}: its parity gate result is '{status}' ({reasons or 'see report.json'}): its "
            "detections may differ from the FP32 model's (the export's report.md says what to try)")
