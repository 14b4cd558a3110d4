"""``Detector``: one exported artifact -> boxes in the caller's image pixels.

Everything the pipeline needs (input layout, quantization, anchors, class names, thresholds)
comes from the manifest, checked against the artifact once at load time, so inference is
just pre-process -> backend -> post-process with no guessing.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .anchors import generate_anchors
from .backends import Backend, open_backend
from .contract import PostprocessSpec, Quantization
from .cpu_class import cpu_class_warning
from .manifest import (
    ANDROID_OUTPUTS,
    IN_GRAPH_NMS,
    INTEGER_DTYPES,
    Manifest,
    ManifestError,
    check_against_backend,
    check_artifact,
    check_embedded_agrees,
    gate_warning,
    load_manifest,
)
from .postprocess import Detections, from_detection_op, postprocess
from .preprocess import ImageError, Letterbox, preprocess, quantize_input, read_image, to_layout


@dataclass(frozen=True)
class Result:
    """Detections for one image: ``boxes [K,4]`` xyxy in original-image pixels, best score first."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    labels: list[str]
    dataset_ids: list[int] | None = None  # the dataset's own id of each class (COCO category id), where known

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def to_dicts(self) -> list[dict[str, Any]]:
        """JSON-ready ``[{"box", "score", "class_id", "label"}]``, plus ``"dataset_id"`` (e.g. the COCO category
        id) when the model was trained on a dataset that has its own ids."""
        ids = self.dataset_ids if self.dataset_ids is not None else [None] * len(self.labels)
        return [{"box": [round(float(v), 2) for v in box], "score": round(float(score), 5), "class_id": int(cid),
                 "label": label, **({"dataset_id": did} if did is not None else {})}
                for box, score, cid, label, did in zip(self.boxes, self.scores, self.class_ids, self.labels, ids)]


def _dequantize(value: np.ndarray, quant: Quantization | None, field: str) -> np.ndarray:
    if value.dtype.name in INTEGER_DTYPES:
        if not quant:
            raise ManifestError(f"manifest field '{field}.quantization' is needed to read {value.dtype} outputs")
        return (value.astype(np.float32) - np.float32(quant.zero_point)) * np.float32(quant.scale)
    return value.astype(np.float32, copy=False)


class UngatedArtifactWarning(UserWarning):
    """The artifact's own manifest says its parity gate failed, could not be measured, or never ran."""


class CpuClassWarning(UserWarning):
    """An int8 artifact runs on another int8 CPU class than the one its parity gate ran on."""


