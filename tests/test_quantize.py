"""Fast checks of the quantization building blocks: the QAT distillation loss, the model QAT starts from and the
ranges it hands to TFLite, the TFLite percentile cut and score floor, and the mapping of float-fallback layers
onto OpenVINO ops (end-to-end int8 runs are in test_int8.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from efficientdet.model.config import make_config
from efficientdet.model.testing import detector_like_model_for
from quantize.distill import distillation_loss
from quantize.qat import QatConfig
from quantize.tflite_int8 import _cut, configure_full_int8, floor_score_logits
from tests.conftest import ImagesAsCalibration, conv_weight_codes_onnx, tflite_conv_weights


def _outputs(seed: int, anchors: int = 500, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, anchors, classes, generator=g) * 3 - 4
    return logits, torch.randn(2, anchors, 4, generator=g)


def test_distillation_loss_is_zero_only_at_the_teacher() -> None:
    t_logits, t_box = _outputs(0)
    total, cls, box = distillation_loss(t_logits.clone(), t_box.clone(), t_logits, t_box)
    assert abs(total.item()) < 1e-4 and abs(cls.item()) < 1e-4 and box.item() == 0.0
    s_logits, s_box = _outputs(1)
    total, cls, box = distillation_loss(s_logits, s_box, t_logits, t_box)
    assert cls.item() > 0.01 and box.item() > 0.01 and total.item() > cls.item()


def test_distillation_gradient_moves_the_student_towards_the_teacher() -> None:
    t_logits, t_box = _outputs(0)
    s_logits, s_box = _outputs(1)
    s_logits.requires_grad_(True)
    s_box.requires_grad_(True)
    before = distillation_loss(s_logits, s_box, t_logits, t_box)[0]
    before.backward()
    with torch.no_grad():
        stepped = distillation_loss(s_logits - 0.5 * s_logits.grad / s_logits.grad.abs().max(),
                                    s_box - 0.5 * s_box.grad / s_box.grad.abs().max(), t_logits, t_box)[0]
    assert stepped.item() < before.item()


def test_box_distillation_follows_the_teachers_confidence() -> None:
    """Boxes only matter where the teacher sees an object: the same box error costs more there."""
    t_logits, t_box = _outputs(0)
    t_logits[:, :10] = 8.0  # confident objects on the first ten anchors
    t_logits[:, -10:] = -8.0  # clear background on the last ten
    wrong_where_object = t_box.clone()
    wrong_where_object[:, :10] += 1.0
    wrong_elsewhere = t_box.clone()
    wrong_elsewhere[:, -10:] += 1.0
    box_object = distillation_loss(t_logits, wrong_where_object, t_logits, t_box)[2]
    box_background = distillation_loss(t_logits, wrong_elsewhere, t_logits, t_box)[2]
    assert box_object.item() > 50 * box_background.item()


def test_qat_objective_is_checked() -> None:
    assert QatConfig().objective == "distill"
    with pytest.raises(ValueError, match="objective"):
        QatConfig(objective="mse")


def _fake_quantizers(qat: torch.nn.Module) -> list[torch.nn.Module]:
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

    return [m for m in qat.modules() if isinstance(m, FakeQuantizeBase)]


@torch.no_grad()
def test_qat_simulates_the_fp32_model_and_its_float_twin_is_what_qat_runs() -> None:
    """torchao's QAT conv + BN simulation fixes BN epsilon at 1e-5; EfficientDet's is 1e-3. Before QAT got a copy
    with that epsilon and shifted variances, the prepared model (fake quantization off) was not the FP32 model:
    on channels with a small variance the BN scale moved by up to sqrt(2e-3 / 1.01e-3) = 1.4x. The float twin
    TFLite is converted from must compute what QAT computes without activation quantization: QAT's *quantized*
    weights (it was the latent float ones, a different model from QAT's ONNX)."""
    import torchao.quantization.pt2e as pt2e

    from quantize.qat import PER_TENSOR, calibrate, float_twin, prepare

    config = make_config(0, "d", num_classes=3, input_size=128)
    images = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, 128, 128)).astype(np.float32))
    model = detector_like_model_for(config, images)
    for m in model.modules():  # half the channels get a variance where epsilon decides, the same function
        if isinstance(m, torch.nn.BatchNorm2d):
            before = torch.sqrt(m.running_var + m.eps)
            m.running_var[::2] = 1e-3
            m.weight *= torch.sqrt(m.running_var + m.eps) / before
    reference = model(images)
    qat = prepare(model, config.input_size)

    calibrate(qat, ImagesAsCalibration(images), 2)
    pt2e.move_exported_model_to_eval(qat)
    quantized = qat(images)
    twin = float_twin(qat, model, images[:1].numpy().transpose(0, 2, 3, 1))
    for q, again in zip(quantized, qat(images), strict=True):  # the probe restored every quantizer
        assert torch.equal(q, again)
    fakes = _fake_quantizers(qat)
    for m in fakes:
        if m.qscheme in PER_TENSOR:
            m.fake_quant_enabled.fill_(0)
    for simulated, float_twin_out, fp32 in zip(qat(images), twin.model(images), reference, strict=True):
        assert float((float_twin_out - simulated).norm() / simulated.norm()) < 1e-5
        assert float((float_twin_out - fp32).norm() / fp32.norm()) > 1e-4  # int8 weights, not FP32's
    for m in fakes:
        m.fake_quant_enabled.fill_(0)
    for simulated, fp32 in zip(qat(images), reference, strict=True):
        assert float((simulated - fp32).norm() / fp32.norm()) < 1e-5
    assert [m.eps for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)][0] == 1e-3  # model untouched
    ranges = twin.ranges
    assert len(ranges.tensors) > 100
    assert all(t.low <= 0.0 <= t.high and t.high > t.low for t in ranges.tensors)
    assert ranges.tensors[0].shape == (1, 128, 128, 3)  # the input's quantizer, fingerprinted NHWC like TFLite's
    assert ranges.tensors[1].shape[:3] == (1, 64, 64)  # the stem convolution (stride 2)


