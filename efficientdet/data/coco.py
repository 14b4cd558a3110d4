"""COCO detection json reader: category ids become contiguous 0-based labels in sorted category-id order."""

from __future__ import annotations

import collections
import json
import math
import os
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from efficientdet.data import checks
from efficientdet.data.records import DatasetError, DetectionDataset

# COCO's official release names its splits with the year (instances_train2017.json + train2017/): asking for
# ``train`` or ``val`` finds those too, so a downloaded COCO needs no renaming.
YEARS = ("", "2017", "2014")


def coco_json_path(root: Path, split: str) -> Path:
    """Where a COCO directory keeps the annotations of ``split`` (``instances_{split}[2017|2014].json``)."""
    candidates = [root / "annotations" / f"instances_{split}{year}.json" for year in YEARS]
    return next((c for c in candidates if c.is_file()), candidates[0])


def image_dirs(json_path: Path, split: str) -> list[Path]:
    """Directories a relative ``file_name`` is resolved against, in order: images/{split}/, {split}/ (COCO's own
    ``train2017/``), images/, the json's dir; ``split`` as the json names it (``train2017``) and as asked."""
    json_dir = json_path.parent
    root = json_dir.parent if json_dir.name == "annotations" else json_dir
    names = dict.fromkeys([json_path.stem.removeprefix("instances_"), split])
    dirs = [d for name in names for d in (root / "images" / name, root / name)] + [root / "images", json_dir]
    return list(dict.fromkeys(dirs))


def _resolve(file_name: str, dirs: Sequence[Path]) -> Path:
    candidate = Path(file_name)
    if candidate.is_absolute():
        return candidate
    for d in dirs:
        if (d / candidate).is_file():
            return d / candidate
    return dirs[0] / candidate


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read COCO annotations {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{path} is not a COCO detection file: expected an object with an 'images' list")
    return data


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _categories(data: dict[str, Any], path: Path, issues: collections.Counter
                ) -> tuple[dict[int, int], list[str]]:
    cats: dict[int, str] = {}
    for cat in data.get("categories") or []:
        cid = cat.get("id") if isinstance(cat, dict) else None
        if isinstance(cid, bool) or not isinstance(cid, int) or cid in cats:
            issues["malformed category skipped"] += 1
            continue
        cats[cid] = str(cat.get("name", cid)).strip()
    if not cats:
        raise DatasetError(f"no categories in {path}: a COCO detection file needs a 'categories' list with ids")
    ids = sorted(cats)
    return {cid: i for i, cid in enumerate(ids)}, [cats[cid] for cid in ids]


def _boxes_by_image(data: dict[str, Any], image_ids: set[int], label_of: dict[int, int],
                    issues: collections.Counter, path: Path) -> dict[int, list[tuple[list[float], int]]]:
    by_image: dict[int, list[tuple[list[float], int]]] = collections.defaultdict(list)
    for k, ann in enumerate(data.get("annotations") or []):
        where = f"{path} annotation #{k}" + (f" (id {ann.get('id')})" if isinstance(ann, dict) else "")
        if not isinstance(ann, dict):
            checks.note_issue(issues, checks.MALFORMED_ENTRY, where)
        elif not isinstance(ann.get("image_id"), int) or ann["image_id"] not in image_ids:
            checks.note_issue(issues, checks.ORPHAN_ANNOTATION, where)
        elif ann.get("iscrowd", 0):
            checks.note_issue(issues, checks.CROWD, where)
        elif not isinstance(ann.get("category_id"), int) or ann["category_id"] not in label_of:
            checks.note_issue(issues, checks.UNKNOWN_CLASS, where)
        else:
            bbox = ann.get("bbox")
            xywh = [_number(v) for v in bbox] if isinstance(bbox, list) and len(bbox) == 4 else [None]
            if any(v is None for v in xywh):
                checks.note_issue(issues, checks.MALFORMED_BOX, where)
                continue
            x, y, w, h = xywh
            by_image[ann["image_id"]].append(([x, y, x + w, y + h], label_of[ann["category_id"]]))
    return by_image


def load_coco(json_path: str | Path, split: str = "train", verify_images: bool = True,
              dirs: Sequence[Path] | None = None, name: str | None = None,
              class_names: Sequence[str] | None = None,
              select: Callable[[list[str]], Collection[str]] | None = None) -> DetectionDataset:
    """Load a COCO detection json; ``dirs`` overrides where relative image file names are looked up.

    ``select`` picks the image file names (base names) to load from all those the json lists, before any
    image is opened (an automatic split of a single json reads only its own images).
    """
    json_path = Path(json_path).resolve()
    data = _read_json(json_path)
    dirs = list(dirs) if dirs is not None else image_dirs(json_path, split)
    issues: collections.Counter = checks.Issues()
    label_of, names = _categories(data, json_path, issues)
    entries: dict[int, dict[str, Any]] = {}
    for img in data["images"]:
        iid = img.get("id") if isinstance(img, dict) else None
        if isinstance(iid, bool) or not isinstance(iid, int) or not isinstance(img.get("file_name"), str):
            checks.note_issue(issues, checks.MALFORMED_ENTRY, f"{json_path} image entry {img!r:.80}")
        elif iid in entries:
            checks.note_issue(issues, checks.DUPLICATE_IMAGE, f"{json_path} image id {iid}")
        else:
            entries[iid] = img
    if not entries:
        raise DatasetError(f"no images found in split {split!r} of {json_path}: its 'images' list has no valid entries")
    if select is not None:
        keep = set(select([os.path.basename(img["file_name"]) for img in entries.values()]))
        entries = {iid: img for iid, img in entries.items() if os.path.basename(img["file_name"]) in keep}
        if not entries:
            raise DatasetError(f"split {split!r} of {json_path} is empty after the automatic split; add images")
    by_image = _boxes_by_image(data, set(entries), label_of, issues, json_path)
    records = []
    for iid in sorted(entries):
        img = entries[iid]
        w, h = img.get("width"), img.get("height")
        annotated = (int(w), int(h)) if _number(w) is not None and _number(h) is not None else None
        anns = by_image.get(iid, [])
        rec = checks.make_record(iid, str(_resolve(img["file_name"], dirs)), annotated,
                                 [b for b, _ in anns], [c for _, c in anns], verify_images, issues)
        if rec is not None:
            records.append(rec)
    root = json_path.parent.parent if json_path.parent.name == "annotations" else json_path.parent
    dataset = DetectionDataset(name or root.name, split, str(json_path), "coco", names, records, issues,
                               class_ids=sorted(label_of))
    return checks.finish(dataset, len(entries), class_names)
