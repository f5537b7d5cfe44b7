"""Figures drawn on the latent map (UMAP x, y): the map coloured by a value, by a category, and by predicted
volunteer interest with its decision boundary.

Every map shares axes labels and an equal aspect, because UMAP distances mean the same along both axes (their
units mean nothing). At more than ``DENSE_N`` points the continuous map becomes a hexbin of the mean value.

Colour limits that clip the data (robust 1st-99th percentile limits, so a few outliers do not wash out the map) are
shown as such: the colour bar has extend arrows and says how many images lie beyond and the extreme value. The
interest map's colour bar spans the predicted probabilities it shows (0 to their maximum, not 0 to 1), and its
title names the P = 0.5 line only when the line is drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ww_assets.plotting.style import (
    DENSE_N,
    NONE_COLOUR,
    colorbar,
    marker_size,
    new_figure,
    robust_limits,
    save_figure,
    wrap,
)

__all__ = ["interest_map", "umap_categorical", "umap_continuous"]


def _axes_umap(ax, title: str, width_in: float = 5.0) -> None:
    ax.set_xlabel("UMAP 1 (arbitrary units)")
    ax.set_ylabel("UMAP 2 (arbitrary units)")
    ax.set_title(wrap(title, width_in, 11), fontsize=11)
    ax.set_aspect("equal", adjustable="datalim")


def umap_continuous(
    xy: np.ndarray,
    values: np.ndarray,
    path: str | Path,
    *,
    title: str,
    colorbar_label: str,
    cmap: str = "viridis",
    background_xy: np.ndarray | None = None,
    limits: tuple[float, float] | None = None,
) -> Path:
    """The latent map coloured by a continuous value; ``background_xy`` (e.g. images without a value) in grey.

    ``limits`` default to the 1st and 99th percentiles; values beyond are drawn in the end colours, on top, and the
    colour bar's arrows and label say how many and how far. The title gets the number of images drawn."""
    xy = np.asarray(xy, float)
    values = np.asarray(values, float)
    fig = new_figure()
    ax = fig.add_subplot()
    n_all = len(xy) + (0 if background_xy is None else len(background_xy))
    if background_xy is not None and len(background_xy):
        ax.scatter(background_xy[:, 0], background_xy[:, 1], s=marker_size(n_all), c=NONE_COLOUR, lw=0,
                   rasterized=True, label="no value")
    vmin, vmax = limits or robust_limits(values)
    ok = np.isfinite(values)
    if ok.sum() > DENSE_N:
        im = ax.hexbin(xy[ok, 0], xy[ok, 1], C=values[ok], reduce_C_function=np.mean, gridsize=250, cmap=cmap,
                       vmin=vmin, vmax=vmax, mincnt=1, linewidths=0)
    else:
        order = np.argsort(values[ok], kind="stable")  # highest values drawn last, on top
        im = ax.scatter(xy[ok][order, 0], xy[ok][order, 1], c=values[ok][order], s=marker_size(n_all), cmap=cmap,
                        vmin=vmin, vmax=vmax, lw=0, rasterized=True)
    colorbar(fig, im, ax, colorbar_label, values[ok])
    n_bg = 0 if background_xy is None else len(background_xy)
    _axes_umap(ax, f"{title} (n = {int(ok.sum()):,}" + (f", {n_bg:,} grey)" if n_bg else ")"))
    if background_xy is not None and len(background_xy):
        ax.legend(loc="lower right", fontsize=8, markerscale=max(1.0, 4 / max(marker_size(n_all), 0.1)))
    return save_figure(fig, path)


def umap_categorical(
    xy: np.ndarray,
    categories: Sequence,
    path: str | Path,
    *,
    title: str,
    legend_title: str,
    max_categories: int = 9,
    none_label: str = "none",
) -> Path:
    """The latent map coloured by a category (e.g. top Talk hashtag); rare ones pooled as 'other', missing grey."""
    xy = np.asarray(xy, float)
    cats = pd.Series(categories, dtype=object).where(pd.notna(pd.Series(categories, dtype=object)), none_label)
    cats = cats.astype(str).replace({"": none_label, "nan": none_label, "None": none_label})
    counts = cats[cats != none_label].value_counts()
    keep = list(counts.index[:max_categories])
    cats = cats.where(cats.isin(keep) | (cats == none_label), "other")
    fig = new_figure(7.5, 5.5)
    ax = fig.add_subplot()
    size = marker_size(len(xy))
    none = (cats == none_label).to_numpy()
    ax.scatter(xy[none, 0], xy[none, 1], s=size, c=NONE_COLOUR, lw=0, rasterized=True,
               label=f"{none_label} ({none.sum()})")
    palette = [f"C{i}" for i in range(10)]
    labels = keep + (["other"] if (cats == "other").any() else [])
    for i, lab in enumerate(labels):
        m = (cats == lab).to_numpy()
        ax.scatter(xy[m, 0], xy[m, 1], s=max(size, 6.0), c=palette[i % 10] if lab != "other" else "black",
                   lw=0, rasterized=True, label=f"{lab} ({m.sum()})")
    # a figure legend "outside": constrained layout makes room for it, so no entry is cut off at the edge
    fig.legend(*ax.get_legend_handles_labels(), title=legend_title, loc="outside right center", fontsize=8,
               markerscale=2)
    _axes_umap(ax, f"{title} (n = {len(xy):,})", 4.5)
    return save_figure(fig, path)


