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

from efficientdet.model.config import ConfigMismatchError, ModelConfig
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
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated/foreign files
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "config" not in ckpt:
        raise CheckpointError(f"{path} is not an EfficientDet checkpoint of this project (format {FORMAT})")
    return ckpt


def slim_checkpoint(src: str | Path, dst: str | Path, provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """Keep only the config and the EMA weights in fp16 (half the bytes of one fp32 copy) plus provenance.

    This is what gets committed as a reference model; ``load_model`` restores fp32 weights.
    """
    ck = load_checkpoint(src)
    weights = ck.get("ema") or ck["model"]
    slim = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    info = {"source_sha256": file_sha256(src), "epoch": ck.get("epoch"), "best_val_map": ck.get("best_map"),
            "train_wall_time_s": ck.get("wall_time_s"), "history": ck.get("history"), "train": ck.get("train"),
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
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ConfigMismatchError(
            f"checkpoint {path} does not fit {config.name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval(), config
