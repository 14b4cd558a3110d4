"""Which training images go into a calibration set: stratified over classes and image sizes, seeded.

Calibration ranges are set by what the sample contains, so a random draw that misses a rare class or
only has small images gives ranges that clip at deployment. Each image gets a stratum (its most
frequent class, or "background" if it has no boxes, and its size tertile); strata are drawn round-robin
in a seeded order, so rare classes and unusual sizes are represented even in small sets.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from efficientdet.data.records import ImageRecord


def stratum(record: ImageRecord, size_edges: Sequence[float]) -> tuple[int, int]:
    """(dominant class id or -1, size tertile 0..2) of one image."""
    labels = record.labels.tolist()
    cls = Counter(labels).most_common(1)[0][0] if labels else -1
    return int(cls), int(np.searchsorted(size_edges, record.width * record.height, side="right"))


def stratified_sample(records: Sequence[ImageRecord], n: int, seed: int = 0) -> list[ImageRecord]:
    """Up to ``n`` records, round-robin over strata in a seeded order (deterministic for a given seed)."""
    if n <= 0:
        raise ValueError(f"the calibration set size must be >= 1, got {n}")
    if not records:
        return []
    areas = np.array([r.width * r.height for r in records], np.float64)
    edges = np.quantile(areas, [1 / 3, 2 / 3]) if len(records) >= 3 else np.array([])
    groups: dict[tuple[int, int], list[ImageRecord]] = defaultdict(list)
    for r in records:
        groups[stratum(r, edges)].append(r)
    rng = np.random.default_rng(seed)
    keys = sorted(groups)
    queues = [list(np.array(groups[k], dtype=object)[rng.permutation(len(groups[k]))]) for k in keys]
    order = rng.permutation(len(keys))
    picked: list[ImageRecord] = []
    while len(picked) < n and any(queues):
        for i in order:
            if queues[i] and len(picked) < n:
                picked.append(queues[i].pop())
    return picked
