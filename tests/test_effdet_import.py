"""effdet checkpoint import, checked against fixtures that effdet 0.4.1 itself made (../shared/fixtures/effdet):
raw per-level outputs, anchors, detections, pre-processing, every wrapper effdet users have, and bad input."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from efficientdet.checkpoint import load_model
from efficientdet.cli import main as cli_main
from efficientdet.effdet_import import EffdetImportError, describe, import_effdet, read_effdet_checkpoint
from runtime.anchors import generate_anchors
from runtime.contract import PostprocessSpec
from runtime.postprocess import postprocess
from runtime.preprocess import preprocess
from tests.conftest import shared_dir

FIXTURES = shared_dir() / "fixtures" / "effdet"
MODELS = ("tf_efficientdet_d0", "efficientdet_d0", "tf_efficientdet_lite0")
# effdet's post-processing: top-5000 (row, class) candidates, per-class NMS at IoU 0.5, 100 kept, no threshold.
EFFDET_POST = PostprocessSpec(score_threshold=1e-6, iou_threshold=0.5, max_detections=100, pre_nms_top_k=5000)


def fixture(name: str) -> Path:
    folder = FIXTURES / name
    if not (folder / "state_dict.pt").is_file():
        pytest.skip(f"effdet fixtures not found at {folder} (set SHARED_DIR or provide ../shared/fixtures/effdet)")
    return folder


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("imported")
    paths = {}
    for name in MODELS:
        folder = fixture(name)
        paths[name] = out / f"{name}.pt"
        info = import_effdet(folder / "state_dict.pt", paths[name], input_size=256)
        assert info["arch"] == name  # inferred from the weights alone
    return paths


def _effdet_outputs(folder: Path, which: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per level, effdet's outputs in this project's layout: [HWA, C] logits, [HWA, 4] (dx, dy, dw, dh)."""
    cls = [np.load(folder / f"class_out_{i}_{which}.npy")[0].transpose(1, 2, 0).reshape(-1, 90) for i in range(5)]
    box = [np.load(folder / f"box_out_{i}_{which}.npy")[0].transpose(1, 2, 0).reshape(-1, 4)[:, [1, 0, 3, 2]]
           for i in range(5)]
    return cls, box


def _close(got: np.ndarray, want: np.ndarray, floor: float) -> tuple[bool, float, float]:
    rel = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    err = float(np.abs(got - want).max())
    return rel <= 1e-4 or err <= 10 * floor, rel, err


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("which", ["noise", "image"])
def test_raw_outputs_equal_effdets_level_by_level(imported: dict[str, Path], name: str, which: str) -> None:
    folder = fixture(name)
    floors = json.loads((folder / "meta.json").read_text())["numerics"][which]
    model, _ = load_model(imported[name])
    x = torch.from_numpy(np.load(folder / ("input.npy" if which == "noise" else "input_image.npy")))
    with torch.no_grad():
        logits, boxes = (t[0].numpy() for t in model(x))
    want_cls, want_box = _effdet_outputs(folder, which)
    start = 0
    for level, (c, b) in enumerate(zip(want_cls, want_box)):
        end = start + len(c)
        ok, rel, err = _close(logits[start:end], c, floors["class_out_max_abs_diff_fp32_vs_fp64"])
        assert ok, f"{name} {which} P{level + 3} class_out rel {rel:.2e}, max abs {err:.2e}"
        ok, rel, err = _close(boxes[start:end], b, floors["box_out_max_abs_diff_fp32_vs_fp64"])
        assert ok, f"{name} {which} P{level + 3} box_out rel {rel:.2e}, max abs {err:.2e}"
        start = end
    assert start == len(logits)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("which", ["noise", "image"])
def test_detections_equal_effdets_as_a_set(imported: dict[str, Path], name: str, which: str) -> None:
    """Anchors equal effdet's; the project's post-processing, configured like effdet's, keeps the same boxes."""
    folder = fixture(name)
    model, config = load_model(imported[name])
    anchors = generate_anchors(config.anchor_spec)
    np.testing.assert_array_equal(anchors, np.load(folder / "anchors.npy")[:, [1, 0, 3, 2]])  # effdet: yxyx
    x = torch.from_numpy(np.load(folder / ("input.npy" if which == "noise" else "input_image.npy")))
    with torch.no_grad():
        logits, boxes = (t[0].numpy() for t in model(x))
    dets = postprocess(logits, boxes, anchors, EFFDET_POST)
    want = np.load(folder / f"detections_{which}.npy")  # x1 y1 x2 y2 score class(1-based)
    want = want[want[:, 4] > 0]
    assert len(dets) == len(want)
    unmatched = list(range(len(want)))
    for box, score, cls in zip(dets.boxes, dets.scores, dets.class_ids):
        hit = next((j for j in unmatched if int(want[j, 5]) == config.class_ids[cls]
                    and _iou(box, want[j, :4]) >= 0.99 and abs(score - want[j, 4]) <= 1e-4), None)
        assert hit is not None, f"{name} {which}: detection {cls} {box} {score:.6f} is not in effdet's set"
        unmatched.remove(hit)


