"""One entry point that recognises COCO, Pascal VOC and YOLO datasets, so callers never name the format."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from efficientdet.data import coco, voc, yolo
from efficientdet.data.records import DatasetError, DetectionDataset


def detect_format(source: Path, split: str) -> str:
    """``"coco"``, ``"voc"`` or ``"yolo"`` for ``source``; a :class:`DatasetError` saying what was looked for."""
    if not source.exists():
        raise DatasetError(f"dataset path {source} does not exist")
    if source.is_file():
        if source.suffix.lower() == ".json":
            return "coco"
        if source.suffix.lower() in (".yaml", ".yml") or source.name == "classes.txt":
            return "yolo"
        raise DatasetError(f"{source} is not a dataset file: expected a COCO .json, a YOLO data.yaml or a directory")
    if coco.coco_json_path(source, split).is_file():
        return "coco"
    available = sorted(p.stem.removeprefix("instances_") for p in (source / "annotations").glob("instances_*.json"))
    if available:
        raise DatasetError(f"no images found in split {split!r} of {source}: looked for "
                           f"{coco.coco_json_path(source, split)}; available splits: {', '.join(available)}")
    if yolo.find_yolo_config(source) is not None:
        return "yolo"
    if voc.find_voc_root(source) is not None:
        return "voc"
    raise DatasetError(
        f"cannot recognise a dataset in {source}: looked for annotations/instances_{split}.json (COCO), "
        f"{' or '.join(yolo.YAML_NAMES)} or classes.txt (YOLO), and Annotations/ + JPEGImages/ + ImageSets/Main/ "
        "here or in exactly one subdirectory (Pascal VOC)")


def load_dataset(source: str | Path, split: str = "train", verify_images: bool = True, *,
                 class_names: Sequence[str] | None = None) -> DetectionDataset:
    """Load ``split`` of the dataset at ``source`` (format auto-detected), skipping and counting bad data.

    ``verify_images`` decodes every image to check it and take its real size. ``class_names`` re-indexes
    labels onto a given list (pass the training split's names when loading val/test, so labels agree);
    boxes of other classes are then skipped and counted. Logs one summary on ``efficientdet.data``.
    """
    path = Path(source).expanduser().resolve()
    fmt = detect_format(path, split)
    if fmt == "coco":
        json_path = path if path.is_file() else coco.coco_json_path(path, split)
        return coco.load_coco(json_path, split, verify_images, class_names=class_names)
    if fmt == "yolo":
        return yolo.load_yolo(path, split, verify_images, class_names=class_names)
    return voc.load_voc(path, split, verify_images, class_names=class_names)
