"""Checkpoints that carry their full model config, written atomically, loaded weights-only.

A checkpoint is a plain dict (``torch.load(weights_only=True)`` safe): ``format``, ``config``
(:meth:`ModelConfig.to_dict`), ``model`` and ``ema`` state dicts, and training state.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch

from efficientdet.model.config import ConfigMismatchError, ModelConfig, input_size_problem, make_config
from efficientdet.model.detector import EfficientDet
from runtime.fileio import atomic_write_bytes, file_sha256

FORMAT = "efficientdet-ckpt/1"


class CheckpointError(ValueError):
    """Missing, unreadable or foreign checkpoint file."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict, loaded weights-only, with its ``config`` and ``model`` checked before any use.

    Every way a file can be wrong (missing, empty, truncated, pickled code, another framework's file,
    a config that cannot build a model, no weights) is a :class:`CheckpointError` naming the file, so
    the commands report bad input (exit 2) instead of a traceback or "conversion failed" (issue 13).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): the copy or the training run that wrote it "
                              "did not finish; use another checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated/foreign files
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint {path} ({reason}): it is truncated, not a PyTorch file, or "
                              "holds pickled objects other than tensors (refused: loading is weights-only)") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "config" not in ckpt:
        raise CheckpointError(f"{path} is not an EfficientDet checkpoint of this project (format {FORMAT})")
    check_config(ckpt["config"], path)
    if not isinstance(ckpt.get("model"), dict) or not ckpt["model"]:
        raise CheckpointError(f"checkpoint {path} has no 'model' weights (a state dict of tensors); it cannot be "
                              "evaluated or exported")
    return ckpt


def check_config(raw: Any, path: str | Path) -> ModelConfig:
    """The checkpoint's model config, refused with the reason when it cannot describe a real model."""
    try:
        if not isinstance(raw, dict):
            raise TypeError(f"expected a dict, got {type(raw).__name__}")
        absent = [k for k in ("variant", "phi", "num_classes", "input_size", "preprocess") if k not in raw]
        if absent:
            raise KeyError(f"missing {absent}")
        config = ModelConfig.from_dict(raw)
        counts = {"num_classes": config.num_classes, "input_size": config.input_size, "fpn_width": config.fpn_width,
                  "fpn_depth": config.fpn_depth, "head_depth": config.head_depth, "num_scales": config.num_scales}
        bad = {k: v for k, v in counts.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1}
        if bad:
            raise ValueError(f"these must be positive integers: {bad}")
        if problem := input_size_problem(config.input_size):
            raise ValueError(f"input_size {problem}")
        make_config(config.phi, config.variant, config.num_classes)  # a known variant and PHI
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path} has an invalid model config ({e}); it was not written by this "
                              "project's training, or was edited") from None
    return config


def slim_checkpoint(src: str | Path, dst: str | Path, provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """Keep only the config and the EMA weights in fp16 (half the bytes of one fp32 copy) plus provenance.

    This is what gets committed as a reference model; ``load_model`` restores fp32 weights.
    """
    ck = load_checkpoint(src)
    weights = ck.get("ema") or ck["model"]
    slim = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    info = {"source_sha256": file_sha256(src), "epoch": ck.get("epoch"), "best_val_map": ck.get("best_map"),
            "train_wall_time_s": ck.get("wall_time_s"), "history": ck.get("history"), "train": ck.get("train"),
            "backbone_source": ck.get("backbone_source"),
            **(provenance or {})}
    save_checkpoint(dst, {"config": ck["config"], "model": slim, "provenance": json.dumps(info),
                          "epoch": ck.get("epoch"), "wall_time_s": ck.get("wall_time_s")})
    return info


def load_model(path: str | Path, expect: ModelConfig | None = None,
               use_ema: bool = True) -> tuple[EfficientDet, ModelConfig]:
    """Rebuild the model from the checkpoint's own config (EMA weights when present), in eval mode.

    ``expect``: the config the caller asked for; a mismatch raises :class:`ConfigMismatchError`
    naming both.
    """
    ckpt = load_checkpoint(path)
    config = ModelConfig.from_dict(ckpt["config"])
    if expect is not None:
        expect.check_compatible(config, what=f"checkpoint {path}")
    model = EfficientDet(config)
    weights = ckpt.get("ema") if use_ema and ckpt.get("ema") else ckpt["model"]
    weights = {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # shape mismatches: the weights were not made for this config
        raise CheckpointError(f"checkpoint {path}: its weights do not fit its own config ({config.name}, "
                              f"{config.num_classes} classes): {str(e).splitlines()[1].strip()}") from None
    if missing or unexpected:
        raise ConfigMismatchError(
            f"checkpoint {path} does not fit {config.name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval(), config
