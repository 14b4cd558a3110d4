"""One entry point that recognises COCO, Pascal VOC and YOLO datasets, so callers never name the format."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from efficientdet.data import coco, voc, yolo
from efficientdet.data.checks import remap_classes
from efficientdet.data.records import DatasetError, DetectionDataset

LOG = logging.getLogger("efficientdet.data")


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
        f"{' or '.join(yolo.YAML_NAMES)} or classes.txt (YOLO), and XML annotations beside images "
        f"({' or '.join(f'{a}/ + {i}/' for a, i in voc.LAYOUTS)}) here or in exactly one subdirectory (Pascal VOC)")


def load_dataset(source: str | Path, split: str = "train", verify_images: bool = True, *,
                 class_names: Sequence[str] | None = None) -> DetectionDataset:
    """Load ``split`` of the dataset at ``source`` (format auto-detected), skipping and counting bad data.

    ``verify_images`` decodes every image to check it and take its real size. ``class_names`` re-indexes
    labels onto a given list (pass the training split's names when loading val/test, so labels agree);
    boxes of other classes are then skipped and counted. Logs one summary on ``efficientdet.data``.
    """
    path = Path(source).expanduser().resolve()
    fmt = detect_format(path, split)
    if fmt == "coco" and path.is_file():
        return _split_single_json(path, split, verify_images, class_names)
    if fmt == "coco":
        return coco.load_coco(coco.coco_json_path(path, split), split, verify_images, class_names=class_names)
    if fmt == "yolo":
        return yolo.load_yolo(path, split, verify_images, class_names=class_names)
    return voc.load_voc(path, split, verify_images, class_names=class_names)


def _split_single_json(path: Path, split: str, verify_images: bool,
                       class_names: Sequence[str] | None) -> DetectionDataset:
    """One COCO json holds no split: training and validation on it used to be the same images (validation
    on the training set, silently). Its images are split like a VOC folder without split files."""
    dataset = coco.load_coco(path, split, verify_images, class_names=class_names,
                             select=lambda names: voc.auto_split(names, split))
    train, val, test = (round(r * 100) for r in voc.SPLIT_RATIOS)
    dataset.split_rule = (f"automatic split {train}/{val}/{test} (seed {voc.SPLIT_SEED}) of the images of {path}: "
                          "a single COCO json has no splits")
    LOG.info("%s split %r: %s", path.name, split, dataset.split_rule)
    return dataset


def parse_class_map(text: str | None) -> dict[str, str]:
    """``"RBC=circle,WBC=square,Platelets="`` -> a dataset-name -> model-name map (empty: ignore that class)."""
    mapping: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, sep, target = item.partition("=")
        if not sep or not name.strip():
            raise DatasetError(f"--class-map expects DATASET_NAME=MODEL_NAME[,...] (MODEL_NAME empty to ignore a "
                               f"class), got {item!r}")
        mapping[name.strip()] = target.strip()
    return mapping


def load_for_model(source: str | Path, split: str, model_classes: Sequence[str], *, num_classes: int,
                   class_map: Mapping[str, str] | None = None, verify_images: bool = True) -> DetectionDataset:
    """``split`` of a dataset, labelled with a model's class ids; refused when the classes do not match.

    A model scored on a dataset of other classes used to give mAP 0.0 with only a warning (the BCCD D0
    on the synthetic shapes, issue 13). Every class of the dataset must be one of the model's, by name,
    after the optional explicit ``class_map`` (dataset name -> model name; an empty model name ignores
    that class). A split that lacks some of the model's classes is fine. A model without class names
    can only be checked by count.
    """
    dataset = load_dataset(source, split, verify_images)
    mapping = dict(class_map or {})
    stray = sorted(set(mapping) - set(dataset.class_names))
    if stray:
        raise DatasetError(f"--class-map names {stray}, which are not classes of {dataset.source} "
                           f"(its classes: {dataset.class_names})")
    names = [mapping.get(n, n) for n in dataset.class_names]
    if not model_classes:
        if len(dataset.class_names) != num_classes:
            raise DatasetError(f"dataset {dataset.source} has {len(dataset.class_names)} classes but the model has "
                               f"{num_classes} (and no class names to match by); use the data the model was "
                               "trained for")
        return dataset
    unknown = [n for n in names if n and n not in model_classes]
    if unknown:
        raise DatasetError(
            f"dataset {dataset.source} has classes the model does not know: {unknown} (the model's classes: "
            f"{list(model_classes)}); its scores would be meaningless. Use the data the model was trained for, or "
            "map the classes explicitly: --class-map DATASET_NAME=MODEL_NAME,... (make CLASS_MAP=...; "
            "MODEL_NAME empty ignores a class)")
    dataset.class_names = [n if n else f"<ignored:{orig}>" for n, orig in zip(names, dataset.class_names)]
    return remap_classes(dataset, model_classes)
