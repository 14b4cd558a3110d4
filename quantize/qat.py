"""Quantization-aware fine-tuning with torchao's PT2E flow, and the QAT model's exports.

Why PT2E from torchao: torch 2.13 removed PT2E from ``torch.ao`` and deprecated eager/FX QAT (whose
models did not export to ONNX here); PT2E's converted model exports with the dynamo exporter as a
QDQ ONNX that onnxruntime and OpenVINO execute in int8 with the learned ranges (docs/TOOLCHAIN.md).
Two measured traps are designed around: the model is exported with a batch >= 2 and a dynamic batch
dimension, and from ``export_form()`` (each head level its own conv with BN folded; shared convs with
per-level BN broke ``convert_pt2e``). Stochastic depth is switched off first: the graph is traced in
training mode, and ``move_exported_model_to_eval`` only rewrites dropout and BatchNorm, so a traced
drop-path would stay in the converted model as random ops (measured: 9 RandomUniformLike nodes in
the exported ONNX, making the QAT artifacts' outputs random).

Scheme: torchao's x86 quantizer in QAT mode — weights int8 per-channel symmetric (7-bit on dense convolutions, as the
post-training ONNX and OpenVINO files; +-127 on depthwise ones, as TFLite's), activations uint8 per-tensor affine: the
scheme onnxruntime (U8S8), NNCF (MIXED) and full-integer TFLite use, so what QAT learns is what the targets run — plus
a fake-quant on every convolution output (see ``_quantizer``).
Objective: by default the FP32 model's own outputs (:mod:`quantize.distill`), not the labels. Schedule:
activation ranges are searched on the calibration set and held (:func:`calibrate`: QAT starts from post-training
ranges, not from scratch, and trains weights against the ranges the artifacts will run), then a short fine-tune at a
low learning rate with BatchNorm in inference behaviour from the first step (``bn_freeze``) and the weight observers
stopped (``observer_freeze``). Why both start frozen: :class:`QatConfig`.
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import onnx
import torch
from torch.utils.data import RandomSampler
from tqdm import tqdm

from calib_data import CalibrationSet
from efficientdet.data.records import DetectionDataset
from efficientdet.model.detector import INPUT_NAME, OUTPUT_NAMES
from efficientdet.model.layers import DropPath
from efficientdet.train.batches import Augment, DetectionBatches, epoch_loader
from efficientdet.train.loss import detection_loss
from efficientdet.train.trainer import lr_at, param_groups

from .distill import distillation_loss
from .tflite_learned_ranges import LearnedRanges, LearnedTensor, fingerprint

OBJECTIVES = ("distill", "labels")
ANNOTATION = "quantization_annotation"  # the node.meta key PT2E quantizers annotate
# torchao's PT2E QAT rewrites every conv + BN into its own BN simulation with epsilon fixed at 1e-5 (qat_utils.py,
# "TODO: allow setting eps"), whatever the model's BN says; EfficientDet's is 1e-3. Left alone, QAT trained and
# converted a different model than the FP32 one (the default D0 before any fine-tuning: logits 1.2 %, boxes 2.7 %
# relative L2 off), and the float twin TFLite is converted from did not match it. So QAT gets a copy of the model
# with that epsilon and the variances shifted to keep every BN's function (:func:`_qat_form`).
QAT_BN_EPS = 1e-5
# Activations every target fuses into the convolution before them (quantizing only their output): ReLU, ReLU6.
FUSED_CLAMPS = frozenset({torch.ops.aten.relu.default, torch.ops.aten.relu_.default, torch.ops.aten.hardtanh.default,
                          torch.ops.aten.hardtanh_.default, torch.ops.aten.clamp.default})
# Weight codes of every convolution that is not depthwise: within +-63, as the post-training ONNX and OpenVINO files'
# (+-64). Without VNNI, x86 int8 kernels add pairs of u8 x s8 products in a saturating int16; 2 x 255 x 63 cannot
# overflow it (docs/INT8-CPU-CLASSES.md). Until session 24 QAT's weights were 8-bit (+-127): its ONNX and OpenVINO
# files could saturate on AVX2 and AVX-512-without-VNNI CPUs. Depthwise convolutions keep 8 bits (no pair sums).
DENSE_WEIGHT_CODES = 63
# Depthwise weight codes: symmetric +-127, TFLite's int8 weight range (its spec allows no -128), so the TFLite file can
# hold QAT's codes as they are (:mod:`quantize.tflite_learned_weights`). torchao's default is -128 ... 127.
DEPTHWISE_WEIGHT_CODES = 127
# The manifest's record of how QAT fake-quantized (``quantization.qat.fake_quantizer``): plain FakeQuantize modules,
# whose scales are the observers' and so the files', since session 25 (see ``_observed_config``); the ranges searched
# and held and BN in inference behaviour since session 33 (``calibrate``, ``QatConfig``): an export made before is
# not reused for a benchmark.
FAKE_QUANTIZER = ("FakeQuantize; activation ranges searched by histogram on the calibration set and held, BN in "
                  "inference behaviour (the converted files' scales)")


@dataclass(frozen=True)
class QatConfig:
    """The short fine-tuning schedule (defaults sized for a 2-core CPU)."""

    epochs: float = 2.0
    lr: float = 1e-4
    batch_size: int = 8
    weight_decay: float = 1e-5
    # Fractions of the steps after which BatchNorm uses its running statistics and the weight observers stop (the
    # activation ranges are held from the start, :func:`calibrate`). Both 0 since session 33; until then 0.5 and 0.75.
    # With BN in training behaviour the student normalised each batch of 8 by its own statistics while the teacher
    # used its running ones, so the first half of the steps trained the weights to undo a normalisation the files
    # never run, and BN's running statistics ended as an average of the last few batches. On the BCCD D0 trained
    # on other light (seed 0, 4 epochs, held histogram ranges) the fine-tune then took the logits from 1.25 % to
    # 1.67 % (relative L2 against FP32 on the test split) and the boxes from 5.0 % to 6.8 %; with both frozen from the
    # start it took the logits to 1.16 % and the field's logits from 5.2 % to 4.8 % (docs/QUANTIZATION.md).
    bn_freeze: float = 0.0
    observer_freeze: float = 0.0
    calib_images: int = 64
    clip_norm: float = 10.0
    seed: int = 0
    objective: str = "distill"  # "distill": match the FP32 model's outputs; "labels": the detection loss
    # Probability that a training image gets a random photometric shift, so the ranges QAT learns cover other light
    # and cameras. Off by default: on the BCCD D0 (one run each, 0.5 against 0) it moved the field match little
    # (61-63 % against 55-62 %) and cost the test split 0.5-0.8 point; on the BCCD Lite0 at 448 it traded the
    # field's directions (FP32's detections found 80-81 % against 87-88 %, the artifact's in FP32's set 85-88 %
    # against 83-84 %) and took OpenVINO to +0.52 points (docs/QUANTIZATION.md).
    photometric: float = 0.0

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"QAT objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if not 0.0 <= self.photometric <= 1.0:
            raise ValueError(f"the QAT photometric shift probability must be within 0..1, got {self.photometric}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pt2e() -> Any:
    import torchao.quantization.pt2e as pt2e

    return pt2e


def _quantizer() -> Any:
    """torchao's x86 quantizer in QAT mode, plus a fake-quant on every convolution's output.

    The x86 quantizer targets Inductor, which fuses conv + SiLU, so it quantizes only the SiLU's
    output: exported to ONNX the convolution then has no QuantizeLinear after it and onnxruntime runs
    it in float (measured on D0: 113 of 214 convolutions, the QAT ONNX 2.5x slower than the
    post-training one). Every target quantizes convolution outputs (onnxruntime's QDQ, NNCF, and
    full-integer TFLite, where every tensor is int8), so QAT simulates them too.

    Dense convolutions (``groups`` 1) learn 7-bit weights (``DENSE_WEIGHT_CODES``) so the QAT files run right on
    every x86 CPU, depthwise ones symmetric 8-bit within TFLite's +-127 (``DEPTHWISE_WEIGHT_CODES``); QAT then
    trains against the grid every artifact holds.

    Except where a ReLU or ReLU6 follows (EfficientDet-Lite): every target fuses it into the convolution and
    quantizes only its output, which the x86 quantizer already does. A quantizer before the clamp spends its
    levels on values the clamp throws away, and the QAT ONNX carried it as a Q/DQ pair no post-training file
    has. Measured on the BCCD Lite0 at 448, calibrated and not yet fine-tuned: -5.18 mAP points with those 65
    quantizers, -0.01 without; after 4 epochs of QAT the artifacts were -1.2 to -2.9 points with them, -0.02 to
    +0.29 without.
    """
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        _X86InductorQuantizationAnnotation,
        get_default_x86_inductor_quantization_config,
    )

    class ConvOutputQuantizer(X86InductorQuantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = super().annotate(model)
            spec = self.global_config.input_activation
            weight = {True: replace(self.global_config.weight, quant_min=-DENSE_WEIGHT_CODES,
                                    quant_max=DENSE_WEIGHT_CODES),
                      False: replace(self.global_config.weight, quant_min=-DEPTHWISE_WEIGHT_CODES,
                                     quant_max=DEPTHWISE_WEIGHT_CODES)}
            for node in model.graph.nodes:
                if node.op != "call_function" or node.target != torch.ops.aten.conv2d.default:
                    continue
                conv_annotation = node.meta.get(ANNOTATION)
                groups = node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1)
                if conv_annotation is not None and node.args[1] in conv_annotation.input_qspec_map:
                    conv_annotation.input_qspec_map[node.args[1]] = weight[groups == 1]
                users = list(node.users)
                out = users[0] if len(users) == 1 and users[0].target == torch.ops.aten.batch_norm.default else node
                if out.users and all(u.target in FUSED_CLAMPS for u in out.users):
                    continue
                annotation = out.meta.get(ANNOTATION)
                if annotation is None:
                    out.meta[ANNOTATION] = _X86InductorQuantizationAnnotation(output_qspec=spec, _annotated=True)
                elif annotation.output_qspec is None:
                    annotation.output_qspec = spec
            return model

    quantizer = ConvOutputQuantizer()
    quantizer.set_global(_observed_config(get_default_x86_inductor_quantization_config(is_qat=True)))
    return quantizer


def _observed_config(config: Any) -> Any:
    """``config`` (the x86 QAT configuration) with plain ``FakeQuantize`` modules in place of the fused ones, around
    the same moving-average observers.

    The fused fake quantizer (``torch.fused_moving_avg_obs_fake_quant``) chooses a symmetric weight scale by its own
    rule: max(-min/128, max/127) on an 8-bit channel where the observer, and so ``convert_pt2e`` and every artifact,
    take max/127.5 (or max/127 on the +-127 grid), max(-min/64, max/63) x 127/126 on the 7-bit one; and on a channel
    whose weights all share a sign it quantizes *affinely* (zero point 127 on an all-negative depthwise channel of a
    random Lite0). QAT then trained against a grid no file holds: until session 25 the QAT ONNX and OpenVINO weights
    were the latent weights re-quantized at the observer's scales, 1.7 % (relative L2) away from the weights QAT
    trained on a Lite0, up to one code per weight (the TFLite file started from the float twin's, QAT's, and its
    converter rounded them again: :mod:`quantize.tflite_learned_weights`). ``FakeQuantize`` takes its scale and zero
    point from the observer's ``calculate_qparams``, the same call the conversion makes."""
    from torchao.quantization.pt2e import (
        FakeQuantize,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
    )

    def plain(spec: Any, observer: Any) -> Any:
        return replace(spec, observer_or_fake_quant_ctr=FakeQuantize.with_args(observer=observer, eps=2**-12))

    activation = plain(config.input_activation, MovingAverageMinMaxObserver)
    return replace(config, input_activation=activation, output_activation=activation,
                   weight=plain(config.weight, MovingAveragePerChannelMinMaxObserver))


