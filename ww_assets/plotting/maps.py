"""Figures drawn on the latent map (UMAP x, y): the map coloured by a value, by a category, and by predicted
volunteer interest with its decision boundary.

Every map shares axes labels and an equal aspect, because UMAP distances mean the same along both axes (their
units mean nothing). At more than ``DENSE_N`` points the continuous map becomes a hexbin of the mean value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ww_assets.plotting.style import DENSE_N, NONE_COLOUR, marker_size, new_figure, robust_limits, save_figure

__all__ = ["interest_map", "umap_categorical", "umap_continuous"]


def _axes_umap(ax, title: str) -> None:
    ax.set_xlabel("UMAP 1 (arbitrary units)")
    ax.set_ylabel("UMAP 2 (arbitrary units)")
    ax.set_title(title)
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
    """The latent map coloured by a continuous value; ``background_xy`` (e.g. images without a value) in grey."""
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
    cb = fig.colorbar(im, ax=ax, shrink=0.85)
    cb.set_label(colorbar_label)
    _axes_umap(ax, title)
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
    ax.legend(title=legend_title, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, markerscale=2)
    _axes_umap(ax, title)
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
    """Predicted P(high consensus) per image, the 0.5 boundary as a contour, shown high-consensus images ringed."""
    xy = np.asarray(xy, float)
    p = np.asarray(probability, float)
    fig = new_figure()
    ax = fig.add_subplot()
    ok = np.isfinite(p)
    order = np.argsort(p[ok], kind="stable")
    im = ax.scatter(xy[ok][order, 0], xy[ok][order, 1], c=p[ok][order], s=marker_size(ok.sum()), cmap="magma",
                    vmin=0, vmax=1, lw=0, rasterized=True)
    fig.colorbar(im, ax=ax, shrink=0.85).set_label("predicted P(high volunteer consensus)")
    if ok.sum() >= 10 and np.ptp(p[ok]) > 0 and p[ok].min() < 0.5 < p[ok].max():
        _boundary(ax, xy[ok], p[ok])
    if shown_xy is not None and shown_high is not None and np.any(shown_high):
        h = np.asarray(shown_high, bool)
        ax.scatter(shown_xy[h, 0], shown_xy[h, 1], s=max(4.0, marker_size(len(xy)) * 1.5), facecolors="none",
                   edgecolors="tab:cyan", lw=0.5, label="high consensus (volunteers)")
        ax.legend(fontsize=8, loc="lower right")
    _axes_umap(ax, title + " (cyan line: P = 0.5)")
    return save_figure(fig, path)


def _boundary(ax, xy: np.ndarray, p: np.ndarray) -> None:
    """The P = 0.5 contour over a Delaunay triangulation of the points, leaving out triangles that span empty
    space (an edge longer than 3x the 90th percentile of nearest-neighbour distances)."""
    import matplotlib.tri as mtri
    from scipy.spatial import cKDTree

    try:
        tri = mtri.Triangulation(xy[:, 0], xy[:, 1])
        nn = cKDTree(xy).query(xy, k=2)[0][:, 1]
        limit = 3.0 * float(np.percentile(nn, 90))
        t = tri.triangles
        edges = np.stack([np.linalg.norm(xy[t[:, i]] - xy[t[:, (i + 1) % 3]], axis=1) for i in range(3)], axis=1)
        tri.set_mask(edges.max(axis=1) > limit)
        ax.tricontour(tri, p, levels=[0.5], colors="tab:cyan", linewidths=1.2)
    except (ValueError, RuntimeError):  # degenerate triangulation (collinear points): keep the map without it
        pass
