"""Figures of how machine scores and volunteer fractions are distributed and how they relate: score histograms by
consensus class, volunteer fraction against a score, ROC curves, and per-class means with their intervals.

These are the comparison's figures (``analysis.comparison`` computes the numbers they show). Score axes are in
the model's own units and switch to a log scale when a score spans more than two decades.

Fraction vs score keeps its x axis on the bulk of the images: when a few outliers lie far beyond the 99th
percentile, the axis stops there and they are drawn as arrow heads on the right edge, counted in the legend (with
the largest value), instead of squeezing everything else into a sliver. Fractions are discrete (k / n) and many are
exactly 0, so the points are jittered vertically by a stated amount and the number at 0 is given; the Spearman
correlation (with its bootstrap interval when the comparison computed one) is printed on the figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ww_assets.plotting.style import (
    CLASS_COLOURS,
    CLASS_ORDER,
    DENSE_N,
    colorbar,
    marker_size,
    new_figure,
    save_figure,
    wrap,
)

__all__ = ["binned_means", "class_summary", "fraction_vs_score", "roc_curves", "score_distributions"]


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
    fig = new_figure(4.2 * len(score_columns), 4.2)
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
    fig.suptitle(wrap(title, 4.2 * len(score_columns), 12))
    return save_figure(fig, path)


def binned_means(x: np.ndarray, y: np.ndarray, n_bins: int = 12, z: float = 1.96) -> pd.DataFrame:
    """Equal-count bins of x (``scipy.stats.binned_statistic`` on quantile edges): mean x, mean y and a
    normal-approximation interval on mean y (``z`` standard errors, sample standard deviation); empty bins left out.

    Columns ``x, mean, low, high, n, x_median``; the last bin includes the largest x.
    """
    from scipy.stats import binned_statistic

    columns = ["x", "mean", "low", "high", "n", "x_median"]
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = np.asarray(x, float)[ok], np.asarray(y, float)[ok]
    edges = np.unique(np.quantile(x, np.linspace(0, 1, n_bins + 1))) if len(x) else np.empty(0)
    if len(edges) < 2:
        return pd.DataFrame(columns=columns)
    (mean_x, mean_y), _, _ = binned_statistic(x, [x, y], statistic="mean", bins=edges)
    n = binned_statistic(x, y, statistic="count", bins=edges).statistic.astype(np.int64)
    x_median = binned_statistic(x, x, statistic="median", bins=edges).statistic
    sd0 = binned_statistic(x, y, statistic="std", bins=edges).statistic  # population sd (ddof 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.where(n > 1, sd0 / np.sqrt(n - 1), np.nan)  # = sample sd / sqrt(n)
    keep = n > 0
    frame = pd.DataFrame({"x": mean_x, "mean": mean_y, "low": mean_y - z * se, "high": mean_y + z * se, "n": n,
                          "x_median": x_median})
    return frame[keep].reset_index(drop=True)


def _x_range(x: np.ndarray, q: float = 99.0, stretch: float = 0.5) -> tuple[float, float]:
    """x limits: the data's, unless the values above the ``q`` percentile would widen the axis by more than
    ``stretch`` times the span of the rest; then the axis stops just past that percentile."""
    lo, hi, top = float(np.min(x)), float(np.percentile(x, q)), float(np.max(x))
    span = max(hi - lo, 1e-9)
    if top - hi > stretch * span:
        return lo - 0.03 * span, hi + 0.05 * span
    full = max(top - lo, 1e-9)
    return lo - 0.03 * full, top + 0.03 * full


def fraction_vs_score(
    table: pd.DataFrame,
    path: str | Path,
    *,
    score: str = "anomaly_score",
    x_label: str = "anomaly score (model units)",
    n_bins: int = 12,
    threshold: float | None = None,
    title: str = "Volunteer fraction vs machine anomaly score",
    spearman: Mapping[str, float] | None = None,
    jitter: float = 0.012,
    seed: int = 0,
) -> Path:
    """Each shown image (or a hexbin of counts at large N), with equal-count binned means and 95% intervals.

    ``spearman``: ``{"rho", "ci_low", "ci_high", "ci_level"}`` from the comparison, printed on the figure
    (computed here, without an interval, when not given). Points are jittered vertically by up to ``jitter``
    (seeded); outliers beyond the x range are drawn at the right edge (see the module docstring).
    """
    x = pd.to_numeric(table[score], errors="coerce").to_numpy(float)
    y = table["fraction"].to_numpy(float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    fig = new_figure(7.4, 5.6)
    ax = fig.add_subplot()
    x_lo, x_hi = _x_range(x) if n else (0.0, 1.0)
    beyond = x > x_hi
    n_zero = int((y == 0).sum())
    rng = np.random.default_rng(seed)
    yj = y + rng.uniform(-jitter, jitter, n) if jitter else y
    if n > DENSE_N:  # counts per cell: no jitter needed
        im = ax.hexbin(x[~beyond], y[~beyond], gridsize=120, bins="log", cmap="Greys", mincnt=1, linewidths=0,
                       extent=(x_lo, x_hi, -0.02, 1.02))
        colorbar(fig, im, ax, f"images per cell (log; n = {n:,}, {n_zero:,} at fraction 0)")
    else:
        point_label = f"images (n = {n:,}; {n_zero:,} at fraction 0" + (
            f"; jittered \u00b1{jitter:g} in y)" if jitter else ")")
        ax.scatter(x[~beyond], yj[~beyond], s=marker_size(n) * 2, c="0.55", alpha=0.5, lw=0, rasterized=True,
                   label=point_label)
    if beyond.any():
        edge = x_hi - 0.01 * (x_hi - x_lo)
        ax.scatter(np.full(int(beyond.sum()), edge), yj[beyond], marker=">", s=28, c="C1", lw=0, zorder=4,
                   label=f"{int(beyond.sum())} beyond {x_hi:.3g} (up to {x.max():.3g}), drawn at the edge")
    bm = binned_means(x, y, n_bins=n_bins)
    if len(bm):
        ax.errorbar(np.clip(bm["x_median"], x_lo, x_hi), bm["mean"],
                    yerr=[bm["mean"] - bm["low"], bm["high"] - bm["mean"]], fmt="o-", color="C3", capsize=3, lw=1.8,
                    label=f"mean fraction in {len(bm)} equal-count bins (at the bin's median), 95% interval")
    if threshold is not None:
        ax.axhline(threshold, color="C0", ls="--", lw=1, label=f"high-consensus threshold ({threshold:g})")
    if spearman is None and n > 2 and np.ptp(x) > 0 and np.ptp(y) > 0:
        from scipy.stats import spearmanr

        spearman = {"rho": float(spearmanr(x, y).statistic)}
    if spearman is not None and np.isfinite(spearman.get("rho", np.nan)):
        text = f"Spearman \u03c1 = {spearman['rho']:.3f}"
        if np.isfinite(spearman.get("ci_low", np.nan)) and np.isfinite(spearman.get("ci_high", np.nan)):
            text += (f"\n{spearman.get('ci_level', 0.95):.0%} bootstrap interval "
                     f"[{spearman['ci_low']:.3f}, {spearman['ci_high']:.3f}]")
        ax.text(0.98, 0.97, text + f"\nn = {n:,} images", transform=ax.transAxes, ha="right", va="top", fontsize=9,
                bbox=dict(boxstyle="round", fc="white", ec="0.7", alpha=0.9))
    ax.set_xlim(x_lo, x_hi)
    ax.set_xlabel(x_label)
    ax.set_ylabel("volunteer fraction (selected / shown)")
    ax.set_ylim(-0.04, 1.04)
    ax.set_title(wrap(title, 6.0, 12))
    ax.legend(fontsize=7.5, loc="upper left")
    return save_figure(fig, path)


def roc_curves(curves: Mapping[str, dict], path: str | Path, *, title: str) -> Path:
    """``curves[label] = {"fpr", "tpr", "auroc", "ci_low", "ci_high"}``; the chance line dashed."""
    fig = new_figure(5.8, 5.5)
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
    ax.set_title(wrap(title, 5.2, 11), fontsize=11)
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)


def class_summary(by_class: pd.DataFrame, path: str | Path, *, title: str) -> Path:
    """Per injected class: mean volunteer fraction and mean anomaly sigma, each with its 95% interval."""
    fig = new_figure(10, 4.2)
    a1, a2 = fig.subplots(1, 2)
    y = np.arange(len(by_class))
    labels = by_class["class"].astype(str).tolist()
    a1.errorbar(by_class["mean_fraction"], y, xerr=[by_class["mean_fraction"] - by_class["fraction_ci_low"],
                                                    by_class["fraction_ci_high"] - by_class["mean_fraction"]],
                fmt="o", color="C3", capsize=3)
    labels = [f"{lab} (n={int(k)})" for lab, k in zip(labels, by_class["n"])] if "n" in by_class.columns \
        else labels
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
    a2.set_yticks(y, [""] * len(y))  # the class names once, on the left panel
    a1.set_ylabel("injected class (images)")
    for ax in (a1, a2):
        ax.invert_yaxis()
    fig.suptitle(wrap(title, 10, 12))
    return save_figure(fig, path)
