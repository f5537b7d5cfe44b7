"""Every figure of the analysis, as plain functions: frames/arrays in, one PNG written atomically out.

Matplotlib's object API (``Figure`` + Agg canvas) is used, never pyplot's global state, so the functions are safe
in worker processes and threads. Above ``DENSE_N`` points a map is drawn as a hexbin of the mean value (or of
counts), which stays readable and fast at a million points.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ww_assets.storage import atomic_path

DENSE_N = 200_000
DPI = 110
NONE_COLOUR = "#d0d0d0"
CLASS_ORDER = ("never selected", "low", "high consensus", "not shown")
CLASS_COLOURS = {"never selected": "#7f7f7f", "low": "#1f77b4", "high consensus": "#d62728", "not shown": "#bcbd22"}


def _figure(w: float = 7.0, h: float = 5.5) -> Figure:
    fig = Figure(figsize=(w, h), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG at ``path`` (atomically: a reader never sees a half-written file)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _marker_size(n: int) -> float:
    return float(np.clip(3e4 / max(n, 1), 0.3, 25.0))


def _robust_limits(values: np.ndarray, lo: float = 1.0, hi: float = 99.0) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return 0.0, 1.0
    a, b = np.percentile(v, [lo, hi])
    return (float(a), float(b)) if b > a else (float(v.min()), float(v.max()) + 1e-9)


def _axes_umap(ax, title: str):
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
    fig = _figure()
    ax = fig.add_subplot()
    n_all = len(xy) + (0 if background_xy is None else len(background_xy))
    if background_xy is not None and len(background_xy):
        ax.scatter(background_xy[:, 0], background_xy[:, 1], s=_marker_size(n_all), c=NONE_COLOUR, lw=0,
                   rasterized=True, label="no value")
    vmin, vmax = limits or _robust_limits(values)
    ok = np.isfinite(values)
    if ok.sum() > DENSE_N:
        im = ax.hexbin(xy[ok, 0], xy[ok, 1], C=values[ok], reduce_C_function=np.mean, gridsize=250, cmap=cmap,
                       vmin=vmin, vmax=vmax, mincnt=1, linewidths=0)
    else:
        order = np.argsort(values[ok], kind="stable")  # highest values drawn last, on top
        im = ax.scatter(xy[ok][order, 0], xy[ok][order, 1], c=values[ok][order], s=_marker_size(n_all), cmap=cmap,
                        vmin=vmin, vmax=vmax, lw=0, rasterized=True)
    cb = fig.colorbar(im, ax=ax, shrink=0.85)
    cb.set_label(colorbar_label)
    _axes_umap(ax, title)
    if background_xy is not None and len(background_xy):
        ax.legend(loc="lower right", fontsize=8, markerscale=max(1.0, 4 / max(_marker_size(n_all), 0.1)))
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
    fig = _figure(7.5, 5.5)
    ax = fig.add_subplot()
    size = _marker_size(len(xy))
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


def consensus_class(table: pd.DataFrame, threshold: float, min_shown: int) -> pd.Series:
    """Label each image: not shown (< min_shown), never selected, low, or high consensus."""
    shown = table["shown"].fillna(0).to_numpy()
    frac = table["fraction"].to_numpy(float)
    out = np.where(shown < min_shown, "not shown",
                   np.where(frac >= threshold, "high consensus", np.where(frac > 0, "low", "never selected")))
    return pd.Series(out, index=table.index)


def score_distributions(
    table: pd.DataFrame,
    path: str | Path,
    *,
    score_columns: Sequence[str],
    class_col: str = "consensus_class",
    title: str = "Machine scores by volunteer consensus class",
    score_labels: Mapping[str, str] | None = None,
) -> Path:
    """One panel per score: density histograms of the score for each consensus class (shared bins, log-spaced
    when the score spans more than two decades)."""
    fig = _figure(4.2 * len(score_columns), 4.2)
    axes = fig.subplots(1, len(score_columns), squeeze=False)[0]
    classes = [c for c in CLASS_ORDER if (table[class_col] == c).any()] + \
        sorted(set(table[class_col].astype(str)) - set(CLASS_ORDER))
    for ax, col in zip(axes, score_columns):
        v = pd.to_numeric(table[col], errors="coerce").to_numpy(float)
        finite = v[np.isfinite(v)]
        if finite.size == 0:
            ax.set_title(f"{col}: no values")
            continue
        lo, hi = np.percentile(finite, [0.5, 99.5])
        log = lo > 0 and hi / lo > 100
        n_bins = int(np.clip(np.sqrt(finite.size), 10, 60))
        bins = np.geomspace(lo, hi, n_bins) if log else np.linspace(lo, hi if hi > lo else lo + 1, n_bins)
        for cls in classes:
            m = (table[class_col] == cls).to_numpy() & np.isfinite(v)
            if m.sum() == 0:
                continue
            ax.hist(np.clip(v[m], bins[0], bins[-1]), bins=bins, density=True, histtype="step", lw=1.6,
                    color=CLASS_COLOURS.get(cls), label=f"{cls} (n={m.sum()})")
        if log:
            ax.set_xscale("log")
        ax.set_xlabel((score_labels or {}).get(col, col.replace("_", " ")) + " (model units)")
        ax.set_ylabel("probability density")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return save_figure(fig, path)


def binned_means(x: np.ndarray, y: np.ndarray, n_bins: int = 12, z: float = 1.96) -> pd.DataFrame:
    """Equal-count bins of x: mean x, mean y and a normal-approximation interval on mean y."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) == 0:
        return pd.DataFrame(columns=["x", "mean", "low", "high", "n"])
    edges = np.unique(np.quantile(x, np.linspace(0, 1, n_bins + 1)))
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    rows = []
    for b in range(len(edges) - 1):
        m = idx == b
        if m.sum() == 0:
            continue
        yy = y[m]
        se = yy.std(ddof=1) / np.sqrt(m.sum()) if m.sum() > 1 else np.nan
        rows.append(dict(x=x[m].mean(), mean=yy.mean(), low=yy.mean() - z * se, high=yy.mean() + z * se, n=m.sum()))
    return pd.DataFrame(rows)


