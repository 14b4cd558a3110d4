"""Import a checkpoint trained with effdet (rwightman/efficientdet-pytorch) as a checkpoint of this project.

After import, evaluation, every export target and precision, and the runtime work unchanged: the
imported network *is* this project's EfficientDet, configured the way effdet builds that architecture
(docs/PRETRAINED-AND-EFFDET.md):

- ``tf_`` models pad strided convs and max pools TF-'same' (explicit static pads here, never run-time
  padding), backbone BN eps 1e-3, and carry the "redundant" conv biases before BN; ``efficientdet_d0/d1``
  pad symmetrically, backbone BN eps 1e-5, no redundant biases (zero here);
- box regression channels are reordered from effdet's (dy, dx, dh, dw) to this project's (dx, dy, dw, dh)
  in the last conv's weights, so anchors (same order and sizes) and box decoding need nothing special;
- pre-processing keeps effdet's mean/std and its letterbox fill colour, round(255 * mean);
- class i of the network is effdet's class i + 1, recorded as the dataset id (COCO ids for 90 classes).

effdet, timm and torchvision are not needed: the checkpoint is read with ``torch.load(weights_only=True)``,
allowing only ``argparse.Namespace`` beyond tensors (effdet's train.py pickles its ``args``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from efficientdet.checkpoint import CheckpointError, save_checkpoint
from efficientdet.model.backbone import EfficientNet
from efficientdet.model.config import EFFICIENTDET_TABLE, LITE_TABLE, ModelConfig, make_config
from efficientdet.model.detector import EfficientDet
from efficientdet.model.pretrained import BackboneWeightsError, map_backbone_state
from runtime.fileio import file_sha256

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class EffdetArch:
    """How effdet builds one named architecture, in this project's terms."""

    variant: str
    phi: int
    padding: str  # "same" for tf_ models, "symmetric" for effdet's own PyTorch-trained ones
    backbone_bn_eps: float
    redundant_bias: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def _archs() -> dict[str, EffdetArch]:
    table = {f"tf_efficientdet_d{i}": EffdetArch("d", i, "same", 1e-3, True, IMAGENET_MEAN, IMAGENET_STD)
             for i in range(8)}
    table |= {f"efficientdet_d{i}": EffdetArch("d", i, "symmetric", 1e-5, False, IMAGENET_MEAN, IMAGENET_STD)
              for i in (0, 1)}
    table |= {f"tf_efficientdet_lite{i}": EffdetArch("lite", i, "same", 1e-3, True, HALF, HALF) for i in range(5)}
    return table


EFFDET_ARCHS: dict[str, EffdetArch] = _archs()

# COCO 2017 category names by id: effdet's 90-class models predict class c as COCO id c + 1.
COCO_NAMES: dict[int, str | None] = dict(enumerate((
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", None, "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", None, "backpack", "umbrella", None, None, "handbag", "tie", "suitcase",
    "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard",
    "surfboard", "tennis racket", "bottle", None, "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana",
    "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", None, "dining table", None, None, "toilet", None, "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", None, "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush"), start=1))

# This project's BiFPN node names in effdet's node order (top-down P6..P3, then bottom-up P4..P7).
_NODES = ("p6_td", "p5_td", "p4_td", "p3_out", "p4_out", "p5_out", "p6_out", "p7_out")
# First cell: (node, effdet input offset) -> this project's 1x1 projection of that backbone level.
_FIRST_CELL_PROJECTIONS = {(1, 2): "p5_proj_td", (2, 1): "p4_proj_td", (3, 0): "p3_proj", (4, 1): "p4_proj_bu",
                           (5, 2): "p5_proj_bu"}
# effdet box channels (dy, dx, dh, dw) -> this project's (dx, dy, dw, dh).
_BOX_ORDER = (1, 0, 3, 2)


class EffdetImportError(CheckpointError):
    """An effdet checkpoint that cannot be imported (exit 2)."""


