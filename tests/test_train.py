"""Training, evaluation, checkpoints and the model CLI on tiny configs and the embedded dataset."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from efficientdet.checkpoint import CheckpointError, load_checkpoint, load_model
from efficientdet.data.loader import load_dataset
from efficientdet.data.records import ImageRecord
from efficientdet.data.synthetic import generate_synthetic
from efficientdet.model.config import ConfigMismatchError, make_config
from efficientdet.train.batches import Augment, DetectionBatches, load_example
from efficientdet.train.loss import detection_loss
from efficientdet.train.targets import BACKGROUND, match_anchors
from efficientdet.train.trainer import TrainConfig, Trainer, lr_at
from runtime.anchors import generate_anchors
from runtime.box_coding import decode

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("syn") / "data", num_train=8, num_val=4, image_size=128, seed=3)


def _tiny_config(ds, size: int = 128):
    return make_config("0", "lite", num_classes=len(ds.class_names), class_names=ds.class_names, input_size=size)


def test_matching_encodes_targets_that_decode_back(tiny_data: Path) -> None:
    ds = load_dataset(tiny_data, "train")
    cfg = _tiny_config(ds)
    anchors = generate_anchors(cfg.anchor_spec)
    x, boxes, labels = load_example(ds.records[0], cfg.preprocess)
    cls, reg = match_anchors(anchors, boxes, labels)
    pos = cls != BACKGROUND
    assert pos.sum() >= len(boxes)  # every ground truth claims at least its best anchor
    decoded = decode(reg[pos], anchors[pos])
    # each positive decodes exactly onto one of the ground-truth boxes
    err = np.abs(decoded[:, None, :] - boxes[None]).max(-1).min(1)
    assert err.max() < 1e-3
    assert set(cls[pos]) == set(labels)


def test_augmented_boxes_stay_inside_input(tiny_data: Path) -> None:
    ds = load_dataset(tiny_data, "train")
    cfg = _tiny_config(ds)
    data = DetectionBatches(ds, cfg.preprocess, cfg.anchor_spec,
                            Augment(hflip=1.0, scale_range=(0.5, 1.5)))
    for i in range(len(ds.records)):
        rng = np.random.default_rng(i)
        x, boxes, _ = load_example(ds.records[i], cfg.preprocess, data.augment, rng)
        assert x.shape == (128, 128, 3)
        assert (boxes >= 0).all() and (boxes <= 128).all()
        assert ((boxes[:, 2:] - boxes[:, :2]) >= 2).all()


def test_photometric_augmentation_moves_pixels_not_boxes(tiny_data: Path) -> None:
    """QAT's photometric shifts (issue 15) change colours and light only: boxes and labels stay those of the same
    geometric augmentation, and without them the augmented stream is what training has always seen."""
    ds = load_dataset(tiny_data, "train")
    spec = _tiny_config(ds).preprocess
    plain, shifted = Augment(hflip=0.0, scale_range=(1.0, 1.0)), Augment(hflip=0.0, scale_range=(1.0, 1.0),
                                                                          photometric=1.0)
    changed = 0
    for i in range(len(ds.records)):
        x0, b0, l0 = load_example(ds.records[i], spec, plain, np.random.default_rng(i))
        again = load_example(ds.records[i], spec, Augment(hflip=0.0, scale_range=(1.0, 1.0), photometric=0.0),
                             np.random.default_rng(i))
        np.testing.assert_array_equal(again[0], x0)
        x1, b1, l1 = load_example(ds.records[i], spec, shifted, np.random.default_rng(i))
        assert b1.shape == b0.shape and np.array_equal(l1, l0)
        changed += int(not np.array_equal(x1, x0))
    assert changed == len(ds.records)


def test_vertical_flip_moves_boxes_with_the_pixels(tiny_data: Path, tmp_path: Path) -> None:
    """``--vflip`` (issue 10, for images without an up): boxes mirror with the pixels and labels stay. A square
    image fills the input, so the flip is exact there; on the dataset's own images (letterboxed, placed at random)
    the random stream is aligned so both calls place the content alike."""
    ds = load_dataset(tiny_data, "train")
    spec = _tiny_config(ds).preprocess
    image = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "sq.png"), image)
    square = ImageRecord(1, str(tmp_path / "sq.png"), 128, 128, np.array([[10.0, 20.0, 50.0, 41.0]], np.float32),
                         np.array([1], np.int64))
    still, flipped = Augment(hflip=0.0, scale_range=(1.0, 1.0)), Augment(hflip=0.0, vflip=1.0, scale_range=(1.0, 1.0))
    x0, b0, _ = load_example(square, spec, still, np.random.default_rng(0))
    x1, b1, l1 = load_example(square, spec, flipped, np.random.default_rng(0))
    np.testing.assert_array_equal(x1, x0[::-1])
    np.testing.assert_allclose(b1, [[10.0, 128 - 41.0, 50.0, 128 - 20.0]], atol=1e-4)
    assert l1.tolist() == [1]
    for i in range(len(ds.records)):
        ahead = np.random.default_rng(i)
        ahead.random()  # the draw the flipped call spends on its vertical flip
        x0, b0, l0 = load_example(ds.records[i], spec, still, ahead)
        x1, b1, l1 = load_example(ds.records[i], spec, flipped, np.random.default_rng(i))
        np.testing.assert_array_equal(l1, l0)
        np.testing.assert_allclose(b1[:, [0, 2]], b0[:, [0, 2]], atol=1e-3)
        np.testing.assert_allclose(b1[:, 3] - b1[:, 1], b0[:, 3] - b0[:, 1], atol=1e-3)
        mirror = b1[:, 1] + b0[:, 3]  # one axis for every box of an image: its content's centre line, twice
        np.testing.assert_allclose(mirror, mirror[0], atol=1e-3)
        assert not np.array_equal(x1, x0)


def test_loss_is_zero_class_loss_free_for_perfect_background() -> None:
    logits = torch.full((1, 10, 3), -20.0)
    cls_t = torch.full((1, 10), BACKGROUND)
    loss, cls_l, box_l = detection_loss(logits, torch.zeros(1, 10, 4), cls_t, torch.zeros(1, 10, 4))
    assert loss.item() < 1e-6 and box_l.item() == 0.0


def test_lr_schedule_warms_up_then_decays() -> None:
    lrs = [lr_at(s, 100, 10, 1.0) for s in range(100)]
    assert lrs[0] < lrs[9] == pytest.approx(1.0)
    assert lrs[50] < lrs[10] and lrs[-1] < 0.05


def test_tiny_training_loss_falls_and_overfit_map_is_sane(tiny_data: Path, tmp_path: Path) -> None:
    ds = load_dataset(tiny_data, "train")
    ds = dataclasses.replace(ds, records=ds.records[:4])
    cfg = _tiny_config(ds)
    tcfg = TrainConfig(epochs=60, batch_size=4, lr=1e-2, workers=0, warmup_epochs=3, eval_every=60,
                       augment=Augment(hflip=0.0, scale_range=(1.0, 1.0)))
    trainer = Trainer(cfg, ds, ds, tcfg, tmp_path / "run", progress=False)
    last = trainer.fit()
    first = trainer.history[0]["loss"]
    assert last["loss"] < 0.3 * first, (first, last["loss"])
    # evaluated on the very images it overfit: a sane, clearly non-zero mAP, never above 1
    assert 0.3 < last["val_map50"] <= 1.0
    assert 0.0 < last["val_map"] <= last["val_map50"]
    for name in ("best.pt", "last.pt", "metrics.jsonl"):
        assert (tmp_path / "run" / name).exists()
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(log) == 60 and log[-1]["epoch"] == 60


def test_resume_continues_from_last_checkpoint(tiny_data: Path, tmp_path: Path) -> None:
    ds = load_dataset(tiny_data, "train")
    cfg = _tiny_config(ds)
    tcfg = TrainConfig(epochs=1, batch_size=4, workers=0, max_steps_per_epoch=1)
    Trainer(cfg, ds, None, tcfg, tmp_path, progress=False).fit()
    tcfg.epochs = 2
    resumed = Trainer(cfg, ds, None, tcfg, tmp_path, resume=tmp_path / "last.pt", progress=False)
    assert (resumed.epoch, resumed.step) == (1, 1)
    resumed.fit()
    ck = load_checkpoint(tmp_path / "last.pt")
    assert (ck["epoch"], ck["step"]) == (2, 2)
    assert ck["config"]["num_classes"] == len(ds.class_names)


def test_every_epoch_draws_its_own_augmentations_and_order_in_worker_processes(tiny_data: Path,
                                                                               tmp_path: Path) -> None:
    """A loader worker keeps the copy of the data it started with: with persistent workers every epoch drew epoch 0's
    augmentation of each image (and a resumed run its first epoch's) for the whole run. The batches the worker makes
    must be the epoch's own, and a resumed run must see the image order an uninterrupted one sees."""
    ds = load_dataset(tiny_data, "train")
    cfg = _tiny_config(ds)
    tcfg = TrainConfig(epochs=3, batch_size=8, workers=1, augment=Augment(hflip=0.5, scale_range=(0.5, 1.5)))
    trainer = Trainer(cfg, ds, None, tcfg, tmp_path / "a", progress=False)
    orders, batches = [], []
    for epoch in range(3):
        trainer.epoch = epoch
        trainer.start_epoch()
        images, _, _, index = next(iter(trainer.loader))
        want = torch.stack([trainer.data[int(i)][0] for i in index])
        assert torch.equal(images, want), f"epoch {epoch}: the worker's batch is not this epoch's augmentation"
        orders.append(index.tolist())
        batches.append(images[torch.argsort(index)])
    assert not torch.equal(batches[0], batches[1]) and not torch.equal(batches[1], batches[2])
    other = Trainer(cfg, ds, None, tcfg, tmp_path / "b", progress=False)
    other.epoch = 2  # as a run resumed at epoch 2 starts
    other.start_epoch()
    assert list(other.sampler) == orders[2]


def test_checkpoint_for_wrong_config_names_both(tiny_data: Path, tmp_path: Path) -> None:
    ds = load_dataset(tiny_data, "train")
    cfg = _tiny_config(ds)
    Trainer(cfg, ds, None, TrainConfig(epochs=1, batch_size=4, workers=0, max_steps_per_epoch=1), tmp_path,
            progress=False).fit()
    model, loaded = load_model(tmp_path / "last.pt")
    assert loaded == cfg and not model.training
    with pytest.raises(ConfigMismatchError, match="efficientdet-lite0.*efficientdet-d1|efficientdet-d1.*lite0"):
        load_model(tmp_path / "last.pt", expect=make_config(1, num_classes=len(ds.class_names)))
    with pytest.raises(ConfigMismatchError, match="num_classes"):
        load_model(tmp_path / "last.pt", expect=make_config("0", "lite", num_classes=90))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                          **kw)


