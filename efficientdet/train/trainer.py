"""The training loop: AdamW, cosine LR with linear warm-up, gradient clipping, weight EMA,
checkpoint save/resume, per-epoch validation mAP, a JSON-lines metrics log, and optional
multi-process data parallelism (``torchrun``; gloo on CPU).

Checkpoints (``last.pt`` every epoch, ``best.pt`` on the best validation mAP@[.5:.95] of the EMA
weights) carry the full model config, so later stages need no flags repeated.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, RandomSampler
from tqdm import tqdm

from efficientdet.checkpoint import load_checkpoint, save_checkpoint
from efficientdet.data.records import DetectionDataset
from efficientdet.evaluate import evaluate_model
from efficientdet.model.config import ModelConfig
from efficientdet.model.detector import EfficientDet
from efficientdet.model.pretrained import load_backbone
from runtime.anchors import generate_anchors

from .batches import Augment, DetectionBatches, epoch_loader
from .ema import ModelEMA
from .loss import detection_loss

LOG = logging.getLogger("efficientdet.train")


@dataclass
class TrainConfig:
    epochs: int = 50
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    ema_decay: float = 0.9998
    clip_norm: float = 10.0
    workers: int = 1
    seed: int = 0
    eval_every: int = 1
    max_steps_per_epoch: int = 0  # 0 = the whole split; >0 caps steps (smoke runs, tests)
    # Fine-tuning a pretrained backbone: its weights do not move for this many epochs while the new
    # BiFPN and heads settle (their first, large gradients would otherwise overwrite ImageNet features),
    # and its BatchNorm statistics then move at the reference's slow momentum (docs/PRETRAINED-AND-EFFDET.md).
    freeze_backbone_epochs: float = 0.0
    backbone_bn_momentum: float | None = None
    augment: Augment = field(default_factory=Augment)
    # Images left out of the training and validation splits (--exclude-images; e.g. audit-labels' flagged.txt),
    # by file name: the dataset on disk is not edited, so the checkpoint is where the exclusion is written down.
    excluded_images: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["augment"] = {"hflip": self.augment.hflip, "vflip": self.augment.vflip,
                        "scale_range": list(self.augment.scale_range), "photometric": self.augment.photometric}
        return d


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def param_groups(model: torch.nn.Module, weight_decay: float, split_backbone: bool = False) -> list[dict[str, Any]]:
    """Weight decay on weights, none on biases/BN; with ``split_backbone`` the backbone's groups are separate
    (``"backbone": True``) so a fine-tune can hold them still. Without it the two groups of every earlier run
    stay as they were, so those runs still resume. QAT's fine-tune (:mod:`quantize.qat`) uses the same groups."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            key = (split_backbone and name.startswith("backbone."), p.ndim > 1)
            groups.setdefault(key, []).append(p)
    return [{"params": params, "weight_decay": weight_decay if decay else 0.0, "backbone": backbone}
            for (backbone, decay), params in sorted(groups.items(), key=lambda kv: (kv[0][0], not kv[0][1]))]


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up to ``base`` then cosine decay to 1% of it."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def check_batch(config: ModelConfig, batch_size: int) -> None:
    """BatchNorm in training needs two values per channel; the coarsest level has ceil(size / 2^max_level)^2."""
    side = -(-config.input_size // 2 ** config.max_level)
    if batch_size < 1 or batch_size * side * side < 2:
        raise ValueError(f"batch size {batch_size} is too small at input size {config.input_size} (the P"
                         f"{config.max_level} feature map is {side}x{side}, and BatchNorm needs two values per "
                         "channel in training): use BATCH=2 or more")


def inherit_weight_settings(config: ModelConfig, path: str | Path) -> ModelConfig:
    """``config`` with the settings ``path``'s weights were trained with: padding, backbone BN eps and the
    normalisation (mean/std/colour order/pad colour). Fine-tuning a pretrained Lite0 or an imported effdet model
    under this project's defaults would otherwise feed its weights inputs they never saw."""
    saved = ModelConfig.from_dict(load_checkpoint(path)["config"])
    pre = dataclasses.replace(config.preprocess, mean=saved.preprocess.mean, std=saved.preprocess.std,
                              color_order=saved.preprocess.color_order, pad_color=saved.preprocess.pad_color)
    return config.replace(conv_padding=saved.conv_padding, pool_padding=saved.pool_padding,
                          backbone_bn_eps=saved.backbone_bn_eps, preprocess=pre)


def init_from(model: EfficientDet, path: str | Path) -> None:
    """Fine-tuning start: every weight of ``path`` that fits, the class head re-initialised when the class count
    differs (it used to die with a raw size-mismatch traceback). Anything else that does not fit is refused."""
    ck = load_checkpoint(path)
    weights = ck.get("ema") or ck["model"]
    own = model.state_dict()
    head = "class_net.predict."
    mismatched = [k for k, v in weights.items() if k in own and own[k].shape != v.shape]
    other = [k for k in mismatched if not k.startswith(head)]
    if other:
        raise ValueError(f"--init {path} is a different architecture ({ModelConfig.from_dict(ck['config']).name}): "
                         f"{len(other)} tensors do not fit, e.g. {other[:3]}; initialise from a checkpoint of the "
                         "same variant and PHI")
    kept = {k: v.float() if v.is_floating_point() else v for k, v in weights.items() if k not in mismatched}
    missing, unexpected = model.load_state_dict(kept, strict=False)
    if unexpected or [k for k in missing if not k.startswith(head)]:
        raise ValueError(f"--init {path} does not fit this model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if mismatched:
        LOG.info("initialised from %s; its class head (%d classes) was replaced for this dataset's %d classes",
                 path, ModelConfig.from_dict(ck["config"]).num_classes, model.config.num_classes)


class Trainer:
    def __init__(self, config: ModelConfig, train_set: DetectionDataset, val_set: DetectionDataset | None,
                 tcfg: TrainConfig, out_dir: str | Path, resume: str | Path | None = None,
                 init_weights: str | Path | None = None, progress: bool = True,
                 backbone: str | Path | None = None) -> None:
        """``backbone``: "package" (the registry's ImageNet weights for this backbone) or a weights file."""
        self.rank, self.world = _distributed()
        torch.manual_seed(tcfg.seed + self.rank)
        self.config, self.tcfg, self.out = config, tcfg, Path(out_dir)
        self.train_set, self.val_set = train_set, val_set
        self.progress = progress and self.rank == 0
        self.anchor_spec = config.anchor_spec
        self.pre_spec = config.preprocess
        self.anchors = generate_anchors(self.anchor_spec)
        self.model = EfficientDet(config)
        if init_weights:
            init_from(self.model, init_weights)
        self.backbone_source = None
        if backbone is not None and not resume:
            self.backbone_source = load_backbone(self.model.backbone, None if backbone == "package" else backbone)
            LOG.info("backbone initialised from %s (sha256 %s)", self.backbone_source.get("package")
                     or self.backbone_source["path"], self.backbone_source["sha256"][:12])
        if tcfg.backbone_bn_momentum is not None:
            for m in self.model.backbone.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.momentum = tcfg.backbone_bn_momentum
        self.ema = ModelEMA(self.model, tcfg.ema_decay)
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, tcfg.weight_decay, split_backbone=tcfg.freeze_backbone_epochs > 0), lr=tcfg.lr)
        self.data = DetectionBatches(train_set, self.pre_spec, self.anchor_spec, tcfg.augment, tcfg.seed)
        self.order = torch.Generator()  # reseeded every epoch (start_epoch): a resumed run draws the same order
        sampler = (DistributedSampler(self.data, self.world, self.rank, seed=tcfg.seed) if self.world > 1
                   else RandomSampler(self.data, generator=self.order))
        self.sampler = sampler
        check_batch(config, tcfg.batch_size)
        # A last batch of one image crashed BatchNorm at small input sizes ("Expected more than 1 value per
        # channel", P7 is 1x1 at 128 px) at the end of the first epoch, before any checkpoint (issue 14): drop it.
        drop_last = len(sampler) % tcfg.batch_size == 1 and tcfg.batch_size > 1
        if drop_last and self.rank == 0:
            LOG.info("the last batch of each epoch would hold one image; it is skipped (BatchNorm needs two)")
        self.loader = epoch_loader(self.data, tcfg.batch_size, sampler, tcfg.workers, drop_last)
        self.steps_per_epoch = len(self.loader)
        if tcfg.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, tcfg.max_steps_per_epoch)
        self.epoch, self.step, self.best_map = 0, 0, -1.0
        self.history: list[dict[str, Any]] = []
        self.wall_time = 0.0
        if resume:
            self._resume(resume)
        self.net = DistributedDataParallel(self.model) if self.world > 1 else self.model

    def _state(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "model": self.model.state_dict(),
                "ema": self.ema.module.state_dict(), "ema_updates": self.ema.updates,
                "optimizer": self.optimizer.state_dict(), "epoch": self.epoch, "step": self.step,
                "best_map": self.best_map, "history": json.dumps(self.history),
                "train": json.dumps(self.tcfg.to_dict()),
                "class_names": list(self.train_set.class_names), "wall_time_s": self.wall_time,
                "backbone_source": json.dumps(self.backbone_source)}

    def _resume(self, path: str | Path) -> None:
        ck = load_checkpoint(path)
        saved = ModelConfig.from_dict(ck["config"])
        self.config.check_compatible(saved, what=f"checkpoint {path}")
        # What the weights were trained with (padding, normalisation) must not change under a resumed run, e.g.
        # a run started with PRETRAINED=0 and resumed without it would switch to the pretrained settings.
        changed = [f for f in ("conv_padding", "pool_padding", "backbone_bn_eps", "preprocess")
                   if getattr(saved, f) != getattr(self.config, f)]
        if changed:
            raise ValueError(f"cannot resume {path}: it was trained with other {', '.join(changed)} than this "
                             f"command asks for ({', '.join(f'{f}={getattr(saved, f)!r}' for f in changed)}); repeat "
                             "the first command's PRETRAINED=/BACKBONE_WEIGHTS= settings, or start over (--restart)")
        listed = tuple(json.loads(ck.get("train") or "{}").get("excluded_images", ()))
        if listed != self.tcfg.excluded_images:
            raise ValueError(f"cannot resume {path}: it was trained leaving out {len(listed)} listed images "
                             f"{list(listed[:3])}{' ...' if len(listed) > 3 else ''}, this command leaves out "
                             f"{len(self.tcfg.excluded_images)}; pass the first command's --exclude-images list "
                             "(make: EXCLUDE=) again, or start over (--restart)")
        self.model.load_state_dict(ck["model"])
        self.ema.module.load_state_dict(ck["ema"])
        self.ema.updates = int(ck["ema_updates"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.epoch, self.step = int(ck["epoch"]), int(ck["step"])
        self.best_map = float(ck["best_map"])
        self.history = json.loads(ck["history"])
        self.wall_time = float(ck.get("wall_time_s", 0.0))
        self.backbone_source = json.loads(ck.get("backbone_source") or "null")

    def start_epoch(self) -> None:
        """Make the coming epoch's data a function of (seed, epoch) alone: its augmentations and its image order,
        the same whether the run was resumed or not."""
        self.data.set_epoch(self.epoch)
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(self.epoch)
        else:
            self.order.manual_seed(self.tcfg.seed * 100_003 + self.epoch)

    def train_epoch(self) -> dict[str, float]:
        self.net.train()
        self.start_epoch()
        total = self.tcfg.epochs * self.steps_per_epoch
        warmup = max(1, int(self.tcfg.warmup_epochs * self.steps_per_epoch))
        sums = np.zeros(3)
        n = 0
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {self.epoch + 1}/{self.tcfg.epochs}",
                   disable=not self.progress, leave=False)
        for images, cls_t, box_t, _ in self.loader:
            if n >= self.steps_per_epoch:
                break
            lr = lr_at(self.step, total, warmup, self.tcfg.lr)
            frozen = self.step < self.tcfg.freeze_backbone_epochs * self.steps_per_epoch
            for g in self.optimizer.param_groups:
                g["lr"] = 0.0 if frozen and g.get("backbone") else lr
            logits, boxes = self.net(images)
            loss, cls_l, box_l = detection_loss(logits, boxes, cls_t, box_t)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {self.step}; lower the LR")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tcfg.clip_norm)
            self.optimizer.step()
            self.ema.update(self.model)
            self.step += 1
            n += 1
            sums += (loss.item(), cls_l.item(), box_l.item())
            bar.set_postfix(loss=f"{sums[0] / n:.3f}", lr=f"{lr:.2e}")
            bar.update()
        bar.close()
        return {"loss": sums[0] / max(n, 1), "cls_loss": sums[1] / max(n, 1), "box_loss": sums[2] / max(n, 1),
                "lr": lr, "steps": n}

    def validate(self) -> dict[str, Any]:
        return evaluate_model(self.ema.module, self.val_set, self.pre_spec, self.anchors, progress=self.progress)

    def fit(self) -> dict[str, Any]:
        """Train to ``tcfg.epochs`` (continuing a resumed run); returns the last epoch's record."""
        record: dict[str, Any] = {}
        while self.epoch < self.tcfg.epochs:
            t0 = time.time()
            record = {"epoch": self.epoch + 1, **self.train_epoch()}
            self.epoch += 1
            if self.rank == 0:
                last = self.epoch == self.tcfg.epochs
                if self.val_set is not None and (self.epoch % self.tcfg.eval_every == 0 or last):
                    metrics = self.validate()
                    record.update(val_map=metrics["map"], val_map50=metrics["map50"])
                    if metrics["map"] > self.best_map:
                        self.best_map = metrics["map"]
                        record["best"] = True
                self.wall_time += time.time() - t0
                record["epoch_time_s"] = round(time.time() - t0, 2)
                record["wall_time_s"] = round(self.wall_time, 1)
                self.history.append(record)
                save_checkpoint(self.out / "last.pt", self._state())
                if record.get("best") or (self.val_set is None and last):
                    save_checkpoint(self.out / "best.pt", self._state())
                with open(self.out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                if self.progress:
                    shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in record.items()}
                    tqdm.write(json.dumps(shown))
            if self.world > 1:
                dist.barrier()
        if self.rank == 0 and self.val_set is not None and self.best_map <= 0 and record:
            LOG.warning("validation mAP stayed 0 at every evaluation, so best.pt holds the first evaluated epoch: "
                        "the model has not learned to detect yet (train longer or with a higher LR, start from a "
                        "pretrained checkpoint with INIT=, or check that the labels match the images)")
        return record
