"""The paired bootstrap of ΔmAP: each draw is scored exactly as pycocotools scores that multiset of images."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from efficientdet.data.records import DetectionDataset, ImageRecord
from efficientdet.evaluate import coco_evaluation, coco_metrics
from efficientdet.map_bootstrap import MapDeltaInterval, PairedBootstrap, interval_text, resampled_map
from runtime.postprocess import Detections


def _dataset(n: int = 8, seed: int = 0) -> DetectionDataset:
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        k = int(rng.integers(1, 5))
        xy = rng.uniform(0, 200, size=(k, 2))
        wh = rng.uniform(20, 80, size=(k, 2))
        boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
        records.append(ImageRecord(image_id=i + 1, path=f"img{i}.jpg", width=300, height=300, boxes=boxes,
                                   labels=rng.integers(0, 2, size=k).astype(np.int64)))
    return DetectionDataset(name="toy", split="test", source="toy", format="toy", class_names=["a", "b"],
                            records=records)


def _predictions(ds: DetectionDataset, jitter: float, drop: float, seed: int) -> list[Detections]:
    """The ground truth moved by up to ``jitter`` px, each box dropped with probability ``drop``, random scores."""
    rng = np.random.default_rng(seed)
    out = []
    for rec in ds.records:
        keep = rng.uniform(size=len(rec.boxes)) >= drop
        boxes = rec.boxes[keep] + rng.uniform(-jitter, jitter, size=(int(keep.sum()), 4)).astype(np.float32)
        out.append(Detections(boxes.astype(np.float32), rng.uniform(0.3, 1.0, size=len(boxes)).astype(np.float32),
                              rec.labels[keep].astype(np.int64)))
    return out


def test_a_draw_scores_its_images_as_pycocotools_scores_that_multiset() -> None:
    ds = _dataset()
    preds = _predictions(ds, jitter=12.0, drop=0.2, seed=1)
    ev = coco_evaluation(ds, preds)
    assert resampled_map(ev, np.arange(len(ds.records))) == pytest.approx(coco_metrics(ds, preds)["map"], abs=1e-12)
    # image 0 twice, image 3 three times, image 5 once: the same as a split holding those copies as images
    draw = np.array([0, 0, 3, 3, 3, 5])
    copies = [dataclasses.replace(ds.records[i], image_id=100 + j) for j, i in enumerate(draw)]
    expected = coco_metrics(dataclasses.replace(ds, records=copies), [preds[i] for i in draw])["map"]
    assert resampled_map(ev, draw) == pytest.approx(expected, abs=1e-12)
    assert expected != pytest.approx(coco_metrics(ds, preds)["map"])  # the draw is not the split


def test_the_interval_is_paired_and_brackets_a_real_loss() -> None:
    ds = _dataset(n=24)
    reference = _predictions(ds, jitter=3.0, drop=0.0, seed=2)
    boot = PairedBootstrap(ds, reference, resamples=100, seed=0)
    same = boot.delta_interval(reference)
    assert (same.low, same.high, same.std_error) == (0.0, 0.0, 0.0)  # paired: the same model differs by nothing
    worse = _predictions(ds, jitter=3.0, drop=0.35, seed=2)
    delta = coco_metrics(ds, worse)["map"] - coco_metrics(ds, reference)["map"]
    got = boot.delta_interval(worse)
    assert got.resamples == 100 and got.level == 0.95
    assert got.low < delta < got.high < 0.0  # the loss of a third of the boxes is outside any draw's noise
    assert got.std_error > 0.0
    assert interval_text(got.to_dict()) == f"{got.low * 100:+.2f} … {got.high * 100:+.2f}"
    # the per-draw deltas behind it combine on the same draws: averaged with the reference's own (zero on every
    # draw), they give half the interval
    draws = boot.deltas(worse)
    assert draws.shape == (100,) and MapDeltaInterval.of_draws(draws) == got
    twice = MapDeltaInterval.of_draws((draws + boot.deltas(reference)) / 2)
    assert (twice.low, twice.high) == pytest.approx((got.low / 2, got.high / 2))
    nothing = boot.delta_interval([Detections.empty() for _ in ds.records])
    assert nothing.high == pytest.approx(-np.percentile(boot.reference_maps, 2.5))  # mAP 0 on every draw


def test_unlabelled_images_have_no_interval() -> None:
    ds = dataclasses.replace(_dataset(), labelled=False)
    with pytest.raises(ValueError, match="labelled"):
        PairedBootstrap(ds, _predictions(ds, 1.0, 0.0, 0))
    assert interval_text(None) == "—"
