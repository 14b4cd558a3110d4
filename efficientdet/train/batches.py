"""Torch dataset for training and evaluation: the runtime's pre-processing plus augmentation.

Augmentation is expressed through the pre-processing's own parameters (jittered letterbox scale, crop/placement
offset), a horizontal flip, where asked a vertical flip (for images without an up, such as microscopy: it doubles
the orientations a small dataset shows) and a photometric shift of the pixels before them, so training never forks
its own resize or normalisation code. Anchor matching happens here, in the workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from efficientdet.data.photometric import random_shift
from efficientdet.data.records import DetectionDataset, ImageRecord
from runtime.anchors import generate_anchors
from runtime.contract import AnchorSpec, PreprocessSpec
from runtime.preprocess import letterbox_geometry, preprocess, read_image

from .targets import match_anchors

MIN_VISIBLE_FRACTION = 0.3
MIN_BOX_SIDE = 2.0


@dataclass(frozen=True)
class Augment:
    """Training augmentation. ``scale_range`` multiplies the letterbox scale (scale jitter); ``photometric`` is
    the probability of a random photometric shift (:mod:`efficientdet.data.photometric`), used by QAT so the
    ranges it learns cover other light and cameras, and by ``train --photometric`` so the model itself meets them
    (0 keeps the images' colours, the default).
    ``vflip`` is off by default: scenes with a ground and a sky must not be turned upside down. At 0 no random
    number is drawn for it, so runs without it keep the augmentation stream they always had."""

    hflip: float = 0.5
    vflip: float = 0.0
    scale_range: tuple[float, float] = (0.6, 1.4)
    photometric: float = 0.0


def load_example(rec: ImageRecord, spec: PreprocessSpec, augment: Augment | None = None,
                 rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pre-processed HWC image and its boxes/labels in input pixels (augmented when ``augment``)."""
    image = read_image(rec.path)
    boxes = rec.boxes.astype(np.float32).copy()
    labels = rec.labels.copy()
    if augment is None:
        x, box = preprocess(image, spec)
        return x, box.to_input(boxes), labels
    rng = rng or np.random.default_rng()
    if augment.photometric and rng.random() < augment.photometric:
        image = random_shift(image, rng).image
    h, w = image.shape[:2]
    if rng.random() < augment.hflip:
        image = image[:, ::-1]
        boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
    if augment.vflip and rng.random() < augment.vflip:
        image = image[::-1]
        boxes[:, [1, 3]] = h - boxes[:, [3, 1]]
    jitter = float(rng.uniform(*augment.scale_range))
    size = spec.input_size
    geo = letterbox_geometry(h, w, size, jitter)
    sw, sh = w * geo.scale, h * geo.scale
    ox = rng.uniform(min(0.0, sw - size), max(0.0, sw - size))
    oy = rng.uniform(min(0.0, sh - size), max(0.0, sh - size))
    x, box = preprocess(image, spec, jitter=jitter, offset=(round(ox), round(oy)))
    boxes_in = box.to_input(boxes)
    area = (boxes_in[:, 2] - boxes_in[:, 0]) * (boxes_in[:, 3] - boxes_in[:, 1])
    clipped = np.clip(boxes_in, 0, size)
    cw, ch = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    keep = (cw >= MIN_BOX_SIDE) & (ch >= MIN_BOX_SIDE) & (cw * ch >= MIN_VISIBLE_FRACTION * np.maximum(area, 1e-6))
    return x, clipped[keep], labels[keep]


class DetectionBatches(Dataset):
    """Items: ``(image CHW float32, cls_targets [A], box_targets [A,4], index)``.

    ``augment=None`` gives the deterministic evaluation/calibration view.
    """

    def __init__(self, dataset: DetectionDataset, preprocess_spec: PreprocessSpec, anchor_spec: AnchorSpec,
                 augment: Augment | None = None, seed: int = 0) -> None:
        self.dataset = dataset
        self.spec = preprocess_spec
        self.anchors = generate_anchors(anchor_spec)
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        rng = np.random.default_rng((self.seed, self.epoch, index)) if self.augment else None
        x, boxes, labels = load_example(self.dataset.records[index], self.spec, self.augment, rng)
        cls, reg = match_anchors(self.anchors, boxes, labels)
        image = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))
        return image, torch.from_numpy(cls), torch.from_numpy(reg), index


def epoch_loader(data: DetectionBatches, batch_size: int, sampler: Sampler, workers: int,
                 drop_last: bool) -> DataLoader:
    """The training loader over ``data``, whose workers see the epoch :meth:`DetectionBatches.set_epoch` set.

    Not persistent: a worker keeps the copy of ``data`` it was started with, so persistent workers kept the epoch of
    their first batch and drew each image's same augmentation in every epoch (every training and QAT run until
    session 22: epoch 0's throughout, a resumed run the epoch it resumed at). Workers started per epoch copy the
    current epoch; starting one costs well under a second against minutes per epoch."""
    return DataLoader(data, batch_size=batch_size, sampler=sampler, drop_last=drop_last, num_workers=workers,
                      persistent_workers=False)