def test_vflip_outside_zero_to_one_is_refused(tmp_path: Path) -> None:
    """``VFLIP=5`` (meant 0.5) would flip every image; the CLI refuses it with a usage error and writes nothing."""
    res = _run(["-m", "efficientdet", "train", "--vflip", "5", "--out", str(tmp_path / "run")])
    assert res.returncode == 2 and "probability within 0..1" in res.stderr, res.stderr
    assert not (tmp_path / "run").exists()


def test_photometric_training_is_asked_for_on_the_cli_and_recorded_in_the_checkpoint(tiny_data: Path,
                                                                                      tmp_path: Path) -> None:
    """``train --photometric P`` shifts the light of a share P of the training images (issue 15: a model that meets
    other light before its int8 ranges are calibrated); the checkpoint says so, and P outside 0..1 is refused."""
    out = tmp_path / "run"
    res = _run(["-m", "efficientdet", "train", "--data", str(tiny_data), "--phi", "0", "--input-size", "128",
                "--epochs", "1", "--batch-size", "4", "--max-steps", "1", "--workers", "0", "--val-split", "",
                "--photometric", "0.5", "--out", str(out)])
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(load_checkpoint(out / "last.pt")["train"])["augment"]["photometric"] == 0.5
    bad = _run(["-m", "efficientdet", "train", "--photometric", "50", "--out", str(tmp_path / "bad")])
    assert bad.returncode == 2 and "probability within 0..1" in bad.stderr, bad.stderr
    assert not (tmp_path / "bad").exists()


