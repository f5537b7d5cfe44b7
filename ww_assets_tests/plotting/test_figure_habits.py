"""The habits every figure keeps (``ww_assets.plotting.style``), checked on what was drawn, not on pixels: a
clipped colour scale shows it (extend arrows, how many beyond), a title promises only what is drawn, no text is
cut off at the figure's edge."""

from __future__ import annotations

import numpy as np

from ww_assets.plotting.maps import interest_map, umap_categorical, umap_continuous
from ww_assets.plotting.style import capture_figures, text_outside_figure


def _colorbar_label(fig) -> str:
    return next(ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>")


def test_a_clipped_colour_scale_says_so(tmp_path):
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(500, 2))
    values = rng.normal(size=500)
    values[:5] = 18.0                      # five outliers far beyond the 99th percentile
    with capture_figures() as figs:
        path = umap_continuous(xy, values, tmp_path / "map.png", title="anomaly", colorbar_label="sigma")
    fig = figs[path]
    cbar = next(ax for ax in fig.axes if ax.get_label() == "<colorbar>")
    assert cbar._colorbar.extend in ("max", "both")
    label = _colorbar_label(fig)
    assert "above" in label and "max 18" in label
    assert "n = 500" in fig.axes[0].get_title()
    assert text_outside_figure(fig) == []


def test_unclipped_scale_has_no_arrows(tmp_path):
    xy = np.random.default_rng(1).normal(size=(50, 2))
    values = np.linspace(0, 1, 50)
    with capture_figures() as figs:
        path = umap_continuous(xy, values, tmp_path / "map.png", title="t", colorbar_label="v", limits=(0, 1))
    cbar = next(ax for ax in figs[path].axes if ax.get_label() == "<colorbar>")
    assert cbar._colorbar.extend == "neither"


def test_interest_map_names_the_boundary_only_when_drawn(tmp_path):
    rng = np.random.default_rng(2)
    xy = rng.normal(size=(400, 2))
    low = 0.31 * rng.random(400)           # never reaches 0.5: no boundary to draw
    with capture_figures() as figs:
        path = interest_map(xy, low, tmp_path / "low.png")
    title = figs[path].axes[0].get_title()
    assert "cyan line" not in title and "below" in title
    assert figs[path].axes[0].collections[0].norm.vmax <= 0.4   # the scale spans what is shown, not 0-1
    crossing = 1 / (1 + np.exp(-3 * xy[:, 0]))
    with capture_figures() as figs:
        path = interest_map(xy, crossing, tmp_path / "cross.png")
    assert "cyan line: P = 0.5" in figs[path].axes[0].get_title()


def test_long_labels_and_titles_stay_inside(tmp_path):
    rng = np.random.default_rng(3)
    xy = rng.normal(size=(300, 2))
    cats = rng.choice(["a very long injected class name", "compact_starforming", "satellite_trail"], 300)
    with capture_figures() as figs:
        path = umap_categorical(xy, cats, tmp_path / "cat.png", legend_title="injected class (truth)",
                                title="The latent map coloured by the injected class of each simulated image, "
                                      "which a long title must not push out of the figure")
    assert text_outside_figure(figs[path]) == []