@torch.no_grad()
def test_qat_starts_from_searched_activation_ranges_and_holds_them() -> None:
    """QAT started from each activation's minimum and maximum over the calibration images, and its observers kept
    following each batch's extremes; on the BCCD D0 trained on other light that left the field's logits 8.3 % from
    FP32 before any fine-tuning, 5.2 % with the ranges a histogram search picks (docs/QUANTIZATION.md). Now every
    activation range but the held input's is searched: never wider than the images' extremes, narrower where a few
    values stretch them, held (its observer off), and the conversion gets the scale QAT trains with."""
    import torchao.quantization.pt2e as pt2e

    from quantize.input_grid import input_range
    from quantize.qat import (
        _activation_quantizers,
        calibrate,
        check_converted_qparams,
        hold_input_quantizer,
        input_quantizers,
        prepare,
    )

    config = make_config(0, "d", num_classes=3, input_size=64)
    images = 0.3 * np.random.default_rng(0).normal(size=(4, 3, 64, 64)).astype(np.float32)
    images[0, :, :4, :4] = 2.0 * (np.indices((4, 4)).sum(0) % 2 * 2 - 1)  # a small bright, sharp patch: the few
    # values a min-max range would be spent on
    images = torch.from_numpy(images)
    qat = prepare(detector_like_model_for(config, images), config.input_size)
    hold_input_quantizer(qat, input_range(config.preprocess))
    held_input = {qat.get_submodule(n) for n in input_quantizers(qat)}
    quantizers = _activation_quantizers(qat)
    extremes = {m: [0.0, 0.0] for m in quantizers}  # the affine grid always holds zero

    def seen(m: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        extremes[m][0] = min(extremes[m][0], float(args[0].min()))
        extremes[m][1] = max(extremes[m][1], float(args[0].max()))

    hooks = [m.register_forward_pre_hook(seen) for m in quantizers]
    searched = calibrate(qat, ImagesAsCalibration(images), len(images))
    for hook in hooks:
        hook.remove()
    assert searched == len(quantizers) - len(held_input) > 100
    assert not any(bool(m.observer_enabled) for m in quantizers)  # held through the fine-tune
    ratios = []
    for m in quantizers:
        if m in held_input:
            continue
        width = float(m.scale) * (m.quant_max - m.quant_min)
        ratios.append(width / (extremes[m][1] - extremes[m][0]))
    assert max(ratios) <= 1.0 + 1e-5
    assert min(ratios) < 0.75  # the patch's values, clipped where they are few
    pt2e.move_exported_model_to_eval(qat)
    assert check_converted_qparams(qat) > searched


@torch.no_grad()
def test_qat_quantizes_a_relu6_s_output_and_not_the_convolution_before_it() -> None:
    """Every target fuses ReLU6 into the convolution before it and quantizes only the ReLU6's output. QAT also
    quantized the convolution's output before the clamp (65 quantizers on the Lite0): the BCCD Lite0 at 448 lost
    5.18 mAP points to them before fine-tuning, 0.25 without them (docs/QUANTIZATION.md)."""
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

    from quantize.qat import FUSED_CLAMPS, prepare

    config = make_config(0, "lite", num_classes=3, input_size=128)
    images = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, 128, 128)).astype(np.float32))
    qat = prepare(detector_like_model_for(config, images), config.input_size)

    def quantizer(node: torch.fx.Node) -> bool:
        return node.op == "call_module" and isinstance(qat.get_submodule(node.target), FakeQuantizeBase)

    clamps = [n for n in qat.graph.nodes if n.target in FUSED_CLAMPS]
    convolution = (torch.ops.aten.conv2d.default, torch.ops.aten.batch_norm.default)
    after_conv = [n for n in clamps if n.args[0].target in convolution]
    assert len(after_conv) > 40  # the backbone's, BiFPN's and head's ReLU6s
    # (three BiFPN sums before a ReLU6 keep the x86 quantizer's own output quantizer: docs/QUANTIZATION.md)
    assert not [n.name for n in qat.graph.nodes if quantizer(n) and n.args[0].target in convolution
                and all(u in clamps for u in n.users)]
    assert all(any(quantizer(u) for u in n.users) for n in after_conv)  # what the targets quantize, QAT does


