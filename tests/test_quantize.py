"""Fast checks of the quantization building blocks: the QAT distillation loss, the TFLite percentile cut,
and the mapping of float-fallback layers onto OpenVINO ops (end-to-end int8 runs are in test_int8.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from quantize.distill import distillation_loss
from quantize.qat import QatConfig
from quantize.tflite_int8 import _cut


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


def test_percentile_cut_drops_the_tails_evenly() -> None:
    edges = np.linspace(-1.0, 9.0, 101)
    hist = np.zeros(100, np.int64)
    hist[10:20] = 1000  # the bulk in [0, 1)
    hist[99] = 1  # one outlier at the top
    lo, hi = _cut(hist, edges, 99.9)
    assert lo == pytest.approx(0.0) and hi == pytest.approx(1.0)
    assert _cut(hist, edges, 100.0) == (pytest.approx(0.0), pytest.approx(9.0))
    assert _cut(np.zeros(100, np.int64), edges, 99.9) == (-1.0, 9.0)


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
