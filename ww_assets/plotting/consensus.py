"""The volunteer-consensus figure: how the fraction is distributed, and how many volunteers saw each image."""

from __future__ import annotations

from pathlib import Path

from ww_assets.plotting.style import new_figure, save_figure

__all__ = ["fraction_histogram"]


def fraction_histogram(fraction_counts: list[int], shown: list[tuple[int, int]], path: str | Path,
                       threshold: float) -> Path:
    """Two panels: images per fraction bin (log scale) with the analysis's high-consensus ``threshold`` marked,
    and images per number of volunteers who saw them."""
    bins = len(fraction_counts)
    fig = new_figure(10, 3.8)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.bar([(i + 0.5) / bins for i in range(bins)], fraction_counts, width=1 / bins, color="#3b6ea8",
            edgecolor="white")
    ax1.set_yscale("log")
    ax1.set_xlim(0, 1)
    ax1.set_xlabel("volunteer consensus fraction (selected / shown)")
    ax1.set_ylabel("images (log scale)")
    ax1.set_title(f"Consensus over {sum(fraction_counts):,} images shown", fontsize=10)
    ax1.axvline(threshold, color="C3", ls="--", lw=1, label=f"high-consensus threshold ({threshold:g})")
    ax1.legend(fontsize=8)
    ax2.bar([s for s, _ in shown], [n for _, n in shown], width=1.0, color="#a8553b")
    ax2.set_xlabel("distinct volunteers who saw the image (shown)")
    ax2.set_ylabel("images")
    ax2.set_title(f"Volunteers per image ({sum(n for _, n in shown):,} images)", fontsize=10)
    return save_figure(fig, path)
