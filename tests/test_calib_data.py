"""Calibration sets: stratified, deterministic, pre-processed by the runtime, and refused when unusable."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from calib_data import CalibrationError, build_calibration_set, load_calibration_set
from calib_data.sample import stratified_sample
from efficientdet.data.loader import load_dataset
from efficientdet.data.synthetic import generate_synthetic
from efficientdet.model.config import make_config
from runtime.preprocess import preprocess, read_image

SPEC = make_config(0, "lite", num_classes=6, input_size=128).preprocess


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synth"), num_train=40, num_val=6, image_size=160, seed=3)


def test_sample_is_seeded_and_covers_every_class(data: Path) -> None:
    train = load_dataset(data, "train")
    a = stratified_sample(train.records, 12, seed=1)
    b = stratified_sample(train.records, 12, seed=1)
    c = stratified_sample(train.records, 12, seed=2)
    assert [r.image_id for r in a] == [r.image_id for r in b]
    assert [r.image_id for r in a] != [r.image_id for r in c]
    assert len({r.image_id for r in a}) == 12
    present = {int(c) for r in train.records for c in r.labels}
    dominant = {int(np.bincount(r.labels).argmax()) for r in a if r.labels.size}
    assert dominant == present  # every class that dominates some image is represented
    assert len(stratified_sample(train.records, 1000)) == len(train.records)


def test_build_stores_runtime_preprocessing(data: Path, tmp_path: Path) -> None:
    train = load_dataset(data, "train")
    cset = build_calibration_set(train, SPEC, tmp_path / "set", n=8, seed=0, shifted=0.0)
    assert cset.images.shape == (8, 128, 128, 3) and cset.images.dtype == np.float32
    for i, entry in enumerate(cset.manifest["images"]):
        expected, _ = preprocess(read_image(entry["file"]), SPEC)
        np.testing.assert_array_equal(cset.images[i], expected)
    assert cset.nchw(0).shape == (1, 3, 128, 128) and cset.nhwc(0).shape == (1, 128, 128, 3)
    again = load_calibration_set(tmp_path / "set")
    assert again.manifest["images_sha256"] == cset.manifest["images_sha256"]
    assert not list(tmp_path.glob(".set.*")), "temporary folder left behind"


def test_a_share_of_the_images_gets_a_seeded_photometric_shift(data: Path, tmp_path: Path) -> None:
    """Half the set sees other light, contrast, colour, noise or compression (issue 15): each shifted image differs
    from its original, the others are the originals, and the same seed gives the same bytes."""
    train = load_dataset(data, "train")
    cset = build_calibration_set(train, SPEC, tmp_path / "a", n=10, seed=4, shifted=0.5)
    shifted = [i for i, e in enumerate(cset.manifest["images"]) if e["shift"]]
    assert len(shifted) == 5 and cset.manifest["shifted"] == 0.5
    assert len({cset.manifest["images"][i]["shift"].split()[0] for i in shifted}) >= 2  # more than one family
    for i, entry in enumerate(cset.manifest["images"]):
        original, _ = preprocess(read_image(entry["file"]), SPEC)
        assert np.array_equal(cset.images[i], original) == (i not in shifted), entry
    again = build_calibration_set(train, SPEC, tmp_path / "b", n=10, seed=4, shifted=0.5)
    assert again.manifest["images_sha256"] == cset.manifest["images_sha256"]
    assert [e["file"] for e in again.manifest["images"]] == [e["file"] for e in cset.manifest["images"]]
    with pytest.raises(CalibrationError, match="within 0..1"):
        build_calibration_set(train, SPEC, tmp_path / "c", n=4, shifted=1.5)
    assert not (tmp_path / "c").exists()


def test_refuses_evaluation_split_and_empty_sets(data: Path, tmp_path: Path) -> None:
    val = load_dataset(data, "val")
    with pytest.raises(CalibrationError, match="evaluation split"):
        build_calibration_set(val, SPEC, tmp_path / "v", n=4)
    train = load_dataset(data, "train")
    train.records = []
    with pytest.raises(CalibrationError, match="cannot be empty"):
        build_calibration_set(train, SPEC, tmp_path / "e", n=4)
    assert not (tmp_path / "v").exists() and not (tmp_path / "e").exists()
    with pytest.raises(CalibrationError, match="not a calibration set"):
        load_calibration_set(tmp_path)


def test_refuses_other_preprocessing_tampering_and_overlap(data: Path, tmp_path: Path) -> None:
    train = load_dataset(data, "train")
    cset = build_calibration_set(train, SPEC, tmp_path / "set", n=6)
    with pytest.raises(CalibrationError, match="input_size: set 128 vs model 256"):
        cset.check_preprocess(SPEC.at_size(256))
    with pytest.raises(CalibrationError, match="color_order"):
        cset.check_preprocess(dataclasses.replace(SPEC, color_order="bgr"))
    cset.check_preprocess(SPEC)
    cset.check_disjoint(load_dataset(data, "val"))
    overlapping = load_dataset(data, "train")
    with pytest.raises(CalibrationError, match="evaluation split"):
        cset.check_disjoint(overlapping)
    arr = np.load(tmp_path / "set" / "images.npy")
    arr[0] += 1
    np.save(tmp_path / "set" / "images.npy", arr)
    with pytest.raises(CalibrationError, match="does not match the hash"):
        load_calibration_set(tmp_path / "set")
    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    manifest["split"] = "val"
    (tmp_path / "set" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CalibrationError, match="drawn from the evaluation split"):
        load_calibration_set(tmp_path / "set", verify=False)


def test_default_set_is_keyed_on_content_not_folder_name(tmp_path: Path) -> None:
    """Two re-split copies both called ``data`` shared one default set: the second was refused with a misleading
    overlap error (or, without overlap, would have calibrated on the other copy's images)."""
    import shutil

    from calib_data.store import default_set

    a = generate_synthetic(tmp_path / "one" / "data", num_train=12, num_val=4, image_size=128, seed=3)
    b = tmp_path / "two" / "data"
    shutil.copytree(a, b)
    swapped = b / "annotations"
    train, val = (swapped / "instances_train.json").read_text(), (swapped / "instances_val.json").read_text()
    (swapped / "instances_train.json").write_text(val)  # the same images, split the other way round
    (swapped / "instances_val.json").write_text(train)
    root = tmp_path / "sets"
    set_a, set_b = default_set(a, SPEC, n=4, root=root), default_set(b, SPEC, n=4, root=root)
    assert set_a.path != set_b.path and set_a.path.name.startswith("data-128-")
    set_b.check_disjoint(load_dataset(b, "val"))  # no false "contains evaluation images"
    same = tmp_path / "three" / "my data"
    shutil.copytree(a, same)
    set_c = default_set(same, SPEC, n=4, root=root)
    assert set_c.path.name == set_a.path.name.replace("data-", "my-data-", 1)  # same content, no space in the name
    assert set_a.path.name.endswith("-n4")  # 4 images, not the default 200: the name says so
    # Another share of shifted images is another set, under its own name; it used to replace the plain one.
    shifted = default_set(a, SPEC, n=4, root=root, shifted=0.5)
    assert shifted.path.name == set_a.path.name + "-shifted50" and shifted.manifest["shifted"] == 0.5
    assert any(e["shift"] for e in shifted.manifest["images"])
    plain = load_calibration_set(set_a.path)
    assert plain.manifest["shifted"] == 0.0 and not any(e["shift"] for e in plain.manifest["images"])
    assert default_set(a, SPEC, n=4, root=root).manifest["images_sha256"] == set_a.manifest["images_sha256"]


def test_calib_cli_refuses_a_foreign_dataset_without_a_checkpoint(data: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    """Without CKPT, `make calib` on a user's dataset silently used the synthetic default model's preprocessing."""
    from calib_data.__main__ import main

    assert main(["--data", str(data), "--n", "4"]) == 2
    assert "CKPT= is required" in capsys.readouterr().err


def _concurrent_worker(how: str, data: str, root: str, barrier: Any, results: Any) -> None:
    from calib_data.store import build_calibration_set, default_set

    barrier.wait(timeout=300)
    try:
        if how == "default_set":
            cset = default_set(data, SPEC, n=30, root=root)
        else:  # `make calib` without OUT: an explicit (re)build into the same default folder
            cset = build_calibration_set(load_dataset(data, "train"), SPEC, Path(root) / "set", n=30, seed=0)
        results.put(cset.manifest["images_sha256"])
    except Exception as e:  # noqa: BLE001 (reported to the test, which fails on it)
        results.put(f"{type(e).__name__}: {e}")


@pytest.mark.parametrize("how", ["default_set", "build"])
def test_commands_needing_the_same_set_at_once_all_get_it(how: str, data: Path, tmp_path: Path) -> None:
    """Two exports (or two test modules, or `make calib` beside an export) writing the same set at once: the later
    one deleted the set the earlier had just published, or failed renaming onto it (ENOTEMPTY)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    workers = [ctx.Process(target=_concurrent_worker, args=(how, str(data), str(tmp_path / "sets"), barrier, results))
               for _ in range(4)]
    for w in workers:
        w.start()
    hashes = [results.get(timeout=600) for _ in workers]
    for w in workers:
        w.join(timeout=60)
    assert len(set(hashes)) == 1 and len(hashes[0]) == 64, hashes
    sets = [p for p in (tmp_path / "sets").iterdir() if not p.name.endswith(".lock")]
    assert len(sets) == 1 and load_calibration_set(sets[0]).manifest["images_sha256"] == hashes[0], sets
