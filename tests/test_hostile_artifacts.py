"""Replays the artifact-file cases of the hostile-input audit (issue 13) against the runtime's loading path.

* A ``.tflite`` cut short (its sidecar hash written for the cut bytes) killed the process with SIGSEGV/SIGBUS
  inside the TFLite interpreter; now ``runtime/tflite_verify.py`` refuses it first with an ``ArtifactError``.
* An ``.onnx`` whose external data points outside its folder (``../``, absolute, a symlink out, or
  onnxruntime's in-memory tag) was read by onnxruntime when the runtime merely opened it; now
  ``runtime/onnx_external_data.py`` refuses it before any session is created.
* Truncated ``.onnx``/``.xml``/``.bin`` files without a sidecar gave the engines' raw errors, and a missing
  backend package for an embedded-only manifest was reported as "no manifest".

Every artifact here is real and small: TFLite files made by TensorFlow in a child process (TensorFlow never
loads in the test process), ONNX made with ``onnx.helper``, OpenVINO IR converted from it. Loads that could
crash the interpreter run in a subprocess, so a regression fails the test instead of killing pytest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import pytest
from google.protobuf.message import Message
from onnx import TensorProto, external_data_helper, helper, numpy_helper

from convert.manifest_writer import build_manifest, embedded_json
from efficientdet.model.config import make_config
from runtime import ArtifactError, BackendUnavailableError, Detector, load_manifest
from runtime.backends import open_backend
from runtime.contract import TensorSpec
from runtime.manifest import METADATA_KEY, file_sha256, write_sidecar
from runtime.onnx_external_data import check_external_data, external_data_locations
from runtime.tflite_verify import verify_tflite_bytes
from tests.conftest import ROOT
from tests.runtime_artifacts import NAMES, SIZE, float_io, run_python, test_image, tflite_io

CONFIG = make_config("0", "lite", num_classes=3, class_names=NAMES, input_size=SIZE)
ANCHORS, CLASSES = CONFIG.num_anchors, CONFIG.num_classes
BIAS = np.random.default_rng(7).normal(0, 0.1, (1, ANCHORS, 4)).astype(np.float32)


def manifest_for(path: Path, target: str, inp: TensorSpec, outs: dict[str, TensorSpec],
                 precision: str = "fp32") -> dict[str, Any]:
    """The exporter's manifest for ``path`` as it is now (its hash included, even for a cut file)."""
    manifest = build_manifest(CONFIG, target=target, precision=precision, artifact_file=path.name,
                              input_spec=inp, outputs=outs, sha256=file_sha256(path),
                              inference_precision="f32" if target == "openvino" else None)
    if target == "openvino":
        manifest["artifact"]["weights_sha256"] = file_sha256(path.with_suffix(".bin"))
    return manifest


def run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


# ----------------------------------------------------------------------------------------------------- TFLite

TFLITE_CODE = """
    import sys, numpy as np, tensorflow as tf
    out, A, C, S = sys.argv[1], {anchors}, {classes}, {size}
    bias = np.load(out + "/bias.npy")
    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, S, S, 3], tf.float32, name="images")])
        def f(self, images):
            flat = tf.reshape(images, [1, -1])
            return {{"logits": tf.reshape(flat[:, :A * C], [1, A, C]),
                     "box_regression": tf.reshape(flat[:, A * C:A * C + A * 4], [1, A, 4]) * 0.5 + bias}}
    m = M()
    tf.saved_model.save(m, out + "/sm", signatures={{"serving_default": m.f}})
    def rep():
        r = np.random.default_rng(0)
        for _ in range(8):
            yield [r.uniform(-2.2, 2.7, (1, S, S, 3)).astype(np.float32)]
    conv = tf.lite.TFLiteConverter.from_saved_model(out + "/sm")
    open(out + "/float.tflite", "wb").write(conv.convert())
    conv = tf.lite.TFLiteConverter.from_saved_model(out + "/sm")
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    open(out + "/int8.tflite", "wb").write(conv.convert())
"""


