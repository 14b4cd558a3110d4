"""Refuse ONNX external data that lies outside the model's folder, before onnxruntime reads it.

An ``.onnx`` may keep tensors in other files, named by a ``location`` string inside the model.
onnxruntime (1.23) opens whatever it names: a ``../`` path, an absolute path and a symlink out of the
folder were all read as weights when the runtime merely opened the model to read its manifest, and its
in-memory tag ``*/_ORT_MEM_ADDR_/*`` made it read the ``offset`` as a pointer (a segfault). The runtime must
not depend on the ``onnx`` package, so this walks the protobuf wire format itself (field numbers from
onnx.proto; :data:`MESSAGES` lists the fields followed) and collects every ``TensorProto.external_data``
``location``: initializers, sparse initializers, tensors in node attributes (``Constant``), subgraphs of
``If``/``Loop``/``Scan``, functions and training graphs. Every location is checked whatever the tensor's
``data_location`` says, and repeated or merged fields are all visited: a superset of what onnxruntime reads.

:func:`open_session` is the one way the runtime creates an onnxruntime session on a path: it checks
the external data first and turns onnxruntime's load errors into an ``ArtifactError`` naming the file.
"""

from __future__ import annotations

import mmap
import os
import re
from typing import Any

from .errors import ArtifactError, corrupt

# message -> {field number: message type}: the length-delimited fields that can lead to a TensorProto
MESSAGES: dict[str, dict[int, str]] = {
    "ModelProto": {7: "GraphProto", 20: "TrainingInfoProto", 25: "FunctionProto"},
    "TrainingInfoProto": {1: "GraphProto", 2: "GraphProto"},
    "GraphProto": {1: "NodeProto", 5: "TensorProto", 15: "SparseTensorProto"},
    "FunctionProto": {7: "NodeProto", 11: "AttributeProto"},
    "NodeProto": {5: "AttributeProto"},
    "AttributeProto": {5: "TensorProto", 6: "GraphProto", 10: "TensorProto", 11: "GraphProto",
                       22: "SparseTensorProto", 23: "SparseTensorProto"},
    "SparseTensorProto": {1: "TensorProto", 2: "TensorProto"},
}
# onnxruntime reads "*/_ORT_MEM_ADDR_/*" as "offset is a pointer into this process" even in a file
# (1.23: a model file with it and offset 16 segfaulted session creation)
ORT_TAG_PREFIX = "*/_ORT_"
TENSOR_NAME, TENSOR_EXTERNAL_DATA = 8, 13  # TensorProto.name, .external_data (StringStringEntryProto key=1 value=2)

_VARINT, _FIXED64, _BYTES, _GROUP_START, _GROUP_END, _FIXED32 = range(6)


class _Corrupt(Exception):
    """Internal: the wire data is malformed; :func:`external_data_locations` adds the file name."""