def read_effdet_checkpoint(path: str | Path, prefer_ema: bool = False) -> tuple[dict[str, torch.Tensor], dict]:
    """The model state dict of an effdet checkpoint and what the file says about itself (``args``, wrapper)."""
    path = Path(path)
    if not path.is_file():
        raise EffdetImportError(f"effdet checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated/foreign files
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EffdetImportError(f"cannot read {path} ({reason[:200]}): it is truncated, not a PyTorch checkpoint, or "
                           "pickles objects other than tensors and argparse.Namespace (refused: weights-only)") from e
    info: dict[str, Any] = {}
    if isinstance(obj, dict) and isinstance(obj.get("args"), argparse.Namespace):
        info["args"] = {k: v for k, v in vars(obj["args"]).items() if isinstance(v, (str, int, float, bool))}
    state = obj
    if isinstance(obj, dict):
        order = (("state_dict_ema", "model_ema") if prefer_ema else ()) + ("state_dict", "model", "state_dict_ema",
                                                                            "model_ema")
        for key in order:
            if isinstance(obj.get(key), dict):
                state, info["wrapper"] = obj[key], key
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EffdetImportError(f"{path} holds no model state dict (looked for a bare state dict and for 'state_dict', "
                           "'model', 'state_dict_ema'); is it an effdet checkpoint?")
    clean = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod.", "model."):  # DataParallel, torch.compile, DetBench wrappers
            key = key.removeprefix(prefix)
        if key != "anchors.boxes":  # DetBench's anchor buffer: recomputed here from the config
            clean[key] = value
    if not any(k.startswith("class_net.") for k in clean) or not any(k.startswith("backbone.blocks.") for k in clean):
        raise EffdetImportError(f"{path} is not an effdet EfficientDet checkpoint: no 'backbone.blocks.*' and "
                           "'class_net.*' weights (first keys: " + ", ".join(list(clean)[:4]) + ")")
    return clean, info


def _backbone_name(state: dict[str, torch.Tensor]) -> str | None:
    """The EfficientNet whose block layout and widths match the state dict's backbone."""
    sub = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    lite = not any(".se." in k for k in sub)
    for name in ("b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "lite0", "lite1", "lite2", "lite3", "lite4"):
        if name.startswith("lite") != lite:
            continue
        with torch.device("meta"):
            net = EfficientNet(name)
        try:
            map_backbone_state(sub, net, "timm", "backbone")
        except BackboneWeightsError:
            continue
        return name
    return None


def describe(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The architecture read off the keys and shapes: backbone, widths, depths, classes, fusion, biases."""
    cells = {int(m.group(1)) for k in state if (m := re.match(r"fpn\.cell\.(\d+)\.", k))}
    reps = {int(m.group(1)) for k in state if (m := re.match(r"class_net\.conv_rep\.(\d+)\.", k))}
    predict = state.get("class_net.predict.conv_pw.weight")
    width = state.get("class_net.conv_rep.0.conv_pw.weight")
    return {
        "backbone": _backbone_name(state),
        "fpn_width": int(width.shape[0]) if width is not None else None,
        "fpn_depth": len(cells),
        "head_depth": len(reps),
        "num_classes": int(predict.shape[0]) // 9 if predict is not None else None,
        "fusion": "fast" if any(k.endswith("edge_weights") for k in state) else "sum",
        "redundant_bias": "fpn.cell.0.fnode.0.after_combine.conv.conv_pw.bias" in state,
    }


def _matches(name: str, found: dict[str, Any]) -> list[str]:
    """Differences between the named architecture and what the weights hold (empty: it fits)."""
    arch = EFFDET_ARCHS[name]
    row = EFFICIENTDET_TABLE[arch.phi] if arch.variant == "d" else LITE_TABLE[str(arch.phi)]
    want = {"backbone": row.backbone, "fpn_width": row.fpn_width, "fpn_depth": row.fpn_depth,
            "head_depth": row.head_depth, "fusion": "fast" if row.fusion == "fast" else "sum",
            "redundant_bias": arch.redundant_bias}
    return [f"{k}: {name} has {v!r}, the weights {found[k]!r}" for k, v in want.items() if found[k] != v]


def resolve_arch(state: dict[str, torch.Tensor], arch: str | None, hint: str | None, path: str | Path) -> str:
    """``arch`` checked against the weights, or inferred from them (``hint``: the model name in the file's args)."""
    found = describe(state)
    supported = ", ".join(EFFDET_ARCHS)
    if arch is not None:
        if arch not in EFFDET_ARCHS:
            raise EffdetImportError(f"--arch {arch!r} is not an effdet EfficientDet this importer knows; supported: "
                               f"{supported}")
        diffs = _matches(arch, found)
        if diffs:
            raise EffdetImportError(f"{path} does not hold a {arch}: " + "; ".join(diffs))
        return arch
    fits = [name for name in EFFDET_ARCHS if not _matches(name, found)]
    if hint in fits:
        return hint
    if len(fits) == 1:
        return fits[0]
    if not fits:
        raise EffdetImportError(f"{path}: no supported architecture has these weights ({json.dumps(found)}); "
                                f"supported: {supported}")
    raise EffdetImportError(f"{path} fits several architectures ({', '.join(fits)}); name one with --arch")


def _rename(key: str) -> str | None:
    """effdet FPN/head key -> this project's key (the backbone is mapped by model/pretrained.py)."""
    if m := re.fullmatch(r"fpn\.resample\.3\.conv\.(conv|bn)\.(\w+)", key):
        return f"fpn.layers.0.p6_proj.{0 if m.group(1) == 'conv' else 1}.{m.group(2)}"
    if m := re.fullmatch(r"fpn\.cell\.(\d+)\.fnode\.(\d+)\.(.+)", key):
        cell, node, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        if node >= len(_NODES):
            return None
        base = f"fpn.layers.{cell}.{_NODES[node]}"
        if rest == "combine.edge_weights":
            return f"{base}.fuse.weight"
        if r := re.fullmatch(r"after_combine\.conv\.(conv_dw|conv_pw|bn)\.(\w+)", rest):
            part = {"conv_dw": "conv.depthwise", "conv_pw": "conv.pointwise", "bn": "bn"}[r.group(1)]
            return f"{base}.{part}.{r.group(2)}"
        if (r := re.fullmatch(r"combine\.resample\.(\d+)\.conv\.(conv|bn)\.(\w+)", rest)) and cell == 0:
            proj = _FIRST_CELL_PROJECTIONS.get((node, int(r.group(1))))
            return None if proj is None else f"fpn.layers.0.{proj}.{0 if r.group(2) == 'conv' else 1}.{r.group(3)}"
        return None
    if m := re.fullmatch(r"(class_net|box_net)\.(.+)", key):
        net, rest = m.groups()
        if r := re.fullmatch(r"conv_rep\.(\d+)\.(conv_dw|conv_pw)\.(\w+)", rest):
            part = "depthwise" if r.group(2) == "conv_dw" else "pointwise"
            return f"{net}.convs.{r.group(1)}.{part}.{r.group(3)}"
        if r := re.fullmatch(r"bn_rep\.(\d+)\.(\d+)\.bn\.(\w+)", rest):
            return f"{net}.bns.{r.group(2)}.{r.group(1)}.{r.group(3)}"
        if r := re.fullmatch(r"predict\.(conv_dw|conv_pw)\.(\w+)", rest):
            return f"{net}.predict.{'depthwise' if r.group(1) == 'conv_dw' else 'pointwise'}.{r.group(2)}"
    return None


def _box_channels(t: torch.Tensor) -> torch.Tensor:
    """Reorder the box predictor's output channels anchor by anchor into this project's coordinate order."""
    anchors = t.shape[0] // 4
    index = torch.tensor([a * 4 + j for a in range(anchors) for j in _BOX_ORDER])
    return t[index].clone()


def convert_state(state: dict[str, torch.Tensor], model: EfficientDet, source: str) -> dict[str, torch.Tensor]:
    """effdet weights on this project's keys; every key accounted for, shapes checked.

    The only target weights allowed to be absent are the conv biases effdet leaves out without
    ``redundant_bias`` (efficientdet_d0/d1): they are zero, exactly what effdet computes.
    """
    target = model.state_dict()
    backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    out = {f"backbone.{k}": v for k, v in map_backbone_state(backbone, model.backbone, "timm", source).items()}
    unmapped, shapes = [], []
    for key, value in state.items():
        if key.startswith("backbone."):
            continue
        new = _rename(key)
        if new is None or new not in target:
            unmapped.append(key)
            continue
        if new == "box_net.predict.pointwise.weight" or new == "box_net.predict.pointwise.bias":
            value = _box_channels(value)
        if tuple(value.shape) != tuple(target[new].shape):
            shapes.append(f"{key} {tuple(value.shape)} -> {new} {tuple(target[new].shape)}")
        out[new] = value
    absent = [k for k in target if k not in out]
    for key in absent:
        if key.endswith(".bias") and (".pointwise." in key and ("fpn.layers." in key or ".convs." in key)
                                      or re.search(r"_proj(_td|_bu)?\.0\.bias$", key)):
            out[key] = torch.zeros_like(target[key])
    absent = [k for k in target if k not in out]
    if unmapped or shapes or absent:
        parts = [f"{len(unmapped)} effdet keys have no place (first: {unmapped[:4]})"] if unmapped else []
        parts += [f"{len(shapes)} shapes differ (first: {shapes[:3]})"] if shapes else []
        parts += [f"{len(absent)} weights missing from the file (first: {absent[:4]})"] if absent else []
        raise EffdetImportError(f"{source} does not map onto {model.config.name}: " + "; ".join(parts))
    return out


def class_table(num_classes: int, names: list[str] | None) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Names and dataset ids (effdet's 1-based class numbers): COCO names for 90-class models."""
    ids = tuple(range(1, num_classes + 1))
    if names:
        if len(names) != num_classes:
            raise EffdetImportError(f"{len(names)} class names given, but the checkpoint predicts {num_classes} "
                                    "classes")
        return tuple(names), ids
    if num_classes == 90:
        return tuple(COCO_NAMES[i] or f"unused{i}" for i in ids), ids
    return tuple(f"class{i}" for i in ids), ids


def effdet_config(arch: str, num_classes: int, input_size: int | None = None,
                  names: list[str] | None = None) -> ModelConfig:
    """This project's config for effdet's ``arch``: its table row plus padding, BN eps, mean/std and fill."""
    a = EFFDET_ARCHS[arch]
    class_names, class_ids = class_table(num_classes, names)
    cfg = make_config(a.phi, a.variant, num_classes, class_names, input_size=input_size, class_ids=class_ids)
    pre = dataclasses.replace(cfg.preprocess, mean=tuple(255 * m for m in a.mean),
                              std=tuple(255 * s for s in a.std), pad_color=tuple(float(round(255 * m)) for m in a.mean))
    return cfg.replace(conv_padding=a.padding, pool_padding=a.padding, backbone_bn_eps=a.backbone_bn_eps,
                       preprocess=pre)


def import_effdet(path: str | Path, out: str | Path, arch: str | None = None, input_size: int | None = None,
                  names: list[str] | None = None, prefer_ema: bool = False) -> dict[str, Any]:
    """Write a project checkpoint for the effdet checkpoint ``path``; returns what was imported."""
    state, info = read_effdet_checkpoint(path, prefer_ema)
    hint = info.get("args", {}).get("model")
    name = resolve_arch(state, arch, hint, path)
    num_classes = describe(state)["num_classes"]
    cfg = effdet_config(name, num_classes, input_size, names)
    model = EfficientDet(cfg)
    weights = convert_state(state, model, str(path))
    model.load_state_dict(weights, strict=True)
    provenance = {"imported_from": "effdet", "arch": name, "source": str(path), "source_sha256": file_sha256(path),
                  "wrapper": info.get("wrapper", "bare state dict"), "effdet_args": info.get("args")}
    save_checkpoint(out, {"config": cfg.to_dict(), "model": model.state_dict(), "provenance": json.dumps(provenance),
                          "epoch": None, "wall_time_s": None})
    return {"out": str(out), "arch": name, "model": cfg.name, "num_classes": num_classes,
            "input_size": cfg.input_size, **{k: v for k, v in provenance.items() if k != "effdet_args"}}
