"""Per-layer quantization sensitivity: which layers lose the most when quantized *alone*.

For every Conv/Gemm/MatMul node of the FP32 ONNX, a copy of the model gets int8 on that node only —
its weight fake-quantized per output channel (symmetric int8) and its activation input passed through
a uint8 QuantizeLinear/DequantizeLinear pair with the calibrated range — and onnxruntime runs it on
calibration images. The score is the SNR (dB) of each raw output against the FP32 model; lowest
first = most sensitive. Activation ranges come from onnxruntime's own min-max calibrator, the same
statistics its quantizer uses. Names are ONNX node names, which is what the mixed-precision fallback
passes to onnxruntime (``nodes_to_exclude``) and NNCF (``IgnoredScope``; OpenVINO keeps ONNX node
names as operation names).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper
from tqdm import tqdm

from calib_data import CalibrationSet

OP_TYPES = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class LayerSensitivity:
    """One node quantized alone: its name and op, and the SNR (dB) of each model output vs FP32."""

    node: str
    op_type: str
    snr_db: dict[str, float]

    @property
    def worst_snr_db(self) -> float:
        return min(self.snr_db.values())

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "op_type": self.op_type, "worst_snr_db": round(self.worst_snr_db, 2),
                "snr_db": {k: round(v, 2) for k, v in self.snr_db.items()}}


def activation_ranges(model: onnx.ModelProto, calib: CalibrationSet, count: int) -> dict[str, tuple[float, float]]:
    """Min/max of every node input over ``count`` calibration images (onnxruntime's MinMax calibrator)."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    from .onnx_int8 import CalibrationReader

    with tempfile.TemporaryDirectory(prefix="sensitivity-") as tmp:
        path = Path(tmp) / "fp32.onnx"
        path.write_bytes(model.SerializeToString())
        calibrator = create_calibrator(path, list(OP_TYPES), augmented_model_path=str(Path(tmp) / "aug.onnx"),
                                       calibrate_method=CalibrationMethod.MinMax)
        calibrator.collect_data(CalibrationReader(calib, model.graph.input[0].name, min(count, len(calib))))
        data = calibrator.compute_data()
        return {name: (float(np.min(d.range_value[0])), float(np.max(d.range_value[1]))) for name, d in data.items()}


def _fake_quant_weight(w: np.ndarray) -> np.ndarray:
    flat = w.reshape(w.shape[0], -1)
    scale = np.abs(flat).max(axis=1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    return (np.clip(np.round(flat / scale), -127, 127) * scale).reshape(w.shape).astype(w.dtype)


def _uint8_qparams(lo: float, hi: float) -> tuple[float, int]:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0 or 1.0
    return scale, int(np.clip(round(-lo / scale), 0, 255))


def quantize_one(model: onnx.ModelProto, node_index: int, ranges: dict[str, tuple[float, float]]) -> onnx.ModelProto:
    """A copy of ``model`` with only node ``node_index`` in int8 (weight and activation input)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    node = out.graph.node[node_index]
    inits = {t.name: t for t in out.graph.initializer}
    if len(node.input) > 1 and node.input[1] in inits:
        w = inits[node.input[1]]
        w.CopyFrom(numpy_helper.from_array(_fake_quant_weight(numpy_helper.to_array(w)), w.name))
    src = node.input[0]
    if src in ranges:
        scale, zp = _uint8_qparams(*ranges[src])
        s, z = f"{node.name}__sens_scale", f"{node.name}__sens_zp"
        out.graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), s),
                                      numpy_helper.from_array(np.array(zp, np.uint8), z)])
        q, dq = f"{src}__sens_q", f"{src}__sens_dq"
        nodes = list(out.graph.node)
        nodes.insert(node_index, helper.make_node("DequantizeLinear", [q, s, z], [dq], name=f"{node.name}__sens_dql"))
        nodes.insert(node_index, helper.make_node("QuantizeLinear", [src, s, z], [q], name=f"{node.name}__sens_ql"))
        node.input[0] = dq
        del out.graph.node[:]
        out.graph.node.extend(nodes)
    return out


def _session(model: onnx.ModelProto) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])


def _snr(ref: np.ndarray, out: np.ndarray) -> float:
    err = float(((out.astype(np.float64) - ref) ** 2).sum())
    sig = float((ref.astype(np.float64) ** 2).sum())
    return 10 * math.log10(sig / err) if err > 0 else 200.0


def layer_sensitivity(model: onnx.ModelProto, calib: CalibrationSet, images: int = 8, range_images: int = 32,
                      progress: bool = True) -> list[LayerSensitivity]:
    """Every quantizable node of the FP32 ``model``, most sensitive (lowest output SNR) first."""
    ranges = activation_ranges(model, calib, range_images)
    name = model.graph.input[0].name
    feeds = [{name: calib.nchw(i)} for i in range(min(images, len(calib)))]
    ref_sess = _session(model)
    out_names = [o.name for o in ref_sess.get_outputs()]
    refs = [ref_sess.run(out_names, f) for f in feeds]
    result = []
    nodes = [(i, n) for i, n in enumerate(model.graph.node) if n.op_type in OP_TYPES]
    for index, node in tqdm(nodes, desc="layer sensitivity", unit="layer", disable=not progress):
        sess = _session(quantize_one(model, index, ranges))
        outs = [sess.run(out_names, f) for f in feeds]
        snr = {o: _snr(np.concatenate([r[k].ravel() for r in refs]), np.concatenate([x[k].ravel() for x in outs]))
               for k, o in enumerate(out_names)}
        result.append(LayerSensitivity(node.name, node.op_type, snr))
    return sorted(result, key=lambda s: s.worst_snr_db)


def fallback_layers(ranking: Sequence[LayerSensitivity], count: int, keep_int8: Iterable[str] = ()) -> list[str]:
    """The ``count`` most sensitive nodes of ``ranking`` to keep in float, passing over ``keep_int8`` (the
    pixel-input form's folded stem, whose int8 input is that form's point: the next layer is taken instead)."""
    skip = set(keep_int8)
    return [s.node for s in ranking if s.node not in skip][:count]
