"""How far int8 rounding alone moves a model's mAP (convert/rounding_noise.py, benchmarks/rounding_noise.py): the
draws move each value by at most half a code, are seeded, and are scored exactly as the evaluation scores."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import rounding_noise as bench
from convert.rounding_noise import KINDS, ROUNDED, RoundingNoise, jittered_weights, rounded_weights, weight_step
from efficientdet.checkpoint import save_checkpoint
from efficientdet.data.loader import load_dataset
from efficientdet.data.records import DetectionDataset
from efficientdet.data.synthetic import CLASS_NAMES, generate_synthetic
from efficientdet.evaluate import evaluate_model, torch_predict
from efficientdet.model.config import make_config
from efficientdet.model.detector import EfficientDet
from efficientdet.train.batches import DetectionBatches
from runtime.anchors import generate_anchors
from runtime.contract import DEFAULT_POSTPROCESS
from runtime.fileio import file_sha256
from tests.conftest import detector_like_model_for

CONFIG = make_config("0", "lite", num_classes=len(CLASS_NAMES), class_names=CLASS_NAMES, input_size=128)


def _convs(model: torch.nn.Module) -> list[torch.Tensor]:
    return [m.weight.detach() for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


def test_jittered_weights_move_each_weight_by_at_most_half_its_int8_step() -> None:
    torch.manual_seed(0)
    model = EfficientDet(CONFIG).eval()
    before = [w.clone() for w in _convs(model)]
    moved = _convs(jittered_weights(model, seed=3))
    for w0, w1 in zip(before, moved):
        step = weight_step(w0)
        assert ((w1 - w0).abs() <= step / 2 * (1 + 1e-3)).all()
    share = torch.cat([((w1 - w0).abs() / weight_step(w0)).flatten() for w0, w1 in zip(before, moved)])
    assert 0.2 < float(share.mean()) < 0.3  # uniform over ±half a step: mean |move| a quarter step, not a no-op
    assert all(torch.equal(a, b) for a, b in zip(moved, _convs(jittered_weights(model, seed=3))))  # seeded
    assert not torch.equal(moved[0], _convs(jittered_weights(model, seed=4))[0])
    assert all(torch.equal(a, b) for a, b in zip(before, _convs(model)))  # the model itself is left alone


def test_rounded_weights_sit_on_their_nearest_int8_code() -> None:
    torch.manual_seed(0)
    model = EfficientDet(CONFIG).eval()
    for w0, w1 in zip(_convs(model), _convs(rounded_weights(model))):
        codes = w1 / weight_step(w0)
        assert torch.allclose(codes, codes.round(), atol=1e-3) and int(codes.abs().max().round()) == 127
        assert ((w1 - w0).abs() <= weight_step(w0) / 2 * (1 + 1e-3)).all()  # float32 rounding of w / step


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A random detector and a split labelled with its own confident detections: FP32 scores (nearly) 1.0 on it, so
    whatever a rounding draw costs shows in the mAP (on the synthetic labels a random model scores 0 either way)."""
    root = tmp_path_factory.mktemp("rounding-noise")
    data = generate_synthetic(root / "data", num_train=2, num_val=6, image_size=128)
    synthetic = load_dataset(data, "val", class_names=list(CLASS_NAMES))
    batches = DetectionBatches(synthetic, CONFIG.preprocess, CONFIG.anchor_spec)
    model = detector_like_model_for(CONFIG, torch.stack([batches[i][0] for i in range(len(batches))]))
    own = torch_predict(model, synthetic, CONFIG.preprocess, generate_anchors(CONFIG.anchor_spec),
                        DEFAULT_POSTPROCESS, progress=False)
    records = [dataclasses.replace(r, boxes=d.boxes.astype(np.float32), labels=d.class_ids.astype(np.int64))
               for r, d in zip(synthetic.records, own)]
    assert sum(len(r.boxes) for r in records) >= len(records)
    return {"root": root, "data": data, "model": model, "synthetic": synthetic,
            "own": dataclasses.replace(synthetic, records=records)}


