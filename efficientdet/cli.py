"""Command line for the model package: ``summary``, ``train``, ``eval`` (the Makefile calls these)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path


def cmd_summary(args: argparse.Namespace) -> int:
    from efficientdet.model.config import make_config
    from efficientdet.model.summary import summarize

    cfg = make_config(args.phi, args.variant, args.num_classes, input_size=args.input_size)
    print(json.dumps(summarize(cfg)))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from efficientdet.data.exclude import exclude_images, read_image_list
    from efficientdet.data.loader import load_dataset
    from efficientdet.data.synthetic import resolve_dataset
    from efficientdet.model.config import make_config
    from efficientdet.model.pretrained import PRETRAINED_PACKAGES, pretrained_config, pretrained_source
    from efficientdet.train.batches import Augment
    from efficientdet.train.trainer import TrainConfig, Trainer, inherit_weight_settings
    from runtime.fileio import atomic_write_json

    torch.set_num_threads(args.threads) if args.threads else None
    data = resolve_dataset(args.data)
    train_set = load_dataset(data, args.train_split)
    val_set = load_dataset(data, args.val_split, class_names=train_set.class_names) if args.val_split else None
    excluded: tuple[str, ...] = ()
    if args.exclude_images:
        excluded = read_image_list(args.exclude_images)
        train_set, *rest = exclude_images([s for s in (train_set, val_set) if s is not None], excluded,
                                          args.exclude_images)
        val_set = rest[0] if rest else None
    cfg = make_config(args.phi, args.variant, len(train_set.class_names), train_set.class_names,
                      input_size=args.input_size, class_ids=train_set.class_ids or ())
    backbone = pretrained_source(cfg, args.pretrained, args.backbone_weights, args.init)
    if args.init:
        cfg = inherit_weight_settings(cfg, args.init)
    fine_tune = {}
    if backbone is not None:
        cfg = pretrained_config(cfg, args.backbone_padding)
        fine_tune = {"freeze_backbone_epochs": args.freeze_backbone_epochs, "backbone_bn_momentum": 0.01}
        source = (f"ImageNet weights of package {PRETRAINED_PACKAGES[cfg.backbone].distribution}"
                  if backbone == "package" else backbone)
        print(f"backbone: {source} ({cfg.conv_padding} padding, mean/std {cfg.preprocess.mean[0]:g}/"
              f"{cfg.preprocess.std[0]:g}); PRETRAINED=0 trains from scratch", file=sys.stderr)
    tcfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, workers=args.workers,
                       seed=args.seed, eval_every=args.eval_every, max_steps_per_epoch=args.max_steps,
                       augment=Augment(vflip=args.vflip, scale_range=(args.jitter_min, args.jitter_max),
                                       photometric=args.photometric),
                       excluded_images=excluded, **fine_tune)
    out = Path(args.out)
    used = [s for s in (train_set, val_set) if s is not None]
    if train_set.split_rule:  # an automatic split: write it down next to the run, so the run can be reproduced
        write_split(out / "split.json", used)
    listed = {s.split: getattr(s.issues, "files", {}) for s in used if getattr(s.issues, "files", None)}
    if listed:  # the warnings name a few files each; every one is here
        atomic_write_json(out / "data-issues.json", listed)
        print(f"every skipped or fixed file is listed in {out / 'data-issues.json'}", file=sys.stderr)
    resume = args.resume or (out / "last.pt" if (out / "last.pt").exists() and not args.restart else None)
    if resume:
        print(f"resuming from {resume}", file=sys.stderr)
    t0 = time.time()
    trainer = Trainer(cfg, train_set, val_set, tcfg, out, resume=resume, init_weights=args.init, backbone=backbone)
    if trainer.epoch >= tcfg.epochs:
        print(f"already done: {out} holds all {trainer.epoch} of {tcfg.epochs} epochs (best validation mAP "
              f"{trainer.best_map:.4f} in {out / 'best.pt'}); raise EPOCHS to train further, or pass --restart "
              "(make: a new OUT) to start over", file=sys.stderr)
        return 0
    record = trainer.fit()
    if trainer.rank == 0:
        print(json.dumps({"out": str(out), "best_val_map": trainer.best_map, "last": record,
                          "session_wall_s": round(time.time() - t0, 1)}))
    return 0


def write_split(path: Path, splits: list) -> None:
    """``{"rule", "splits": {name: [image files]}}`` for the splits a command used."""
    from runtime.fileio import atomic_write_json

    atomic_write_json(path, {"rule": splits[0].split_rule, "source": splits[0].source,
                             "splits": {s.split: sorted(os.path.basename(r.path) for r in s.records) for s in splits}})


def cmd_split(args: argparse.Namespace) -> int:
    """Write the train/val/test image lists the loaders use for ``--data`` into ``--out`` (never into the data)."""
    from efficientdet.data.loader import load_dataset
    from efficientdet.data.synthetic import resolve_dataset
    from runtime.fileio import atomic_write_bytes

    data = resolve_dataset(args.data)
    out = Path(args.out)
    if out.resolve().is_relative_to(Path(data).resolve()):
        raise ValueError(f"--out {out} is inside the dataset {data}; the user's folder is never written to: "
                         "choose another folder")
    splits = [load_dataset(data, name, verify_images=False) for name in ("train", "val", "test")]
    for s in splits:
        names = "".join(os.path.basename(r.path) + "\n" for r in s.records)
        atomic_write_bytes(out / f"{s.split}.txt", names.encode())
    write_split(out / "split.json", splits)
    print(f"wrote {out}/train.txt, val.txt, test.txt ({', '.join(f'{len(s.records)} {s.split}' for s in splits)}): "
          f"{splits[0].split_rule or 'the split files of the dataset'}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from efficientdet.checkpoint import load_checkpoint, load_model
    from efficientdet.data.exclude import EXCLUDED, exclude_images, image_name, read_image_list
    from efficientdet.data.loader import load_for_model, parse_class_map
    from efficientdet.data.synthetic import resolve_dataset
    from efficientdet.evaluate import evaluate_model
    from runtime.anchors import generate_anchors
    from runtime.fileio import atomic_write_bytes, file_sha256

    torch.set_num_threads(args.threads) if args.threads else None
    model, cfg = load_model(args.ckpt)
    dataset = load_for_model(resolve_dataset(args.data), args.split, list(cfg.class_names),
                             num_classes=cfg.num_classes, class_map=parse_class_map(args.class_map))
    excluded = []
    if args.exclude_images:
        dataset, = exclude_images([dataset], read_image_list(args.exclude_images), args.exclude_images)
        excluded = sorted(image_name(p, args.data) for p in dataset.issues.files[EXCLUDED])
    t0 = time.time()
    metrics = evaluate_model(model, dataset, cfg.preprocess,
                             generate_anchors(cfg.anchor_spec))
    ck = load_checkpoint(args.ckpt)
    left_out = {"exclude_list": str(args.exclude_images), "excluded_images": excluded} if args.exclude_images else {}
    result = {"model": cfg.name, "input_size": cfg.input_size, "data": str(args.data), "split": args.split,
              **left_out, **metrics, "checkpoint": str(args.ckpt), "checkpoint_sha256": file_sha256(args.ckpt),
              "train_wall_time_s": ck.get("wall_time_s"), "train_epochs": ck.get("epoch"),
              "eval_time_s": round(time.time() - t0, 1)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        atomic_write_bytes(args.out, (text + "\n").encode())
    return 0


def cmd_audit_labels(args: argparse.Namespace) -> int:
    """Where the model and the labels disagree confidently: JSON, Markdown, flagged.txt and drawn images."""
    import cv2
    import torch

    from efficientdet.checkpoint import load_model
    from efficientdet.data.loader import load_for_model, parse_class_map
    from efficientdet.data.synthetic import resolve_dataset
    from efficientdet.evaluate import torch_predict
    from efficientdet.label_audit import AuditSettings, audit, rank
    from efficientdet.label_audit_report import draw_findings, image_list, markdown, summarise
    from runtime.anchors import generate_anchors
    from runtime.fileio import atomic_write_bytes

    torch.set_num_threads(args.threads) if args.threads else None
    settings = AuditSettings(score=args.score, iou=args.iou, min_count=args.min_count)
    model, cfg = load_model(args.ckpt)
    anchors = generate_anchors(cfg.anchor_spec)
    findings, records, root = [], {}, resolve_dataset(args.data)
    for split in dict.fromkeys(args.split):
        dataset = load_for_model(root, split, list(cfg.class_names),
                                 num_classes=cfg.num_classes, class_map=parse_class_map(args.class_map))
        print(f"{split}: {len(dataset.records)} images", file=sys.stderr)
        findings += audit(dataset, torch_predict(model, dataset, cfg.preprocess, anchors), settings)
        records.update((r.path, r) for r in dataset.records)
    summary = {"checkpoint": str(args.ckpt), "data": str(args.data), "splits": list(dict.fromkeys(args.split)),
               **summarise(findings, list(cfg.class_names), settings, top=args.top, root=root)}
    command = args.command or (f"python -m efficientdet audit-labels --ckpt {args.ckpt} --data {args.data} "
                               f"--split {' '.join(summary['splits'])} --score {args.score} --iou {args.iou} "
                               f"--min-count {args.min_count} --out {args.out}")
    drawn = {f"{i:02d}-{f.split}-{Path(f.path).stem}.jpg":
             cv2.imencode(".jpg", draw_findings(records[f.path], f, cfg.class_names))[1].tobytes()
             for i, f in enumerate(rank(findings)[:args.draw], 1)}
    out = Path(args.out)
    for old in (out / "images").glob("[0-9][0-9]-*.jpg"):  # an earlier audit's drawings would read as this one's
        old.unlink()
    atomic_write_bytes(out / "audit.json", (json.dumps(summary, indent=2) + "\n").encode())
    atomic_write_bytes(out / "audit.md", markdown(summary, command).encode())
    atomic_write_bytes(out / "flagged.txt", image_list(summary).encode())
    for name, jpg in drawn.items():
        atomic_write_bytes(out / "images" / name, jpg)
    print(markdown(summary, command))
    print(f"wrote {out}/audit.json, audit.md, flagged.txt ({len(summary['class_unlabelled'])} images) and "
          f"{len(drawn)} drawn images under {out}/images", file=sys.stderr)
    return 0


def cmd_import_effdet(args: argparse.Namespace) -> int:
    """An effdet checkpoint -> a checkpoint of this project (then eval/export/runtime work unchanged)."""
    from efficientdet.effdet_import import import_effdet

    src = Path(args.ckpt)
    out = Path(args.out) if args.out else Path("models") / f"{src.stem}-imported.pt"
    if out.resolve() == src.resolve():
        raise ValueError(f"--out {out} is the input checkpoint; the input is never overwritten: choose another path")
    names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
    info = import_effdet(src, out, args.arch, args.input_size, names, args.ema)
    print(json.dumps(info))
    print(f"next: make eval CKPT={out} DATA=...  |  make export CKPT={out} VARIANT="
          f"{'lite' if 'lite' in info['arch'] else 'd'} PHI={info['model'][-1]} TARGET=all [IMAGES=folder]",
          file=sys.stderr)
    return 0


def cmd_slim(args: argparse.Namespace) -> int:
    import subprocess

    from efficientdet.checkpoint import slim_checkpoint

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None
    info = slim_checkpoint(args.ckpt, args.out, {"source": str(args.ckpt), "git_commit": commit})
    print(json.dumps({k: v for k, v in info.items() if k not in ("history",)}))
    return 0


def cmd_run_report(args: argparse.Namespace) -> int:
    import platform

    from efficientdet.train.curves import curve_table, plot_learning_curve, read_metrics
    from runtime.fileio import atomic_write_bytes

    records = read_metrics(Path(args.run) / "metrics.jsonl")
    result = json.loads(Path(args.eval).read_text())
    md = Path(args.out)
    png = md.with_suffix(".png")
    plot_learning_curve(records, png, f"{result['model']} at {result['input_size']} on {Path(result['data']).name}")
    per_class = " · ".join(f"{k} {v:.3f}" for k, v in result["per_class_ap"].items())
    lines = [
        f"# {result['model']} on {Path(result['data']).name}: {result['split']} split",
        "",
        f"Produced by: `{args.command}`",
        "",
        "| metric | value |", "|---|---|",
        f"| mAP@[.5:.95] | {result['map']:.3f} |",
        f"| mAP@.5 | {result['map50']:.3f} |",
        f"| per-class AP@[.5:.95] | {per_class} |",
        *([f"| per-class AP@.5 | {' · '.join(f'{k} {v:.3f}' for k, v in result['per_class_ap50'].items())} |"]
          if "per_class_ap50" in result else []),
        f"| images | {result['num_images']} |",
        f"| input size | {result['input_size']} |",
        f"| checkpoint (best validation mAP) | epoch {result['train_epochs']} of {records[-1]['epoch']} |",
        f"| train wall time to that epoch | {result['train_wall_time_s'] / 60:.1f} min |",
        f"| machine | {platform.machine()}, {os.cpu_count()} CPU cores, no GPU |",
        f"| checkpoint sha256 | `{result['checkpoint_sha256'][:16]}...` |",
        "",
        f"![learning curve]({png.name})",
        "",
        "Validation (checkpoint selection) during training:",
        "",
        *([args.note, ""] if args.note else []),
        curve_table(records),
        "",
    ]
    atomic_write_bytes(md, "\n".join(lines).encode())
    print(f"wrote {md} and {png}")
    return 0


def _probability(text: str) -> float:
    """An argparse type: a number within 0..1 (a typo such as 5 for 0.5 is refused, not silently taken as 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability within 0..1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability within 0..1, got {text}")
    return value


def _at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m efficientdet", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("summary", help="parameter/MAC counts of a variant as JSON")
    s.add_argument("--phi", default="0")
    s.add_argument("--variant", default="d", choices=["d", "lite"])
    s.add_argument("--num-classes", type=int, default=90)
    s.add_argument("--input-size", type=int, default=None)
    s.set_defaults(func=cmd_summary)

    t = sub.add_parser("train", help="train (or resume) a detector")
    t.add_argument("--data", default="data/synthetic")
    t.add_argument("--phi", default="0")
    t.add_argument("--variant", default="d", choices=["d", "lite"])
    t.add_argument("--input-size", type=int, default=None, help="train at another input size (multiple of 32)")
    t.add_argument("--epochs", type=int, default=50)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--jitter-min", type=float, default=0.6)
    t.add_argument("--jitter-max", type=float, default=1.4)
    t.add_argument("--vflip", type=_probability, default=0.0,
                   help="probability of a vertical flip (images without an up, e.g. microscopy; default off)")
    t.add_argument("--photometric", type=_probability, default=0.0,
                   help="probability of a random photometric shift per training image (exposure, contrast, gamma, "
                        "colour cast, noise, JPEG; efficientdet/data/photometric.py): light and cameras the dataset "
                        "does not show (docs/QUANTIZATION.md, field)")
    t.add_argument("--workers", type=int, default=1)
    t.add_argument("--threads", type=int, default=0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--eval-every", type=int, default=1)
    t.add_argument("--max-steps", type=int, default=0, help="cap steps per epoch (smoke runs)")
    t.add_argument("--exclude-images", default=None, metavar="FILE",
                   help="leave the images this list names (one per line, e.g. audit-labels' flagged.txt) "
                   "out of the training and validation splits; recorded in the checkpoint")
    t.add_argument("--train-split", default="train")
    t.add_argument("--val-split", default="val")
    t.add_argument("--out", default="runs/default")
    t.add_argument("--resume", default=None, help="checkpoint to resume; OUT/last.pt is resumed automatically")
    t.add_argument("--restart", action="store_true", help="ignore an existing OUT/last.pt")
    t.add_argument("--init", default=None, help="initialise weights from a checkpoint (fine-tuning)")
    t.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None,
                   help="start the backbone from ImageNet weights (default: on for Lite0/1/2, whose weights are "
                   "installed packages; no pretrained weights exist here for Lite3/4 or D0-D7)")
    t.add_argument("--backbone-weights", default=None, metavar="FILE",
                   help="ImageNet backbone weights in timm's tf_efficientnet_b* / efficientnet_lite* layout")
    t.add_argument("--backbone-padding", default="same", choices=["same", "symmetric"],
                   help="padding the --backbone-weights were trained with (TF/tf_ weights: same)")
    t.add_argument("--freeze-backbone-epochs", type=float, default=1.0,
                   help="with a pretrained backbone: epochs it is held still while the new layers settle")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="COCO mAP of a checkpoint on a dataset split")
    e.add_argument("--ckpt", required=True)
    e.add_argument("--data", default="data/synthetic")
    e.add_argument("--split", default="test")
    e.add_argument("--out", default=None, help="also write the JSON here")
    e.add_argument("--class-map", default=None, metavar="DATA=MODEL,...",
                   help="map dataset class names onto the model's (an empty MODEL ignores that class); without it "
                   "a dataset with classes the model does not know is refused")
    e.add_argument("--exclude-images", default=None, metavar="FILE",
                   help="score without the images this list names (e.g. audit-labels' flagged.txt); the JSON "
                   "names each one left out")
    e.add_argument("--threads", type=int, default=0)
    e.set_defaults(func=cmd_eval)
    a = sub.add_parser("audit-labels", help="list the images whose labels a model disagrees with confidently "
                       "(a class it finds that has no box, boxes it does not find) for a person to check")
    a.add_argument("--ckpt", required=True)
    a.add_argument("--data", default="data/synthetic")
    a.add_argument("--split", nargs="+", default=["train", "val", "test"])
    a.add_argument("--out", required=True, help="folder for audit.json, audit.md, flagged.txt and images/")
    a.add_argument("--score", type=_probability, default=0.5, help="score from which a detection is confident")
    a.add_argument("--iou", type=_probability, default=0.5, help="IoU at which a detection matches a box")
    a.add_argument("--min-count", type=_at_least(1), default=3,
                   help="confident detections of a class with no box before an image is flagged")
    a.add_argument("--top", type=_at_least(1), default=20, help="images listed by how much there is to look at")
    a.add_argument("--draw", type=_at_least(0), default=8, help="how many of the images ranked first are drawn")
    a.add_argument("--class-map", default=None, metavar="DATA=MODEL,...", help="as for eval")
    a.add_argument("--command", default=None, help="command printed in audit.md (default: this one)")
    a.add_argument("--threads", type=int, default=0)
    a.set_defaults(func=cmd_audit_labels)
    sp = sub.add_parser("split", help="write the train/val/test image lists of a dataset (VOC without ImageSets, "
                        "a single COCO json: the automatic seeded split) into a folder")
    sp.add_argument("--data", required=True)
    sp.add_argument("--out", required=True, help="folder for train.txt, val.txt, test.txt and split.json")
    sp.set_defaults(func=cmd_split)
    r = sub.add_parser("run-report", help="Markdown + learning-curve PNG for a run and its eval JSON")
    r.add_argument("--run", required=True, help="training output folder (metrics.jsonl)")
    r.add_argument("--eval", required=True, help="JSON written by `eval --out`")
    r.add_argument("--out", required=True, help="Markdown path; the PNG goes beside it")
    r.add_argument("--command", default="make bccd-train && make bccd-eval", help="reproduction command to print")
    r.add_argument("--note", default=None, help="a paragraph printed above the validation table")
    r.set_defaults(func=cmd_run_report)

    im = sub.add_parser("import-effdet", help="turn an effdet (rwightman/efficientdet-pytorch) checkpoint into a "
                        "checkpoint of this project")
    im.add_argument("ckpt", help="effdet checkpoint: a state dict, or train.py's file "
                    "(state_dict/state_dict_ema/model)")
    im.add_argument("--arch", default=None, help="effdet model name, e.g. tf_efficientdet_d0 (default: read from the "
                    "weights' shapes and the file's args)")
    im.add_argument("--out", default=None, help="project checkpoint to write (default models/<name>-imported.pt)")
    im.add_argument("--input-size", type=int, default=None, help="input size (default: the architecture's own)")
    im.add_argument("--class-names", default=None, help="comma-separated names, one per class (default: COCO names "
                    "for 90 classes, class1.. otherwise)")
    im.add_argument("--ema", action="store_true", help="take state_dict_ema when the file has both")
    im.set_defaults(func=cmd_import_effdet)

    sl = sub.add_parser("slim", help="fp16 EMA-only copy of a checkpoint with its provenance (for committing)")
    sl.add_argument("--ckpt", required=True)
    sl.add_argument("--out", required=True)
    sl.set_defaults(func=cmd_slim)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        from runtime.fileio import write_error

        print(f"error: {write_error(e)}", file=sys.stderr)
        return 4


if __name__ == "__main__":
    sys.exit(main())