class Detector:
    """Load an ``.onnx``/``.xml``/``.tflite`` artifact and its manifest once; call it on images.

    Safe to share between threads (a camera thread and a UI thread may call one instance): onnxruntime
    sessions are thread-safe, OpenVINO gets one infer request per thread, a TFLite interpreter is locked.

    ``threads``: CPU threads for the backend (default: all this process may use; at most 4 per CPU); an
    ``-android`` TFLite (detection op in its graph) always runs on one, see below.
    ``score_threshold`` overrides the manifest's. ``edgetpu`` loads the Coral delegate (TFLite only).
    ``backend_options`` go to the backend (e.g. ``{"allow_spinning": True}`` for onnxruntime).
    """

    def __init__(self, model_path: str | os.PathLike[str], threads: int | None = None,
                 score_threshold: float | None = None, edgetpu: bool = False,
                 backend_options: dict[str, Any] | None = None) -> None:
        self.model_path = Path(model_path)
        data = load_manifest(self.model_path)
        manifest = Manifest.from_dict(data)
        check_artifact(data, self.model_path)
        self.manifest = manifest
        if manifest.in_graph_nms:
            # ai-edge-litert 2.1.0's TFLite_Detection_PostProcess (regular NMS) loses detections with more than
            # one interpreter thread (D0 at 256: 89 instead of 100 rows on one image, the dropped ones also in
            # the FP32 reference, MediaPipe and TF's interpreter); one thread gives exactly theirs.
            threads = 1
        self.backend: Backend = open_backend(self.model_path, threads, precision=manifest.precision,
                                             inference_precision=manifest.inference_precision, edgetpu=edgetpu,
                                             options=backend_options)
        check_embedded_agrees(data, self.backend.embedded_manifest(), self.model_path)
        warning = gate_warning(data, self.model_path)
        if warning:
            warnings.warn(warning, UngatedArtifactWarning, stacklevel=2)
        warning = cpu_class_warning(data, self.model_path)
        if warning:
            warnings.warn(warning, CpuClassWarning, stacklevel=2)
        check_against_backend(manifest, self.backend)
        self.contract = manifest.contract
        self.anchors = generate_anchors(self.contract.anchors)
        self.class_names: list[str] = list(manifest.class_names)
        self.dataset_class_ids: list[int] | None = list(manifest.class_ids) if manifest.class_ids else None
        self.in_graph_nms = manifest.in_graph_nms
        # Post-processing here; an Android file's own detection op (in_graph) already ran in the graph.
        self.post_spec: PostprocessSpec = self.contract.postprocess.replace(in_graph=None)
        if score_threshold is not None:
            if not 0 <= score_threshold < 1:
                raise ValueError(f"score_threshold must lie in [0, 1), got {score_threshold}")
            self.post_spec = self.post_spec.replace(score_threshold=float(score_threshold))
        self.input_spec = manifest.input
        self.input_shape = self.input_spec.shape
        self._output_quant = self._output_quantization()

    def _output_quantization(self) -> dict[str, Quantization | None]:
        """Manifest quantization first; the artifact's own parameters where the manifest has none."""
        actual = {d[0]: Quantization.from_dict(d[3]) for d in self.backend.output_details()}
        return {key: spec.quantization or actual.get(spec.name) for key, spec in self.manifest.outputs.items()}

    engine = "runtime"  # who runs the file (runtime.bench.ENGINES)

    @property
    def threads(self) -> int:
        return int(getattr(self.backend, "threads", 0))

    @property
    def engine_name(self) -> str:
        return self.backend.name

    @property
    def inference_precision(self) -> str:
        return self.backend.precision

    def preprocess_image(self, image: np.ndarray, color: str = "bgr") -> tuple[np.ndarray, Letterbox]:
        """The artifact-ready input (layout, dtype, quantization per manifest) and the letterbox to undo."""
        hwc, box = preprocess(image, self.contract.preprocess, input_color=color)
        return self._to_input(hwc), box

    def _to_input(self, x: np.ndarray) -> np.ndarray:
        if x.ndim == 3:
            x = to_layout(x, self.input_spec.layout)
        if tuple(x.shape) != self.input_shape:
            raise ValueError(f"input tensor shape {tuple(x.shape)} does not match the artifact's {self.input_shape} "
                             f"({self.input_spec.layout}); pass the HxWx3 output of runtime.preprocess or a "
                             "tensor in the artifact's layout")
        dtype = self.input_spec.dtype
        if x.dtype.kind in "iub" and x.dtype.name != dtype:
            raise ValueError(f"input tensor dtype {x.dtype} does not match the artifact's {dtype}; pass float32")
        if dtype in INTEGER_DTYPES and x.dtype.name != dtype:
            quant = self.input_spec.quantization
            return quantize_input(x, quant.scale, quant.zero_point, dtype)
        return np.ascontiguousarray(x, dtype=np.dtype(dtype))

    def infer_raw(self, input_tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw network outputs ``(logits [A,C], deltas [A,4])`` as float32, dequantised where the artifact is integer.

        ``input_tensor``: from :meth:`preprocess_image`, a float tensor in the artifact's layout (quantised
        here if the artifact takes integers) or the ``HxWx3`` float output of ``runtime.preprocess``.
        """
        if self.in_graph_nms:
            raise ValueError(f"{self.model_path.name} post-processes in its graph ({IN_GRAPH_NMS}): it has no raw "
                             "outputs; call the detector, or use the artifact without the -android suffix")
        outputs = self.backend.run(self._to_input(np.asarray(input_tensor)))
        names = self.manifest.outputs
        logits = _dequantize(outputs[names["logits"].name], self._output_quant["logits"], "outputs.logits")
        deltas = _dequantize(outputs[names["box_regression"].name], self._output_quant["box_regression"],
                             "outputs.box_regression")
        return logits.reshape(logits.shape[-2:]), deltas.reshape(deltas.shape[-2:])

    def infer_detections(self, input_tensor: np.ndarray, spec: PostprocessSpec | None = None) -> Detections:
        """Detections in network-input pixels (unclipped), post-processed by ``spec`` (default: the manifest's).

        Works for both forms of artifact: raw outputs post-processed here, or the detection op in the graph
        (whose own score threshold is the floor ``spec`` can lower to).
        """
        spec = spec or self.post_spec
        if self.in_graph_nms:
            names = self.manifest.outputs
            outputs = self.backend.run(self._to_input(np.asarray(input_tensor)))
            return from_detection_op(*(outputs[names[k].name] for k in ANDROID_OUTPUTS), self.contract.input_size,
                                     spec)
        logits, deltas = self.infer_raw(input_tensor)
        return postprocess(logits, deltas, self.anchors, spec, self.contract.box_coding)

    def _result(self, dets: Detections, box: Letterbox) -> Result:
        """Map to original pixels; drop boxes that lie wholly in the letterbox padding (empty once clipped)."""
        boxes = box.to_original(dets.boxes)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        names = self.class_names
        class_ids = dets.class_ids[keep]
        labels = [names[c] if 0 <= c < len(names) else str(c) for c in class_ids.tolist()]
        own = self.dataset_class_ids
        dataset_ids = [own[c] for c in class_ids.tolist()] if own else None
        return Result(boxes[keep], dets.scores[keep], class_ids, labels, dataset_ids)

    def timed(self, image: np.ndarray, color: str = "bgr") -> tuple[Result, dict[str, float]]:
        """Detect and report the milliseconds spent in pre-processing, inference and post-processing."""
        t0 = time.perf_counter()
        x, box = self.preprocess_image(image, color)
        t1 = time.perf_counter()
        if self.in_graph_nms:  # inference and post-processing are one graph: timed as inference
            dets = self.infer_detections(x)
            t2 = time.perf_counter()
        else:
            logits, deltas = self.infer_raw(x)
            t2 = time.perf_counter()
            dets = postprocess(logits, deltas, self.anchors, self.post_spec, self.contract.box_coding)
        result = self._result(dets, box)
        t3 = time.perf_counter()
        return result, {"pre_ms": (t1 - t0) * 1e3, "infer_ms": (t2 - t1) * 1e3, "post_ms": (t3 - t2) * 1e3}

    def __call__(self, image: np.ndarray, color: str = "bgr") -> Result:
        """Detections for a ``HxW``/``HxWxC`` image (BGR by default, as OpenCV reads it; ``color="rgb"`` else)."""
        return self.timed(image, color)[0]

    def detect_file(self, path: str | os.PathLike[str]) -> Result:
        """Read an image file (raises :class:`ImageError` if unreadable) and detect."""
        return self(read_image(str(path)))


__all__ = ["CpuClassWarning", "Detector", "ImageError", "ManifestError", "Result", "UngatedArtifactWarning"]