@torch.no_grad()
def test_qat_learns_7_bit_weights_on_dense_convolutions() -> None:
    """Without VNNI, x86 int8 kernels add pairs of u8 x s8 products in a saturating int16 (docs/INT8-CPU-CLASSES.md):
    the post-training ONNX and OpenVINO files keep dense weights within +-64 for it; QAT's were 8-bit (+-127), so its
    files could saturate on AVX2 CPUs. Now its dense convolutions learn codes within +-63 and its depthwise ones,
    which cannot saturate, keep 8 bits, within TFLite's +-127 (torchao's default reaches -128)."""
    import torchao.quantization.pt2e as pt2e

    from quantize.qat import DENSE_WEIGHT_CODES, DEPTHWISE_WEIGHT_CODES, calibrate, prepare, to_qdq_onnx

    config = make_config(0, "lite", num_classes=3, input_size=64)
    images = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32))
    qat = prepare(detector_like_model_for(config, images), config.input_size)

    calibrate(qat, ImagesAsCalibration(images), 2)
    pt2e.move_exported_model_to_eval(qat)
    codes = conv_weight_codes_onnx(to_qdq_onnx(qat, config.input_size))
    dense = [c for is_dense, c in codes if is_dense]
    depthwise = [c for is_dense, c in codes if not is_dense]
    assert len(dense) > 40 and len(depthwise) > 20
    assert max(dense) == DENSE_WEIGHT_CODES == 63
    assert max(depthwise) == DEPTHWISE_WEIGHT_CODES == 127  # 8 bits, no -128


