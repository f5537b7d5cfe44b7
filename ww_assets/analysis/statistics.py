"""The comparison's statistics and their intervals, computed by the field's libraries rather than by hand.

Why a module of its own: ``compare_scores`` and ``by_class_table`` need the same few estimates (Spearman's rho,
AUROC, the high-consensus share of the top of a ranking, a mean) each with a seeded bootstrap interval, and a
Wilson interval for a pooled fraction; written once here, they are computed one way everywhere.

Bootstrap: ``scipy.stats.bootstrap`` with ``method="percentile"``, vectorised (every statistic below takes arrays
with the resamples along the leading axes and the images along ``axis``).

* Percentile, not BCa: it is the interval the comparison has always reported (the 2.5th and 97.5th percentiles
  of the replicates), and BCa's acceleration needs a jackknife, n further evaluations of the statistic on n - 1
  images: for a rank statistic on 10^5 images that is 10^5 sorts of 10^5 values, hours where the percentile
  interval takes seconds.
* What is resampled: (x, y) pairs for Spearman and (score, label) pairs for the top share (``paired=True``); for
  AUROC the positives and the negatives are resampled separately (scipy's two-sample bootstrap, ``paired=False``),
  a stratified bootstrap, so every replicate has both classes and a defined AUROC.
* ``rng`` is a ``numpy.random.Generator`` consumed in call order, so a seed gives the same intervals every run.
  Resamples are drawn ``batch`` at a time so memory stays near ``RESAMPLE_BUDGET`` values per sample whatever N.
* A replicate whose statistic is undefined (NaN: a resample in which x or y is constant) is left out of the
  percentiles; the interval is NaN only when no replicate is defined.

Plain module: arrays in, numbers out; no Dagster, no pandas.
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np

__all__ = [
    "RESAMPLE_BUDGET", "auroc", "auroc_statistic", "bootstrap_interval", "spearman_statistic", "top_share",
    "wilson_interval",
]

#: resampled values held at once per sample (batch = RESAMPLE_BUDGET // N resamples): 160 MB of float64
RESAMPLE_BUDGET = 20_000_000


def wilson_interval(selected, shown, confidence_level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of ``selected / shown`` per element (astropy's), NaN where ``shown`` is 0."""
    from astropy.stats import binom_conf_interval

    k = np.atleast_1d(np.asarray(selected, dtype=float))
    n = np.atleast_1d(np.asarray(shown, dtype=float))
    lo, hi = np.full(n.shape, np.nan), np.full(n.shape, np.nan)
    ok = n > 0
    if ok.any():
        lo[ok], hi[ok] = binom_conf_interval(k[ok], n[ok], confidence_level=confidence_level, interval="wilson")
    return lo, hi


def auroc(scores, labels) -> float:
    """Area under the ROC curve of ``scores`` for boolean ``labels`` (scikit-learn's); NaN without both classes."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels, dtype=bool)
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, np.asarray(scores, dtype=float)))


def auroc_statistic(positives: np.ndarray, negatives: np.ndarray, axis: int = -1) -> np.ndarray:
    """AUROC from the two classes' scores, vectorised: the Mann-Whitney U of the positives over n_pos * n_neg.

    The same number as :func:`auroc` (ties count one half in both); this form takes a batch of resamples at once.
    """
    from scipy.stats import mannwhitneyu

    u = mannwhitneyu(positives, negatives, axis=axis, method="asymptotic").statistic
    return u / (np.shape(positives)[axis] * np.shape(negatives)[axis])


def spearman_statistic(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's rho along ``axis``, vectorised: Pearson's r of the average ranks (NaN where x or y is constant)."""
    from scipy.stats import ConstantInputWarning, pearsonr, rankdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        return pearsonr(rankdata(x, axis=axis), rankdata(y, axis=axis), axis=axis).statistic


def top_share(scores: np.ndarray, labels: np.ndarray, top_fraction: float, axis: int = -1) -> np.ndarray:
    """Share of true ``labels`` among the ``round(top_fraction * N)`` (at least 1) highest ``scores``, vectorised.

    Images tied exactly at the cut are taken in ``numpy.argpartition``'s order (deterministic for given input).
    """
    scores = np.moveaxis(np.asarray(scores, dtype=float), axis, -1)
    labels = np.moveaxis(np.asarray(labels, dtype=bool), axis, -1)
    n_top = max(1, int(round(top_fraction * scores.shape[-1])))
    top = np.argpartition(-scores, n_top - 1, axis=-1)[..., :n_top]
    return np.take_along_axis(labels, top, axis=-1).mean(axis=-1)


def bootstrap_interval(
    samples: Sequence[np.ndarray],
    statistic: Callable[..., np.ndarray],
    *,
    n_resamples: int,
    confidence_level: float,
    rng: np.random.Generator,
    paired: bool,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*samples, axis=-1)`` (``scipy.stats.bootstrap``).

    ``paired=True`` resamples the samples' rows together (pairs); ``False`` resamples each sample on its own.
    Undefined replicates are left out as the module docstring says; (NaN, NaN) when none is defined.
    """
    from scipy.stats import DegenerateDataWarning, bootstrap

    samples = [np.asarray(s) for s in samples]
    if min(len(s) for s in samples) == 0:
        return float("nan"), float("nan")
    # scipy asks for two observations per sample; every resample of [a, a] is a resample of [a] (all a), and the
    # statistics here do not depend on how many copies there are, so a sample of one is given twice.
    samples = [np.repeat(s, 2, axis=0) if len(s) == 1 else s for s in samples]
    size = max(len(s) for s in samples) if paired else sum(len(s) for s in samples)
    with warnings.catch_warnings():
        # scipy's message for NaN among the replicates names BCa whatever the method; handled below instead.
        warnings.simplefilter("ignore", DegenerateDataWarning)
        res = bootstrap(samples, statistic, n_resamples=n_resamples, batch=max(1, RESAMPLE_BUDGET // max(size, 1)),
                        vectorized=True, paired=paired, confidence_level=confidence_level, method="percentile",
                        rng=rng)
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if np.isfinite(lo) and np.isfinite(hi):
        return lo, hi
    replicates = np.asarray(res.bootstrap_distribution, dtype=float)
    replicates = replicates[np.isfinite(replicates)]
    if replicates.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - confidence_level) / 2
    lo, hi = np.quantile(replicates, [alpha, 1 - alpha])  # the percentile interval scipy gives, on the defined ones
    return float(lo), float(hi)
