"""COCO-style evaluation (mAP@[.5:.95], mAP@.5, per-class AP) through pycocotools.

Predictions go through the runtime's post-processing, so the PyTorch model is scored exactly as
the deployed artifacts are.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from efficientdet.data.records import DetectionDataset, ImageRecord
from efficientdet.train.batches import load_example
from runtime.contract import EVAL_POSTPROCESS, PostprocessSpec, PreprocessSpec
from runtime.postprocess import Detections, postprocess
from runtime.preprocess import letterbox_geometry

Predictions = list[Detections]  # per record, boxes in original image pixels


def torch_outputs(model: torch.nn.Module, dataset: DetectionDataset, preprocess_spec: PreprocessSpec,
                  batch_size: int = 4, progress: bool = True,
                  transform: Callable[[np.ndarray, int], np.ndarray] | None = None,
                  ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(record index, logits, box deltas)`` of a PyTorch model over the dataset, in record order.
    ``transform(x, index)``: what the model sees instead of the pre-processed ``HxWx3`` image ``x`` (a perturbation,
    :mod:`convert.rounding_noise`)."""
    model.eval()
    indices = range(len(dataset.records))
    batches = [list(indices[i:i + batch_size]) for i in range(0, len(indices), batch_size)]
    for chunk in tqdm(batches, desc="eval", disable=not progress, leave=False):
        images = [load_example(dataset.records[i], preprocess_spec)[0] for i in chunk]
        if transform is not None:
            images = [transform(x, i) for x, i in zip(images, chunk)]
        with torch.no_grad():
            logits, deltas = model(torch.from_numpy(np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))))
        for j, i in enumerate(chunk):
            yield i, logits[j].numpy(), deltas[j].numpy()


def to_detections(logits: np.ndarray, deltas: np.ndarray, record: ImageRecord, preprocess_spec: PreprocessSpec,
                  anchors: np.ndarray, post_spec: PostprocessSpec | None = None) -> Detections:
    """One image's raw outputs through the runtime's post-processing, boxes in the original image's pixels."""
    det = postprocess(logits, deltas, anchors, post_spec or EVAL_POSTPROCESS)
    return det.to_original(letterbox_geometry(record.height, record.width, preprocess_spec.input_size))


def torch_predict(model: torch.nn.Module, dataset: DetectionDataset, preprocess_spec: PreprocessSpec,
                  anchors: np.ndarray, post_spec: PostprocessSpec | None = None, batch_size: int = 4,
                  progress: bool = True) -> Predictions:
    """Run a PyTorch model over the dataset with the runtime's pre/post-processing."""
    return [to_detections(logits, deltas, dataset.records[i], preprocess_spec, anchors, post_spec)
            for i, logits, deltas in torch_outputs(model, dataset, preprocess_spec, batch_size, progress)]


def coco_evaluation(dataset: DetectionDataset, predictions: Iterable[Detections]) -> COCOeval | None:
    """pycocotools' per-image matching (``evaluate``, not yet accumulated) of predictions aligned with the labelled
    ``dataset.records``; None when there is not one detection (pycocotools cannot load an empty result)."""
    results = []
    for rec, det in zip(dataset.records, predictions):
        for b, s, c in zip(det.boxes, det.scores, det.class_ids):
            results.append({"image_id": int(rec.image_id), "category_id": int(c) + 1,
                            "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                            "score": float(s)})
    if not results:
        return None
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = dataset.to_coco()
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        ev.evaluate()
    return ev


def coco_metrics(dataset: DetectionDataset, predictions: Iterable[Detections]) -> dict[str, Any]:
    """``map``, ``map50`` and per-class AP@[.5:.95] and AP@.5 (by class name) for predictions aligned with
    ``dataset.records``; None for an unlabelled image folder."""
    if not dataset.labelled:  # no ground truth: mAP is not measured, and says so (never a silent 0)
        return {"map": None, "map50": None, "per_class_ap": {}, "per_class_ap50": {},
                "num_images": len(dataset.records)}
    names = list(dataset.class_names)
    ev = coco_evaluation(dataset, predictions)
    if ev is None:
        return {"map": 0.0, "map50": 0.0, "per_class_ap": {n: 0.0 for n in names},
                "per_class_ap50": {n: 0.0 for n in names}, "num_images": len(dataset.records)}
    with contextlib.redirect_stdout(io.StringIO()):
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]  # [T, R, K, area, maxDets]
    per_class, per_class50 = {}, {}
    for k, cat_id in enumerate(ev.params.catIds):
        for table, p in ((per_class, precision[:, :, k, 0, -1]), (per_class50, precision[0, :, k, 0, -1])):
            table[names[cat_id - 1]] = float(p[p > -1].mean()) if (p > -1).any() else 0.0
    return {"map": float(max(ev.stats[0], 0.0)), "map50": float(max(ev.stats[1], 0.0)),
            "per_class_ap": per_class, "per_class_ap50": per_class50, "num_images": len(dataset.records)}


def evaluate_model(model: torch.nn.Module, dataset: DetectionDataset, preprocess_spec: PreprocessSpec,
                   anchors: np.ndarray,
                   progress: bool = True) -> dict[str, Any]:
    preds = torch_predict(model, dataset, preprocess_spec, anchors, progress=progress)
    return coco_metrics(dataset, preds)