@pytest.fixture(scope="module")
def tflite(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Float and int8 .tflite files in the detector's contract, with a real weight buffer (a constant bias),
    made by TensorFlow in a child process; their manifests (``"manifests"``) and sidecars."""
    out = tmp_path_factory.mktemp("tflite")
    np.save(out / "bias.npy", BIAS)
    code = TFLITE_CODE.format(anchors=ANCHORS, classes=CLASSES, size=SIZE)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), str(out)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    paths, manifests = {"float": out / "float.tflite", "int8": out / "int8.tflite"}, {}
    for precision, path in paths.items():
        inp, outs = tflite_io(path, CONFIG, precision)
        manifests[precision] = manifest_for(path, "tflite", inp, outs, "fp32" if precision == "float" else "int8")
        write_sidecar(path, manifests[precision])
    return {**paths, "manifests": manifests}


def cut_points(size: int) -> list[int]:
    """~27 lengths: inside the 8-byte header and the first tables, spread over the file, and just short."""
    header = [1, 4, 7, 8, 12, 16, 24, 32]
    spread = [size * k // 16 for k in range(1, 16)]
    return sorted({*header, *spread, size - 64, size - 8, size - 2, size - 1})


def write_cut(src: Path, dst: Path, length: int, manifest: dict[str, Any]) -> Path:
    """``src`` cut to ``length`` bytes with a sidecar that matches the cut bytes (as after a re-export
    interrupted mid-copy, or a hash recomputed on the device)."""
    dst.write_bytes(src.read_bytes()[:length])
    write_sidecar(dst, {**manifest, "artifact": {**manifest["artifact"], "file": dst.name,
                                                 "sha256": file_sha256(dst)}})
    return dst


def test_verifier_accepts_real_models_and_they_still_load(tflite: dict[str, Any]) -> None:
    image = test_image()
    for precision in ("float", "int8"):
        verify_tflite_bytes(tflite[precision].read_bytes(), tflite[precision])
        det = Detector(tflite[precision], threads=1)
        assert det.backend.name.startswith("tflite (ai-edge-litert")
        logits, deltas = det.infer_raw(det.preprocess_image(image)[0])
        assert logits.shape == (ANCHORS, CLASSES) and deltas.shape == (ANCHORS, 4)
        if precision == "float":  # the weight buffer really is read: a zero image leaves exactly the bias
            _, zero_deltas = det.infer_raw(np.zeros((1, SIZE, SIZE, 3), np.float32))
            np.testing.assert_allclose(zero_deltas, BIAS[0], atol=1e-6)


LOAD_EACH = """
    import sys
    from runtime import ArtifactError, Detector
    for path in sys.argv[1:]:
        print("LOADING", path, flush=True)
        try:
            Detector(path, threads=1)
            print("LOADED", path, flush=True)
        except ArtifactError as e:
            print("REFUSED", path, "|", e, flush=True)
"""


def test_truncated_tflite_is_refused_not_a_crash(tflite: dict[str, Any], tmp_path: Path) -> None:
    """Before the fix, Interpreter(model_path=...) died with SIGSEGV/SIGBUS at 12 of 32 cut points."""
    cuts = []
    for precision in ("float", "int8"):
        src = tflite[precision]
        for length in cut_points(src.stat().st_size):
            cuts.append(write_cut(src, tmp_path / f"{precision}-cut{length}.tflite", length,
                                  tflite["manifests"][precision]))
    assert len(cuts) >= 50
    proc = run(LOAD_EACH, *map(str, cuts), str(tflite["float"]), str(tflite["int8"]))
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("LOAD", "REFUSED"))]
    crashed_at = lines[-1] if lines and lines[-1].startswith("LOADING") else None
    assert proc.returncode == 0, f"exit {proc.returncode} at {crashed_at}: {proc.stderr[-2000:]}"
    refused = {line.split()[1]: line for line in lines if line.startswith("REFUSED")}
    for path in cuts:
        message = refused[str(path)]
        assert f"{path}: truncated or corrupt TFLite file (" in message and "re-copy or re-export it" in message
    assert f"LOADED {tflite['float']}" in lines and f"LOADED {tflite['int8']}" in lines

    image = tmp_path / "image.png"
    cv2.imwrite(str(image), test_image())
    cli = subprocess.run([sys.executable, "-m", "runtime", "detect", str(cuts[len(cuts) // 4]), str(image)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert cli.returncode == 2, cli.stderr[-2000:]
    assert f"error: {cuts[len(cuts) // 4]}: truncated or corrupt TFLite file" in cli.stderr


OFFICIAL_VERDICTS = """
    import json, sys
    from ai_edge_litert.interpreter import Interpreter  # its model_content path runs flatbuffers' own Verifier
    data = open(sys.argv[1], "rb").read()
    verdicts = []
    for length in json.loads(sys.argv[2]):
        try:
            Interpreter(model_content=data[:length])
            verdicts.append(True)
        except ValueError:
            verdicts.append(False)
    print(json.dumps(verdicts))
"""


@pytest.mark.parametrize("precision", ["float", "int8"])
def test_verifier_agrees_with_flatbuffers_verifier(tflite: dict[str, Any], precision: str) -> None:
    """On 200 cut lengths the structural walk refuses exactly the files LiteRT's own flatbuffers Verifier
    refuses (run in a child: its model_content path verifies; model_path, which the old runtime used, does not)."""
    data = tflite[precision].read_bytes()
    lengths = sorted({*range(1, len(data), max(1, len(data) // 200)), len(data) - 1, len(data)})
    proc = run(OFFICIAL_VERDICTS, str(tflite[precision]), json.dumps(lengths))
    assert proc.returncode == 0, proc.stderr[-2000:]
    official = json.loads(proc.stdout.strip().splitlines()[-1])
    ours = []
    for length in lengths:
        try:
            verify_tflite_bytes(data[:length])
            ours.append(True)
        except ArtifactError:
            ours.append(False)
    assert ours == official
    assert ours[-1] and not any(ours[:-1])  # every real cut of these files loses something


def _craft(data: bytes, edit: Any) -> bytes:
    """Re-pack a real model after editing it with LiteRT's generated schema (well-formed flatbuffers whose
    indices or offsets point nowhere)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(data, 0)
    edit(model)
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _largest_buffer_outside(model: Any) -> None:
    i = max(range(len(model.buffers)), key=lambda i: len(model.buffers[i].data if model.buffers[i].data is not None
                                                          else ()))
    model.buffers[i].data, model.buffers[i].offset, model.buffers[i].size = None, 1 << 40, 4096


