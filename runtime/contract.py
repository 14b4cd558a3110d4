"""The deployment contract as typed, frozen objects: how an image becomes the network input
(:class:`PreprocessSpec`), where the anchors lie (:class:`AnchorSpec`), what the box outputs mean
(:class:`BoxCoding`), how raw outputs become detections (:class:`PostprocessSpec`) and what the artifact's
tensors are (:class:`TensorSpec`).

The model config builds them once (``ModelConfig.preprocess``, ``.anchor_spec``, ``.contract()``); training,
evaluation, calibration, every exporter and the runtime take these objects, and this module is the one place
that turns them into manifest blocks and back (``to_dict`` / ``from_dict``). The input size is stored once in
a manifest, in ``preprocess.input_size`` (format 2; the input tensor's shape is the file's, checked against
it); format 1 manifests, which repeated it in ``anchors`` and ``model``, still load.

Pure Python: no numpy, so the manifest reader, the exporters and the training code share it at no cost.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class PreprocessSpec:
    """How an image becomes the network input; the runtime executes exactly this (runtime/preprocess.py)."""

    input_size: int
    resize: str = "letterbox"  # aspect-preserving resize, pad bottom/right
    color_order: str = "rgb"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "linear"
    # Pixel colour (RGB, 0-255) of the letterbox padding; None pads with the mean (0 after
    # normalisation). effdet pads with round(255 * mean), which imported models keep.
    pad_color: tuple[float, float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The manifest's (and a checkpoint's, and a calibration set's) ``preprocess`` block."""
        d: dict[str, Any] = {"input_size": int(self.input_size), "resize": self.resize,
                             "color_order": self.color_order, "mean": list(self.mean), "std": list(self.std),
                             "interpolation": self.interpolation}
        if self.pad_color is not None:  # manifests of models without one stay as they were
            d["pad_color"] = list(self.pad_color)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PreprocessSpec:
        pad = d.get("pad_color")
        return cls(input_size=int(d["input_size"]), resize=d.get("resize", "letterbox"),
                   color_order=d.get("color_order", "rgb"), mean=_floats(d["mean"]), std=_floats(d["std"]),
                   interpolation=d.get("interpolation", "linear"),
                   pad_color=_floats(pad) if pad is not None else None)

    def at_size(self, input_size: int) -> PreprocessSpec:
        return dataclasses.replace(self, input_size=int(input_size))


@dataclass(frozen=True)
class AnchorSpec:
    """Anchors on levels ``min_level..max_level``: ``num_scales`` octave scales of ``anchor_scale * stride``,
    each in every ``(w, h)`` aspect pair (runtime/anchors.py generates them)."""

    input_size: int
    min_level: int = 3
    max_level: int = 7
    num_scales: int = 3
    anchor_scale: float = 4.0
    aspect_ratios: tuple[tuple[float, float], ...] = ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4))

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``anchors`` block; without the input size, which ``preprocess`` holds."""
        return {"min_level": int(self.min_level), "max_level": int(self.max_level),
                "num_scales": int(self.num_scales), "anchor_scale": float(self.anchor_scale),
                "aspect_ratios": [list(map(float, a)) for a in self.aspect_ratios]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], input_size: int) -> AnchorSpec:
        return cls(input_size=int(input_size), min_level=int(d["min_level"]), max_level=int(d["max_level"]),
                   num_scales=int(d["num_scales"]), anchor_scale=float(d["anchor_scale"]),
                   aspect_ratios=tuple((float(a[0]), float(a[1])) for a in d["aspect_ratios"]))


@dataclass(frozen=True)
class BoxCoding:
    """``delta_xywh``: ``dx = (cx - cxa) / wa``, ``dy = (cy - cya) / ha``, ``dw = log(w / wa)``, ``dh = log(h / ha)``.
    Decoding clamps ``dw``/``dh`` at ``clip_log`` so ``exp()`` cannot overflow on wild outputs (a box at most
    62.5x its anchor); :func:`runtime.box_coding.decode` reads it from here."""

    type: str = "delta_xywh"
    order: tuple[str, str, str, str] = ("dx", "dy", "dw", "dh")
    clip_log: float = math.log(1000.0 / 16)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "order": list(self.order), "clip_log": float(self.clip_log)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BoxCoding:
        return cls(type=d["type"], order=tuple(d.get("order") or cls.order),
                   clip_log=float(d.get("clip_log", cls.clip_log)))


@dataclass(frozen=True)
class InGraphNms:
    """The detection op at the end of an Android TFLite's graph, with its own (lower) score threshold."""

    op: str
    score_threshold: float
    max_detections: int
    nms: str = "per-class"

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "score_threshold": float(self.score_threshold),
                "max_detections": int(self.max_detections), "nms": self.nms}