@torch.no_grad()
def test_qat_files_hold_the_weights_qat_trained() -> None:
    """The fused fake quantizer torchao's QAT configuration uses picks symmetric scales by another rule than the
    observer ``convert_pt2e`` asks (max/128 or max/127 by the extreme's sign, against max/127.5; affine on a channel
    of one sign), so the QAT ONNX held the latent weights re-quantized at other scales: 1.7 % (relative L2) from
    the weights QAT trained on this Lite0, up to a code per weight. Now every weight of the Q/DQ ONNX is the fake
    quantizer's output."""
    import torchao.quantization.pt2e as pt2e

    from quantize.qat import _weight_parameters, calibrate, prepare, to_qdq_onnx
    from quantize.tflite_learned_weights import qdq_convolutions

    config = make_config(0, "lite", num_classes=3, input_size=64)
    images = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32))
    qat = prepare(detector_like_model_for(config, images), config.input_size)
    calibrate(qat, ImagesAsCalibration(images), 2)
    pt2e.move_exported_model_to_eval(qat)
    trained: list[np.ndarray] = []
    hooks = [qat.get_submodule(name).register_forward_hook(lambda m, args, out: trained.append(out.double().numpy()))
             for name in _weight_parameters(qat)]
    qat(images[:1])
    for hook in hooks:
        hook.remove()
    convolutions = qdq_convolutions(to_qdq_onnx(qat, config.input_size))
    assert len(trained) == len(convolutions) > 150
    for weights in trained:
        errors = [np.linalg.norm(c.weights - weights) / np.linalg.norm(weights) for c in convolutions
                  if c.weights.shape == weights.shape]
        assert min(errors) < 1e-6


def test_percentile_cut_drops_the_tails_evenly() -> None:
    edges = np.linspace(-1.0, 9.0, 101)
    hist = np.zeros(100, np.int64)
    hist[10:20] = 1000  # the bulk in [0, 1)
    hist[99] = 1  # one outlier at the top
    lo, hi = _cut(hist, edges, 99.9)
    assert lo == pytest.approx(0.0) and hi == pytest.approx(1.0)
    assert _cut(hist, edges, 100.0) == (pytest.approx(0.0), pytest.approx(9.0))
    assert _cut(np.zeros(100, np.int64), edges, 99.9) == (-1.0, 9.0)


def _calibrated_tflite(scores_out: bool) -> bytes:
    """A calibrate-only TFLite of conv -> swish -> two conv heads -> reshape -> concat -> sigmoid (the score
    sigmoid when ``scores_out``, else the graph ends at the logits and its only sigmoid is the swish's)."""
    from convert.tensorflow_import import import_tensorflow

    tf = import_tensorflow()
    rng = np.random.default_rng(0)
    w1 = tf.constant(rng.normal(size=(3, 3, 3, 8)).astype(np.float32))
    heads = [tf.constant(rng.normal(size=(1, 1, 8, 4)).astype(np.float32) * 4) for _ in range(2)]

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32)])
    def net(x: tf.Tensor) -> tf.Tensor:
        h = tf.nn.conv2d(x, w1, 1, "SAME")
        h = h * tf.sigmoid(h)  # swish, as in the backbone
        logits = tf.concat([tf.reshape(tf.nn.conv2d(h, w, 1, "SAME"), [1, -1, 2]) for w in heads], axis=1)
        return tf.sigmoid(logits) if scores_out else logits

    converter = tf.lite.TFLiteConverter.from_concrete_functions([net.get_concrete_function()], net)
    configure_full_int8(converter, tf, [rng.normal(size=(1, 8, 8, 3)).astype(np.float32) for _ in range(8)])
    converter._experimental_calibrate_only = True
    return converter.convert()