@pytest.mark.parametrize("name", MODELS)
def test_preprocessing_spec_reproduces_effdets_input(imported: dict[str, Path], name: str) -> None:
    """effdet's mean/std and its fill colour: the resized image, letterboxed by the runtime, is effdet's input."""
    folder = fixture(name)
    _, config = load_model(imported[name])
    meta = json.loads((folder / "meta.json").read_text())["image_preprocessing"]
    width, height = meta["resized_wh"]
    rgb = np.load(folder / "input_image_uint8.npy").transpose(1, 2, 0)[:height, :width]  # the image, no fill
    x, _ = preprocess(np.ascontiguousarray(rgb), config.preprocess, input_color="rgb")
    want = np.load(folder / "input_image.npy")[0].transpose(1, 2, 0)
    np.testing.assert_allclose(x, want, atol=1e-6)
    assert config.preprocess.pad_color == tuple(float(c) for c in meta["fill_color_rgb"])


def test_every_wrapper_effdet_users_have_imports_to_the_same_weights(tmp_path: Path) -> None:
    folder = fixture("tf_efficientdet_d0")
    state = torch.load(folder / "state_dict.pt", weights_only=True)
    ref, _ = read_effdet_checkpoint(folder / "state_dict.pt")
    args = argparse.Namespace(model="tf_efficientdet_d0", num_classes=90, lr=0.01)
    variants = {
        "state_dict": {"state_dict": state},
        "model": {"model": state},
        "module": {f"module.{k}": v for k, v in state.items()},
        "ema_only": {"state_dict_ema": state},
        # effdet train.py / timm CheckpointSaver: plain torch.load(weights_only=True) refuses the Namespace
        "train_py": {"epoch": 3, "arch": "tf_efficientdet_d0", "version": 2, "args": args, "metric": 0.3,
                     "state_dict": {f"model.{k}": v for k, v in state.items()}, "state_dict_ema": state},
    }
    for label, obj in variants.items():
        path = tmp_path / f"{label}.pth"
        torch.save(obj, path)
        got, info = read_effdet_checkpoint(path)
        assert got.keys() == ref.keys(), label
        assert all(torch.equal(got[k], ref[k]) for k in ref), label
    with pytest.raises(Exception, match="Namespace"):  # pickle.UnpicklingError: what effdet users hit
        torch.load(tmp_path / "train_py.pth", weights_only=True)
    _, info = read_effdet_checkpoint(tmp_path / "train_py.pth")
    assert info["args"]["model"] == "tf_efficientdet_d0" and info["wrapper"] == "state_dict"


def test_wrong_arch_truncated_foreign_and_partial_files_are_refused(tmp_path: Path) -> None:
    folder = fixture("tf_efficientdet_d0")
    src = folder / "state_dict.pt"
    with pytest.raises(EffdetImportError, match="does not hold a tf_efficientdet_d1.*fpn_width"):
        import_effdet(src, tmp_path / "a.pt", arch="tf_efficientdet_d1")
    with pytest.raises(EffdetImportError, match="supported: tf_efficientdet_d0"):
        import_effdet(src, tmp_path / "a.pt", arch="yolov8n")
    with pytest.raises(EffdetImportError, match="does not hold a efficientdet_d0.*redundant_bias"):
        import_effdet(src, tmp_path / "a.pt", arch="efficientdet_d0")
    cut = tmp_path / "cut.pth"
    cut.write_bytes(src.read_bytes()[: 1 << 20])
    with pytest.raises(EffdetImportError, match="cannot read"):
        import_effdet(cut, tmp_path / "a.pt")
    foreign = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}, foreign)
    with pytest.raises(EffdetImportError, match="not an effdet EfficientDet checkpoint"):
        import_effdet(foreign, tmp_path / "a.pt")
    state = torch.load(src, weights_only=True)
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("box_net.bn_rep.1.")}, partial)
    with pytest.raises(EffdetImportError, match="missing from the file"):
        import_effdet(partial, tmp_path / "a.pt", arch="tf_efficientdet_d0")
    assert not (tmp_path / "a.pt").exists()  # nothing half-written