def test_summary_cli_prints_the_interface_fields() -> None:
    res = _run(["-m", "efficientdet", "summary", "--phi", "0"])
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert set(out) >= {"params", "gmacs", "input_size", "anchors", "bifpn_width", "bifpn_depth", "head_depth"}
    assert out["anchors"] == 49104 and out["input_size"] == 512


def test_eval_cli_rejects_missing_checkpoint(tiny_data: Path) -> None:
    res = _run(["-m", "efficientdet", "eval", "--ckpt", "nope.pt", "--data", str(tiny_data), "--split", "val"])
    assert res.returncode == 2 and "checkpoint not found" in res.stderr


@pytest.mark.slow
def test_ddp_two_processes_train_in_sync(tiny_data: Path, tmp_path: Path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "efficientdet", "train",
                          "--data", str(tiny_data), "--phi", "0", "--variant", "lite", "--input-size", "128",
                          "--epochs", "1", "--max-steps", "2", "--batch-size", "2", "--workers", "0",
                          "--val-split", "val", "--out", str(out)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    ck = load_checkpoint(out / "last.pt")
    assert ck["step"] == 2 and ck["epoch"] == 1
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(log) == 1 and "val_map" in log[0]  # only rank 0 evaluates and writes


def test_a_last_batch_of_one_image_does_not_crash_the_epoch(tmp_path: Path) -> None:
    """5 images at batch 2 left a last batch of 1: BatchNorm failed at the end of epoch 1, before any checkpoint."""
    data = generate_synthetic(tmp_path / "five", num_train=5, num_val=1, image_size=128, seed=5)
    ds = load_dataset(data, "train")
    cfg = make_config("0", "d", num_classes=len(ds.class_names), class_names=ds.class_names, input_size=128)
    trainer = Trainer(cfg, ds, None, TrainConfig(epochs=1, batch_size=2, workers=0), tmp_path / "run",
                      progress=False)
    record = trainer.fit()
    assert record["steps"] == 2 and (tmp_path / "run" / "last.pt").is_file()
    with pytest.raises(ValueError, match="BATCH=2 or more"):
        Trainer(cfg, ds, None, TrainConfig(epochs=1, batch_size=1, workers=0), tmp_path / "one", progress=False)


def test_init_replaces_the_class_head_for_another_class_count(tiny_data: Path, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """--init from a checkpoint with other classes died with a raw size-mismatch traceback."""
    ds = load_dataset(tiny_data, "train")
    cfg = _tiny_config(ds)
    Trainer(cfg, ds, None, TrainConfig(epochs=1, batch_size=4, workers=0, max_steps_per_epoch=1), tmp_path / "a",
            progress=False).fit()
    source = load_checkpoint(tmp_path / "a" / "last.pt")
    two = dataclasses.replace(ds, class_names=ds.class_names[:2])
    two_cfg = make_config("0", "lite", num_classes=2, class_names=two.class_names, input_size=128)
    with caplog.at_level("INFO", logger="efficientdet.train"):
        tuned = Trainer(two_cfg, two, None, TrainConfig(epochs=1, batch_size=4, workers=0), tmp_path / "b",
                        init_weights=tmp_path / "a" / "last.pt", progress=False)
    assert f"class head ({len(ds.class_names)} classes) was replaced for this dataset's 2 classes" in caplog.text
    state = tuned.model.state_dict()
    backbone = [k for k in state if k.startswith("backbone.")][5]
    assert torch.equal(state[backbone], source["ema"][backbone].float())
    assert state["class_net.predict.pointwise.weight"].shape[0] == 2 * cfg.num_anchors_per_location
    other = make_config("1", "d", num_classes=2, class_names=two.class_names, input_size=128)
    with pytest.raises(ValueError, match="different architecture"):
        Trainer(other, two, None, TrainConfig(epochs=1, batch_size=4, workers=0), tmp_path / "c",
                init_weights=tmp_path / "a" / "last.pt", progress=False)


def test_rerunning_a_finished_training_says_it_is_done(tiny_data: Path, tmp_path: Path) -> None:
    args = ["-m", "efficientdet", "train", "--data", str(tiny_data), "--phi", "0", "--variant", "lite",
            "--input-size", "128", "--epochs", "1", "--batch-size", "4", "--max-steps", "1", "--workers", "0",
            "--val-split", "", "--out", str(tmp_path / "run")]
    first = _run(args)
    assert first.returncode == 0, first.stderr[-2000:]
    again = _run(args)
    assert again.returncode == 0 and "already done" in again.stderr and "raise EPOCHS" in again.stderr
