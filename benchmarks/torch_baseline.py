"""The starting point users compare against: the trained PyTorch model in eager FP32 on the CPU.

It goes through the runtime's own pre- and post-processing (read from an exported artifact's manifest),
so the only difference from an artifact's row is the inference engine. ``python -m
benchmarks.torch_baseline`` measures it in a fresh process (load time and peak memory of torch itself).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from efficientdet.checkpoint import load_model
from runtime.anchors import generate_anchors
from runtime.bench import machine_info, peak_rss_mb, summarize, synthetic_image, time_calls
from runtime.detector import Result
from runtime.fileio import file_sha256
from runtime.manifest import Manifest, load_manifest
from runtime.postprocess import postprocess
from runtime.preprocess import preprocess, to_layout


class TorchDetector:
    """``timed(image)`` like :class:`runtime.Detector`, with the eager PyTorch model as the engine."""

    def __init__(self, ckpt: str | Path, manifest_of: str | Path, threads: int) -> None:
        self.manifest = Manifest.from_dict(load_manifest(Path(manifest_of)))
        self.contract = self.manifest.contract
        self.model, self.config = load_model(ckpt)
        self.threads = threads
        self.ckpt = Path(ckpt)
        self.anchors = generate_anchors(self.contract.anchors)

    def timed(self, image: np.ndarray) -> tuple[Any, dict[str, float]]:
        torch.set_num_threads(self.threads)
        t0 = time.perf_counter()
        x, box = preprocess(image, self.contract.preprocess)
        t1 = time.perf_counter()
        with torch.inference_mode():
            logits, deltas = self.model(torch.from_numpy(to_layout(x, "nchw")))
        t2 = time.perf_counter()
        dets = postprocess(logits[0].numpy(), deltas[0].numpy(), self.anchors, self.contract.postprocess,
                           self.contract.box_coding)
        boxes = box.to_original(dets.boxes)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        names = self.manifest.class_names
        result = Result(boxes[keep], dets.scores[keep], dets.class_ids[keep],
                        [names[c] for c in dets.class_ids[keep].tolist()])
        t3 = time.perf_counter()
        return result, {"pre_ms": (t1 - t0) * 1e3, "infer_ms": (t2 - t1) * 1e3, "post_ms": (t3 - t2) * 1e3}

    def row(self) -> dict[str, Any]:
        return {"name": "torch-fp32", "target": "pytorch", "precision": "fp32", "backend": "torch-eager",
                "inference_precision": "f32", "threads": self.threads, "model": str(self.ckpt),
                "sha256": file_sha256(self.ckpt), "size_bytes": self.ckpt.stat().st_size,
                "input_size": list(self.manifest.input.shape), "map": None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.torch_baseline", description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", required=True)
    p.add_argument("--manifest-of", required=True, help="an exported artifact whose pre/post-processing to use")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    det = TorchDetector(args.ckpt, args.manifest_of, args.threads)
    load_ms = (time.perf_counter() - t0) * 1e3
    row = det.row()
    row.update(summarize(time_calls(det, synthetic_image(), args.runs, args.warmup)), load_ms=load_ms,
               rss_mb=peak_rss_mb(), machine=machine_info())
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
