"""Figures of the machine scores: how a batch's anomaly scores are distributed, and how well each score finds
known oddities (on samples with a truth table), with the bootstrap interval of each AUROC."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from ww_assets.plotting.style import new_figure, save_figure

__all__ = ["score_histogram", "detection_quality"]


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
    """AUROC of each score per target (all injected, astrophysical, artifacts, each class), with 95% intervals
    when ``metrics`` has ``auroc_ci_low`` / ``auroc_ci_high`` columns."""
    fig = new_figure(10, 4.8)
    ax = fig.add_subplot()
    targets = list(dict.fromkeys(metrics["target"]))
    scores = list(dict.fromkeys(metrics["score"]))
    width = 0.8 / max(1, len(scores))
    x = np.arange(len(targets))
    has_ci = {"auroc_ci_low", "auroc_ci_high"} <= set(metrics.columns)
    for k, score in enumerate(scores):
        sub = metrics[metrics["score"] == score].set_index("target").reindex(targets)
        err = None
        if has_ci:
            err = np.vstack([(sub["auroc"] - sub["auroc_ci_low"]).clip(lower=0),
                             (sub["auroc_ci_high"] - sub["auroc"]).clip(lower=0)])
        ax.bar(x + (k - (len(scores) - 1) / 2) * width, sub["auroc"], width, yerr=err, capsize=2,
               label=score.replace("_", " "))
    ax.axhline(0.5, color="0.4", ls="--", lw=1, label="chance (0.5)")
    ax.axhline(target_line, color="C3", ls=":", lw=1, label=f"target {target_line:g}")
    n_pos = metrics.drop_duplicates("target").set_index("target")["n_pos"]
    ax.set_xticks(x, [f"{t}\n(n={int(n_pos[t])})" for t in targets], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("AUROC, target images vs normal images" + (" (95% bootstrap interval)" if has_ci else ""))
    ax.set_xlabel("target (number of target images)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return save_figure(fig, path)
