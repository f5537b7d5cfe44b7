"""What every figure shares: how a figure is made and written, and the colours that mean the same thing in each.

Matplotlib's object API (``Figure`` + Agg canvas) is used, never pyplot's global state, so the figure functions are
safe in worker processes and threads. Above ``DENSE_N`` points a map or scatter is drawn as a hexbin, which stays
readable and fast at a million points. Figures are written atomically, so a reader (the Dagster UI, a browser)
never sees a half-written PNG.

The habits every figure keeps (``ww_assets_tests/plotting`` checks them mechanically on each figure):

* axes labelled, with units ("model units", "sigma above the mean", "arbitrary units" for UMAP);
* a colour bar wherever a colour scale is used; when the colour limits clip the data, the bar has extend arrows
  and its label says how many values lie beyond and how far (``colorbar``);
* n, and the interval where there is one, on the figure;
* no text outside the figure: long titles are wrapped to the figure's width (``wrap``), legends that sit beside
  the axes are figure legends placed "outside" so constrained layout makes room (``text_outside_figure`` finds
  any text that still sticks out);
* a title promises only what is drawn (a line it names is there).
"""

from __future__ import annotations

from pathlib import Path

import contextlib
import textwrap
from typing import Iterator

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ww_assets.analysis.comparison import CONSENSUS_CLASSES
from ww_assets.storage import atomic_path

__all__ = [
    "CLASS_COLOURS", "CLASS_ORDER", "DENSE_N", "DPI", "NONE_COLOUR", "colorbar", "extend_for", "marker_size",
    "new_figure", "robust_limits", "capture_figures", "save_figure", "text_outside_figure", "wrap",
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


_CAPTURES: list[dict[Path, Figure]] = []


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG at ``path`` (atomically: a reader never sees a half-written file)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    for captured in _CAPTURES:
        captured[path] = fig
    return path


@contextlib.contextmanager
def capture_figures() -> Iterator[dict[Path, Figure]]:
    """Collect every figure saved inside the block (path -> Figure), so a check can look at what was drawn (its
    texts, colour bars, lines) rather than at the pixels."""
    captured: dict[Path, Figure] = {}
    _CAPTURES.append(captured)
    try:
        yield captured
    finally:
        _CAPTURES.remove(captured)


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


def extend_for(values: np.ndarray, vmin: float, vmax: float) -> str:
    """The colour bar ``extend`` for ``values`` drawn between ``vmin`` and ``vmax``: 'min', 'max', 'both' where
    finite values lie beyond the limits, else 'neither'."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    below, above = bool(v.size and v.min() < vmin), bool(v.size and v.max() > vmax)
    return {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}[
        (below, above)]


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def colorbar(fig: Figure, mappable, ax, label: str, values: np.ndarray | None = None, **kwargs):
    """A colour bar for ``mappable`` with its label; given the ``values`` it shows, the bar gets extend arrows
    where the colour limits clip them, and the label says how many lie beyond and the extreme value
    (e.g. "5 above 2.2 (max 18)"), so a clipped scale never passes for the data's range."""
    extend = "neither"
    note = []
    if values is not None:
        v = np.asarray(values, float)
        v = v[np.isfinite(v)]
        vmin, vmax = mappable.norm.vmin, mappable.norm.vmax
        extend = extend_for(v, vmin, vmax)
        if extend in ("max", "both"):
            note.append(f"\u25b2 {int((v > vmax).sum())} above {_fmt(vmax)} (max {_fmt(v.max())})")
        if extend in ("min", "both"):
            note.append(f"\u25bc {int((v < vmin).sum())} below {_fmt(vmin)} (min {_fmt(v.min())})")
    kwargs.setdefault("shrink", 0.85)
    cb = fig.colorbar(mappable, ax=ax, extend=extend, **kwargs)
    cb.set_label("\n".join([label, *note]))
    return cb


def wrap(text: str, width_in: float, fontsize: float = 12.0) -> str:
    """``text`` wrapped to lines that fit ``width_in`` inches at ``fontsize`` points (DejaVu Sans averages about
    0.6 em per character; existing line breaks are kept)."""
    chars = max(10, int(width_in * 72 / (0.6 * fontsize)))
    return "\n".join(textwrap.fill(line, chars) if line else "" for line in str(text).split("\n"))


def text_outside_figure(fig: Figure, tolerance_px: float = 1.0) -> list[str]:
    """Every drawn text that sticks out of the figure (clipped in the saved PNG): 'text' at its pixel extent.

    Draws the figure, then compares the window extent of each visible, non-empty text (titles, labels, drawn tick
    labels, legend entries, annotations) with the figure's own box. Tick labels of ticks outside the axis view
    are not drawn and not checked.
    """
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    drawn_ticks: set[int] = set()
    tick_texts: set[int] = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                tick_texts.update({id(tick.label1), id(tick.label2)})
            if not (ax.axison and axis.get_visible()):
                continue  # an axis turned off draws no tick labels
            for tick in axis._update_ticks():  # the ticks inside the view, the ones drawn
                drawn_ticks.update({id(tick.label1), id(tick.label2)})
    box = fig.bbox
    out = []
    for t in fig.findobj(Text):
        if not t.get_visible() or not t.get_text().strip() or (id(t) in tick_texts and id(t) not in drawn_ticks):
            continue
        if t.axes is not None and t.get_clip_on() and t.get_clip_box() is not None and id(t) not in tick_texts \
                and t.axes.texts.count(t) and not t.axes.bbox.overlaps(t.get_window_extent(renderer)):
            continue  # a data text clipped away by its axes is not drawn
        e = t.get_window_extent(renderer)
        if e.x0 < box.x0 - tolerance_px or e.y0 < box.y0 - tolerance_px or e.x1 > box.x1 + tolerance_px or \
                e.y1 > box.y1 + tolerance_px:
            out.append(f"{t.get_text()!r} at x {e.x0:.0f}..{e.x1:.0f}, y {e.y0:.0f}..{e.y1:.0f} "
                       f"(figure {box.width:.0f} x {box.height:.0f} px)")
    return out
