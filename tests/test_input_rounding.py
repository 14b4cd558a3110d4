"""The FP32 model against itself under the int8 input quantizer's rounding (convert/input_rounding.py): the reading
an int8 artifact's detection match is held against, measured beside every int8 gate and shown in its verdict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from convert.field import field_images
from convert.gates import FAIL, gate_for, verdict
from convert.input_rounding import HALF_STEP_GREY, rounded_input
from convert.parity import run_parity
from convert.report import markdown
from efficientdet.data.loader import load_dataset
from efficientdet.data.records import DetectionDataset
from efficientdet.data.synthetic import CLASS_NAMES, generate_synthetic
from efficientdet.model.config import make_config
from efficientdet.train.batches import DetectionBatches
from runtime.contract import PreprocessSpec
from runtime.preprocess import preprocess, read_image
from tests.conftest import detector_like_model_for

CONFIG = make_config("0", "lite", num_classes=len(CLASS_NAMES), class_names=CLASS_NAMES, input_size=128)


def test_rounding_moves_every_value_by_at_most_half_a_grey_level() -> None:
    spec = PreprocessSpec(input_size=64)
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    x, _ = preprocess(image, spec)
    moved = rounded_input(x, spec, np.random.default_rng(1))
    grey = (moved - x) * np.asarray(spec.std, np.float32)  # back in grey levels, per channel
    assert moved.dtype == np.float32 and moved.shape == x.shape
    assert np.abs(grey).max() <= HALF_STEP_GREY + 1e-3
    assert np.abs(grey).mean() > 0.2  # uniform over ±0.5: mean |move| 0.25, not a no-op
    assert np.array_equal(moved, rounded_input(x, spec, np.random.default_rng(1)))  # seeded: the report repeats


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, DetectionDataset]:
    data = generate_synthetic(tmp_path_factory.mktemp("rounding") / "data", num_train=2, num_val=6, image_size=128)
    dataset = load_dataset(data, "val", class_names=list(CLASS_NAMES))
    batches = DetectionBatches(dataset, CONFIG.preprocess, CONFIG.anchor_spec)
    model = detector_like_model_for(CONFIG, torch.stack([batches[i][0] for i in range(len(batches))]))
    return model, dataset


def test_parity_measures_the_models_own_stability_on_split_and_field(setup: tuple) -> None:
    model, dataset = setup
    field = field_images(dataset)
    reference, entries, _ = run_parity(model, CONFIG.contract(), dataset, [], field=field, input_rounding=True)
    own = reference.input_rounding
    assert entries == [] and own["half_step_grey"] == HALF_STEP_GREY
    assert own["det_match_iou"] == gate_for("int8").det_match_iou
    assert own["split"]["num_images"] == len(dataset.records) and own["field"]["num_images"] == len(field)
    assert own["split"]["num_detections_ref"] == sum(len(d) for d in reference.detections) > 0
    # this model's scores clear the threshold with a margin (tests/conftest.py), so half a grey level moves none
    # of its split detections; a perturbation in normalised units instead of grey levels (x30) would
    assert own["split"]["det_match"] == own["split"]["det_match_reverse"] == 1.0
    # float-only comparisons do not spend the extra pass
    assert run_parity(model, CONFIG.contract(), dataset, [])[0].input_rounding is None


def _parity(split: float, field: float, own: dict | None) -> dict:
    p = {"outputs": {}, "det_match": split, "det_match_reverse": split, "map_delta": 0.0, "map": 0.5,
         "map_ref": 0.5, "num_detections_ref": 300, "num_images": 100, "rel_err": None, "snr_db": None,
         "pearson": None, "map50": 0.8, "input_clipped": 0.0,
         "field": {"det_match": field, "det_match_reverse": 0.97, "num_detections_ref": 200, "num_images": 60,
                   "input_clipped": 0.0, "by_kind": {"dark": {"det_match": field, "num_detections_ref": 20}}}}
    if own:
        p["fp32_input_rounding"] = own["split"]
        p["field"]["fp32_input_rounding"] = own["field"]
    return p


def test_a_failed_match_is_shown_beside_the_models_own(tmp_path: Path) -> None:
    own = {"half_step_grey": 0.5, "det_match_iou": 0.5,
           "split": {"det_match": 0.95, "det_match_reverse": 0.968, "num_detections_ref": 844, "num_images": 72},
           "field": {"det_match": 0.926, "det_match_reverse": 0.908, "num_detections_ref": 457, "num_images": 60}}
    status, failures = verdict(_parity(0.85, 0.80, own), gate_for("int8"))
    assert status == FAIL and len(failures) == 3  # split both ways, field forward
    assert all("FP32 itself keeps" in f for f in failures)
    assert "FP32 itself keeps 92.6% / 90.8%" in failures[-1] and failures[-1].startswith("field:")
    # a report made without the reading (float gates, older exports) says nothing of it
    assert not any("FP32 itself" in f for f in verdict(_parity(0.85, 0.80, None), gate_for("int8"))[1])
    entry = {"target": "tflite", "precision": "int8", "size_bytes": 4_000_000, "path": "x.tflite",
             "parity": _parity(0.85, 0.80, own), "gate": {"status": FAIL, "failures": failures}}
    report = {"model": "m", "checkpoint": "c", "checkpoint_sha256": "0" * 64, "data": "d", "split": "val",
              "num_images": 100, "map_ref": 0.5, "artifacts": [entry], "gates": {"int8": gate_for("int8").to_dict()},
              "fp32_input_rounding": own}
    text = markdown(report)
    assert "evaluation images 95.0% / 96.8%, field 92.6% / 90.8% of its detections kept" in text
    assert "FP32 against itself" not in markdown({**report, "fp32_input_rounding": None})


@pytest.fixture(scope="module")
def ranged(setup: tuple, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    from calib_data import build_calibration_set
    from convert.activation_rounding import activation_ranges

    model, dataset = setup
    train = load_dataset(dataset.source, "train", class_names=list(CLASS_NAMES))
    calib = build_calibration_set(train, CONFIG.preprocess, tmp_path_factory.mktemp("calib") / "set", n=2)
    return model, dataset, activation_ranges(model, calib)


def test_activation_ranges_are_the_tensors_an_int8_file_quantizes(ranged: tuple) -> None:
    """Every activation's output gets a range holding zero; a convolution's or BatchNorm's own only where no module
    the converters fuse into it reads it (BN folds into the convolution, ReLU6 into the layer's output quantizer:
    the Lite model's only tensor there is the ReLU6's; a range of its BN output, ±30 where ReLU6 keeps 0-6, gave
    steps 5-10 times too wide, and its FP32 model kept 50-67 % of its own detections instead of what its files
    match)."""
    model, _, ranges = ranged
    modules = dict(model.named_modules())
    kinds = {type(modules[n]).__name__ for n in ranges.ranges}
    assert {"ReLU6", "BatchNorm2d", "Conv2d"} <= kinds  # a BN read by an Add only (MBConv projection) stays
    assert all(low <= 0.0 <= high and high > low for low, high in ranges.ranges.values())
    assert "backbone.stem.act" in ranges.ranges
    assert "backbone.stem.conv" not in ranges.ranges and "backbone.stem.bn" not in ranges.ranges
    assert "class_net.predict.pointwise" in ranges.ranges  # nothing fused after the last convolution
    relu6 = [r for n, r in ranges.ranges.items() if isinstance(modules[n], torch.nn.ReLU6)]
    assert relu6 and all(high <= 6.0 for _, high in relu6)


@torch.no_grad()
def test_activation_rounding_moves_each_tensor_by_at_most_half_its_step(ranged: tuple) -> None:
    from convert.activation_rounding import rounded_activations

    model, dataset, ranges = ranged
    x = torch.from_numpy(preprocess(read_image(dataset.records[0].path), CONFIG.preprocess)[0]
                         .transpose(2, 0, 1)[None].copy())
    stem = dict(model.named_modules())["backbone.stem.act"]
    seen: list[torch.Tensor] = []

    def capture() -> torch.utils.hooks.RemovableHandle:  # after the draw's own hook, so it sees the moved output
        return stem.register_forward_hook(lambda m, i, o: seen.append(o.clone()))

    handle = capture()
    before = model(x)
    handle.remove()
    with rounded_activations(model, ranges, seed=1):
        handle = capture()
        moved = model(x)
        handle.remove()
    with rounded_activations(model, ranges, seed=1):
        again = model(x)
    after = model(x)
    step = ranges.step("backbone.stem.act")
    first = (seen[1] - seen[0]).abs()  # the stem reads the clean input: only its own draw moves it
    assert float(first.max()) <= step / 2 + 1e-5 and float(first.mean()) > step / 8
    assert not torch.equal(moved[0], before[0]) and torch.equal(moved[0], again[0])  # moved, seeded
    assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1])  # the model itself untouched


def test_own_match_follows_the_step_size(ranged: tuple) -> None:
    """Steps of the ranges' size keep most of the model's detections; steps 300 times wider lose them: the reading
    measures the rounding, not a fixed verdict."""
    from convert.activation_rounding import ActivationRanges, own_match

    model, dataset, ranges = ranged
    images = [read_image(r.path) for r in dataset.records]
    iou = gate_for("int8").det_match_iou
    (own,) = own_match(model, CONFIG.contract(), images, ranges, iou)
    wide = ActivationRanges({n: (lo * 300, hi * 300) for n, (lo, hi) in ranges.ranges.items()})
    (lost,) = own_match(model, CONFIG.contract(), images, wide, iou)
    assert own["num_images"] == lost["num_images"] == len(images) and own["num_detections_ref"] > 0
    assert own["det_match"] >= 0.5 and lost["det_match"] < own["det_match"] - 0.3, (own, lost)


def test_the_benchmark_writes_both_readings_per_model(setup: tuple, tmp_path: Path) -> None:
    """``make bccd-input-rounding``'s command on a small model: each row holds the input reading and the seeded
    activation draws over split and field, and the table shows both."""
    from benchmarks import input_rounding as bench
    from efficientdet.checkpoint import save_checkpoint

    model, dataset = setup
    ckpt = tmp_path / "model.pt"
    state = model.state_dict()
    save_checkpoint(ckpt, {"config": CONFIG.to_dict(), "model": state, "ema": state, "epoch": 0, "step": 0})
    out = tmp_path / "table"
    data = Path(dataset.source).parents[1]  # the synthetic data folder (source: its annotations file)
    assert bench.main(["--ckpt", str(ckpt), "--data", str(data), "--split", "val", "--draws", "2",
                       "--out", str(out), "--command", "make bccd-input-rounding"]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    (row,) = result["models"]
    assert row["split"]["num_images"] == len(dataset.records) and row["field"]["num_images"] > 0
    act = row["activation_rounding"]
    assert act["draws"] == 2 and act["tensors"] > 50
    for where in ("split", "field"):
        assert len(act[where]) == 2 and act[where][0]["num_images"] == row[where]["num_images"]
        assert all(0.0 <= d["det_match"] <= 1.0 for d in act[where])
    table = out.with_suffix(".md").read_text()
    assert "activations: field images" in table and "make bccd-input-rounding" in table
    assert table.count("| efficientdet-") == 1


def test_parity_reads_the_activations_rounding_as_own_match_draws_it(ranged: tuple) -> None:
    """Given the calibration ranges, the gate's pass reads the FP32 model under its activations' rounding on the
    split and the field, the same seeded draw as :func:`own_match` (the benchmark's first), and hands it to every
    int8 comparison; without ranges (or without int8 gates) nothing is spent."""
    from convert.activation_rounding import own_match

    model, dataset, ranges = ranged
    field = field_images(dataset)
    reference, _, _ = run_parity(model, CONFIG.contract(), dataset, [], field=field, input_rounding=True,
                                 activations=ranges)
    steps = reference.activation_rounding
    iou = gate_for("int8").det_match_iou
    assert steps["tensors"] == len(ranges.ranges) and steps["range_images"] == ranges.images == 2
    assert steps["det_match_iou"] == iou
    (split,) = own_match(model, CONFIG.contract(), [read_image(r.path) for r in dataset.records], ranges, iou)
    (far,) = own_match(model, CONFIG.contract(), [f.image for f in field], ranges, iou)
    assert steps["split"] == split and steps["field"] == far
    assert split["num_images"] == len(dataset.records) and far["num_images"] == len(field)
    assert run_parity(model, CONFIG.contract(), dataset, [], input_rounding=True)[0].activation_rounding is None
    assert run_parity(model, CONFIG.contract(), dataset, [], activations=ranges)[0].activation_rounding is None


def _stepped(split: float, field: float) -> dict:
    return {"tensors": 300, "range_images": 64, "seed": 1, "det_match_iou": 0.5,
            "split": {"det_match": split, "det_match_reverse": split, "num_detections_ref": 844, "num_images": 72},
            "field": {"det_match": field, "det_match_reverse": 0.97, "num_detections_ref": 462, "num_images": 60}}


@pytest.mark.parametrize(("own_field", "says"), [
    (0.80, "under the bound already"),  # the rounding alone fails: a file must round better than it
    (0.867, "leaves a recipe little room"),  # the BCCD D0's reading: within 5 points, where clipping comes on top
    (0.95, None),  # the pretrained Lite0s' kind: the model holds, the recipe is what failed
])
def test_a_field_failure_says_when_the_model_itself_does_not_hold_8_bit_activations(own_field: float,
                                                                                 says: str | None) -> None:
    steps = _stepped(0.938, own_field)
    parity = _parity(0.95, 0.70, None)
    parity["fp32_activation_rounding"] = steps["split"]
    parity["field"]["fp32_activation_rounding"] = steps["field"]
    status, failures = verdict(parity, gate_for("int8"))
    assert status == FAIL and len(failures) == 1 and failures[0].startswith("field:")
    assert f"FP32 itself keeps {own_field:.1%} / 97.0% of its detections when every activation moves" in failures[0]
    for text in ("under the bound already", "leaves a recipe little room"):
        assert (text in failures[0]) == (text == says)
    assert ("where no recipe holds it, fine-tune the model with half its images under other light" in failures[0]
            and "ship a float file" in failures[0]) == (says is not None)
    # on the split the ranges fit: 93.8 % under the rounding alone is no verdict on a 90 % bound (the D0's files
    # match 94-98 % there), so only a reading under the bound itself names the model
    split_fail = _parity(0.85, 0.95, None)
    split_fail["fp32_activation_rounding"] = steps["split"]
    (forward, reverse) = verdict(split_fail, gate_for("int8"))[1]
    assert "93.8% / 93.8%" in forward and "bound" not in forward and "bound" not in reverse
    split_fail["fp32_activation_rounding"] = _stepped(0.88, own_field)["split"]
    assert all("under the bound already" in f for f in verdict(split_fail, gate_for("int8"))[1])
    report = {"model": "m", "checkpoint": "c", "checkpoint_sha256": "0" * 64, "data": "d", "split": "val",
              "num_images": 72, "map_ref": 0.5, "artifacts": [], "gates": {}, "fp32_activation_rounding": steps}
    assert ("each of its 300 activation tensors moved by up to half of its 8-bit step (ranges over 64 calibration "
            "images" in markdown(report))
    assert f"evaluation images 93.8% / 93.8%, field {own_field:.1%} / 97.0%" in markdown(report)
