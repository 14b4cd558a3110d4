"""The compound-scaling tables and the one config object that drives every variant.

Every later stage (training, export, the runtime manifest) reads a :class:`ModelConfig`
rather than re-deriving sizes, so a checkpoint can carry it and nothing needs repeating.
Tables follow the EfficientDet/EfficientNet papers and google/automl's hparams.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from runtime.anchors import anchor_count
from runtime.contract import DEFAULT_POSTPROCESS, AnchorSpec, Contract, PostprocessSpec, PreprocessSpec

# EfficientNet: (width multiplier, depth multiplier, resolution, dropout)
EFFICIENTNET_SCALING: dict[str, tuple[float, float, int, float]] = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
    "b4": (1.4, 1.8, 380, 0.4),
    "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5),
    "b7": (2.0, 3.1, 600, 0.5),
    "lite0": (1.0, 1.0, 224, 0.2),
    "lite1": (1.0, 1.1, 240, 0.2),
    "lite2": (1.1, 1.2, 260, 0.3),
    "lite3": (1.2, 1.4, 280, 0.3),
    "lite4": (1.4, 1.8, 300, 0.3),
}


@dataclass(frozen=True)
class _DetRow:
    input_size: int
    backbone: str
    fpn_width: int
    fpn_depth: int
    head_depth: int
    anchor_scale: float
    fusion: str


# EfficientDet D0-D7 (paper table; D6/D7 use unweighted-sum fusion as in the reference).
EFFICIENTDET_TABLE: dict[int, _DetRow] = {
    0: _DetRow(512, "b0", 64, 3, 3, 4.0, "fast"),
    1: _DetRow(640, "b1", 88, 4, 3, 4.0, "fast"),
    2: _DetRow(768, "b2", 112, 5, 3, 4.0, "fast"),
    3: _DetRow(896, "b3", 160, 6, 4, 4.0, "fast"),
    4: _DetRow(1024, "b4", 224, 7, 4, 4.0, "fast"),
    5: _DetRow(1280, "b5", 288, 7, 4, 4.0, "fast"),
    6: _DetRow(1280, "b6", 384, 8, 5, 4.0, "sum"),
    7: _DetRow(1536, "b6", 384, 8, 5, 5.0, "sum"),
}

# EfficientDet-Lite: ReLU6, plain-sum fusion, anchor scale 3. "3x" is Lite3x.
LITE_TABLE: dict[str, _DetRow] = {
    "0": _DetRow(320, "lite0", 64, 3, 3, 3.0, "sum"),
    "1": _DetRow(384, "lite1", 88, 4, 3, 3.0, "sum"),
    "2": _DetRow(448, "lite2", 112, 5, 3, 3.0, "sum"),
    "3": _DetRow(512, "lite3", 160, 6, 4, 3.0, "sum"),
    "3x": _DetRow(640, "lite3", 200, 6, 4, 3.0, "sum"),
    "4": _DetRow(640, "lite4", 224, 7, 4, 3.0, "sum"),
}

FUSION_METHODS = ("fast", "softmax", "sum")
# How strided convs and pools pad: "symmetric" (PyTorch's k//2) or "same" (TensorFlow SAME), see model/layers.py.
PADDINGS = ("symmetric", "same")
VARIANTS = ("d", "lite")


class ConfigMismatchError(ValueError):
    """A checkpoint or artifact was made for a different model than the one asked for."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network, its anchors and its pre-processing."""

    variant: str = "d"
    phi: int | str = 0
    num_classes: int = 90
    class_names: tuple[str, ...] = ()
    # The dataset's own id of each class (COCO category ids, e.g. 13 for "stop sign"); empty when it has none.
    class_ids: tuple[int, ...] = ()
    input_size: int = 512
    backbone: str = "b0"
    fpn_width: int = 64
    fpn_depth: int = 3
    head_depth: int = 3
    anchor_scale: float = 4.0
    fusion: str = "fast"
    activation: str = "swish"
    min_level: int = 3
    max_level: int = 7
    num_scales: int = 3
    aspect_ratios: tuple[tuple[float, float], ...] = ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4))
    drop_path_rate: float = 0.2
    # Padding of strided backbone convs and of the BiFPN's max pools ("symmetric" or "same", see
    # model/layers.py) and the backbone's BatchNorm eps. The defaults are this project's own models;
    # pretrained TF-Lite backbones and imported effdet models set what their weights were trained with.
    conv_padding: str = "symmetric"
    pool_padding: str = "same"
    backbone_bn_eps: float = 1e-3
    preprocess: PreprocessSpec = field(default_factory=lambda: PreprocessSpec(512))

    def __post_init__(self) -> None:
        for name in ("conv_padding", "pool_padding"):
            if getattr(self, name) not in PADDINGS:
                raise ValueError(f"{name} must be one of {PADDINGS}, got {getattr(self, name)!r}")
        if not 0 < float(self.backbone_bn_eps) < 1:
            raise ValueError(f"backbone_bn_eps must be in (0, 1), got {self.backbone_bn_eps!r}")

    @property
    def name(self) -> str:
        return f"efficientdet-{'d' if self.variant == 'd' else 'lite'}{self.phi}"

    @property
    def num_anchors_per_location(self) -> int:
        return self.num_scales * len(self.aspect_ratios)

    @property
    def num_anchors(self) -> int:
        return anchor_count(self.anchor_spec)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["class_names"] = list(self.class_names)
        d["class_ids"] = list(self.class_ids)
        d["aspect_ratios"] = [list(a) for a in self.aspect_ratios]
        d["preprocess"] = self.preprocess.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(unknown)}")
        pp = d.pop("preprocess", None)
        pre = PreprocessSpec.from_dict(pp) if pp else None
        d["class_names"] = tuple(d.get("class_names", ()))
        d["class_ids"] = tuple(int(i) for i in d.get("class_ids", ()))
        if "aspect_ratios" in d:
            d["aspect_ratios"] = tuple(tuple(a) for a in d["aspect_ratios"])
        cfg = cls(**d)
        if pre is not None:
            cfg = dataclasses.replace(cfg, preprocess=pre)
        return cfg

    @property
    def anchor_spec(self) -> AnchorSpec:
        return AnchorSpec(self.input_size, self.min_level, self.max_level, self.num_scales, float(self.anchor_scale),
                          tuple((float(w), float(h)) for w, h in self.aspect_ratios))

    def contract(self, postprocess: PostprocessSpec = DEFAULT_POSTPROCESS) -> Contract:
        """What every artifact of this model promises (its manifest's pre/anchor/box/post blocks)."""
        return Contract(self.preprocess, self.anchor_spec, postprocess=postprocess)

    def replace(self, **changes: Any) -> ModelConfig:
        """Copy with changes; keeps the pre-processing input size in step with ``input_size``."""
        cfg = dataclasses.replace(self, **changes)
        if cfg.preprocess.input_size != cfg.input_size:
            cfg = dataclasses.replace(cfg, preprocess=dataclasses.replace(cfg.preprocess, input_size=cfg.input_size))
        if cfg.class_names and len(cfg.class_names) != cfg.num_classes:
            raise ValueError(f"{len(cfg.class_names)} class names given for num_classes={cfg.num_classes}")
        return cfg

    def check_compatible(self, other: ModelConfig, what: str = "checkpoint") -> None:
        """Fail with a message naming both configs where the weights would not fit."""
        fields = ("variant", "phi", "num_classes", "backbone", "fpn_width", "fpn_depth", "head_depth")
        diffs = [f"{f}: requested {getattr(self, f)!r}, {what} has {getattr(other, f)!r}" for f in fields
                 if str(getattr(self, f)) != str(getattr(other, f))]
        if diffs:
            raise ConfigMismatchError(
                f"{what} was made for {other.name} ({other.num_classes} classes) but {self.name} "
                f"({self.num_classes} classes) was requested: " + "; ".join(diffs))


