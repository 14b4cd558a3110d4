"""The pixel-input form of the FP32 ONNX: RGB pixels (0-255) in, the normalisation folded into the first convolution.

Why (issue 15, docs/QUANTIZATION.md "Pixels in"): an int8 artifact that takes the normalised image quantizes it
with one per-tensor step over the normalised range of 0-255 pixels. For the Lite models (mean = std = 127.5) that
step is exactly one grey level, but the zero point would have to be 127.5, so every pixel lands exactly between two
codes and moves by half a grey level; the D0's ImageNet mean/std give a step of 1.07-1.09 grey levels and round
every pixel by up to half of one. Half a grey level alone moves 3-4.5 % of a BCCD Lite0's detections
(results/bccd-fp32-input-rounding.md). With pixels in, the input quantizer is scale 1, zero point 0 over 0-255: every
pixel value a camera gives is a code, nothing is rounded and nothing can clip.

The fold is exact wherever the convolution reads real pixels: ``conv(W, (x - m) / s) = conv(W / s, x - o) -
sum(W / s * (m - o))`` for any offset ``o``. The zero padding of the normalised image must become padding with the
mean colour. When the mean is the same on every channel (the Lite models, 127.5) the graph subtracts the integer
``o`` nearest it (128) and pads with zero: ``x - 128`` spans -128..127, exactly the int8 codes, and every int8
target pads with its zero point (TFLite's ``PAD``, which the Edge TPU runs; padding with any other constant is
``PADV2``, which it cannot). The border then holds pixel 128 for 127.5, where a scale-1 quantizer after the
padding rounds the mean colour too. With a mean per channel (the D0) the graph pads with zero and adds a constant
map that holds the mean on the padded border. :func:`fold_normalisation` checks the folded graph, with the exact
mean on its border (:func:`exact_border`), against the original under onnxruntime before anyone quantizes it. Every
int8 target (ONNX, OpenVINO, TFLite) quantizes this graph when the int8 recipe asks for pixels; the manifest then
describes pixels in (mean 0, std 1) and the runtime feeds them.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from onnx import helper, numpy_helper

from calib_data import CalibrationSet
from efficientdet.model.config import ModelConfig
from quantize.folded_stem import FoldedStem
from runtime.contract import PreprocessSpec

from .errors import ConversionError

WEIGHT_SUFFIX = "_pixels_weight"  # the folded stem's weights: how the stem is found again after quantization
OFFSET_SUFFIX = "_pixels_offset"  # the integer the pixels are centred on before zero padding (uniform mean only)
PAD_VALUE_SUFFIX = "_pixels_pad_value"
FOLD_RTOL = 1e-4  # the fp32 gate's bound: float reassociation passes, a wrong fold does not
PIXEL_RANGE = (0.0, 255.0)


class PixelInputError(ConversionError):
    """The graph's first layer is not a plain convolution of the input, or the folded graph diverges."""


def pixel_spec(spec: PreprocessSpec, integer_pad: bool = False) -> PreprocessSpec:
    """``spec`` for a graph that takes RGB pixels: mean 0, std 1, and the letterbox padded with the colour the
    model's own normalisation maps to zero (its ``pad_color``, else its mean), so the graph sees what the
    normalised model saw. ``integer_pad`` rounds it, for uint8 inputs an app letterboxes itself (Android)."""
    pad = spec.pad_color if spec.pad_color is not None else spec.mean
    pad = tuple(float(round(v)) for v in pad) if integer_pad else tuple(float(v) for v in pad)
    return dataclasses.replace(spec, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), pad_color=pad)


def pixel_config(config: ModelConfig, integer_pad: bool = False) -> ModelConfig:
    """The config a pixel-input artifact's manifest describes (:func:`pixel_spec`)."""
    return config.replace(preprocess=pixel_spec(config.preprocess, integer_pad))


class _PixelImages:
    """A calibration set's normalised images back in pixels, one image at a time (all at once, a D7's 200 images at
    1536 px would hold 5.6 GB more): the stored images are normalised uint8 pixels, so rounding restores them
    exactly, and the mean-coloured padding rounds as the input quantizer rounds it."""

    def __init__(self, images: np.ndarray, spec: PreprocessSpec) -> None:
        self._images = images
        self._mean = np.asarray(spec.mean, np.float32)
        self._std = np.asarray(spec.std, np.float32)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._images.shape)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.clip(np.rint(self._images[i] * self._std + self._mean), *PIXEL_RANGE).astype(np.float32)


def pixel_calibration(calib: CalibrationSet, spec: PreprocessSpec) -> CalibrationSet:
    """The calibration set ``calib`` (pre-processed by ``spec``) as the pixel-input graph takes it."""
    manifest = {**calib.manifest, "preprocess": pixel_spec(spec).to_dict()}
    return CalibrationSet(calib.path, _PixelImages(calib.images, spec), manifest)  # type: ignore[arg-type]


