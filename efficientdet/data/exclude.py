"""Leave listed images out of a split, for training or scoring without images whose labels are known bad.

The list is a text file, one image per line, blank lines and ``#`` comments ignored: the ``flagged.txt`` that
``audit-labels`` writes is such a file. A line names the images whose path ends with it, component by
component: ``BloodImage_00249.jpg`` (a file name, enough where names are unique), ``images/val/000001.jpg``
(where splits reuse names, as COCO-style folders often do) or an absolute path. The dataset on disk is never
edited (it is often read-only and shared); the exclusion lives in the command line and in what the run
records, so it can be reproduced and undone.

A list covers every split, so an image it names may well be missing from the one split loaded; a list
that names no image of any split loaded is a mistake (wrong dataset or a typo), and is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from efficientdet.data.checks import Issues
from efficientdet.data.records import DatasetError, DetectionDataset

LOG = logging.getLogger("efficientdet.data")
EXCLUDED = "excluded by an image list"  # the reason counted in each split's issues
COMMENT = re.compile(r"(?:^|\s)#")  # a '#' inside a file name is part of the name


def image_name(path: str, root: str | Path | None) -> str:
    """How a list names the image at ``path``: relative to the dataset folder ``root``
    (``BCCD/JPEGImages/BloodImage_00249.jpg``: the same on every machine, and unambiguous where splits reuse
    file names), else its file name."""
    if root is not None:  # the image itself is not resolved: a symlink to elsewhere keeps its place in the dataset
        with contextlib.suppress(ValueError):
            return Path(os.path.abspath(path)).relative_to(Path(root).resolve()).as_posix()
    return Path(path).name


def read_image_list(path: str | Path) -> tuple[str, ...]:
    """The entries a list holds (``/``-separated path endings), in file order, duplicates dropped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read the image list ({e}); expected a text file with one image file "
                           "name per line (audit-labels writes one as flagged.txt)") from None
    names = [COMMENT.split(line, 1)[0].strip() for line in text.splitlines()]
    names = [Path(n.replace("\\", "/")).as_posix() for n in names if n]
    if not names:
        raise DatasetError(f"{path}: the image list names no image (one file name per line; # starts a comment)")
    return tuple(dict.fromkeys(names))


def _listed(path: str, entries: Sequence[tuple[str, ...]]) -> int | None:
    """The index of the first entry whose components end ``path``, if any."""
    parts = Path(path).parts
    return next((i for i, e in enumerate(entries) if parts[-len(e):] == e), None)


def exclude_images(datasets: Sequence[DetectionDataset], names: Sequence[str],
                   source: str | Path) -> list[DetectionDataset]:
    """Copies of ``datasets`` without the images the list entries ``names`` (read from ``source``) name; each
    split's ``issues`` counts and names what left it. Refused when no entry names an image of any of them."""
    entries = [(Path(n).resolve() if Path(n).is_absolute() else Path(n)).parts for n in names]
    out, found = [], set()
    for ds in datasets:
        hits = {r.path: _listed(r.path, entries) for r in ds.records}
        keep = [r for r in ds.records if hits[r.path] is None]
        found |= {h for h in hits.values() if h is not None}
        if not keep:
            raise DatasetError(f"{source}: lists every image of split {ds.split!r} of {ds.source}, which would leave "
                               "it empty; list fewer images, or give longer paths (e.g. images/train/x.jpg) where "
                               "splits share file names")
        issues = Issues(ds.issues)
        issues.files = {k: list(v) for k, v in getattr(ds.issues, "files", {}).items()}
        for r in ds.records:
            if hits[r.path] is not None:
                issues.note(EXCLUDED, r.path)
        out.append(dataclasses.replace(ds, records=keep, issues=issues))
        LOG.info("split %r: %d images left out as listed in %s", ds.split, len(ds.records) - len(keep), source)
    unmatched = [n for i, n in enumerate(names) if i not in found]
    if found and unmatched:
        LOG.warning("%s: %d of its entries name no image of split(s) %s (other splits, or a typo?): %s%s", source,
                    len(unmatched), ", ".join(d.split for d in datasets), ", ".join(unmatched[:3]),
                    " ..." if len(unmatched) > 3 else "")
    if not found:
        raise DatasetError(f"{source}: none of its {len(names)} entries (e.g. {names[0]!r}) ends the path of an image "
                           f"of split(s) {', '.join(repr(d.split) for d in datasets)} of {datasets[0].source}: "
                           "wrong dataset or list?")
    return out
