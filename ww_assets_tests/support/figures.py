"""The mechanical checks of a figure's habits (``ww_assets.plotting.style``), on the figures ``make_plots`` drew."""

from __future__ import annotations

import numpy as np
from matplotlib.lines import Line2D

from ww_assets.plotting.style import text_outside_figure


def colour_scaled(ax) -> bool:
    """Whether the axes draw data through a colour map (a scatter / hexbin / image coloured by value)."""
    for artist in [*ax.collections, *ax.images]:
        data = artist.get_array() if hasattr(artist, "get_array") else None
        if data is None or np.ndim(data) == 3:        # an RGB(A) image (a cutout) is its own colours
            continue
        values = np.asarray(data, dtype=float)
        # a colour per point from a fixed palette sets facecolors, not an array; an array of values needs a scale
        if artist.get_cmap() is not None and values.size > 1 and np.ptp(values[np.isfinite(values)]) > 0:
            return True
    return False


def habit_problems(paths: dict, figs: dict) -> tuple[list[str], set[str]]:
    """(what is wrong with each figure, the names of the figures that use a colour scale): text outside the figure,
    a colour scale without a colour bar, a title that names a line that is not drawn."""
    problems, scaled = [], set()
    for name, path in paths.items():
        fig = figs[path]
        problems += [f"{name}: outside: {t}" for t in text_outside_figure(fig)]
        has_bar = any(ax.get_label() == "<colorbar>" for ax in fig.axes)
        if any(colour_scaled(ax) for ax in fig.axes if ax.get_label() != "<colorbar>"):
            scaled.add(name)
            if not has_bar:
                problems.append(f"{name}: a colour scale without a colour bar")
        for ax in fig.axes:
            title = ax.get_title() + " " + (fig._suptitle.get_text() if fig._suptitle else "")
            if " line" in title.lower():
                drawn = [ln for ln in ax.get_lines() if isinstance(ln, Line2D) and len(ln.get_xdata()) > 1] \
                    + [c for c in ax.collections if type(c).__name__ in ("LineCollection", "QuadContourSet")]
                if not drawn:
                    problems.append(f"{name}: title names a line that is not drawn: {title!r}")
    return problems, scaled