def _first_op_input(model: Any) -> None:
    op = model.subgraphs[0].operators[0]
    op.inputs = np.array([9999, *op.inputs[1:]], np.int32)


@pytest.mark.parametrize(("edit", "message"), [
    (_largest_buffer_outside, r"model\.buffers\[\d+\] data at bytes 1099511627776\.\.1099511631872 lies outside"),
    (_first_op_input, r"model\.subgraphs\[0\]\.operators\[0\]\.inputs names tensor 9999 of \d+"),
    (lambda m: setattr(m.subgraphs[0].tensors[0], "buffer", 9999),
     r"model\.subgraphs\[0\]\.tensors\[0\] names buffer 9999 of \d+"),
    (lambda m: setattr(m.subgraphs[0].operators[0], "opcodeIndex", 99),
     r"model\.subgraphs\[0\]\.operators\[0\] names operator code 99 of \d+"),
    (lambda m: setattr(m.signatureDefs[0].outputs[0], "tensorIndex", 9999),
     r"model\.signature_defs\[0\]\.outputs\[0\] names tensor 9999 of \d+"),
], ids=["buffer-data-outside", "operator-input", "tensor-buffer", "operator-code", "signature-output"])
def test_dangling_indices_and_offsets_are_refused(tflite: dict[str, Any], tmp_path: Path, edit: Any,
                                                  message: str) -> None:
    path = tmp_path / "crafted.tflite"
    path.write_bytes(_craft(tflite["float"].read_bytes(), edit))
    with pytest.raises(ArtifactError, match=rf"crafted\.tflite: truncated or corrupt TFLite file \({message}"):
        open_backend(path, 1)


