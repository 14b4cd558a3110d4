"""The FP32 model against itself when every input value moves by up to half a grey level: the rounding an int8
input quantizer makes before the first layer (its 256 codes span the pixel range, so one code is about one grey
level), and nothing else.

An int8 artifact makes that error and every layer's, so how many of FP32's detections survive this rounding alone
is what its detection match is read against: a model whose detections hang on a fraction of a grey level cannot
be matched closely by any int8 file, and a failing gate is then the model's as much as the artifact's. Measured
(``make bccd-input-rounding``, results/bccd-fp32-input-rounding.md, 72 BCCD test and 60 field images): the BCCD
D0 keeps 97.4 % / 96.6 % of its own field detections, where its int8 files match 59-71 %: that failure is the
quantization's. The BCCD Lite0 at 448 keeps 91.7 % / 89.5 %, where its int8 files match 83-90 %: within a few
points of the model's own instability, and the 85 % field bound sits only 4.5-6.7 points under it.

Reported beside every int8 gate (report.json ``fp32_input_rounding``, report.md, the failure message), not gated.
"""

from __future__ import annotations

import numpy as np

from runtime.contract import PreprocessSpec

HALF_STEP_GREY = 0.5
SEED = 20261203


def rounded_input(x: np.ndarray, spec: PreprocessSpec, rng: np.random.Generator) -> np.ndarray:
    """``x`` (a normalised ``HxWx3`` input of ``spec``) with every value moved by a uniform draw of up to
    ``HALF_STEP_GREY`` grey levels, in the normalised units of its channel."""
    std = np.asarray(spec.std, np.float32)
    noise = rng.uniform(-HALF_STEP_GREY, HALF_STEP_GREY, x.shape).astype(np.float32)
    return (x + noise / std).astype(np.float32)