def _ranges(model: bytes) -> dict[int, tuple[float, float]]:
    """Every tensor with a recorded range -> (min, max)."""
    from tensorflow.lite.tools import flatbuffer_utils

    tensors = flatbuffer_utils.convert_bytearray_to_object(model).subgraphs[0].tensors
    return {i: (float(t.quantization.min[0]), float(t.quantization.max[0])) for i, t in enumerate(tensors)
            if t.quantization is not None and t.quantization.min is not None}


def test_learned_ranges_go_to_the_tensor_with_the_same_values_and_nowhere_else() -> None:
    from convert.tensorflow_import import import_tensorflow
    from quantize.tflite_int8 import inspecting_interpreter
    from quantize.tflite_learned_ranges import LearnedRanges, LearnedTensor, apply_learned_ranges, fingerprint

    tf = import_tensorflow()
    calibrated = _calibrated_tflite(scores_out=False)
    before = _ranges(calibrated)
    probe = np.random.default_rng(1).normal(size=(1, 8, 8, 3)).astype(np.float32)
    interpreter, inp = inspecting_interpreter(calibrated, tf)
    interpreter.set_tensor(inp["index"], probe)
    interpreter.invoke()
    target = next(i for i in sorted(before) if interpreter.get_tensor(i).shape == (1, 8, 8, 8))  # the first conv
    nchw = interpreter.get_tensor(target).transpose(0, 3, 1, 2)  # as torch would hold it
    shape, sample = fingerprint(nchw)
    learned = LearnedRanges(probe, (LearnedTensor(shape, sample, -1.5, 2.5),))
    carried, transfer = apply_learned_ranges(calibrated, learned, tf)
    after = _ranges(carried)
    assert after[target] == pytest.approx((-1.5, 2.5))
    assert {i: r for i, r in after.items() if i != target} == {i: r for i, r in before.items() if i != target}
    assert (transfer.carried, transfer.used, transfer.learned) == (1, 1, 1) and transfer.worst_rtol < 1e-6
    noise = LearnedTensor(shape, np.random.default_rng(2).normal(size=sample.shape).astype(np.float32), -1.0, 1.0)
    with pytest.raises(RuntimeError, match="none of QAT's 1 activation ranges matched"):
        apply_learned_ranges(calibrated, LearnedRanges(probe, (noise,)), tf)


def test_tflite_takes_qat_s_weight_codes_where_its_rounding_moved_them() -> None:
    """TF's quantizer re-quantizes the float twin's 7-bit-grid weights at max|w|/127 (between QAT's codes); the QAT
    codes and scales go back in, times any factor the converter folded into the convolution, with the bias
    requantized; a convolution QAT did not make keeps the converter's, and a model matching nothing is refused."""
    from convert.tensorflow_import import import_tensorflow
    from quantize.tflite_int8 import convert_full_int8
    from quantize.tflite_learned_weights import LearnedConv, apply_learned_weights

    tf = import_tensorflow()
    rng = np.random.default_rng(0)
    codes = rng.integers(-63, 64, size=(8, 3, 3, 3)).astype(np.int8)  # OIHW, QAT's 7-bit grid
    codes[:, 0, 0, 0] = 63
    scales = rng.uniform(0.01, 0.02, size=8).astype(np.float32)
    first = tf.constant((codes * scales[:, None, None, None]).transpose(2, 3, 1, 0))  # HWIO
    bias = tf.constant(rng.normal(size=8).astype(np.float32))
    second = tf.constant(rng.normal(size=(1, 1, 8, 4)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32)])
    def net(x: tf.Tensor) -> tf.Tensor:
        h = tf.nn.relu((tf.nn.conv2d(x, first, 1, "SAME") + bias) * 0.5)  # a factor the converter folds in
        return tf.nn.conv2d(h, second, 1, "SAME")

    converter = tf.lite.TFLiteConverter.from_concrete_functions([net.get_concrete_function()], net)
    samples = [rng.normal(size=(1, 8, 8, 3)).astype(np.float32) for _ in range(8)]
    converted = convert_full_int8(converter, tf, samples, progress=False).data
    (before_codes, before_scales, before_bias), untouched = tflite_conv_weights(converted)
    assert not np.array_equal(before_codes, codes)  # the converter's rounding moved them
    learned = LearnedConv(codes, scales, (1, 8, 8, 8))
    carried, transfer = apply_learned_weights(converted, [learned])
    (after_codes, after_scales, after_bias), kept = tflite_conv_weights(carried)
    np.testing.assert_array_equal(after_codes, codes)
    np.testing.assert_allclose(after_scales, scales * 0.5, rtol=1e-6)
    np.testing.assert_allclose(after_bias, before_bias, rtol=0, atol=float(np.max(after_scales + before_scales)))
    assert all(np.array_equal(a, b) for a, b in zip(kept, untouched, strict=True))
    assert (transfer.carried, transfer.convolutions, transfer.learned) == (1, 2, 1) and transfer.worst_rtol < 0.05
    noise = LearnedConv(rng.integers(-63, 64, size=codes.shape).astype(np.int8), scales, (1, 8, 8, 8))
    with pytest.raises(RuntimeError, match="none of the TFLite model's 2 convolutions matched"):
        apply_learned_weights(converted, [noise])