def interest_map(
    xy: np.ndarray,
    probability: np.ndarray,
    path: str | Path,
    *,
    title: str = "Predicted volunteer interest over the latent map",
    shown_xy: np.ndarray | None = None,
    shown_high: np.ndarray | None = None,
) -> Path:
    """Predicted P(high consensus) per image, shown high-consensus images ringed, and the P = 0.5 boundary as a
    cyan contour where the predictions cross 0.5.

    The colour scale runs from 0 to the largest prediction (rounded up to a tenth), so a model that never
    predicts more than 0.3 still shows its structure; the title says whether the boundary is drawn and, when it is
    not, that P stays below (or above) 0.5 everywhere."""
    xy = np.asarray(xy, float)
    p = np.asarray(probability, float)
    fig = new_figure()
    ax = fig.add_subplot()
    ok = np.isfinite(p)
    order = np.argsort(p[ok], kind="stable")
    vmax = float(min(1.0, np.ceil(np.nanmax(p[ok]) * 10 + 1e-9) / 10)) if ok.any() else 1.0
    im = ax.scatter(xy[ok][order, 0], xy[ok][order, 1], c=p[ok][order], s=marker_size(ok.sum()), cmap="magma",
                    vmin=0, vmax=max(vmax, 0.1), lw=0, rasterized=True)
    colorbar(fig, im, ax, "predicted P(high volunteer consensus)", p[ok])
    drawn = False
    if ok.sum() >= 10 and np.ptp(p[ok]) > 0 and p[ok].min() < 0.5 < p[ok].max():
        drawn = _boundary(ax, xy[ok], p[ok])
    if shown_xy is not None and shown_high is not None and np.any(shown_high):
        h = np.asarray(shown_high, bool)
        ax.scatter(shown_xy[h, 0], shown_xy[h, 1], s=max(4.0, marker_size(len(xy)) * 1.5), facecolors="none",
                   edgecolors="tab:cyan", lw=0.5, label=f"high consensus (volunteers, n = {int(h.sum())})")
        ax.legend(fontsize=8, loc="lower right")
    if drawn:
        note = "cyan line: P = 0.5"
    elif ok.any():
        side = "below" if np.nanmax(p[ok]) < 0.5 else "above" if np.nanmin(p[ok]) > 0.5 else "around"
        note = (f"P {side} 0.5 everywhere (max {np.nanmax(p[ok]):.2f}): no P = 0.5 boundary" if side != "around"
                else "no P = 0.5 boundary could be drawn")
    else:
        note = "no predictions"
    _axes_umap(ax, f"{title} (n = {int(ok.sum()):,}; {note})")
    return save_figure(fig, path)


def _boundary(ax, xy: np.ndarray, p: np.ndarray) -> bool:
    """The P = 0.5 contour over a Delaunay triangulation of the points, leaving out triangles that span empty
    space (an edge longer than 3x the 90th percentile of nearest-neighbour distances). True when a line was
    drawn."""
    import matplotlib.tri as mtri
    from scipy.spatial import cKDTree

    try:
        tri = mtri.Triangulation(xy[:, 0], xy[:, 1])
        nn = cKDTree(xy).query(xy, k=2)[0][:, 1]
        limit = 3.0 * float(np.percentile(nn, 90))
        t = tri.triangles
        edges = np.stack([np.linalg.norm(xy[t[:, i]] - xy[t[:, (i + 1) % 3]], axis=1) for i in range(3)], axis=1)
        tri.set_mask(edges.max(axis=1) > limit)
        cs = ax.tricontour(tri, p, levels=[0.5], colors="tab:cyan", linewidths=1.2)
        cs.set_gid("p05-boundary")
        return any(len(seg) for seg in cs.allsegs[0])
    except (ValueError, RuntimeError):  # degenerate triangulation (collinear points): keep the map without it
        return False
