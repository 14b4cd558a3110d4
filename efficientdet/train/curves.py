"""Learning-curve plot and Markdown summary of a training run (loss and validation mAP per epoch)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from runtime.fileio import atomic_write_bytes


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The run's ``metrics.jsonl``; a resumed run may repeat epochs, the last record of each wins."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            by_epoch[int(rec["epoch"])] = rec
    return [by_epoch[e] for e in sorted(by_epoch)]


def plot_learning_curve(records: list[dict[str, Any]], png: str | Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    epochs = [r["epoch"] for r in records]
    ax.plot(epochs, [r["loss"] for r in records], color="tab:gray", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss")
    ax2 = ax.twinx()
    val = [r for r in records if "val_map" in r]
    ax2.plot([r["epoch"] for r in val], [r["val_map50"] for r in val], "o-", color="tab:blue", label="val mAP@.5")
    ax2.plot([r["epoch"] for r in val], [r["val_map"] for r in val], "s-", color="tab:orange",
             label="val mAP@[.5:.95]")
    ax2.set_ylabel("validation mAP")
    ax2.set_ylim(0, 1)
    lines = ax.get_lines() + ax2.get_lines()
    # under the axes: inside them the legend covered the curves' plateau (results/bccd-lite0-512-augfix-eval.png)
    ax.legend(lines, [ln.get_label() for ln in lines], loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3,
              frameon=False)
    ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(png, buf.getvalue())


def curve_table(records: list[dict[str, Any]]) -> str:
    rows = ["| epoch | train loss | val mAP@.5 | val mAP@[.5:.95] | wall time (s) |", "|---|---|---|---|---|"]
    for r in records:
        if "val_map" in r:
            rows.append(f"| {r['epoch']} | {r['loss']:.3f} | {r['val_map50']:.3f} | {r['val_map']:.3f} | "
                        f"{r.get('wall_time_s', '')} |")
    return "\n".join(rows)