def _attr(node: onnx.NodeProto, name: str, default: object) -> object:
    found = next((a for a in node.attribute if a.name == name), None)
    return helper.get_attribute_value(found) if found is not None else default


def _first_layer(graph: onnx.GraphProto) -> tuple[onnx.NodeProto | None, onnx.NodeProto]:
    """``(pad, conv)``: the input's only consumer is the stem convolution, directly or through one Pad."""
    x = graph.input[0].name

    def consumers(name: str) -> list[onnx.NodeProto]:
        return [n for n in graph.node if name in n.input]

    first = consumers(x)
    if len(first) != 1 or first[0].op_type not in ("Pad", "Conv"):
        raise PixelInputError(f"the input {x!r} feeds {[n.op_type for n in first]}, not one convolution (optionally "
                              "padded first): there is no first convolution to fold the normalisation into")
    if first[0].op_type == "Conv":
        return None, first[0]
    pad = first[0]
    after = consumers(pad.output[0])
    if len(after) != 1 or after[0].op_type != "Conv" or after[0].input[0] != pad.output[0]:
        raise PixelInputError(f"the input's Pad feeds {[n.op_type for n in after]}, not one convolution")
    return pad, after[0]


def _pads(pad: onnx.NodeProto | None, conv: onnx.NodeProto, inits: dict[str, np.ndarray]) -> np.ndarray:
    """Every zero pad in front of the convolution's kernel as ONNX ``Pad`` pads ``[x1_begin.., x1_end..]`` for
    NCHW (the Pad node's, plus the convolution's own ``pads`` attribute)."""
    total = np.zeros(8, np.int64)
    if pad is not None:
        if _attr(pad, "mode", b"constant") not in (b"constant", "constant"):
            raise PixelInputError(f"the input's Pad {pad.name!r} is not a constant pad")
        if len(pad.input) > 3 and pad.input[3]:
            raise PixelInputError(f"the input's Pad {pad.name!r} names axes; only a full pads list is supported")
        if pad.input[1] not in inits or inits[pad.input[1]].size != 8:
            raise PixelInputError(f"the input's Pad {pad.name!r} has no constant 4-D pads")
        value = inits.get(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else np.zeros(())
        if value is None or float(value) != 0.0:
            raise PixelInputError(f"the input's Pad {pad.name!r} pads with {value}, not zero")
        total += inits[pad.input[1]].astype(np.int64)
    own = list(_attr(conv, "pads", [0, 0, 0, 0]))
    if _attr(conv, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise PixelInputError(f"the first convolution {conv.name!r} pads at run time (auto_pad)")
    total[[2, 3, 6, 7]] += np.asarray(own, np.int64)
    if (total < 0).any() or total[[0, 1, 4, 5]].any():
        raise PixelInputError(f"the first layer's padding {total.tolist()} crops or pads batch/channels")
    return total


def fold_normalisation(fp32: onnx.ModelProto, spec: PreprocessSpec) -> onnx.ModelProto:
    """A copy of ``fp32`` (normalised NCHW image in) that takes RGB pixels instead (:mod:`convert.pixel_input`).
    Node and tensor names after the first convolution are unchanged, so per-layer choices made on ``fp32`` (the
    float fallback) apply to it. Raises :class:`PixelInputError` if the graph's start is not a foldable stem or the
    folded graph diverges from ``fp32`` beyond :data:`FOLD_RTOL`."""
    out = onnx.ModelProto()
    out.CopyFrom(fp32)
    graph = out.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    pad, conv = _first_layer(graph)
    weight = inits.get(conv.input[1])
    if weight is None or weight.ndim != 4 or weight.shape[1] != 3 or _attr(conv, "group", 1) != 1:
        raise PixelInputError(f"the first convolution {conv.name!r} does not read 3 channels with constant weights")
    mean = np.asarray(spec.mean, np.float64)
    std = np.asarray(spec.std, np.float64)
    pads = _pads(pad, conv, inits)
    uniform = bool(np.all(mean == mean[0]))
    offset = float(np.floor(mean[0] + 0.5)) if pads.any() and uniform else 0.0
    bias = inits[conv.input[2]] if len(conv.input) > 2 and conv.input[2] else np.zeros(weight.shape[0])
    folded = weight.astype(np.float64) / std[None, :, None, None]
    new_bias = bias.astype(np.float64) - (folded * (mean - offset)[None, :, None, None]).sum(axis=(1, 2, 3))
    stem = conv.name or conv.output[0]
    names = {"weight": f"{stem}{WEIGHT_SUFFIX}", "bias": f"{stem}_pixels_bias", "pads": f"{stem}_pixels_pads",
             "value": f"{stem}{PAD_VALUE_SUFFIX}", "border": f"{stem}_pixels_border", "padded": f"{stem}_pixels_in",
             "zero_padded": f"{stem}_pixels_zero_padded", "offset": f"{stem}{OFFSET_SUFFIX}",
             "centred": f"{stem}_pixels_centred"}
    graph.initializer.extend([numpy_helper.from_array(folded.astype(np.float32), names["weight"]),
                              numpy_helper.from_array(new_bias.astype(np.float32), names["bias"])])
    nodes = [n for n in graph.node if n is not pad]
    x = graph.input[0].name
    start = []
    if offset:  # one mean on every channel: centre on the nearest integer, then pad with zero (PAD, not PADV2)
        graph.initializer.append(numpy_helper.from_array(np.array(offset, np.float32), names["offset"]))
        start.append(helper.make_node("Sub", [x, names["offset"]], [names["centred"]], name=f"{stem}_pixels_centre"))
        x = names["centred"]
    if pads.any():
        graph.initializer.extend([numpy_helper.from_array(pads, names["pads"]),
                                  numpy_helper.from_array(np.array(0.0, np.float32), names["value"])])
        padded = names["padded"] if uniform else names["zero_padded"]
        start.append(helper.make_node("Pad", [x, names["pads"], names["value"]], [padded], mode="constant",
                                      name=f"{stem}_pixels_pad"))
        if not uniform:  # zero padding plus the mean on the padded border only: exact per channel
            dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
            h, w = dims[2] + pads[2] + pads[6], dims[3] + pads[3] + pads[7]
            border = np.broadcast_to(mean.astype(np.float32)[None, :, None, None], (1, 3, h, w)).copy()
            border[:, :, pads[2]:h - pads[6], pads[3]:w - pads[7]] = 0.0
            graph.initializer.append(numpy_helper.from_array(border, names["border"]))
            start.append(helper.make_node("Add", [padded, names["border"]], [names["padded"]],
                                          name=f"{stem}_pixels_border_add"))
        source = names["padded"]
    else:
        source = x
    conv.input[:] = [source, names["weight"], names["bias"]]
    for a in conv.attribute:
        if a.name == "pads":
            a.ints[:] = [0] * len(a.ints)
    del graph.node[:]
    graph.node.extend(start + nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(out)
    _check(fp32, exact_border(out, spec), spec)
    return out


def _offset(pixels: onnx.ModelProto) -> float:
    """The integer :func:`fold_normalisation` centred the pixels on before padding (0 where it did not)."""
    found = [t for t in pixels.graph.initializer if t.name.endswith(OFFSET_SUFFIX)]
    return float(numpy_helper.to_array(found[0])) if found else 0.0


def exact_border(pixels: onnx.ModelProto, spec: PreprocessSpec) -> onnx.ModelProto:
    """A copy of the folded graph ``pixels`` whose padding holds the exact mean colour (``m - o`` after the centring,
    a float no int8 code holds) instead of the integer pixel nearest it: the graph that equals the original model
    everywhere, which the fold is checked with."""
    out = onnx.ModelProto()
    out.CopyFrom(pixels)
    offset = _offset(out)
    for tensor in out.graph.initializer:
        if offset and tensor.name.endswith(PAD_VALUE_SUFFIX):
            tensor.CopyFrom(numpy_helper.from_array(np.array(spec.mean[0] - offset, np.float32), tensor.name))
    return out


def folded_stem(pixels: onnx.ModelProto, spec: PreprocessSpec) -> FoldedStem:
    """The first convolution :func:`fold_normalisation` folded ``spec``'s normalisation into, with its bias before
    the fold, so each quantizer can refold it for the weights it rounded (:mod:`quantize.folded_stem`)."""
    inits = {t.name: t for t in pixels.graph.initializer}
    centre = np.asarray(spec.mean, np.float64) - _offset(pixels)
    for node in pixels.graph.node:
        if node.op_type == "Conv" and node.input[1].endswith(WEIGHT_SUFFIX) and node.input[1] in inits:
            weight = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
            folded = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
            shift = (weight * centre[None, :, None, None]).sum(axis=(1, 2, 3))
            return FoldedStem(node.name, node.output[0], folded + shift, tuple(float(v) for v in centre))
    raise PixelInputError("the graph has no folded first convolution (convert.pixel_input.fold_normalisation)")


def _check(fp32: onnx.ModelProto, pixels: onnx.ModelProto, spec: PreprocessSpec) -> None:
    """The folded graph on random pixels against the original on their normalised image."""
    from .targets.onnx import run_onnx

    dims = [d.dim_value for d in fp32.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(0).integers(0, 256, dims).astype(np.float32)
    mean = np.asarray(spec.mean, np.float32)[None, :, None, None]
    std = np.asarray(spec.std, np.float32)[None, :, None, None]
    reference, folded = run_onnx(fp32, (x - mean) / std), run_onnx(pixels, x)
    for name, ref in reference.items():
        err = float(np.abs(folded[name] - ref).max())
        scale = float(np.abs(ref).max()) or 1.0
        if not err <= FOLD_RTOL * scale:
            raise PixelInputError(f"folding the normalisation into the first convolution changed output {name!r} "
                                  f"(rel err {err / scale:.3g} > {FOLD_RTOL:g}); refusing to quantize a wrong graph")
