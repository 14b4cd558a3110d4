"""A committed result's three files from one document: ``<out>.json``, ``<out>.png`` and ``<out>.md`` (the table,
the command and a note, linking the plot), each written atomically."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.fileio import atomic_write_bytes


def write_results(out: str | Path, doc: dict[str, Any], plot: Callable[[dict[str, Any], Path], None],
                  markdown: Callable[[dict[str, Any], str], str]) -> str:
    """Write ``doc`` as JSON, its plot and its Markdown (``markdown(doc, png_name)``); returns the Markdown."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out.with_suffix(".json"), (json.dumps(doc, indent=2) + "\n").encode())
    plot(doc, out.with_suffix(".png"))
    md = markdown(doc, out.with_suffix(".png").name)
    atomic_write_bytes(out.with_suffix(".md"), md.encode())
    return md
