"""Dataset readers: exact records from tiny hand-built COCO / VOC / YOLO sets with every kind of bad data."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from efficientdet.data import DatasetError, load_dataset
from efficientdet.data import checks as c
from efficientdet.data.simple_yaml import parse_simple_yaml

BCCD = Path(os.environ.get("BCCD_DIR") or Path(__file__).resolve().parents[2] / "shared/datasets/bccd")


def _write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def _colour(h: int, w: int) -> np.ndarray:
    return np.random.default_rng(h * 1000 + w).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _grey(h: int, w: int) -> np.ndarray:
    return np.full((h, w), 128, np.uint8)


def _rgba(h: int, w: int) -> np.ndarray:
    return np.full((h, w, 4), 200, np.uint8)


def _deep(h: int, w: int) -> np.ndarray:
    return np.full((h, w, 3), 40000, np.uint16)


def _corrupt(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8 definitely not a jpeg " * 10)


def _boxes(dataset) -> dict[int, list[list[float]]]:
    return {r.image_id: r.boxes.tolist() for r in dataset.records}


def _labels(dataset) -> dict[int, list[int]]:
    return {r.image_id: r.labels.tolist() for r in dataset.records}


# --- COCO -------------------------------------------------------------------------------------------------------


def _coco_ann(image_id, category_id, bbox, **extra):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, **extra}


@pytest.fixture
def coco_dir(tmp_path: Path) -> Path:
    root = tmp_path / "coco"
    img = root / "images" / "train"
    _write(img / "a.jpg", _colour(48, 64))
    _write(img / "grey.png", _grey(30, 40))
    _write(img / "rgba.png", _rgba(40, 50))
    _write(img / "deep.png", _deep(20, 30))
    _write(img / "neg.png", _colour(20, 20))
    _corrupt(img / "corrupt.jpg")
    images = [
        {"id": 1, "file_name": "a.jpg", "width": 100, "height": 100},
        {"id": 2, "file_name": "grey.png", "width": 40, "height": 30},
        {"id": 3, "file_name": "rgba.png", "width": 50, "height": 40},
        {"id": 4, "file_name": "deep.png", "width": 30, "height": 20},
        {"id": 5, "file_name": "corrupt.jpg", "width": 10, "height": 10},
        {"id": 6, "file_name": "missing.jpg", "width": 10, "height": 10},
        {"id": 7, "file_name": "neg.png", "width": 20, "height": 20},
    ]
    anns = [
        _coco_ann(1, 3, [10, 5, 20, 10]),
        _coco_ann(1, 7, [50, 40, 30, 20]),
        _coco_ann(1, 3, [10, 10, 0, 5]),
        _coco_ann(1, 3, [70, 10, 5, 5]),
        _coco_ann(1, 99, [1, 1, 5, 5]),
        _coco_ann(2, 7, [0, 0, 40, 30]),
        _coco_ann(3, 3, [1.5, 2.5, 10, 10]),
        _coco_ann(4, 7, [5, 5, 10, 10]),
        _coco_ann(5, 3, [1, 1, 5, 5]),
        _coco_ann(6, 3, [1, 1, 5, 5]),
        _coco_ann(42, 3, [1, 1, 5, 5]),
        _coco_ann(2, 3, [1, 1, 5, 5], iscrowd=1),
        _coco_ann(2, 3, "oops"),
    ]
    for i, ann in enumerate(anns):
        ann["id"] = i + 1
    cats = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_train.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


def test_coco_records_and_issues(coco_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="efficientdet.data"):
        ds = load_dataset(coco_dir, "train")
    assert (ds.format, ds.split, ds.name) == ("coco", "train", "coco")
    assert ds.class_names == ["cat", "dog"]
    assert [r.image_id for r in ds.records] == [1, 2, 3, 4, 7]
    assert [(r.width, r.height) for r in ds.records] == [(64, 48), (40, 30), (50, 40), (30, 20), (20, 20)]
    assert _boxes(ds) == {1: [[10, 5, 30, 15], [50, 40, 64, 48]], 2: [[0, 0, 40, 30]],
                          3: [[1.5, 2.5, 11.5, 12.5]], 4: [[5, 5, 15, 15]], 7: []}
    assert _labels(ds) == {1: [0, 1], 2: [1], 3: [0], 4: [1], 7: []}
    assert ds.records[0].path == str(coco_dir / "images" / "train" / "a.jpg")
    assert ds.records[-1].boxes.shape == (0, 4)
    assert ds.records[-1].boxes.dtype == np.float32
    assert ds.issues == Counter({
        c.SIZE_MISMATCH: 1, c.CLIPPED: 1, c.ZERO_AREA: 1, c.OUTSIDE: 1, c.UNKNOWN_CLASS: 1, c.UNREADABLE_IMAGE: 1,
        c.MISSING_IMAGE: 1, c.ORPHAN_ANNOTATION: 1, c.CROWD: 1, c.MALFORMED_BOX: 1})
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "5 images" in warnings[0].getMessage()
    assert "missing image file skipped: 1" in warnings[0].getMessage()


def test_coco_without_verification_trusts_annotated_size(coco_dir: Path) -> None:
    ds = load_dataset(coco_dir, "train", verify_images=False)
    assert [r.image_id for r in ds.records] == [1, 2, 3, 4, 5, 7]
    assert (ds.records[0].width, ds.records[0].height) == (100, 100)
    assert _boxes(ds)[1] == [[10, 5, 30, 15], [50, 40, 80, 60], [70, 10, 75, 15]]
    assert c.UNREADABLE_IMAGE not in ds.issues
    assert c.SIZE_MISMATCH not in ds.issues


def test_coco_json_file_resolves_images_beside_it(tmp_path: Path) -> None:
    _write(tmp_path / "flat" / "pic.png", _grey(10, 12))
    data = {"images": [{"id": 0, "file_name": "pic.png", "width": 12, "height": 10}],
            "annotations": [{"id": 1, "image_id": 0, "category_id": 1, "bbox": [2, 2, 4, 4]}],
            "categories": [{"id": 1, "name": " thing "}]}
    (tmp_path / "flat" / "labels.json").write_text(json.dumps(data))
    ds = load_dataset(tmp_path / "flat" / "labels.json", "train")  # one image: the automatic split's train part
    assert (ds.split, ds.class_names, _boxes(ds), ds.issues) == ("train", ["thing"], {0: [[2, 2, 6, 6]]}, Counter())


def test_to_coco_round_trips_through_pycocotools(coco_dir: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ds = load_dataset(coco_dir, "train")
    gt_file = tmp_path / "gt.json"
    gt_file.write_text(json.dumps(ds.to_coco()))
    gt = COCO(str(gt_file))
    assert [gt.cats[i]["name"] for i in sorted(gt.cats)] == ["cat", "dog"]
    assert sorted(gt.getImgIds()) == [1, 2, 3, 4, 7]
    assert len(gt.getAnnIds()) == ds.num_boxes == 5
    ann = gt.loadAnns(gt.getAnnIds(imgIds=[1], catIds=[2]))[0]
    assert ann["bbox"] == [50, 40, 14, 8]
    assert ann["area"] == 112
    assert ann["iscrowd"] == 0
    dets = [{**a, "score": 1.0} for a in gt.loadAnns(gt.getAnnIds())]
    evaluator = COCOeval(gt, gt.loadRes(dets), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    capsys.readouterr()
    assert evaluator.stats[0] == pytest.approx(1.0)


def test_coco_nothing_usable_says_why(tmp_path: Path) -> None:
    root = tmp_path / "broken"
    (root / "annotations").mkdir(parents=True)
    data = {"images": [{"id": 1, "file_name": "x.jpg"}, {"id": 2, "file_name": "y.jpg"}], "annotations": [],
            "categories": [{"id": 1, "name": "a"}]}
    (root / "annotations" / "instances_val.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"no usable images in split 'val'.*2 listed.*missing image file skipped: 2"):
        load_dataset(root, "val")
    with pytest.raises(DatasetError, match=r"split 'train'.*instances_train\.json.*available splits: val"):
        load_dataset(root, "train")
    (root / "annotations" / "instances_val.json").write_text("{not json")
    with pytest.raises(DatasetError, match="cannot read COCO annotations"):
        load_dataset(root, "val")


def test_unrecognised_or_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"cannot recognise a dataset in .*empty.*COCO.*YOLO.*Pascal VOC"):
        load_dataset(tmp_path / "empty")


# --- Pascal VOC -------------------------------------------------------------------------------------------------


def _voc_xml(filename: str, size: tuple[int, int], objects: list[tuple[str, tuple[int, int, int, int]]]) -> str:
    objs = "".join(
        f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, b in objects)
    return (f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width><height>{size[1]}</height>"
            f"<depth>3</depth></size>{objs}</annotation>")


@pytest.fixture
def voc_dir(tmp_path: Path) -> Path:
    wrapper = tmp_path / "voc_wrapper"
    root = wrapper / "VOC2012"
    ann, jpg, sets = root / "Annotations", root / "JPEGImages", root / "ImageSets" / "Main"
    for d in (ann, jpg, sets):
        d.mkdir(parents=True)
    _write(jpg / "img_a.jpg", _colour(40, 60))
    _write(jpg / "img_b.png", _grey(20, 30))
    _write(jpg / "img_f.png", _rgba(16, 16))
    _write(jpg / "img_g.jpg", _colour(10, 10))
    files = {
        "img_a": _voc_xml("img_a.jpg", (60, 40), [(" cat ", (1, 1, 10, 10)), ("dog", (20, 5, 70, 30)),
                                                  ("cat", (5, 5, 5, 5)), ("dog\n", (65, 5, 70, 10))]),
        "img_b": _voc_xml("img_b.png", (31, 20), [("bird", (2, 3, 12, 13))]),
        "img_c": _voc_xml("img_c.jpg", (10, 10), [("cat", (1, 1, 5, 5))]),
        "img_d": "<annotation><object>",
        "img_f": _voc_xml("img_f.png", (16, 16), []),
        "img_g": _voc_xml("img_g.jpg", (10, 10), [("horse", (1, 1, 5, 5))]),
    }
    for stem, text in files.items():
        (ann / f"{stem}.xml").write_text(text)
    (sets / "train.txt").write_text("img_f\nimg_a\nimg_b\n\nimg_c\nimg_d\nimg_e\n")
    (sets / "test.txt").write_text("img_g\n")
    return wrapper


def test_voc_records_and_issues(voc_dir: Path) -> None:
    ds = load_dataset(voc_dir, "train")
    assert (ds.format, ds.source) == ("voc", str(voc_dir / "VOC2012"))
    assert ds.class_names == ["bird", "cat", "dog"]
    assert [r.image_id for r in ds.records] == [0, 1, 5]
    assert [(r.width, r.height) for r in ds.records] == [(60, 40), (30, 20), (16, 16)]
    assert _boxes(ds) == {0: [[0, 0, 10, 10], [19, 4, 60, 30]], 1: [[1, 2, 12, 13]], 5: []}
    assert _labels(ds) == {0: [1, 2], 1: [0], 5: []}
    assert ds.issues == Counter({c.CLIPPED: 1, c.ZERO_AREA: 1, c.OUTSIDE: 1, c.SIZE_MISMATCH: 1, c.MISSING_IMAGE: 1,
                                 c.MALFORMED_FILE: 1, c.MISSING_ANNOTATION: 1})


def test_voc_class_names_can_be_imposed(voc_dir: Path) -> None:
    ds = load_dataset(voc_dir, "train", class_names=["cat", "dog", "zebra"])
    assert ds.class_names == ["cat", "dog", "zebra"]
    assert _labels(ds) == {0: [0, 1], 1: [], 5: []}
    assert ds.issues[c.UNKNOWN_CLASS] == 1


def test_voc_missing_split_and_ambiguous_tree(voc_dir: Path) -> None:
    with pytest.raises(DatasetError, match=r"split 'val'.*val\.txt.*available splits: test, train"):
        load_dataset(voc_dir, "val")
    other = voc_dir / "VOC2007"
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (other / d).mkdir(parents=True)
    with pytest.raises(DatasetError, match="several VOC trees"):
        load_dataset(voc_dir, "train")


# --- YOLO -------------------------------------------------------------------------------------------------------


@pytest.fixture
def yolo_dir(tmp_path: Path) -> Path:
    root = tmp_path / "yolo"
    _write(root / "images" / "train" / "a.jpg", _colour(50, 100))
    _write(root / "images" / "train" / "b.png", _deep(40, 40))
    _corrupt(root / "images" / "train" / "c.jpg")
    _write(root / "images" / "train" / "d.png", _grey(8, 8))
    (root / "images" / "train" / "notes.txt").write_text("not an image")
    labels = root / "labels" / "train"
    labels.mkdir(parents=True)
    (labels / "a.txt").write_text("\n".join([
        "0 0.5 0.5 0.2 0.4", "1 0.95 0.5 0.2 0.2", "5 0.5 0.5 0.1 0.1", "0 0.5 0.5", "x 0.1 0.1 0.1 0.1",
        "1 0.5 0.5 0 0.1", "0 1.5 1.5 0.1 0.1", "", "1.0 0.25 0.5 0.1 0.2"]))
    (labels / "b.txt").write_text("1 0.25 0.25 0.5 0.5\n")
    (labels / "c.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "data.yaml").write_text("# test set\npath: .\ntrain: images/train  # comment\nval: images/val\n"
                                    "nc: 2\nnames:\n  0: cat\n  1: dog\n")
    return root


def test_yolo_records_and_issues(yolo_dir: Path) -> None:
    ds = load_dataset(yolo_dir, "train")
    assert (ds.format, ds.class_names) == ("yolo", ["cat", "dog"])
    assert [r.image_id for r in ds.records] == [0, 1, 3]
    assert [(r.width, r.height) for r in ds.records] == [(100, 50), (40, 40), (8, 8)]
    boxes = _boxes(ds)
    np.testing.assert_allclose(boxes[0], [[40, 15, 60, 35], [85, 20, 100, 30], [20, 20, 30, 30]], atol=1e-4)
    assert boxes[1] == [[0, 0, 20, 20]]
    assert boxes[3] == []
    assert _labels(ds) == {0: [0, 1, 1], 1: [1], 3: []}
    assert ds.issues == Counter({c.CLIPPED: 1, c.UNKNOWN_CLASS: 1, c.MALFORMED_LINE: 2, c.ZERO_AREA: 1, c.OUTSIDE: 1,
                                 c.UNREADABLE_IMAGE: 1, c.NO_LABEL_FILE: 1})


def test_yolo_empty_split_says_where_it_looked(yolo_dir: Path) -> None:
    with pytest.raises(DatasetError, match=r"no images found in split 'val'.*images/val"):
        load_dataset(yolo_dir, "val")
    with pytest.raises(DatasetError, match=r"no 'test' key; available splits: train, val"):
        load_dataset(yolo_dir, "test")


def test_yolo_classes_txt_layout(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    (root / "classes.txt").parent.mkdir(parents=True)
    (root / "classes.txt").write_text("cat\n  dog \n\n")
    _write(root / "images" / "val" / "x.jpg", _colour(20, 40))
    (root / "labels" / "val").mkdir(parents=True)
    (root / "labels" / "val" / "x.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    ds = load_dataset(root, "val")
    assert (ds.class_names, _boxes(ds), _labels(ds), ds.issues) == (
        ["cat", "dog"], {0: [[10, 5, 30, 15]]}, {0: [1]}, Counter())


def test_yolo_roboflow_style_relative_paths(tmp_path: Path) -> None:
    root = tmp_path / "rf"
    _write(root / "valid" / "images" / "v.png", _grey(10, 10))
    (root / "valid" / "labels").mkdir(parents=True)
    (root / "valid" / "labels" / "v.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnames: ['a b', c]\n")
    ds = load_dataset(root, "val")
    assert (ds.class_names, _boxes(ds)) == (["a b", "c"], {0: [[4, 4, 6, 6]]})


def test_simple_yaml_forms() -> None:
    text = ("path: ../data  # root\ntrain: images/train\nnames: ['x, y', \"z\" , w]\nnc: 3\nflag: true\n"
            "blocks:\n  - one\n  - 'two # not a comment'\nmapped:\n  0: a\n  1: b\nlast: ~\n")
    assert parse_simple_yaml(text) == {
        "path": "../data", "train": "images/train", "names": ["x, y", "z", "w"], "nc": 3, "flag": True,
        "blocks": ["one", "two # not a comment"], "mapped": {0: "a", 1: "b"}, "last": None}
    assert parse_simple_yaml("names: {0: cat, 1: dog}\n") == {"names": {0: "cat", 1: "dog"}}


# --- real BCCD (Pascal VOC) -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("split", "count", "zero_area"), [("train", 205, 1), ("val", 87, 1), ("test", 72, 0)])
def test_real_bccd(split: str, count: int, zero_area: int) -> None:
    if not BCCD.is_dir():
        pytest.skip(f"BCCD dataset not found at {BCCD} (set BCCD_DIR to its folder)")
    ds = load_dataset(BCCD, split)
    assert (ds.format, len(ds.records), ds.class_names) == ("voc", count, ["Platelets", "RBC", "WBC"])
    assert ds.issues == (Counter({c.ZERO_AREA: zero_area}) if zero_area else Counter())
    assert all((r.width, r.height) == (640, 480) for r in ds.records)
    boxes = np.concatenate([r.boxes for r in ds.records])
    assert (boxes[:, 2] > boxes[:, 0]).all()
    assert (boxes[:, 3] > boxes[:, 1]).all()
    assert boxes.min() >= 0
    assert boxes[:, 2].max() <= 640
    assert boxes[:, 3].max() <= 480
    assert set(np.concatenate([r.labels for r in ds.records]).tolist()) == {0, 1, 2}


# --- layouts people have (issue 14) -----------------------------------------------------------------------------


def _voc_folder(root: Path, ann_dir: str, img_dir: str, count: int, sep: str = " ") -> list[str]:
    names = []
    for i in range(count):
        name = f"shot{sep}{i:03d}.jpg"  # by default a space in the file name, as cameras and exports produce
        img = _grey(40, 60) if i % 3 == 0 else _colour(40, 60)  # some greyscale, as in the audit's folder
        _write(root / img_dir / name, img)
        ann = root / ann_dir / f"shot{sep}{i:03d}.xml"
        ann.parent.mkdir(parents=True, exist_ok=True)
        ann.write_text(_voc_xml(name, (60, 40), [("Känguru" if i % 2 else "cat", (5, 5, 30, 30))]))
        names.append(name)
    return names


@pytest.mark.parametrize(("ann_dir", "img_dir"), [("Annotations", "JPEGImages"), ("annotations", "images"),
                                                  ("annots", "images")])
def test_voc_without_split_files_is_split_deterministically(tmp_path: Path, ann_dir: str, img_dir: str) -> None:
    """A VOC folder without ImageSets (and images/ + annots/ side by side) needed hand-restructuring."""
    root = tmp_path / "user data"
    names = _voc_folder(root, ann_dir, img_dir, 40)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    parts = {s: load_dataset(root, s) for s in ("train", "val", "test")}
    files = {s: sorted(os.path.basename(r.path) for r in d.records) for s, d in parts.items()}
    assert [len(files[s]) for s in ("train", "val", "test")] == [32, 4, 4]
    assert sorted(files["train"] + files["val"] + files["test"]) == sorted(names)  # disjoint, complete
    assert files == {s: sorted(os.path.basename(r.path) for r in load_dataset(root, s).records) for s in parts}
    assert "automatic split 80/10/10" in parts["train"].split_rule
    assert parts["train"].class_names == ["Känguru", "cat"]
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing written into the user's folder
    assert len(load_dataset(root, "trainval").records) == 36
    with pytest.raises(DatasetError, match="use train, val, test or trainval"):
        load_dataset(root, "holdout")


def test_split_command_writes_the_lists_elsewhere(tmp_path: Path) -> None:
    from efficientdet.cli import main

    root = tmp_path / "data"
    _voc_folder(root, "annots", "images", 20)
    assert main(["split", "--data", str(root), "--out", str(root / "lists")]) == 2  # never inside the dataset
    assert main(["split", "--data", str(root), "--out", str(tmp_path / "lists")]) == 0
    doc = json.loads((tmp_path / "lists" / "split.json").read_text())
    assert [len(doc["splits"][s]) for s in ("train", "val", "test")] == [16, 2, 2]
    assert (tmp_path / "lists" / "val.txt").read_text().splitlines() == doc["splits"]["val"]


def test_a_single_coco_json_is_split_not_validated_on_its_training_images(tmp_path: Path) -> None:
    images = []
    for i in range(20):
        _write(tmp_path / "flat" / f"{i}.png", _colour(20, 30))
        images.append({"id": i, "file_name": f"{i}.png", "width": 30, "height": 20})
    anns = [{"id": i + 1, "image_id": i, "category_id": 1, "bbox": [2, 2, 10, 10]} for i in range(20)]
    (tmp_path / "flat" / "all.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                             "categories": [{"id": 1, "name": "x"}]}))
    train, val = (load_dataset(tmp_path / "flat" / "all.json", s) for s in ("train", "val"))
    assert len(train.records) == 16 and len(val.records) == 2
    assert not {r.path for r in train.records} & {r.path for r in val.records}
    assert "single COCO json has no splits" in val.split_rule


def test_coco_2017_layout_is_found_by_plain_split_names(tmp_path: Path) -> None:
    """annotations/instances_{train,val}2017.json + train2017/ + val2017/, non-contiguous category ids."""
    root = tmp_path / "coco"
    for split, ids in (("train2017", [1, 2, 3]), ("val2017", [4])):
        imgs = [{"id": i, "file_name": f"{i:012d}.jpg", "width": 30, "height": 20} for i in ids]
        for img in imgs:
            _write(root / split / img["file_name"], _colour(20, 30))
        anns = [{"id": i, "image_id": i, "category_id": 13 if i % 2 else 90, "bbox": [1, 1, 5, 5]} for i in ids]
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(
            {"images": imgs, "annotations": anns, "categories": [{"id": 13, "name": "stop sign"},
                                                                 {"id": 90, "name": "toothbrush"}]}))
    train = load_dataset(root, "train")
    assert len(train.records) == 3 and not train.issues and train.class_names == ["stop sign", "toothbrush"]
    assert train.class_ids == [13, 90]  # COCO's own category ids travel with the contiguous labels
    assert load_dataset(root, "val2017").records[0].path.endswith("val2017/000000000004.jpg")


def test_warnings_name_the_files_and_where_a_missing_image_was_looked_for(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """The warning said "missing image file skipped: 5" and named none of them."""
    root = tmp_path / "data"
    names = _voc_folder(root, "Annotations", "JPEGImages", 10, sep="_")  # VOC split files cannot list spaces
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("".join(n.removesuffix(".jpg") + "\n" for n in names))
    gone = [root / "JPEGImages" / names[i] for i in (1, 2, 4, 5, 7)]
    for path in gone:
        path.unlink()
    _corrupt(root / "JPEGImages" / names[3])
    with caplog.at_level(logging.WARNING, logger="efficientdet.data"):
        ds = load_dataset(root, "train")
    message = caplog.records[-1].getMessage()
    assert f"missing image file skipped: 5 ({gone[0]}, {gone[1]}, {gone[2]} and 2 more)" in message
    assert f"unreadable image skipped: 1 ({root / 'JPEGImages' / names[3]})" in message
    assert ds.issues.files[c.MISSING_IMAGE] == [str(p) for p in gone]
