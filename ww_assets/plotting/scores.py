"""Figures of the machine scores: how a batch's anomaly scores are distributed, and how well each score finds
known oddities (on samples with a truth table), with a 95% interval on each AUROC.

Classes of the embedded sample have 4 to 11 images, so an AUROC without its interval says little. The interval is
the bootstrap one when the metrics table carries it (``auroc_ci_low`` / ``auroc_ci_high``), else Hanley and
McNeil's (1982) normal approximation from the AUROC and the two counts (``hanley_mcneil_interval``), named as such
on the axis.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from ww_assets.plotting.style import new_figure, save_figure, wrap

__all__ = ["detection_quality", "hanley_mcneil_interval", "score_histogram"]


def hanley_mcneil_interval(auroc, n_pos, n_neg, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """Hanley & McNeil (1982) interval on an AUROC: A +- z * SE with
    SE^2 = [A(1-A) + (n_pos-1)(Q1-A^2) + (n_neg-1)(Q2-A^2)] / (n_pos n_neg), Q1 = A/(2-A), Q2 = 2A^2/(1+A);
    clipped to [0, 1]. NaN where a count is zero."""
    a = np.asarray(auroc, float)
    p = np.asarray(n_pos, float)
    q = np.asarray(n_neg, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        q1, q2 = a / (2 - a), 2 * a ** 2 / (1 + a)
        var = (a * (1 - a) + (p - 1) * (q1 - a ** 2) + (q - 1) * (q2 - a ** 2)) / (p * q)
        se = np.sqrt(np.clip(var, 0, None))
    se = np.where((p > 0) & (q > 0), se, np.nan)
    return np.clip(a - z * se, 0, 1), np.clip(a + z * se, 0, 1)


def score_histogram(values: np.ndarray, path: str | Path, title: str, xlabel: str,
                    line: float | None = None, line_label: str | None = None) -> Path:
    """Histogram (log counts) with the median, and an optional labelled threshold line."""
    fig = new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size:
        ax.hist(v, bins=min(60, max(10, int(np.sqrt(v.size)))), color="C0", alpha=0.85)
        ax.axvline(float(np.median(v)), color="k", ls="--", lw=1, label=f"median {np.median(v):.4g}")
        if line is not None:
            ax.axvline(line, color="C3", ls=":", lw=1.5, label=line_label or f"{line:g}")
        ax.legend(fontsize=8)
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("number of images (log scale)")
    ax.set_title("\n".join(textwrap.wrap(f"{title} (n = {v.size:,})", 72)), fontsize=9)
    return save_figure(fig, path)


def detection_quality(metrics: pd.DataFrame, path: str | Path, title: str, target_line: float = 0.9) -> Path:
    """AUROC of each score per target (all injected, astrophysical, artifacts, each class), each with its 95%
    interval: the bootstrap one when ``metrics`` has ``auroc_ci_low`` / ``auroc_ci_high`` columns, else Hanley and
    McNeil's from ``n_pos`` and ``n_neg``."""
    fig = new_figure(10, 4.8)
    ax = fig.add_subplot()
    targets = list(dict.fromkeys(metrics["target"]))
    scores = list(dict.fromkeys(metrics["score"]))
    width = 0.8 / max(1, len(scores))
    x = np.arange(len(targets))
    has_ci = {"auroc_ci_low", "auroc_ci_high"} <= set(metrics.columns)
    for k, score in enumerate(scores):
        sub = metrics[metrics["score"] == score].set_index("target").reindex(targets)
        if has_ci:
            lo, hi = sub["auroc_ci_low"].to_numpy(float), sub["auroc_ci_high"].to_numpy(float)
        else:
            lo, hi = hanley_mcneil_interval(sub["auroc"], sub["n_pos"], sub["n_neg"])
        a = sub["auroc"].to_numpy(float)
        err = np.nan_to_num(np.vstack([np.clip(a - lo, 0, None), np.clip(hi - a, 0, None)]))
        ax.bar(x + (k - (len(scores) - 1) / 2) * width, sub["auroc"], width, yerr=err, capsize=2,
               label=score.replace("_", " "))
    ax.axhline(0.5, color="0.4", ls="--", lw=1, label="chance (0.5)")
    ax.axhline(target_line, color="C3", ls=":", lw=1, label=f"target {target_line:g}")
    n_pos = metrics.drop_duplicates("target").set_index("target")["n_pos"]
    ax.set_xticks(x, [f"{t}\n(n={int(n_pos[t])})" for t in targets], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("AUROC, target vs normal images\n" + ("(95% bootstrap interval)" if has_ci else
                                                           "(95% interval, Hanley & McNeil 1982)"))
    ax.set_xlabel("target (number of target images)")
    ax.set_title(wrap(title, 8.0, 10), fontsize=10)
    fig.legend(*ax.get_legend_handles_labels(), fontsize=8, loc="outside right upper")
    return save_figure(fig, path)
