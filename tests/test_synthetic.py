"""The generated default dataset: deterministic, idempotent, loadable, and varied enough to train on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from efficientdet.data import load_dataset
from efficientdet.data.synthetic import CLASS_NAMES, MAX_OCCLUDED, STAMP, generate_synthetic, main

SMALL = {"num_train": 12, "num_val": 4, "image_size": 128}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synth") / "a", seed=3, **SMALL)


def test_same_seed_same_bytes_other_seed_differs(small: Path, tmp_path: Path) -> None:
    again = generate_synthetic(tmp_path / "b", seed=3, **SMALL)
    first, second = _files(small), _files(again)
    assert len([k for k in first if k.endswith(".jpg")]) == 16
    assert first == second
    other = generate_synthetic(tmp_path / "c", seed=4, **SMALL)
    third = _files(other)
    assert third.keys() == first.keys()
    assert third["annotations/instances_train.json"] != first["annotations/instances_train.json"]
    assert third["images/train/000000.jpg"] != first["images/train/000000.jpg"]


def test_loads_cleanly_with_all_classes(small: Path) -> None:
    train = load_dataset(small, "train")
    val = load_dataset(small, "val")
    assert (len(train.records), len(val.records)) == (12, 4)
    assert train.class_names == list(CLASS_NAMES)
    assert train.format == "coco"
    assert not train.issues
    assert not val.issues
    records = train.records + val.records
    assert {int(label) for r in records for label in r.labels} == set(range(len(CLASS_NAMES)))
    assert all(1 <= len(r.labels) <= 12 for r in records)
    assert {(r.width, r.height) for r in records} >= {(128, 128)}
    assert any(r.width != r.height for r in records), "non-square images exercise letterboxing"
    for r in records:
        assert (r.boxes[:, :2] >= 0).all()
        assert (r.boxes[:, 2] <= r.width).all()
        assert (r.boxes[:, 3] <= r.height).all()
    sides = np.concatenate([np.maximum(r.boxes[:, 2] - r.boxes[:, 0], r.boxes[:, 3] - r.boxes[:, 1]) for r in records])
    assert sides.min() < 20
    assert sides.max() > 40


def test_annotation_json_content(small: Path) -> None:
    data = json.loads((small / "annotations" / "instances_train.json").read_text())
    assert data["info"]["seed"] == 3
    assert data["info"]["num_images"] == 12
    assert data["info"]["split"] == "train"
    assert [(c["id"], c["name"]) for c in data["categories"]] == list(enumerate(CLASS_NAMES, 1))
    assert all(a["visibility"] >= 1 - MAX_OCCLUDED - 1e-6 for a in data["annotations"])
    assert all(a["area"] == a["bbox"][2] * a["bbox"][3] > 0 for a in data["annotations"])
    stamp = json.loads((small / STAMP).read_text())
    assert stamp["params"]["seed"] == 3
    assert stamp["counts"] == {"train": 12, "val": 4}
    assert (small / "README.md").is_file()


def test_idempotent_and_regenerates_on_new_params(tmp_path: Path) -> None:
    out = generate_synthetic(tmp_path / "d", num_train=2, num_val=1, image_size=64)
    watched = [out / STAMP, out / "annotations" / "instances_train.json", out / "images" / "train" / "000000.jpg"]
    before = [p.stat().st_mtime_ns for p in watched]
    assert generate_synthetic(tmp_path / "d", num_train=2, num_val=1, image_size=64) == out
    assert [p.stat().st_mtime_ns for p in watched] == before
    generate_synthetic(tmp_path / "d", num_train=3, num_val=1, image_size=64)
    assert len(list((out / "images" / "train").glob("*.jpg"))) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary directories are cleaned up"


def test_refuses_to_overwrite_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not a synthetic dataset"):
        generate_synthetic(tmp_path / "mine", num_train=1, num_val=1, image_size=64)
    assert (tmp_path / "mine" / "precious.txt").read_text() == "keep"


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(tmp_path / "cli"), "--train", "2", "--val", "1", "--size", "64", "--seed", "5"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cli")
    assert json.loads((tmp_path / "cli" / STAMP).read_text())["params"]["seed"] == 5


def test_default_dataset_is_generated_on_first_use_by_any_spelling(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A clean checkout has no data/synthetic: whether a caller names it relative to the working
    directory or absolute under the project root, the first use generates it (CI hit the absolute form)."""
    from efficientdet.data import synthetic

    monkeypatch.setattr(synthetic, "PROJECT_ROOT", tmp_path)
    monkeypatch.setattr(synthetic, "generate_synthetic",
                        lambda path: generate_synthetic(path, num_train=2, num_val=1, image_size=64))
    absolute = tmp_path / "data" / "synthetic"
    assert synthetic.resolve_dataset(absolute) == absolute
    assert len(load_dataset(absolute, "train").records) == 2
    elsewhere = tmp_path / "other" / "data" / "synthetic"
    assert synthetic.resolve_dataset(elsewhere) == elsewhere and not elsewhere.exists()