def fraction_vs_score(
    table: pd.DataFrame,
    path: str | Path,
    *,
    score: str = "anomaly_score",
    x_label: str = "anomaly score (model units)",
    n_bins: int = 12,
    threshold: float | None = None,
    title: str = "Volunteer fraction vs machine anomaly score",
) -> Path:
    """Each shown image (or a hexbin of counts at large N), with equal-count binned means and 95% intervals."""
    x = pd.to_numeric(table[score], errors="coerce").to_numpy(float)
    y = table["fraction"].to_numpy(float)
    ok = np.isfinite(x) & np.isfinite(y)
    fig = _figure()
    ax = fig.add_subplot()
    if ok.sum() > DENSE_N:
        im = ax.hexbin(x[ok], y[ok], gridsize=120, bins="log", cmap="Greys", mincnt=1, linewidths=0)
        fig.colorbar(im, ax=ax, shrink=0.85).set_label("images per cell (log)")
    else:
        ax.scatter(x[ok], y[ok], s=_marker_size(ok.sum()) * 2, c="0.55", alpha=0.5, lw=0, rasterized=True,
                   label=f"images (n={ok.sum()})")
    bm = binned_means(x[ok], y[ok], n_bins=n_bins)
    if len(bm):
        ax.errorbar(bm["x"], bm["mean"], yerr=[bm["mean"] - bm["low"], bm["high"] - bm["mean"]], fmt="o-",
                    color="C3", capsize=3, lw=1.8, label="binned mean, 95% interval")
    if threshold is not None:
        ax.axhline(threshold, color="C0", ls="--", lw=1, label=f"high-consensus threshold ({threshold:g})")
    ax.set_xlabel(x_label)
    ax.set_ylabel("volunteer fraction (selected / shown)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left")
    return save_figure(fig, path)


