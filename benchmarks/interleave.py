"""Time several pipelines in one process, interleaved, so their ratios survive a noisy shared machine.

Each runner is called in short blocks, round-robin over all runners, until every runner has its
``runs`` samples: a slow minute (another process waking up, thermal throttling) lands on every
runner alike instead of on whichever happened to be measured then.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from runtime.bench import Timed


def interleaved_samples(runners: Sequence[Timed], images: Sequence[np.ndarray], runs: int, warmup: int,
                        block: int = 5, desc: str = "timing") -> list[np.ndarray]:
    """Per runner, ``[runs, 3]`` pre/infer/post milliseconds, images cycled in the same order for all."""
    if runs < 1 or warmup < 0 or not images:
        raise ValueError(f"need runs >= 1, warmup >= 0 and at least one image (runs={runs}, warmup={warmup})")
    for runner in runners:
        for i in range(warmup):
            runner.timed(images[i % len(images)])
    samples: list[list[list[float]]] = [[] for _ in runners]
    with tqdm(total=runs * len(runners), desc=desc, unit="call", leave=False) as bar:
        for r in range(math.ceil(runs / block)):
            for k, runner in enumerate(runners):
                for i in range(r * block, min(runs, (r + 1) * block)):
                    t = runner.timed(images[i % len(images)])[1]
                    samples[k].append([t["pre_ms"], t["infer_ms"], t["post_ms"]])
                    bar.update()
    return [np.asarray(s) for s in samples]
