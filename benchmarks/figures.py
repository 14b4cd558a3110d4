"""A finished matplotlib figure as PNG bytes, for :func:`runtime.fileio.atomic_write_bytes` (a plot is written
whole or not at all, like every other result file)."""

from __future__ import annotations

import io
from typing import Any


def png_bytes(fig: Any, dpi: int | None = None) -> bytes:
    """``fig`` as PNG bytes, trimmed to its content; the figure is closed (matplotlib keeps open ones alive)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
