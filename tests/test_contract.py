"""The typed deployment contract (runtime/contract.py): built once from the model config, written to the manifest
in one place with the input size stored once, read back into the same objects, and honoured by the runtime
(the box coding's ``clip_log`` used to be written into every manifest and ignored by ``decode``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from efficientdet.model.config import make_config
from runtime import Detector, ManifestError
from runtime.anchors import generate_anchors
from runtime.contract import AnchorSpec, BoxCoding, Contract, PostprocessSpec
from runtime.manifest import FORMAT_1, MANIFEST_FORMAT, Manifest, load_manifest, write_sidecar
from runtime.postprocess import postprocess
from tests.runtime_artifacts import test_image


def _keys_named(node: Any, name: str, path: str = "") -> list[str]:
    if isinstance(node, dict):
        return [hit for k, v in node.items()
                for hit in ([f"{path}{k}"] if k == name else []) + _keys_named(v, name, f"{path}{k}.")]
    if isinstance(node, list):
        return [hit for i, v in enumerate(node) for hit in _keys_named(v, name, f"{path}{i}.")]
    return []


def test_contract_round_trips_through_the_manifest_blocks() -> None:
    config = make_config("0", "lite", num_classes=3, class_names=["a", "b", "c"], input_size=192)
    contract = config.contract(PostprocessSpec(score_threshold=0.4, max_detections=7))
    blocks = json.loads(json.dumps(contract.to_manifest()))  # through JSON, as a manifest travels
    assert Contract.from_manifest(blocks) == contract
    assert contract.anchors == config.anchor_spec and contract.input_size == 192
    np.testing.assert_array_equal(generate_anchors(contract.anchors).shape, (config.num_anchors, 4))
    with pytest.raises(ValueError, match="anchors are laid out for 160 px"):
        Contract(config.preprocess, AnchorSpec(160))


def test_exported_manifest_stores_the_input_size_once(artifacts: dict[str, Any]) -> None:
    manifest = load_manifest(artifacts["onnx"])
    assert manifest["format"] == MANIFEST_FORMAT
    assert _keys_named(manifest, "input_size") == ["preprocess.input_size"]
    assert "preprocess" not in manifest["model"]
    typed = Manifest.from_dict(manifest)
    assert typed.contract == artifacts["config"].contract()
    assert typed.input.shape == (1, 3, typed.contract.input_size, typed.contract.input_size)


def _as_format_1(manifest: dict[str, Any], config: Any) -> dict[str, Any]:
    """What the exporter wrote before format 2: the size repeated in anchors and model (with its preprocess)."""
    old = json.loads(json.dumps(manifest))
    old["format"] = FORMAT_1
    old["anchors"] = {"input_size": config.input_size, **old["anchors"]}
    old["model"] = config.to_dict()
    return old


def test_format_1_manifests_on_devices_still_load(artifacts: dict[str, Any], tmp_path: Path) -> None:
    config = artifacts["config"]
    path = tmp_path / "model.onnx"
    shutil.copy(artifacts["onnx"], path)
    current = load_manifest(artifacts["onnx"])
    write_sidecar(path, {k: v for k, v in _as_format_1(current, config).items() if k != "_source"})
    image = test_image()
    old, new = (Detector(p, threads=1, score_threshold=0.01) for p in (path, artifacts["onnx"]))
    old_result, new_result = old(image), new(image)
    assert len(new_result) > 0
    np.testing.assert_array_equal(old_result.boxes, new_result.boxes)
    np.testing.assert_array_equal(old_result.scores, new_result.scores)
    assert old.contract == new.contract


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m, c: m["anchors"].update(input_size=c.input_size), "'anchors.input_size' must be absent"),
    (lambda m, c: m["model"].update(input_size=c.input_size), "'model.input_size' must be absent"),
    (lambda m, c: m["box_coding"].pop("clip_log"), "'box_coding.clip_log' is missing"),
    (lambda m, c: m["box_coding"].update(clip_log=-1.0), "'box_coding.clip_log' must be a finite number > 0"),
])
def test_format_2_refuses_a_second_copy_of_the_size_and_a_bad_clip(artifacts: dict[str, Any], edit: Any,
                                                                   message: str) -> None:
    manifest = {k: v for k, v in load_manifest(artifacts["onnx"]).items() if k != "_source"}
    edit(manifest, artifacts["config"])
    with pytest.raises(ManifestError, match=message):
        Manifest.from_dict(manifest)


def test_format_1_copies_must_still_agree(artifacts: dict[str, Any]) -> None:
    old = _as_format_1(load_manifest(artifacts["onnx"]), artifacts["config"])
    old["anchors"]["input_size"] = 160
    with pytest.raises(ManifestError, match="'anchors.input_size' \\(160\\) does not match 'preprocess.input_size'"):
        Manifest.from_dict(old)


def test_decode_clamps_box_growth_at_the_manifests_clip_log(artifacts: dict[str, Any], tmp_path: Path) -> None:
    """One anchor with a huge dw/dh: the box grows to exp(clip_log) x the anchor, whatever clip_log the manifest
    holds (the runtime used to apply its own constant and ignore the manifest's)."""
    anchors = generate_anchors(AnchorSpec(128))
    logits = np.full((len(anchors), 1), -10.0, np.float32)
    deltas = np.zeros((len(anchors), 4), np.float32)
    logits[5, 0], deltas[5, 2:] = 5.0, 20.0
    width = float(anchors[5, 2] - anchors[5, 0])
    post = PostprocessSpec()
    for clip in (1.0, 2.5):
        dets = postprocess(logits, deltas, anchors, post, BoxCoding(clip_log=clip))
        assert len(dets) == 1
        assert dets.boxes[0, 2] - dets.boxes[0, 0] == pytest.approx(width * np.exp(clip), rel=1e-5)

    path = tmp_path / "model.onnx"
    shutil.copy(artifacts["onnx"], path)
    manifest = {k: v for k, v in load_manifest(artifacts["onnx"]).items() if k != "_source"}
    manifest["box_coding"]["clip_log"] = 1.5
    write_sidecar(path, manifest)
    assert Detector(path, threads=1).contract.box_coding == BoxCoding(clip_log=1.5)