def input_size_problem(size: int) -> str | None:
    """Why ``size`` cannot be a model's input side, or None. The one rule (config, checkpoints, export, matrix):
    a multiple of 32 of at least 64; levels above P5 round up ('same' padding), so 320 -> P7 3x3 is fine."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 64 or size % 32:
        return f"must be a multiple of 32 and at least 64, got {size!r}"
    return None


def _parse_phi(variant: str, phi: int | str) -> int | str:
    if variant == "d":
        try:
            p = int(phi)
        except (TypeError, ValueError):
            raise ValueError(f"PHI for EfficientDet-D must be 0-7, got {phi!r}") from None
        if p not in EFFICIENTDET_TABLE:
            raise ValueError(f"PHI for EfficientDet-D must be 0-7, got {phi!r}")
        return p
    if variant == "lite":
        p = str(phi).lower()
        if p not in LITE_TABLE:
            raise ValueError(f"PHI for EfficientDet-Lite must be one of {sorted(LITE_TABLE)}, got {phi!r}")
        return int(p) if p.isdigit() else p
    raise ValueError(f"VARIANT must be one of {VARIANTS}, got {variant!r}")


def make_config(
    phi: int | str = 0,
    variant: str = "d",
    num_classes: int = 90,
    class_names: tuple[str, ...] | list[str] = (),
    input_size: int | None = None,
    fusion: str | None = None,
    class_ids: tuple[int, ...] | list[int] = (),
) -> ModelConfig:
    """Look up the compound-scaling row for (variant, PHI), optionally at another input size."""
    p = _parse_phi(variant, phi)
    row = EFFICIENTDET_TABLE[p] if variant == "d" else LITE_TABLE[str(p)]
    fusion = fusion or row.fusion
    if fusion not in FUSION_METHODS:
        raise ValueError(f"fusion must be one of {FUSION_METHODS}, got {fusion!r}")
    size = int(input_size or row.input_size)
    if problem := input_size_problem(size):
        raise ValueError(f"input size {problem}")
    names = tuple(class_names)
    if names and len(names) != num_classes:
        raise ValueError(f"{len(names)} class names given for num_classes={num_classes}")
    ids = tuple(int(i) for i in class_ids)
    if ids and len(ids) != num_classes:
        raise ValueError(f"{len(ids)} class ids given for num_classes={num_classes}")
    return ModelConfig(
        variant=variant,
        phi=p,
        num_classes=num_classes,
        class_names=names,
        class_ids=ids,
        input_size=size,
        backbone=row.backbone,
        fpn_width=row.fpn_width,
        fpn_depth=row.fpn_depth,
        head_depth=row.head_depth,
        anchor_scale=row.anchor_scale,
        fusion=fusion,
        activation="relu6" if variant == "lite" else "swish",
        drop_path_rate=0.0 if variant == "lite" else 0.2,
        preprocess=PreprocessSpec(size),
    )