def _qat_form(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` in its export form with every BatchNorm's epsilon moved to QAT_BN_EPS, the same function
    in inference: the variance takes the difference, ``sqrt((v + e - QAT_BN_EPS) + QAT_BN_EPS) = sqrt(v + e)``."""
    form = model.export_form() if hasattr(model, "export_form") else copy.deepcopy(model)
    with torch.no_grad():
        for m in form.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.eps != QAT_BN_EPS:
                if m.running_var is not None:
                    m.running_var += m.eps - QAT_BN_EPS
                m.eps = QAT_BN_EPS
    return form


def prepare(model: torch.nn.Module, input_size: int) -> torch.fx.GraphModule:
    """The model's export form, exported with a dynamic batch and prepared with fake quantization."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    form = _qat_form(model)
    for module in form.modules():
        if isinstance(module, DropPath):
            module.rate = 0.0  # traced in training mode it would become random ops that stay in every export
    form.train()
    example = torch.randn(2, 3, input_size, input_size)
    batch = torch.export.Dim("batch", min=1, max=256)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(form, (example,), dynamic_shapes={INPUT_NAME: {0: batch}})
        return prepare_qat_pt2e(exported.module(), _quantizer())


# Ops between the model input and its first quantizer that only move values (the stem's padding).
_INPUT_MOVERS = frozenset({torch.ops.aten.pad.default, torch.ops.aten.constant_pad_nd.default})


def input_quantizers(qat: torch.fx.GraphModule) -> list[str]:
    """The fake quantizers on the model input, directly or after padding (nearest first): the input quantizer."""
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

    todo = [n for n in qat.graph.nodes if n.op == "placeholder"]
    found: list[str] = []
    while todo:
        node = todo.pop(0)
        for user in node.users:
            if user.op == "call_module" and isinstance(qat.get_submodule(user.target), FakeQuantizeBase):
                found.append(str(user.target))
            elif user.op == "call_function" and user.target in _INPUT_MOVERS:
                todo.append(user)
    return found


PER_TENSOR = (torch.per_tensor_affine, torch.per_tensor_symmetric)  # activations; weights are per channel


def _activation_quantizers(qat: torch.fx.GraphModule) -> list[Any]:
    """Every per-tensor fake quantizer, once (a shared one, as on a concatenation's inputs, is one module)."""
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

    return [m for m in qat.modules() if isinstance(m, FakeQuantizeBase) and getattr(m, "qscheme", None) in PER_TENSOR]


def _hold(m: Any, low: float, high: float) -> None:
    """Fix fake quantizer ``m`` at the range ``low`` ... ``high`` and stop its observer. The observer keeps that range
    as its own min and max, so ``convert_pt2e`` (which asks the observer) writes the scale and zero point QAT trains
    with (:func:`check_converted_qparams`)."""
    observer = m.activation_post_process
    observer.min_val.copy_(torch.tensor(low))
    observer.max_val.copy_(torch.tensor(high))
    scale, zero = observer.calculate_qparams()
    m.scale.resize_(scale.shape).copy_(scale)
    m.zero_point.resize_(zero.shape).copy_(zero)
    m.disable_observer()


@torch.no_grad()
def hold_input_quantizer(qat: torch.fx.GraphModule, input_range: tuple[float, float]) -> int:
    """Fix the input quantizer at ``input_range`` (a grid's end points, :func:`quantize.input_grid.input_range`) and
    stop its observer, so QAT trains on the very input rounding every artifact applies; without this it trained on
    the calibration images' narrower range and the files got the whole pixel range only after training. Returns how
    many quantizers it set."""
    names = input_quantizers(qat)
    if not names:
        raise ValueError("the prepared model has no fake quantizer on its input: no input range to hold")
    for name in names:
        _hold(qat.get_submodule(name), *input_range)
    return len(names)


@torch.no_grad()
def calibrate(qat: torch.fx.GraphModule, calib: CalibrationSet, count: int, batch: int = 8) -> int:
    """Choose every activation range QAT starts from on the calibration set (BN in inference mode) and hold it there:
    the range torchao's ``HistogramObserver`` searches over the images' histogram (the clipping with the least L2
    error), not their minimum and maximum. Quantizers already held (the input's) keep their range; weights keep
    their moving-average observers. Returns how many ranges were searched.

    Why: until session 33 QAT started from min-max ranges and its observers followed each batch's minimum and maximum
    for three quarters of the fine-tune; the post-training files use percentile or mixed ranges. On the BCCD D0
    trained on other light, calibrated and not yet fine-tuned, min-max left the logits 1.49 % (relative L2) from
    FP32, the boxes 6.7 %, the field's logits 8.3 %, -0.51 mAP points; the histogram's ranges 1.25 %, 5.0 %, 5.2 %,
    -0.21 (docs/QUANTIZATION.md, "QAT's starting ranges and BatchNorm")."""
    from torchao.quantization.pt2e.observer import HistogramObserver

    searched = [m for m in _activation_quantizers(qat) if bool(m.observer_enabled)]
    kept = {}
    for m in searched:
        kept[m] = m.activation_post_process
        m.activation_post_process = HistogramObserver(dtype=kept[m].dtype, qscheme=kept[m].qscheme,
                                                      quant_min=kept[m].quant_min, quant_max=kept[m].quant_max,
                                                      eps=kept[m].eps)
    pt2e = _pt2e()
    pt2e.move_exported_model_to_eval(qat)
    n = min(count, len(calib))
    for start in range(0, n, batch):
        x = np.stack([calib.nchw(i)[0] for i in range(start, min(start + batch, n))])
        qat(torch.from_numpy(x))
    for m in searched:
        scale, zero = (float(v.reshape(-1)[0]) for v in m.activation_post_process.calculate_qparams())
        m.activation_post_process = kept[m]
        _hold(m, (m.quant_min - zero) * scale, (m.quant_max - zero) * scale)
    pt2e.move_exported_model_to_train(qat)
    return len(searched)


def finetune(qat: torch.fx.GraphModule, train_set: DetectionDataset, config: Any, cfg: QatConfig,
             teacher: torch.nn.Module | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Fine-tune ``qat`` in place on ``train_set``; returns one record per epoch (loss, steps, what froze).

    ``teacher``: the FP32 model, required by the ``distill`` objective (:mod:`quantize.distill`)."""
    if cfg.objective == "distill":
        if teacher is None:
            raise ValueError("the distill QAT objective needs the FP32 model as teacher")
        teacher = teacher.eval()
    pt2e = _pt2e()
    from torchao.quantization.pt2e.fake_quantize import disable_observer

    torch.manual_seed(cfg.seed)  # drop-path is random in training mode
    pre = config.preprocess
    data = DetectionBatches(train_set, pre, config.anchor_spec,
                            Augment(photometric=cfg.photometric), cfg.seed)
    loader = epoch_loader(data, cfg.batch_size, RandomSampler(data, generator=torch.Generator().manual_seed(cfg.seed)),
                          workers=1, drop_last=True)
    if len(loader) == 0:
        raise ValueError(f"QAT needs at least {cfg.batch_size} training images, the split has {len(data)}")
    total = max(1, math.ceil(cfg.epochs * len(loader)))
    opt = torch.optim.AdamW(param_groups(qat, cfg.weight_decay), lr=cfg.lr)
    bn_step, obs_step = int(cfg.bn_freeze * total), int(cfg.observer_freeze * total)
    step, epoch, history = 0, 0, []
    bar = tqdm(total=total, desc="QAT fine-tune", unit="step", disable=not progress)
    while step < total:
        data.set_epoch(epoch)
        sums, n = np.zeros(3), 0
        for images, cls_t, box_t, _ in loader:
            if step >= total:
                break
            if step == bn_step:
                pt2e.move_exported_model_to_eval(qat)  # BN uses (and keeps) its running statistics from here on
            if step == obs_step:
                qat.apply(disable_observer)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, max(1, total // 10), cfg.lr)
            logits, boxes = qat(images)
            if cfg.objective == "distill":
                with torch.no_grad():
                    t_logits, t_boxes = teacher(images)
                loss, cls_l, box_l = distillation_loss(logits, boxes, t_logits, t_boxes)
            else:
                loss, cls_l, box_l = detection_loss(logits, boxes, cls_t, box_t)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"QAT loss became {loss.item()} at step {step}; lower --qat-lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(qat.parameters(), cfg.clip_norm)
            opt.step()
            step += 1
            n += 1
            sums += (loss.item(), cls_l.item(), box_l.item())
            bar.set_postfix(loss=f"{sums[0] / n:.3f}")
            bar.update()
        epoch += 1
        history.append({"epoch": epoch, "steps": n, "loss": sums[0] / max(n, 1), "cls_loss": sums[1] / max(n, 1),
                        "box_loss": sums[2] / max(n, 1), "bn_frozen": step > bn_step,
                        "observers_frozen": step > obs_step})
    bar.close()
    pt2e.move_exported_model_to_eval(qat)
    return history


def _export(module: torch.nn.Module, input_size: int) -> onnx.ModelProto:
    x = torch.zeros(1, 3, input_size, input_size)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (x,), input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                                    opset_version=18, dynamo=True, external_data=False, verbose=False)
    return program.model_proto


def check_converted_qparams(qat: torch.fx.GraphModule) -> int:
    """Raise unless every fake quantizer's observer gives back the scale and zero point the quantizer trained with
    (``convert_pt2e`` writes the observer's into the Q/DQ graph); returns how many quantizers were checked.
    The guard against the fused fake quantizer's rule (:func:`_observed_config`) coming back."""
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

    quantizers = [(n, m) for n, m in qat.named_modules() if isinstance(m, FakeQuantizeBase)]
    for name, m in quantizers:
        got_scale, got_zero = m.activation_post_process.calculate_qparams()
        scale, zero = m.scale.detach().reshape(-1).double(), m.zero_point.detach().reshape(-1).double()
        got_scale, got_zero = got_scale.reshape(-1).double(), got_zero.reshape(-1).double()
        if not (torch.allclose(got_scale, scale, rtol=1e-6, atol=0) and torch.equal(got_zero, zero)):
            off = ((got_scale / scale) - 1).abs().max().item()
            raise RuntimeError(f"QAT quantizer {name} trained with other scales or zero points than its observer gives "
                               f"the conversion (scale off by up to {off:.2g}, "
                               f"{int((got_zero != zero).sum())} zero points differ): the converted model would not "
                               "be the one QAT trained")
    return len(quantizers)


def to_qdq_onnx(qat: torch.fx.GraphModule, input_size: int) -> onnx.ModelProto:
    """The converted (Q/DQ) model as a static batch-1 ONNX: the learned ranges and weights, for onnxruntime
    and OpenVINO (int8 weights + DequantizeLinear), with the scales QAT trained with (:func:`check_converted_qparams`).
    Not simplified: folding would turn them back into floats."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    _pt2e().move_exported_model_to_eval(qat)
    check_converted_qparams(qat)
    return _export(convert_pt2e(qat), input_size)


@dataclass(frozen=True)
class FloatTwin:
    """What QAT computes, without activation quantization, as a float model in the export form (for converters
    that cannot take Q/DQ: onnx2tf converts a QDQ ONNX wrongly, docs/TOOLCHAIN.md), and the activation ranges QAT
    learned, fingerprinted on the probe image so they can be found in the converted model."""

    model: torch.nn.Module
    ranges: LearnedRanges


def _weight_parameters(qat: torch.fx.GraphModule) -> dict[str, str]:
    """Per-channel fake quantizer (module name) -> the parameter whose weights it quantizes: its input is the
    parameter, or the parameter times the BN factor of torchao's conv + BN simulation."""
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

    out = {}
    for node in qat.graph.nodes:
        module = qat.get_submodule(node.target) if node.op == "call_module" else None
        if not isinstance(module, FakeQuantizeBase) or getattr(module, "qscheme", None) in PER_TENSOR:
            continue
        source = node.args[0]
        if source.op == "call_function" and source.target == torch.ops.aten.mul.Tensor:
            source = source.args[0]
        if source.op != "get_attr":
            raise RuntimeError(f"QAT weight quantizer {node.target} does not quantize a parameter "
                               f"({source.format_node()})")
        out[node.target] = source.target
    return out


@torch.no_grad()
def float_twin(qat: torch.fx.GraphModule, model: torch.nn.Module, probe: np.ndarray) -> FloatTwin:
    """``model``'s export form with QAT's fine-tuned BN statistics and *quantized* weights, and QAT's activation
    ranges probed on ``probe`` (``[1, S, S, 3]``, the model's normalised input).

    The weights are the values QAT's weight quantizers gave (each weight times quantized/unquantized, so a
    BN-folded weight keeps its BN): the latent float weights QAT trains are not what it learned to run, and a
    TFLite converted from them was a different model from QAT's ONNX (36 % relative error at the BCCD D0's second
    convolution, the same activation scales). One forward pass with activation quantization off (what the float
    twin computes) records both; every quantizer's state is restored after, so the model converts as before."""
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

    every = [m for m in qat.modules() if isinstance(m, FakeQuantizeBase)]
    activations = _activation_quantizers(qat)
    weights = _weight_parameters(qat)
    states = [(m.fake_quant_enabled.clone(), m.observer_enabled.clone()) for m in every]
    # fingerprinted as they pass: a whole forward's activations held at once would be GBs at D7's 1536 px
    seen: list[tuple[FakeQuantizeBase, tuple[tuple[int, ...], np.ndarray]]] = []
    quantized: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [m.register_forward_pre_hook(lambda m, args: seen.append((m, fingerprint(args[0].detach().numpy()))))
             for m in activations]
    for name, parameter in weights.items():
        hooks.append(qat.get_submodule(name).register_forward_hook(
            lambda m, args, out, p=parameter: quantized.__setitem__(p, (args[0].detach().clone(), out.detach()))))
    try:
        for m in every:
            m.observer_enabled.fill_(0)
        for m in activations:
            m.fake_quant_enabled.fill_(0)
        qat(torch.from_numpy(np.ascontiguousarray(probe.transpose(0, 3, 1, 2), np.float32)))
    finally:
        for hook in hooks:
            hook.remove()
        for m, (fake, observe) in zip(every, states, strict=True):
            m.fake_quant_enabled.copy_(fake)
            m.observer_enabled.copy_(observe)
    if set(quantized) != set(weights.values()):
        raise RuntimeError(f"{len(set(weights.values()) - set(quantized))} of QAT's weight quantizers did not run")
    form = _qat_form(model)
    tuned = qat.state_dict()
    wanted = form.state_dict()
    missing = [k for k in wanted if k not in tuned or tuned[k].shape != wanted[k].shape]
    if missing:
        raise RuntimeError(f"QAT model lacks {len(missing)} of the float model's tensors (e.g. {missing[:3]})")
    state = {k: tuned[k].detach().clone() for k in wanted}
    for parameter, (before, after) in quantized.items():
        ratio = torch.where(before != 0, after / torch.where(before != 0, before, 1.0), 0.0)
        state[parameter] = state[parameter] * ratio
    form.load_state_dict(state)
    tensors = []
    for m, (shape, sample) in seen:
        scale, zero = float(m.scale.reshape(-1)[0]), int(m.zero_point.reshape(-1)[0])
        tensors.append(LearnedTensor(shape, sample, (m.quant_min - zero) * scale, (m.quant_max - zero) * scale))
    return FloatTwin(form.eval(), LearnedRanges(np.asarray(probe, np.float32), tuple(tensors)))