@dataclass(frozen=True)
class PostprocessSpec:
    """Raw outputs -> detections (runtime/postprocess.py): logits above ``score_threshold``, at most
    ``pre_nms_top_k`` candidates, class-aware NMS at ``iou_threshold``, ``max_detections`` kept."""

    score_threshold: float = 0.3
    iou_threshold: float = 0.5
    max_detections: int = 100
    pre_nms_top_k: int = 5000
    in_graph: InGraphNms | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"score_threshold": float(self.score_threshold),
                             "iou_threshold": float(self.iou_threshold), "max_detections": int(self.max_detections),
                             "pre_nms_top_k": int(self.pre_nms_top_k)}
        if self.in_graph is not None:
            d["in_graph"] = self.in_graph.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PostprocessSpec:
        g = d.get("in_graph")
        in_graph = InGraphNms(str(g["op"]), float(g["score_threshold"]), int(g["max_detections"]),
                              str(g.get("nms", "per-class"))) if g else None
        return cls(score_threshold=float(d["score_threshold"]), iou_threshold=float(d["iou_threshold"]),
                   max_detections=int(d["max_detections"]), pre_nms_top_k=int(d.get("pre_nms_top_k", 5000)),
                   in_graph=in_graph)

    def replace(self, **changes: Any) -> PostprocessSpec:
        return dataclasses.replace(self, **changes)


# The deployment default and the evaluation setting (mAP needs the low-score tail, as COCO tools expect).
DEFAULT_POSTPROCESS = PostprocessSpec()
EVAL_POSTPROCESS = PostprocessSpec(score_threshold=0.05)


@dataclass(frozen=True)
class Quantization:
    """``real = (q - zero_point) * scale`` for an integer tensor."""

    scale: float
    zero_point: int

    def to_dict(self) -> dict[str, Any]:
        return {"scale": float(self.scale), "zero_point": int(self.zero_point)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Quantization | None:
        return None if not d else cls(float(d["scale"]), int(d["zero_point"]))


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor of the artifact, as the backend must report it."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    layout: str | None = None  # inputs only: "nchw" or "nhwc"
    quantization: Quantization | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        if self.layout is not None:
            d["layout"] = self.layout
        d.update({"shape": [int(s) for s in self.shape], "dtype": self.dtype,
                  "quantization": self.quantization.to_dict() if self.quantization else None})
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        return cls(name=str(d["name"]), shape=tuple(int(s) for s in d["shape"]), dtype=str(d["dtype"]),
                   layout=d.get("layout"), quantization=Quantization.from_dict(d.get("quantization")))


@dataclass(frozen=True)
class Contract:
    """Pre-processing, anchors, box coding and post-processing of one model: what a manifest promises."""

    preprocess: PreprocessSpec
    anchors: AnchorSpec
    box_coding: BoxCoding = field(default_factory=BoxCoding)
    postprocess: PostprocessSpec = DEFAULT_POSTPROCESS

    def __post_init__(self) -> None:
        if self.anchors.input_size != self.preprocess.input_size:
            raise ValueError(f"anchors are laid out for {self.anchors.input_size} px but the input is "
                             f"{self.preprocess.input_size} px")

    @property
    def input_size(self) -> int:
        return self.preprocess.input_size

    def to_manifest(self) -> dict[str, Any]:
        """The four manifest blocks, the input size once (in ``preprocess``)."""
        return {"preprocess": self.preprocess.to_dict(), "anchors": self.anchors.to_dict(),
                "box_coding": self.box_coding.to_dict(), "postprocess": self.postprocess.to_dict()}

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> Contract:
        """The contract of a validated manifest (format 1 or 2)."""
        pre = PreprocessSpec.from_dict(manifest["preprocess"])
        return cls(pre, AnchorSpec.from_dict(manifest["anchors"], pre.input_size),
                   BoxCoding.from_dict(manifest["box_coding"]), PostprocessSpec.from_dict(manifest["postprocess"]))
