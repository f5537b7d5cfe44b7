"""The human-vs-machine comparison on synthetic tables whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ww_assets.analysis import comparison, statistics
from ww_assets.analysis.comparison import COMPARISON_COLUMNS, ComparisonConfig


def synthetic_table(n: int = 600, seed: int = 1) -> pd.DataFrame:
    """image_score tracks volunteer interest; feature_score is pure noise; anomaly_score rates artifacts highest.

    Oddities sit at map position x ~ +5, artifacts at x ~ -5, normal galaxies around 0.
    """
    rng = np.random.default_rng(seed)
    kind = rng.choice(["normal", "oddity", "artifact"], size=n, p=[0.75, 0.15, 0.10])
    p = np.where(kind == "oddity", 0.5, np.where(kind == "artifact", 0.05, 0.04))
    shown = rng.integers(15, 26, size=n)
    shown[:20] = 1  # shown too few times: must be left out
    selected = rng.binomial(shown, p)
    interest = selected / shown
    return pd.DataFrame({
        "image_id": [f"i{i}" for i in range(n)],
        "batch": "b",
        "image_score": interest + rng.normal(scale=0.05, size=n),
        "feature_score": rng.normal(size=n),
        "anomaly_score": rng.normal(size=n) + np.where(kind == "artifact", 3.0, np.where(kind == "oddity", 1.0, 0)),
        "shown": shown, "selected": selected, "fraction": interest,
        "umap_x": rng.normal(scale=0.7, size=n) + np.where(kind == "oddity", 5, np.where(kind == "artifact", -5, 0)),
        "umap_y": rng.normal(size=n),
        "label": kind, "kind": kind, "has_subject": True,
    })


@pytest.fixture(scope="module")
def table():
    return synthetic_table()


def test_table_has_stated_columns_and_intervals(table):
    cfg = ComparisonConfig(n_boot=400, high_consensus_threshold=0.3)
    out = comparison.compare_scores(table, cfg)
    assert list(out.columns) == COMPARISON_COLUMNS
    assert list(out["score"]) == ["image_score", "feature_score", "anomaly_score"]
    assert (out["n_images"] == len(table) - 20).all()
    for _, r in out.iterrows():
        for est, lo, hi in (("spearman_rho", "spearman_ci_low", "spearman_ci_high"),
                            ("auroc", "auroc_ci_low", "auroc_ci_high"),
                            ("top_high_share", "top_high_share_ci_low", "top_high_share_ci_high")):
            assert r[lo] <= r[est] <= r[hi] and r[hi] - r[lo] < 0.5, (r["score"], est)
    by = out.set_index("score")
    assert by.loc["image_score", "spearman_ci_low"] > 0.6 and by.loc["image_score", "auroc_ci_low"] > 0.9
    # Pure noise: no relation, and intervals as wide as ~580 images allow (not degenerate).
    assert abs(by.loc["feature_score", "spearman_rho"]) < 0.1 and abs(by.loc["feature_score", "auroc"] - 0.5) < 0.1
    assert 0.1 < by.loc["feature_score", "spearman_ci_high"] - by.loc["feature_score", "spearman_ci_low"] < 0.25
    # Reproducible for a seed.
    pd.testing.assert_frame_equal(out, comparison.compare_scores(table, cfg))


def test_auroc_is_the_probability_a_positive_outranks_a_negative(table):
    """Both AUROC forms (the point estimate and the vectorised one the bootstrap resamples) against the definition,
    counted over every (positive, negative) pair with ties as one half."""
    y = (table["fraction"] > 0.3).to_numpy()
    s = table["anomaly_score"].round(1).to_numpy()  # rounded: ties must count one half
    pos, neg = s[y][:, None], s[~y][None, :]
    expected = ((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size)
    assert statistics.auroc(s, y) == pytest.approx(expected, abs=1e-12)
    assert statistics.auroc_statistic(s[y], s[~y]) == pytest.approx(expected, abs=1e-12)
    batch = np.stack([s, s[::-1]])  # rows are resamples: each row's own AUROC
    got = statistics.auroc_statistic(batch[:, y], batch[:, ~y])
    assert got == pytest.approx([expected, statistics.auroc(s[::-1], y)], abs=1e-12)
    assert np.isnan(statistics.auroc(s, np.ones_like(y)))


def test_vectorised_statistics_match_their_definitions(table):
    from scipy.stats import spearmanr

    rng = np.random.default_rng(7)
    x = table["image_score"].to_numpy()
    f = table["fraction"].to_numpy()
    high = f > 0.3
    rows = rng.integers(0, len(x), size=(3, len(x)))
    got = statistics.spearman_statistic(x[rows], f[rows])
    assert got == pytest.approx([spearmanr(x[r], f[r]).statistic for r in rows], abs=1e-12)
    n_top = round(0.05 * len(x))
    order = np.argsort(-x)[:n_top]
    assert statistics.top_share(x, high, 0.05) == pytest.approx(high[order].mean())
    shares = statistics.top_share(x[rows], high[rows], 0.05)
    assert shares == pytest.approx([high[r][np.argsort(-x[r])[:n_top]].mean() for r in rows])


def test_bootstrap_interval_is_seeded_and_means_what_it_says():
    """The percentile interval of a mean over 2000 values: close to the normal-theory mean +- 1.96 s / sqrt(n)."""
    v = np.random.default_rng(3).exponential(size=2000)
    kw = dict(n_resamples=2000, confidence_level=0.95, paired=False)
    lo, hi = statistics.bootstrap_interval((v,), np.mean, rng=np.random.default_rng(1), **kw)
    half = 1.96 * v.std(ddof=1) / np.sqrt(v.size)
    assert lo < v.mean() < hi
    assert (lo, hi) == pytest.approx((v.mean() - half, v.mean() + half), abs=0.15 * half)
    assert (lo, hi) == statistics.bootstrap_interval((v,), np.mean, rng=np.random.default_rng(1), **kw)
    # One observation: every resample is that value; a constant sample: Spearman undefined, no interval.
    assert statistics.bootstrap_interval((np.array([0.25]),), np.mean, rng=np.random.default_rng(1), **kw) == \
        (0.25, 0.25)
    nan = statistics.bootstrap_interval((v, np.ones_like(v)), statistics.spearman_statistic,
                                        rng=np.random.default_rng(1), n_resamples=200, confidence_level=0.95,
                                        paired=True)
    assert np.isnan(nan).all()


def test_wilson_interval_known_values():
    """Published Wilson 95% intervals (Newcombe 1998, table I): 0/10, 1/29 and 81/263."""
    lo, hi = statistics.wilson_interval([0, 1, 81, 3], [10, 29, 263, 0])
    assert lo[:3] == pytest.approx([0.0, 0.0061, 0.2553], abs=1e-4)
    assert hi[:3] == pytest.approx([0.2775, 0.1718, 0.3662], abs=1e-4)
    assert np.isnan(lo[3]) and np.isnan(hi[3])


def test_consensus_class_labels():
    t = pd.DataFrame({"shown": [1, 5, 5, 5, np.nan], "fraction": [1.0, 0.0, 0.2, 0.5, np.nan]})
    got = comparison.consensus_class(t, threshold=0.5, min_shown=3).tolist()
    assert got == ["not shown", "never selected", "low", "high consensus", "not shown"]
    assert set(got) <= set(comparison.CONSENSUS_CLASSES)


def test_interest_model_uses_map_position_and_is_cross_validated(table):
    cfg = ComparisonConfig(high_consensus_threshold=0.3, latent_features=("umap_x", "umap_y"))
    no_image = table.assign(image_score=np.random.default_rng(0).normal(size=len(table)))
    model = comparison.fit_interest_model(no_image, cfg)
    s = model.summary.set_index("model")
    assert s.loc["logistic: scores + map position", "cv_auroc_mean"] > \
        s.loc["logistic: scores", "cv_auroc_mean"] + 0.1
    assert (model.cv.groupby("model")["fold"].nunique() == 5).all()
    assert model.oof.notna().sum() == len(table) - 20
    coef = model.coefficients.set_index("feature")["coefficient_per_sd"]
    assert coef["umap_x"] > 0  # oddities sit at positive x
    assert "umap_x" in model.tree_rules
    p = model.predict(no_image)
    assert np.nanmean(p[no_image["kind"] == "oddity"]) > 0.5 > np.nanmean(p[no_image["kind"] == "normal"])


def test_by_class_recovers_the_simulation_intent(table):
    out = comparison.by_class_table(table, ComparisonConfig(n_boot=300, high_consensus_threshold=0.3),
                                    class_col="kind").set_index("class")
    assert out.loc["oddity", "fraction_ci_low"] > out.loc["normal", "fraction_ci_high"]
    assert out.loc["artifact", "fraction_ci_high"] < out.loc["oddity", "fraction_ci_low"]
    assert out.loc["artifact", "score_sigma_ci_low"] > out.loc["normal", "score_sigma_ci_high"]


def test_consensus_pools_repeated_subjects():
    c = pd.DataFrame({"subject_id": [1, 2, 3], "object_id": ["a", "a", "b"], "shown": [10, 10, 4],
                      "selected": [5, 1, 0], "fraction": [0.5, 0.1, 0.0], "ci_low": [0.2, 0.0, 0.0],
                      "ci_high": [0.8, 0.4, 0.5], "comments": [0, 3, 0], "top_tag": [None, "ring", None]})
    out = comparison.consensus_by_image(c).set_index("image_id")
    assert out.loc["a", "shown"] == 20 and out.loc["a", "selected"] == 6
    assert out.loc["a", "fraction"] == pytest.approx(0.3) and out.loc["a", "top_tag"] == "ring"
    assert out.loc["a", "ci_low"] < 0.3 < out.loc["a", "ci_high"]
    assert out.loc["b", "ci_high"] == 0.5  # single subject: the consensus table's own interval kept


def test_too_few_images_fail_with_a_message(table):
    with pytest.raises(ValueError, match="shown at least"):
        comparison.compare_scores(table.head(20), ComparisonConfig())