def _varint(data: Any, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Corrupt(f"a varint at byte {pos} runs past the end of its message")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(data: Any, pos: int, end: int) -> Any:
    """Yield ``(field number, wire type, start, stop)`` of one message; ``start:stop`` is a bytes field's payload."""
    groups: list[int] = []  # open (deprecated) groups: skipped like unknown fields, as protobuf does
    while pos < end:
        key = data[pos]  # one-byte keys and lengths are the common case: no call for them
        if key < 0x80:
            pos += 1
        else:
            key, pos = _varint(data, pos, end)
        field, wire = key >> 3, key & 7
        start = pos
        if wire == _BYTES:
            length = data[pos] if pos < end else 0x80
            if length < 0x80:
                start = pos + 1
            else:
                length, start = _varint(data, pos, end)
            pos = start + length
        elif wire == _VARINT:
            _, pos = _varint(data, pos, end)
        elif wire == _FIXED64:
            pos += 8
        elif wire == _FIXED32:
            pos += 4
        elif wire == _GROUP_START:
            groups.append(field)
            continue
        elif wire == _GROUP_END and groups and groups[-1] == field:
            groups.pop()
            continue
        else:
            raise _Corrupt(f"wire type {wire} of field {field} at byte {start} is invalid")
        if pos > end:
            raise _Corrupt(f"field {field} at byte {start} runs {pos - end} bytes past the end of its message")
        if field == 0:
            raise _Corrupt(f"field number 0 at byte {start}")
        if not groups:
            yield field, wire, start, pos
    if groups:
        raise _Corrupt(f"group {groups[-1]} is not closed")


def _tensor_locations(data: Any, start: int, end: int) -> list[tuple[str, str]]:
    name, locations = "", []
    for field, wire, s, e in _fields(data, start, end):
        if wire != _BYTES:
            continue
        if field == TENSOR_NAME:
            name = os.fsdecode(bytes(data[s:e]))
        elif field == TENSOR_EXTERNAL_DATA:
            entry = {f: bytes(data[a:b]) for f, w, a, b in _fields(data, s, e) if w == _BYTES and f in (1, 2)}
            if entry.get(1) == b"location":
                locations.append(os.fsdecode(entry.get(2, b"")))
    return [(name, loc) for loc in locations]


def external_data_locations(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """``(tensor name, location)`` for every tensor stored as external data anywhere in the model file."""
    found: list[tuple[str, str]] = []
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return found
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            try:
                stack = [("ModelProto", 0, len(data))]
                while stack:
                    message, start, end = stack.pop()
                    if message == "TensorProto":
                        found += _tensor_locations(data, start, end)
                        continue
                    follow = MESSAGES[message]
                    for field, wire, s, e in _fields(data, start, end):
                        if wire == _BYTES and field in follow:
                            stack.append((follow[field], s, e))
            except _Corrupt as e:
                raise corrupt(path, "ONNX", f"protobuf: {e}") from None
    return found


def _inside(folder: str, target: str) -> bool:
    try:
        return os.path.commonpath([folder, target]) == folder
    except ValueError:  # another drive (Windows)
        return False


def check_external_data(path: str | os.PathLike[str]) -> None:
    """Raise :class:`ArtifactError` if any external-data location is absolute or resolves (symlinks followed)
    outside the model's folder. A missing file inside the folder is left to onnxruntime to report."""
    folder = os.path.dirname(os.path.abspath(path))
    real_folder = os.path.realpath(folder)
    for tensor, location in external_data_locations(path):
        if location.startswith(ORT_TAG_PREFIX):
            why = "is onnxruntime's in-memory tag (its offset would be read as a raw memory address)"
        elif "\0" in location:
            why = "contains a NUL byte"
        elif os.path.isabs(location) or location.startswith(("/", "\\")) or os.path.splitdrive(location)[0]:
            why = "is an absolute path"
        else:
            target = os.path.realpath(os.path.join(folder, location))
            if _inside(real_folder, target):
                continue
            why = f"resolves to {target}, outside the model's folder"
        raise ArtifactError(
            f"{path}: external data location {location!r} of tensor {tensor!r} {why}; refusing to read it. "
            f"External data must be a relative path to a file in {real_folder}: put the weights file beside the "
            "model and re-export it (onnx.save_model(..., save_as_external_data=True, location='NAME.data')), "
            "or re-copy the model from a trusted source")


def open_session(ort: Any, path: str | os.PathLike[str], sess_options: Any, providers: list[str]) -> Any:
    """``ort.InferenceSession`` on ``path`` after :func:`check_external_data`, with load errors explained
    (onnxruntime's own say neither which file nor what to do)."""
    check_external_data(path)
    try:
        return ort.InferenceSession(str(path), sess_options=sess_options, providers=providers)
    except Exception as e:
        # onnxruntime's errors (InvalidProtobuf, Fail, InvalidGraph, NoSuchFile...) derive from Exception only;
        # EPFail is about the execution provider, not the file
        if not type(e).__module__.startswith("onnxruntime") or type(e).__name__ == "EPFail":
            raise
        raise corrupt(path, "ONNX", f"onnxruntime {getattr(ort, '__version__', '')}: {_ort_reason(e)}") from e


def _ort_reason(error: Exception) -> str:
    """onnxruntime's reason without its boilerplate: "[ONNXRuntimeError] : 1 : FAIL : Load model from PATH
    failed:/onnxruntime_src/...cc:170 onnxruntime::Model::Model(...) Missing opset..." -> "Missing opset..."."""
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", str(error).strip())
    text = re.sub(r"^Load model from .* failed:\s*", "", text)
    return re.sub(r"^/onnxruntime_src/\S+ [\w:~]+\([^)]*\) ", "", text) or str(error)


__all__ = ["MESSAGES", "check_external_data", "external_data_locations", "open_session"]