def test_score_floor_moves_only_the_score_logits_ranges() -> None:
    from ai_edge_litert.interpreter import Interpreter

    calibrated = _calibrated_tflite(scores_out=True)
    ops = Interpreter(model_content=calibrated)._get_ops_details()
    sigmoid_in = {int(o["inputs"][0]) for o in ops if o["op_name"] == "LOGISTIC"}
    swish_in = {i for i in sigmoid_in if any(o["op_name"] == "MUL" and i in o["inputs"] for o in ops)}
    (score_in,) = sigmoid_in - swish_in
    head_outputs = {int(o["outputs"][0]) for o in ops if o["op_name"] == "CONV_2D"} - swish_in
    before, after = _ranges(calibrated), _ranges(floor_score_logits(calibrated, -3.0))
    assert before[score_in][0] < -3.0 and after[score_in] == (-3.0, before[score_in][1])
    changed = {i for i in before if after[i] != before[i]}
    # the sigmoid's input, and back through the concat and reshapes to both heads' convolution outputs
    assert {score_in} | head_outputs <= changed and len(head_outputs) == 2
    assert all(after[i][0] == -3.0 for i in changed) and not changed & swish_in
    with pytest.raises(ValueError, match="below 0"):
        floor_score_logits(calibrated, 0.5)


def test_score_floor_refuses_a_graph_without_a_score_sigmoid() -> None:
    with pytest.raises(ValueError, match="no score sigmoid"):
        floor_score_logits(_calibrated_tflite(scores_out=False), -3.0)


def _conv_onnx(path: Path) -> None:
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    w2 = numpy_helper.from_array(np.random.default_rng(1).normal(size=(4, 4, 1, 1)).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv_bias", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["y", "w2"], ["z"], name="conv_plain")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 8, 8])], [w, b, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def test_float_fallback_names_reach_the_openvino_convolutions(tmp_path: Path) -> None:
    import openvino as ov

    from quantize.openvino_int8 import openvino_names

    path = tmp_path / "convs.onnx"
    _conv_onnx(path)
    model = ov.Core().read_model(str(path))
    types = {op.get_friendly_name(): op.get_type_name() for op in model.get_ops()}
    names = openvino_names(model, {"conv_bias": ["y"], "conv_plain": ["z"]})
    assert "Convolution" in {types[n] for n in names if n.startswith("conv_bias")}
    assert "Convolution" in {types[n] for n in names if not n.startswith("conv_bias")}
    with pytest.raises(ValueError, match="not in the OpenVINO model"):
        openvino_names(model, {"no_such_conv": ["q"]})