def test_each_draw_is_seeded_and_scored_as_the_evaluation_scores(setup: dict) -> None:
    model, dataset = setup["model"], setup["own"]
    noise = RoundingNoise(model, CONFIG.contract(), dataset)
    assert noise.map_ref > 0.9
    assert noise.map_ref == evaluate_model(model, dataset, CONFIG.preprocess, noise.anchors, progress=False)["map"]
    draws = {kind: noise.draw(kind, seed=0) for kind in KINDS}
    for kind, d in draws.items():
        assert d.kind == kind and 0.0 < d.logits_rel_l2 < 0.2 and 0.0 < d.boxes_rel_l2 < 0.5, d
        assert 0.0 <= d.map <= 1.0
    # the input draw leaves the weights alone and the weight draw the input: together they move the outputs more
    assert draws["input+weights"].logits_rel_l2 > max(draws["input"].logits_rel_l2,
                                                      draws["weights"].logits_rel_l2)
    assert noise.draw("weights", seed=0) == draws["weights"]  # seeded: the table repeats
    assert noise.draw("weights", seed=1).logits_rel_l2 != draws["weights"].logits_rel_l2
    rounded = noise.rounded()
    assert rounded.kind == ROUNDED and rounded.seed is None
    assert rounded.map == evaluate_model(rounded_weights(model), dataset, CONFIG.preprocess, noise.anchors,
                                         progress=False)["map"]
    with pytest.raises(ValueError, match="unknown rounding kind 'bits'"):
        noise.draw("bits", seed=0)


def test_an_unlabelled_split_is_refused_with_its_name(setup: dict) -> None:
    unlabelled: DetectionDataset = dataclasses.replace(setup["own"], labelled=False)
    with pytest.raises(ValueError, match=r"has no labels.*labelled evaluation split"):
        RoundingNoise(setup["model"], CONFIG.contract(), unlabelled)


def _report(ckpt_sha: str) -> dict:
    """The fields of a ``python -m convert`` report.json that the benchmark reads, for one post-training and one
    QAT file."""
    def artifact(precision: str, delta: float, seed: int | None) -> dict:
        return {"target": "onnx", "precision": precision,
                "quantization": {"qat": {"seed": seed}} if seed is not None else {},
                "parity": {"map_delta": delta, "outputs": {"logits": {"rel_l2": 0.03},
                                                           "box_regression": {"rel_l2": 0.1}}}}
    return {"checkpoint_sha256": ckpt_sha,
            "artifacts": [artifact("int8", 0.004, None), artifact("int8-qat", -0.002, 1),
                          {"target": "onnx", "precision": "fp32", "quantization": {}, "parity": {"map_delta": 0.0}}]}


def test_the_benchmark_writes_its_table_and_plot_and_refuses_another_models_report(setup: dict,
                                                                                   tmp_path: Path) -> None:
    ckpt = tmp_path / "model.pt"
    state = setup["model"].state_dict()
    save_checkpoint(ckpt, {"config": CONFIG.to_dict(), "model": state, "ema": state, "epoch": 0, "step": 0})
    other = tmp_path / "other.json"
    other.write_text(json.dumps(_report("0" * 64)))
    with pytest.raises(ValueError, match="its checkpoint is not the one measured here"):
        bench.main(["--ckpt", str(ckpt), "--data", str(setup["data"]), "--split", "val", "--draws", "2",
                    "--reports", str(other), "--out", str(tmp_path / "never")])
    assert not list(tmp_path.glob("never*"))  # refused before anything was measured or written
    mine = tmp_path / "report.json"
    mine.write_text(json.dumps(_report(file_sha256(ckpt))))
    out = tmp_path / "results" / "noise"
    assert bench.main(["--ckpt", str(ckpt), "--data", str(setup["data"]), "--split", "val", "--draws", "2",
                       "--reports", str(mine), str(mine), "--out", str(out), "--command", "make noise"]) == 0
    doc = json.loads(out.with_suffix(".json").read_text())
    assert list(doc["summary"]) == [*KINDS, ROUNDED]
    assert [d["kind"] for d in doc["draws"]] == [k for k in KINDS for _ in range(2)] + [ROUNDED]
    for kind, s in doc["summary"].items():
        deltas = [100 * (d["map"] - doc["map_ref"]) for d in doc["draws"] if d["kind"] == kind]
        assert s["draws"] == len(deltas) and s["mean"] == pytest.approx(np.mean(deltas))
    # the repeated report counts once; the float file is not an int8 file
    assert [(f["precision"], f["qat_seed"], round(f["map_delta_points"], 6)) for f in doc["files"]] == [
        ("int8", None, 0.4), ("int8-qat", 1, -0.2)]
    md = out.with_suffix(".md").read_text()
    assert "make noise" in md and "| onnx int8-qat seed 1 | -0.20 |" in md and "2 files all within ±0.3" in md
    assert out.with_suffix(".png").stat().st_size > 5000
    assert "files all within" not in bench.markdown({**doc, "files": []}, "noise.png")  # no files, no such column
