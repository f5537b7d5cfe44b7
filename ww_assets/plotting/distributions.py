"""Figures of how machine scores and volunteer fractions are distributed and how they relate: score histograms by
consensus class, volunteer fraction against a score, ROC curves, and per-class means with their intervals.

These are the comparison's figures (``analysis.comparison`` computes the numbers they show). Score axes are in
the model's own units and switch to a log scale when a score spans more than two decades.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ww_assets.plotting.style import CLASS_COLOURS, CLASS_ORDER, DENSE_N, marker_size, new_figure, save_figure

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
    fig.suptitle(title)
    return save_figure(fig, path)


def binned_means(x: np.ndarray, y: np.ndarray, n_bins: int = 12, z: float = 1.96) -> pd.DataFrame:
    """Equal-count bins of x (``scipy.stats.binned_statistic`` on quantile edges): mean x, mean y and a
    normal-approximation interval on mean y (``z`` standard errors, sample standard deviation); empty bins left out.

    Columns ``x, mean, low, high, n``; the last bin includes the largest x.
    """
    from scipy.stats import binned_statistic

    columns = ["x", "mean", "low", "high", "n"]
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = np.asarray(x, float)[ok], np.asarray(y, float)[ok]
    edges = np.unique(np.quantile(x, np.linspace(0, 1, n_bins + 1))) if len(x) else np.empty(0)
    if len(edges) < 2:
        return pd.DataFrame(columns=columns)
    (mean_x, mean_y), _, _ = binned_statistic(x, [x, y], statistic="mean", bins=edges)
    n = binned_statistic(x, y, statistic="count", bins=edges).statistic.astype(np.int64)
    sd0 = binned_statistic(x, y, statistic="std", bins=edges).statistic  # population sd (ddof 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.where(n > 1, sd0 / np.sqrt(n - 1), np.nan)  # = sample sd / sqrt(n)
    keep = n > 0
    frame = pd.DataFrame({"x": mean_x, "mean": mean_y, "low": mean_y - z * se, "high": mean_y + z * se, "n": n})
    return frame[keep].reset_index(drop=True)


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
    fig = new_figure()
    ax = fig.add_subplot()
    if ok.sum() > DENSE_N:
        im = ax.hexbin(x[ok], y[ok], gridsize=120, bins="log", cmap="Greys", mincnt=1, linewidths=0)
        fig.colorbar(im, ax=ax, shrink=0.85).set_label("images per cell (log)")
    else:
        ax.scatter(x[ok], y[ok], s=marker_size(ok.sum()) * 2, c="0.55", alpha=0.5, lw=0, rasterized=True,
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
    ax.set_title(title)
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