# ------------------------------------------------------------------------------------------------------- ONNX

def detector_onnx(path: Path, location: str | None = None, embed: bool = True, offset: int = 0) -> Path:
    """A tiny ONNX in the detector's contract: logits = the first A*C input values, box_regression = the next
    A*4 halved plus ``BIAS``. With ``location`` the bias is external data there (the caller writes the file)."""
    a, c = ANCHORS, CLASSES
    ints = {"shape_flat": [1, -1], "s0": [0], "s1": [a * c], "s2": [a * c + a * 4], "axis": [1],
            "shape_logits": [1, a, c], "shape_boxes": [1, a, 4]}
    inits = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in ints.items()]
    inits += [numpy_helper.from_array(np.array(0.5, np.float32), "half"), numpy_helper.from_array(BIAS, "bias")]
    if location is not None:
        external_data_helper.set_external_data(inits[-1], location, offset=offset, length=BIAS.nbytes)
        inits[-1].ClearField("raw_data")
    nodes = [helper.make_node("Reshape", ["images", "shape_flat"], ["flat"]),
             helper.make_node("Slice", ["flat", "s0", "s1", "axis"], ["l"]),
             helper.make_node("Reshape", ["l", "shape_logits"], ["logits"]),
             helper.make_node("Slice", ["flat", "s1", "s2", "axis"], ["b"]),
             helper.make_node("Reshape", ["b", "shape_boxes"], ["bb"]),
             helper.make_node("Mul", ["bb", "half"], ["bh"]),
             helper.make_node("Add", ["bh", "bias"], ["box_regression"])]
    graph = helper.make_graph(nodes, "detector", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                                [1, 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, a, c]),
                               helper.make_tensor_value_info("box_regression", TensorProto.FLOAT, [1, a, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    if embed:
        inp, outs = float_io(CONFIG)
        manifest = build_manifest(CONFIG, target="onnx", precision="fp32", artifact_file=path.name,
                                  input_spec=inp, outputs=outs)
        model.metadata_props.add(key=METADATA_KEY, value=embedded_json(manifest))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def with_sidecar(path: Path) -> Path:
    write_sidecar(path, manifest_for(path, "onnx", *float_io(CONFIG)))
    return path


def check_runs(det: Detector) -> None:
    """The model really computed with the bias from its external file: a zero image gives exactly ``BIAS``."""
    _, deltas = det.infer_raw(np.zeros((1, 3, SIZE, SIZE), np.float32))
    np.testing.assert_allclose(deltas, BIAS[0], atol=1e-6)


def test_external_data_inside_the_folder_loads_and_runs(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    (folder / "real").mkdir(parents=True)
    (folder / "bias.bin").write_bytes(BIAS.tobytes())
    (folder / "real" / "bias.bin").write_bytes(BIAS.tobytes())
    (folder / "alias.bin").symlink_to("real/bias.bin")  # a symlink that stays inside is fine
    for name, location in (("plain", "bias.bin"), ("nested", "real/bias.bin"), ("dotted", "real/../bias.bin"),
                           ("alias", "alias.bin")):
        embedded = detector_onnx(folder / f"{name}.onnx", location)
        assert load_manifest(embedded)["_source"] == "embedded"
        check_runs(Detector(embedded, threads=1))
        check_runs(Detector(with_sidecar(detector_onnx(folder / f"{name}-side.onnx", location, embed=False)),
                            threads=1))


@pytest.fixture
def outside(tmp_path: Path) -> dict[str, Any]:
    """``tmp/outside.bin`` holds a valid bias: onnxruntime alone loads a model pointing at it without a word."""
    (tmp_path / "model").mkdir()
    target = tmp_path / "outside.bin"
    target.write_bytes(BIAS.tobytes())
    (tmp_path / "model" / "link.bin").symlink_to(target)
    return {"folder": tmp_path / "model", "target": target}


@pytest.mark.parametrize("how", ["parent", "absolute", "symlink"])
def test_external_data_outside_the_folder_is_refused(outside: dict[str, Any], how: str) -> None:
    import onnxruntime as ort

    location = {"parent": "../outside.bin", "absolute": str(outside["target"]), "symlink": "link.bin"}[how]
    embedded = detector_onnx(outside["folder"] / "embedded.onnx", location)
    side = with_sidecar(detector_onnx(outside["folder"] / "side.onnx", location, embed=False))
    # the hazard: onnxruntime itself reads the outside file as weights
    session = ort.InferenceSession(str(embedded), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["box_regression"], {"images": np.zeros((1, 3, SIZE, SIZE),
                                                                                   np.float32)})[0], BIAS)
    real = os.path.realpath(outside["target"])
    why = "is an absolute path" if how == "absolute" else f"resolves to {real}, outside the model's folder"
    for path, load in ((embedded, load_manifest), (embedded, Detector), (side, Detector),
                       (side, lambda p: open_backend(p, 1))):
        with pytest.raises(ArtifactError) as err:
            load(path)
        text = str(err.value)
        assert text.startswith(f"{path}: external data location {location!r} of tensor 'bias' {why}; refusing")
        assert "put the weights file beside the model and re-export it" in text


def test_onnxruntime_memory_address_tag_is_refused(tmp_path: Path) -> None:
    """``*/_ORT_MEM_ADDR_/*`` makes onnxruntime take ``offset`` as a pointer: creating a session on a plain
    ``x + w`` model with it segfaulted (onnxruntime 1.23); the detector-shaped ones raised its internal error."""
    side = with_sidecar(detector_onnx(tmp_path / "side.onnx", "*/_ORT_MEM_ADDR_/*", offset=16, embed=False))
    embedded = detector_onnx(tmp_path / "embedded.onnx", "*/_ORT_MEM_ADDR_/*", offset=16)
    weight = numpy_helper.from_array(np.zeros(2, np.float32), "w")
    external_data_helper.set_external_data(weight, "*/_ORT_MEM_ADDR_/*", offset=16, length=8)
    weight.ClearField("raw_data")
    plain = tmp_path / "plain.onnx"
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "plain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    plain.write_bytes(model.SerializeToString())
    code = """
        import sys
        from runtime import ArtifactError, Detector
        from runtime.backends import open_backend
        for path in sys.argv[1:]:
            print("LOADING", path, flush=True)
            try:
                open_backend(path, 1) if path.endswith("plain.onnx") else Detector(path, threads=1)
            except ArtifactError as e:
                print(e, flush=True)
    """
    proc = run(code, str(plain), str(side), str(embedded))
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stdout[-300:]} {proc.stderr[-2000:]}"
    for path, tensor in ((plain, "w"), (side, "bias"), (embedded, "bias")):
        assert f"{path}: external data location '*/_ORT_MEM_ADDR_/*' of tensor '{tensor}' is onnxruntime's " \
               "in-memory tag" in proc.stdout


def _external(name: str, location: str) -> TensorProto:
    tensor = numpy_helper.from_array(np.zeros(2, np.float32), name)
    external_data_helper.set_external_data(tensor, location)
    tensor.ClearField("raw_data")
    return tensor


def _sparse(name: str, location: str) -> onnx.SparseTensorProto:
    return helper.make_sparse_tensor(_external(name, location), numpy_helper.from_array(np.array([0, 1]), "i"), [4])


def nested_model(escape: str = "then.bin") -> onnx.ModelProto:
    """External tensors in every place the format allows one, the If branch's Constant pointing at ``escape``."""
    then_graph = helper.make_graph([helper.make_node("Constant", [], ["t"], value=_external("then", escape))],
                                   "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])])
    else_graph = helper.make_graph([helper.make_node("Identity", ["e"], ["o"])], "else", [],
                                   [helper.make_tensor_value_info("o", TensorProto.FLOAT, [2])],
                                   [_external("e", "else.bin")])
    nodes = [helper.make_node("Constant", [], ["c"], value=_external("const", "const.bin")),
             helper.make_node("Constant", [], ["s"], sparse_value=_sparse("attr_sparse", "attr_sparse.bin")),
             helper.make_node("Custom", [], ["z"], domain="test", tensors=[_external("list", "list.bin")]),
             helper.make_node("If", ["cond"], ["y"], then_branch=then_graph, else_branch=else_graph)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                              [_external("init", "init.bin")], sparse_initializer=[_sparse("sparse", "sparse.bin")])
    function = helper.make_function("test", "F", [], ["o"],
                                    [helper.make_node("Constant", [], ["o"], value=_external("func", "func.bin"))],
                                    [helper.make_opsetid("", 18)])
    model = helper.make_model(graph, functions=[function], opset_imports=[helper.make_opsetid("", 18)])
    training = model.training_info.add()
    training.initialization.CopyFrom(helper.make_graph([], "init", [], [], [_external("train", "train.bin")]))
    return model


def _all_tensors(message: Message) -> Any:
    """Every TensorProto anywhere in ``message``, found through protobuf's descriptors (no field numbers)."""
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        for item in [value] if isinstance(value, Message) else value:
            if isinstance(item, TensorProto):
                yield item
            yield from _all_tensors(item)


def test_walker_finds_every_external_location(tmp_path: Path) -> None:
    model = nested_model()
    path = tmp_path / "nested.onnx"
    path.write_bytes(model.SerializeToString())
    found = sorted(external_data_locations(path))
    expected = sorted((t.name, e.value) for t in _all_tensors(model) for e in t.external_data if e.key == "location")
    assert found == expected
    assert {loc for _, loc in found} == {"init.bin", "sparse.bin", "const.bin", "attr_sparse.bin", "list.bin",
                                         "then.bin", "else.bin", "func.bin", "train.bin"}
    check_external_data(path)  # all inside (missing files are onnxruntime's to report)

    escaping = tmp_path / "escaping.onnx"
    escaping.write_bytes(nested_model("../../then.bin").SerializeToString())
    with pytest.raises(ArtifactError, match=r"location '\.\./\.\./then\.bin' of tensor 'then' resolves to "):
        check_external_data(escaping)


# ------------------------------------------------------------------ truncated files and packages without sidecar

@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An ONNX and an OpenVINO IR carrying their manifest inside, no sidecar."""
    from runtime.backends.openvino_privacy import import_openvino

    ov = import_openvino()
    out = tmp_path_factory.mktemp("embedded")
    onnx_path = detector_onnx(out / "model.onnx")
    model = ov.convert_model(str(onnx_path))
    inp, outs = float_io(CONFIG)
    manifest = build_manifest(CONFIG, target="openvino", precision="fp32", artifact_file="model.xml",
                              input_spec=inp, outputs=outs, inference_precision="f32")
    ov.save_model(model, str(out / "model.xml"), compress_to_fp16=False)
    manifest["artifact"]["weights_sha256"] = file_sha256(out / "model.bin")  # the .bin does not change below
    model.set_rt_info(embedded_json(manifest), METADATA_KEY)
    ov.save_model(model, str(out / "model.xml"), compress_to_fp16=False)
    assert file_sha256(out / "model.bin") == manifest["artifact"]["weights_sha256"]
    check_runs(Detector(onnx_path, threads=1))
    check_runs(Detector(out / "model.xml", threads=1))
    return {"onnx": onnx_path, "xml": out / "model.xml", "bin": out / "model.bin"}


def _without_opset(path: Path) -> int:
    """The length of the file's prefix that ends right after the graph (a valid protobuf with no opset)."""
    model = onnx.load(str(path))
    del model.opset_import[:]
    model.ClearField("metadata_props")
    prefix = model.SerializeToString()
    assert path.read_bytes().startswith(prefix)
    return len(prefix)


def test_truncated_onnx_without_sidecar_names_the_file(embedded: dict[str, Path], tmp_path: Path) -> None:
    data = embedded["onnx"].read_bytes()
    cases = {0: "onnxruntime", 10: "protobuf", len(data) // 2: "protobuf", len(data) - 1: "protobuf",
             _without_opset(embedded["onnx"]): "onnxruntime 1.*Missing opset"}
    for length, detail in cases.items():
        path = tmp_path / f"cut{length}.onnx"
        path.write_bytes(data[:length])
        with pytest.raises(ArtifactError, match=rf"^{re.escape(str(path))}: truncated or corrupt ONNX file "
                                                rf"\({detail}.*\): re-copy or re-export it$"):
            Detector(path, threads=1)
    side = with_sidecar(tmp_path / f"cut{_without_opset(embedded['onnx'])}.onnx")  # the backend's own load
    with pytest.raises(ArtifactError, match=r"truncated or corrupt ONNX file \(onnxruntime .*Missing opset"):
        Detector(side, threads=1)


@pytest.mark.parametrize("part", ["xml", "bin"])
def test_truncated_openvino_ir_without_sidecar_names_the_files(embedded: dict[str, Path], tmp_path: Path,
                                                               part: str) -> None:
    data = embedded[part].read_bytes()
    for length in (10, len(data) // 2, len(data) - 1 if part == "bin" else len(data) * 3 // 4):
        folder = tmp_path / f"cut{length}"
        folder.mkdir()
        for other in ("xml", "bin"):
            shutil.copy(embedded[other], folder / embedded[other].name)
        (folder / embedded[part].name).write_bytes(data[:length])
        xml = folder / "model.xml"
        pattern = (rf"^{re.escape(str(xml))} \(with model\.bin\): truncated or corrupt OpenVINO IR file \(.+\): "
                   "re-copy or re-export it$")
        with pytest.raises(ArtifactError, match=pattern):
            Detector(xml, threads=1)
        write_sidecar(xml, manifest_for(xml, "openvino", *float_io(CONFIG)))  # the backend's own load
        with pytest.raises(ArtifactError, match=pattern):
            Detector(xml, threads=1)


@pytest.mark.parametrize(("modules", "suffix", "hint"), [
    (("onnxruntime",), "onnx", "pip install onnxruntime"),
    (("openvino",), "xml", "pip install openvino"),
])
def test_embedded_manifest_without_backend_names_the_package(embedded: dict[str, Path],
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             modules: tuple[str, ...], suffix: str, hint: str) -> None:
    """It said "no manifest for model.onnx" before: the manifest is there, the package to read it is not."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` fail as if not installed
    with pytest.raises(BackendUnavailableError, match=hint):
        load_manifest(embedded[suffix])
    with pytest.raises(BackendUnavailableError, match=hint):
        Detector(embedded[suffix], threads=1)


def test_runtime_modules_stay_standalone() -> None:
    """The new loaders import only the standard library and numpy (never onnx, TensorFlow or flatbuffers)."""
    out = run_python("""
        import sys
        import runtime.onnx_external_data, runtime.tflite_verify, runtime.errors
        print(sorted(m.split(".")[0] for m in sys.modules if m.split(".")[0] in
                     {"onnx", "tensorflow", "flatbuffers", "torch", "onnxruntime", "openvino", "ai_edge_litert"}))
    """, cwd=ROOT)
    assert out.strip().splitlines()[-1] == "[]"