def test_inferred_architecture_reads_the_weights() -> None:
    found = describe(read_effdet_checkpoint(fixture("tf_efficientdet_lite0") / "state_dict.pt")[0])
    assert found == {"backbone": "lite0", "fpn_width": 64, "fpn_depth": 3, "head_depth": 3, "num_classes": 90,
                     "fusion": "sum", "redundant_bias": True}


def test_cli_import_then_class_names_and_ids(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = fixture("efficientdet_d0") / "state_dict.pt"
    out = tmp_path / "d0.pt"
    assert cli_main(["import-effdet", str(src), "--out", str(out), "--input-size", "256"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["arch"] == "efficientdet_d0" and info["num_classes"] == 90
    _, config = load_model(out)
    assert config.class_names[0] == "person" and config.class_ids[0] == 1 and config.class_ids[-1] == 90
    assert config.class_names[11] == "unused12" and config.conv_padding == "symmetric"
    assert cli_main(["import-effdet", str(src), "--out", str(src)]) == 2  # the input is never overwritten
    assert "never overwritten" in capsys.readouterr().err


@pytest.mark.slow
def test_imported_model_exports_to_every_target_and_passes_the_fp32_gate(imported: dict[str, Path], tmp_path: Path,
                                                                        bccd: Path) -> None:
    """A COCO model with no COCO data at hand: gated on unlabelled images, mAP reported as not measured."""
    from convert import cli as convert_cli

    images = tmp_path / "images"
    images.mkdir()
    for src in sorted((bccd / "BCCD" / "JPEGImages").glob("*.jpg"))[:3]:
        (images / src.name).write_bytes(src.read_bytes())
    out = tmp_path / "export"
    code = convert_cli.main(["--ckpt", str(imported["tf_efficientdet_lite0"]), "--variant", "lite", "--phi", "0",
                             "--target", "all", "--precision", "fp32", "--images", str(images), "--out", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["labelled"] is False and report["map_ref"] is None
    assert {(a["target"], a["gate"]["status"]) for a in report["artifacts"]} == {
        ("onnx", "pass"), ("openvino", "pass"), ("tflite", "pass")}
    assert all(a["parity"]["map_delta"] is None and a["parity"]["map_delta_interval"] is None
               for a in report["artifacts"])
    assert "not measured" in (out / "report.md").read_text()
    manifest = json.loads(next(out.glob("*onnx*.json")).read_text())
    assert manifest["preprocess"]["pad_color"] == [128.0, 128.0, 128.0]


def test_int8_on_unlabelled_images_needs_a_calibration_set(imported: dict[str, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    from convert import cli as convert_cli

    images = tmp_path / "images"
    images.mkdir()
    out = tmp_path / "export"
    code = convert_cli.main(["--ckpt", str(imported["tf_efficientdet_d0"]), "--target", "onnx", "--precision",
                             "int8", "--images", str(images), "--out", str(out)])
    assert code == 2 and "needs a calibration set" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_fine_tuning_an_imported_model_keeps_its_padding_and_normalisation(imported: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    """INIT= an imported effdet model: the new run keeps the weights' TF padding, mean/std and fill colour, and
    replaces the 90-class head (regression: the run took this project's defaults, symmetric and ImageNet)."""
    from efficientdet.checkpoint import load_checkpoint
    from efficientdet.data.synthetic import generate_synthetic

    data = generate_synthetic(tmp_path / "data", num_train=8, num_val=4, image_size=128, seed=3)
    out = tmp_path / "run"
    assert cli_main(["train", "--data", str(data), "--variant", "lite", "--phi", "0", "--input-size", "128",
                     "--epochs", "1", "--batch-size", "4", "--max-steps", "1", "--out", str(out),
                     "--init", str(imported["tf_efficientdet_lite0"])]) == 0
    config = load_checkpoint(out / "last.pt")["config"]
    assert config["conv_padding"] == "same" and config["pool_padding"] == "same"
    assert config["preprocess"]["mean"] == [127.5] * 3 and config["preprocess"]["pad_color"] == [128.0] * 3
    assert config["num_classes"] == 6 and config["input_size"] == 128
