"""The first convolution of a pixel-input graph (convert/pixel_input.py), whose bias each quantizer refolds once it
has rounded the weights.

The fold gives the stem ``W' = W / s`` and ``b' = b - sum(W' * m)``. Quantized, ``W'`` becomes ``Wq``, and with the
fold's bias the rounding error ``W' - Wq`` multiplies the raw pixel (0-255) instead of the centred one: every output
channel moves by ``sum((W' - Wq) * m)``. On the BCCD Lite0 at 512 px that was an error of 1.13 (rms over the
stem's channels, whose output rms is 4.6), and the pixel-input ONNX, OpenVINO and TFLite int8 lost 5.5, 11.1 and
1.6 mAP points where their normalised-input twins lost 0.8, gained 0.2 and lost 0.3 (docs/QUANTIZATION.md).
Refolded with the quantized weights, ``b - sum(Wq * m)``, the rounding multiplies ``x - m`` exactly as it multiplied
the normalised image, and the pixel is still taken exactly. (The Lite models' pixel graph centres the pixels on
128 before the stem, so there the shift is only ``sum((W' - Wq) * -0.5)``; the D0's per-channel mean is not centred.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FoldedStem:
    """``node``/``output``: the stem convolution's ONNX node and output names (quantizers keep them; OpenVINO names
    an op after its output when that is a graph output); ``bias``: its bias before the fold ``[O]``; ``mean``: the
    mean colour per input channel ``[C]`` in the stem's input units, the value the fold took out (the normalisation's
    mean, less the integer the graph centres the pixels on first where it does: 127.5 - 128 for the Lite models)."""

    node: str
    output: str
    bias: np.ndarray
    mean: tuple[float, ...]

    def bias_for(self, weight_q: np.ndarray) -> np.ndarray:
        """The bias for the quantized, dequantized weights ``[O, C, kh, kw]``: ``b - sum(Wq * m)`` (float64)."""
        mean = np.asarray(self.mean, np.float64)[None, :, None, None]
        return np.asarray(self.bias, np.float64) - (np.asarray(weight_q, np.float64) * mean).sum(axis=(1, 2, 3))
