"""What every figure shares: how a figure is made and written, and the colours that mean the same thing in each.

Matplotlib's object API (``Figure`` + Agg canvas) is used, never pyplot's global state, so the figure functions are
safe in worker processes and threads. Above ``DENSE_N`` points a map or scatter is drawn as a hexbin, which stays
readable and fast at a million points. Figures are written atomically, so a reader (the Dagster UI, a browser)
never sees a half-written PNG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ww_assets.analysis.comparison import CONSENSUS_CLASSES
from ww_assets.storage import atomic_path

__all__ = [
    "CLASS_COLOURS", "CLASS_ORDER", "DENSE_N", "DPI", "NONE_COLOUR", "marker_size", "new_figure", "robust_limits",
    "save_figure",
]

DENSE_N = 200_000
DPI = 110
NONE_COLOUR = "#d0d0d0"
#: consensus classes in the order legends list them, and the colour each has in every figure
CLASS_ORDER = CONSENSUS_CLASSES
CLASS_COLOURS = dict(zip(CONSENSUS_CLASSES, ("#7f7f7f", "#1f77b4", "#d62728", "#bcbd22")))


def new_figure(w: float = 7.0, h: float = 5.5) -> Figure:
    """A ``w`` x ``h`` inch figure with constrained layout on its own Agg canvas."""
    fig = Figure(figsize=(w, h), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG at ``path`` (atomically: a reader never sees a half-written file)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def marker_size(n: int) -> float:
    """Scatter marker area (points^2) for ``n`` points: large for a few, small but visible for many."""
    return float(np.clip(3e4 / max(n, 1), 0.3, 25.0))


def robust_limits(values: np.ndarray, lo: float = 1.0, hi: float = 99.0) -> tuple[float, float]:
    """Colour limits at the ``lo`` and ``hi`` percentiles of the finite values, so a few outliers do not wash out
    the map; (0, 1) without finite values."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return 0.0, 1.0
    a, b = np.percentile(v, [lo, hi])
    return (float(a), float(b)) if b > a else (float(v.min()), float(v.max()) + 1e-9)
