"""Every plot of the embedded sample, as `make demo` draws it (the session's demo site on the tiny sample), checked
mechanically: no text outside the figure, a colour bar wherever a colour scale is used, a title that names a line
only when it is drawn (``ww_assets_tests/support/figures.py``)."""

from __future__ import annotations

import pytest

from ww_assets.plotting.report import make_plots
from ww_assets.plotting.style import capture_figures
from ww_assets_tests.support.figures import habit_problems

pytestmark = [pytest.mark.slow]


def test_every_plot_of_the_sample_keeps_the_habits(demo_site):
    with capture_figures() as figs:
        paths = make_plots(demo_site["layout"])
    # the sample has the injected-class truth: its two class plots too
    assert {"umap_anomaly", "umap_volunteer_fraction", "umap_top_tag", "interest_map", "fraction_vs_anomaly",
            "roc_curves", "score_distributions", "gallery_volunteer_top", "gallery_machine_top"} <= set(paths)
    assert set(paths.values()) <= set(figs)
    problems, scaled = habit_problems(paths, figs)
    assert problems == []
    assert {"umap_anomaly", "umap_volunteer_fraction", "interest_map"} <= scaled     # the check looked