def roc_curves(curves: Mapping[str, dict], path: str | Path, *, title: str) -> Path:
    """``curves[label] = {"fpr", "tpr", "auroc", "ci_low", "ci_high"}``; the chance line dashed."""
    fig = _figure(5.8, 5.5)
    ax = fig.add_subplot()
    for i, (label, c) in enumerate(curves.items()):
        ax.plot(c["fpr"], c["tpr"], color=f"C{i}", lw=2,
                label=f"{label}: AUROC {c['auroc']:.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}]")
    ax.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1, label="chance (0.5)")
    ax.set_xlabel("false-positive rate (share of other images flagged)")
    ax.set_ylabel("true-positive rate (share of high-consensus images flagged)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)


def gallery(
    images: np.ndarray,
    captions: Sequence[str],
    path: str | Path,
    *,
    title: str,
    ncols: int = 8,
    empty_note: str = "no images in this set",
) -> Path:
    """A grid of cutouts, each with a caption above.

    ``images``: uint8 (N, 3, H, W) channels first or (N, H, W, 3), rows in FITS order (row 0 = south), as
    ``cutouts.npy`` stores them; drawn with origin "lower" so north is up, as volunteers saw them.
    """
    images = np.asarray(images)
    n = len(images)
    if n and images.shape[1] == 3 and images.shape[-1] != 3:
        images = images.transpose(0, 2, 3, 1)
    ncols = max(1, min(ncols, n)) if n else 1
    nrows = max(1, int(np.ceil(n / ncols)))
    fig = _figure(1.6 * ncols + 0.2, 2.0 * nrows + 0.6)
    if n == 0:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, empty_note, ha="center", va="center", fontsize=12)
        ax.set_axis_off()
    else:
        axes = fig.subplots(nrows, ncols, squeeze=False)
        for i, ax in enumerate(axes.ravel()):
            ax.set_axis_off()
            if i < n:
                ax.imshow(images[i], origin="lower", interpolation="nearest")
                ax.set_title(captions[i], fontsize=6.5)
    fig.suptitle(title)
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
    fig = _figure()
    ax = fig.add_subplot()
    ok = np.isfinite(p)
    order = np.argsort(p[ok], kind="stable")
    im = ax.scatter(xy[ok][order, 0], xy[ok][order, 1], c=p[ok][order], s=_marker_size(ok.sum()), cmap="magma",
                    vmin=0, vmax=1, lw=0, rasterized=True)
    fig.colorbar(im, ax=ax, shrink=0.85).set_label("predicted P(high volunteer consensus)")
    if ok.sum() >= 10 and np.ptp(p[ok]) > 0 and p[ok].min() < 0.5 < p[ok].max():
        _boundary(ax, xy[ok], p[ok])
    if shown_xy is not None and shown_high is not None and np.any(shown_high):
        h = np.asarray(shown_high, bool)
        ax.scatter(shown_xy[h, 0], shown_xy[h, 1], s=max(4.0, _marker_size(len(xy)) * 1.5), facecolors="none",
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


def class_summary(by_class: pd.DataFrame, path: str | Path, *, title: str) -> Path:
    """Per injected class: mean volunteer fraction and mean anomaly sigma, each with its 95% interval."""
    fig = _figure(10, 4.2)
    a1, a2 = fig.subplots(1, 2)
    y = np.arange(len(by_class))
    labels = by_class["class"].astype(str).tolist()
    a1.errorbar(by_class["mean_fraction"], y, xerr=[by_class["mean_fraction"] - by_class["fraction_ci_low"],
                                                    by_class["fraction_ci_high"] - by_class["mean_fraction"]],
                fmt="o", color="C3", capsize=3)
    a1.set_yticks(y, labels)
    a1.set_xlabel("mean volunteer fraction (selected / shown)")
    a1.set_title("Volunteers")
    a2.errorbar(by_class["mean_score_sigma"], y,
                xerr=[by_class["mean_score_sigma"] - by_class["score_sigma_ci_low"],
                      by_class["score_sigma_ci_high"] - by_class["mean_score_sigma"]], fmt="o", color="C0", capsize=3)
    a2.set_yticks(y, labels)
    a2.axvline(0, color="0.6", lw=1, ls="--")
    a2.set_xlabel("mean anomaly score (sigma above the sample mean)")
    a2.set_title("Machine")
    for ax in (a1, a2):
        ax.set_ylabel("injected class")
        ax.invert_yaxis()
    fig.suptitle(title)
    return save_figure(fig, path)
