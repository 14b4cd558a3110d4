"""How far a ΔmAP measured on a small evaluation split can be trusted: a paired bootstrap over its images.

Why: the int8 gates and goals are stated in tenths of an mAP point, and the splits they are measured on are
small (BCCD's test split has 72 images). Redrawing the images with replacement and scoring the FP32 model and
the artifact on the *same* draw gives the spread a ΔmAP would have on another split of that size from the same
distribution: the interval a reader needs before comparing -0.29 with a 0.3 goal.

Each model's images are matched against the ground truth once (pycocotools ``COCOeval.evaluate``, the
expensive step); each draw then only re-runs ``accumulate`` on that draw's per-image results, the
``evalImgs`` list that ``evaluate`` lays out category-major, then area range, then image. A drawn image that
appears twice counts twice (it gets its own position in the draw). Scores are COCO mAP@[.5:.95] computed as
``coco_metrics`` computes it, so the draw of every image once reproduces the split's own mAP exactly.
"""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from pycocotools.cocoeval import COCOeval

from efficientdet.data.records import DetectionDataset
from efficientdet.evaluate import Predictions, coco_evaluation

RESAMPLES = 200  # draws: 8 s per model on BCCD's 72 test images on this 2-core machine (40 ms per accumulate)
LEVEL = 0.95


@dataclass(frozen=True)
class MapDeltaInterval:
    """Bootstrap figures of mAP(artifact) - mAP(reference), in 0-1 units like ``map_delta``."""

    low: float  # the central ``level`` interval's ends (percentiles of the draws)
    high: float
    std_error: float  # standard deviation of the draws' deltas
    resamples: int
    level: float

    @classmethod
    def of_draws(cls, deltas: np.ndarray, level: float = LEVEL) -> MapDeltaInterval:
        """The interval of per-draw deltas: one model's, or any combination of several models' on the same draws
        (their mean, a difference of two), which keeps the pairing the interval of a single delta has."""
        tail = (1.0 - level) / 2 * 100
        low, high = np.percentile(deltas, [tail, 100 - tail])
        return cls(low=float(low), high=float(high), std_error=float(deltas.std(ddof=1)), resamples=len(deltas),
                   level=level)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resampled_map(ev: COCOeval | None, images: np.ndarray) -> float:
    """mAP@[.5:.95] of the already evaluated ``ev`` over the image positions ``images`` (repeats allowed)."""
    if ev is None:  # the model made no detection at all: 0 on every draw, as coco_metrics scores it
        return 0.0
    n_images, n_areas = len(ev.params.imgIds), len(ev.params.areaRng)
    draw = copy.copy(ev)
    draw.params = copy.copy(ev.params)
    draw._paramsEval = copy.copy(ev._paramsEval)
    draw.params.imgIds = draw._paramsEval.imgIds = list(range(len(images)))
    draw.evalImgs = [ev.evalImgs[(k * n_areas + a) * n_images + i]
                     for k in range(len(ev.params.catIds)) for a in range(n_areas) for i in images]
    with contextlib.redirect_stdout(io.StringIO()):
        draw.accumulate()
    precision = draw.eval["precision"][:, :, :, 0, -1]  # all areas, the largest detection budget
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else 0.0


class PairedBootstrap:
    """The reference's draws, made once; :meth:`delta_interval` scores any other model on the same draws."""

    def __init__(self, dataset: DetectionDataset, reference: Predictions, resamples: int = RESAMPLES,
                 seed: int = 0) -> None:
        if not dataset.labelled:
            raise ValueError(f"{dataset.source}: a bootstrap of mAP needs labelled images")
        if resamples < 2:
            raise ValueError(f"resamples must be >= 2, got {resamples}")
        self.dataset = dataset
        n = len(dataset.records)
        self.draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
        ev = coco_evaluation(dataset, reference)
        self.reference_maps = np.array([resampled_map(ev, d) for d in self.draws])

    def deltas(self, predictions: Predictions) -> np.ndarray:
        """mAP(predictions) - mAP(reference) on each draw, in the draws' order."""
        ev = coco_evaluation(self.dataset, predictions)
        return np.array([resampled_map(ev, d) for d in self.draws]) - self.reference_maps

    def delta_interval(self, predictions: Predictions, level: float = LEVEL) -> MapDeltaInterval:
        return MapDeltaInterval.of_draws(self.deltas(predictions), level)


def interval_text(interval: dict[str, Any] | None) -> str:
    """A report's ``map_delta_interval`` in mAP points for a table cell ("—" where none was measured)."""
    if not interval:
        return "—"
    return f"{interval['low'] * 100:+.2f} … {interval['high'] * 100:+.2f}"
