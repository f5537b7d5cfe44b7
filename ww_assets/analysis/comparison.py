"""Human vs machine: how well do the wGAN's anomaly scores predict what volunteers find interesting?

The paper's comparison, per score (image, feature, anomaly):

* Spearman rank correlation between the score and the volunteer fraction (selected / shown);
* AUROC of the score for telling *high-consensus* images (fraction >= threshold) from the rest;
* the share of high-consensus images among the score's top ``top_fraction`` (vs the base rate);

each with a seeded percentile bootstrap interval (``statistics.bootstrap_interval``: scipy's bootstrap; images
resampled with replacement, for AUROC positives and negatives resampled separately so every replicate has both).
Only images shown at least ``min_shown`` times enter. ``consensus_class`` names the four groups the figures and
galleries use (not shown, never selected, low, high consensus).

Then a small, explainable model of volunteer interest: logistic regression on standardised scores plus the image's
position in the latent map (UMAP x, y), cross-validated (stratified folds) against the score-only model, with a
depth-limited decision tree beside it whose rules read as sentences. Out-of-fold probabilities are kept per image;
the model refitted on all shown images predicts the unseen ones for the next volunteer round.

On the embedded sample, ``by_class_table`` checks the simulation's intent: striking oddities should have high
volunteer fractions, artifacts high machine scores but low fractions.

No Dagster here: plain frames in, frames out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd

from ww_assets.analysis.statistics import (
    auroc,
    auroc_statistic,
    bootstrap_interval,
    spearman_statistic,
    top_share,
    wilson_interval,
)
from ww_assets.scores.release import SCORE_COLUMNS as _SCORE_TABLE_COLUMNS

__all__ = [
    "COMPARISON_COLUMNS", "CONSENSUS_CLASSES", "SCORE_COLUMNS", "SCORE_LABELS", "ComparisonConfig", "InterestModel",
    "build_image_table", "by_class_table", "comparable", "compare_scores", "consensus_by_image", "consensus_class",
    "disagreements", "fit_interest_model", "roc_points",
]

SCORE_COLUMNS = tuple(_SCORE_TABLE_COLUMNS)
SCORE_LABELS = {"image_score": "image score", "feature_score": "feature score", "anomaly_score": "anomaly score"}
COMPARISON_COLUMNS = [
    "score", "n_images", "n_high_consensus", "threshold", "spearman_rho", "spearman_ci_low", "spearman_ci_high",
    "spearman_p", "auroc", "auroc_ci_low", "auroc_ci_high", "top_fraction", "top_high_share", "top_high_share_ci_low",
    "top_high_share_ci_high", "base_rate", "n_boot", "ci_level",
]
#: ``consensus_class`` labels, in the order the figures list them
CONSENSUS_CLASSES = ("never selected", "low", "high consensus", "not shown")


@dataclass
class ComparisonConfig:
    """What counts as high consensus, which images enter, and how intervals and cross-validation are drawn."""

    score_columns: tuple[str, ...] = SCORE_COLUMNS
    high_consensus_threshold: float = 0.25
    min_shown: int = 3
    top_fraction: float = 0.05
    n_boot: int = 1000
    ci_level: float = 0.95
    seed: int = 20211
    cv_folds: int = 5
    latent_features: tuple[str, ...] = ("umap_x", "umap_y")
    tree_depth: int = 3
    model: str = "logistic"  # the model that predicts interest for the next round: logistic | tree

    def validate(self) -> None:
        if not 0 < self.high_consensus_threshold <= 1:
            raise ValueError("high_consensus_threshold must be in (0, 1]")
        if not 0 < self.top_fraction < 1:
            raise ValueError("top_fraction must be in (0, 1)")
        if not 0 < self.ci_level < 1:
            raise ValueError("ci_level must be in (0, 1)")
        if self.model not in ("logistic", "tree"):
            raise ValueError("model must be 'logistic' or 'tree'")
        if self.n_boot < 100:
            raise ValueError("n_boot must be at least 100 for a meaningful interval")


# --------------------------------------------------------------------------------------------------------------
# Joining scores, consensus and the latent map into one per-image table
# --------------------------------------------------------------------------------------------------------------


def consensus_by_image(consensus: pd.DataFrame) -> pd.DataFrame:
    """One row per image from ``consensus.subject_consensus`` (one row per subject).

    An image uploaded as more than one subject has its exposures pooled: shown and selected summed, fraction and
    its Wilson interval recomputed; Talk counts summed; the top tag taken from its most discussed subject.
    """
    c = consensus.copy()
    if "image_id" not in c.columns:
        if "object_id" not in c.columns:
            raise KeyError("subject_consensus has neither image_id nor object_id")
        c = c.rename(columns={"object_id": "image_id"})
    c = c[c["image_id"].notna()].copy()
    c["image_id"] = c["image_id"].astype(str)
    for col, default in (("shown", 0), ("selected", 0), ("comments", 0), ("commenters", 0)):
        if col not in c.columns:
            c[col] = default
        c[col] = pd.to_numeric(c[col], errors="coerce").fillna(0).astype(np.int64)
    for col in ("top_tag", "top_tag_share", "ci_low", "ci_high", "fraction", "subject_id"):
        if col not in c.columns:
            c[col] = np.nan
    c = c.sort_values(["image_id", "comments", "shown", "subject_id"], ascending=[True, False, False, True])
    multi = c["image_id"].duplicated(keep=False)
    agg = c.groupby("image_id", sort=False).agg(
        subject_id=("subject_id", "first"), n_subjects=("subject_id", "size"), shown=("shown", "sum"),
        selected=("selected", "sum"), comments=("comments", "sum"), commenters=("commenters", "sum"),
        top_tag=("top_tag", "first"), top_tag_share=("top_tag_share", "first"), fraction=("fraction", "first"),
        ci_low=("ci_low", "first"), ci_high=("ci_high", "first"),
    ).reset_index()
    pooled = agg["image_id"].isin(set(c.loc[multi, "image_id"])) | agg["fraction"].isna()
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = agg["selected"] / agg["shown"].where(agg["shown"] > 0)
    lo, hi = wilson_interval(agg["selected"], agg["shown"])
    agg.loc[pooled, "fraction"] = frac[pooled]
    agg.loc[pooled, "ci_low"] = lo[pooled.to_numpy()]
    agg.loc[pooled, "ci_high"] = hi[pooled.to_numpy()]
    agg.loc[agg["shown"] <= 0, ["fraction", "ci_low", "ci_high"]] = np.nan
    return agg


def build_image_table(
    scores: pd.DataFrame,
    consensus: pd.DataFrame | None,
    umap: pd.DataFrame | None = None,
    subject_object_ids: pd.Series | None = None,
    truth: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per scored image: scores (+ sigma scores), volunteer consensus, map position, injected class if known.

    ``has_subject`` is true when the image is already a Zooniverse subject (in ``consensus`` or among
    ``subject_object_ids``, e.g. raw.subjects.object_id): the next round draws only from images without one.
    """
    s = scores.copy()
    s["image_id"] = s["image_id"].astype(str)
    if s["image_id"].duplicated().any():
        s = s.drop_duplicates("image_id", keep="first")
    out = s
    if consensus is not None and len(consensus):
        out = out.merge(consensus_by_image(consensus), on="image_id", how="left")
    else:
        for col in ("subject_id", "n_subjects", "shown", "selected", "comments", "commenters", "top_tag",
                    "top_tag_share", "fraction", "ci_low", "ci_high"):
            out[col] = np.nan
    for col in ("shown", "selected", "comments", "commenters", "n_subjects"):
        out[col] = out[col].fillna(0).astype(np.int64)
    known = set(out.loc[out["n_subjects"] > 0, "image_id"])
    if subject_object_ids is not None:
        known |= set(pd.Series(subject_object_ids).dropna().astype(str))
    out["has_subject"] = out["image_id"].isin(known)
    if umap is not None and len(umap):
        cols = [c for c in umap.columns if c.startswith("umap_")]
        u = umap[["image_id", *cols]].copy()
        u["image_id"] = u["image_id"].astype(str)
        out = out.merge(u.drop_duplicates("image_id"), on="image_id", how="left")
    if truth is not None and len(truth):
        t = truth.copy()
        if "image_id" not in t.columns:
            t = t.rename(columns={"object_id": "image_id"})
        t["image_id"] = t["image_id"].astype(str)
        keep = [c for c in ("image_id", "label", "kind", "is_odd", "is_artifact") if c in t.columns]
        out = out.merge(t[keep].drop_duplicates("image_id"), on="image_id", how="left")
    return out.reset_index(drop=True)


def comparable(table: pd.DataFrame, config: ComparisonConfig) -> pd.DataFrame:
    """Images that enter the comparison: shown at least ``min_shown`` times, with every score finite."""
    ok = table["shown"] >= config.min_shown
    for col in config.score_columns:
        ok &= np.isfinite(pd.to_numeric(table[col], errors="coerce"))
    out = table[ok].copy()
    out["high_consensus"] = out["fraction"] >= config.high_consensus_threshold
    return out


def consensus_class(table: pd.DataFrame, threshold: float, min_shown: int) -> pd.Series:
    """Label each image (``CONSENSUS_CLASSES``): not shown (< min_shown), never selected, low, or high consensus."""
    never, low, high, not_shown = CONSENSUS_CLASSES
    shown = table["shown"].fillna(0).to_numpy()
    frac = table["fraction"].to_numpy(float)
    out = np.where(shown < min_shown, not_shown,
                   np.where(frac >= threshold, high, np.where(frac > 0, low, never)))
    return pd.Series(out, index=table.index)


# --------------------------------------------------------------------------------------------------------------
# The per-score comparison (statistics and intervals: statistics.py)
# --------------------------------------------------------------------------------------------------------------


def _score_statistics(s: np.ndarray, frac: np.ndarray, high: np.ndarray, config: ComparisonConfig,
                      rng: np.random.Generator) -> dict:
    """One score's estimates and intervals; ``rng`` is drawn from in the order Spearman, AUROC, top share."""
    from scipy.stats import spearmanr

    boot = dict(n_resamples=config.n_boot, confidence_level=config.ci_level, rng=rng)
    if np.ptp(s) == 0 or np.ptp(frac) == 0:
        rho, p = float("nan"), float("nan")
    else:
        res = spearmanr(s, frac)
        rho, p = float(res.statistic), float(res.pvalue)
    rho_lo, rho_hi = bootstrap_interval((s, frac), spearman_statistic, paired=True, **boot)
    if high.any() and not high.all():
        au_lo, au_hi = bootstrap_interval((s[high], s[~high]), auroc_statistic, paired=False, **boot)
    else:
        au_lo, au_hi = float("nan"), float("nan")
    share = partial(top_share, top_fraction=config.top_fraction)
    top_lo, top_hi = bootstrap_interval((s, high), share, paired=True, **boot)
    return dict(spearman_rho=rho, spearman_ci_low=rho_lo, spearman_ci_high=rho_hi, spearman_p=p,
                auroc=auroc(s, high), auroc_ci_low=au_lo, auroc_ci_high=au_hi, top_high_share=float(share(s, high)),
                top_high_share_ci_low=top_lo, top_high_share_ci_high=top_hi)


def compare_scores(table: pd.DataFrame, config: ComparisonConfig | None = None) -> pd.DataFrame:
    """The comparison table: one row per score, columns ``COMPARISON_COLUMNS``.

    Each score's bootstrap draws from its own generator, seeded by ``(config.seed, position of the score)``.
    """
    config = config or ComparisonConfig()
    config.validate()
    data = comparable(table, config)
    if len(data) < 3:
        raise ValueError(f"only {len(data)} images were shown at least {config.min_shown} times: too few to compare "
                         "(lower min_shown or pull more classifications)")
    frac = data["fraction"].to_numpy(float)
    high = data["high_consensus"].to_numpy(bool)
    rows = []
    for i, col in enumerate(config.score_columns):
        rng = np.random.default_rng([config.seed, i])
        rows.append(dict(
            score=col, n_images=len(data), n_high_consensus=int(high.sum()),
            threshold=config.high_consensus_threshold, top_fraction=config.top_fraction,
            base_rate=float(high.mean()), n_boot=config.n_boot, ci_level=config.ci_level,
            **_score_statistics(data[col].to_numpy(float), frac, high, config, rng),
        ))
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def roc_points(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates of ``scores`` for ``labels`` (for plotting)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(np.asarray(labels, bool), np.asarray(scores, float))
    return fpr, tpr


# --------------------------------------------------------------------------------------------------------------
# A model of volunteer interest
# --------------------------------------------------------------------------------------------------------------


@dataclass
class InterestModel:
    """Cross-validated interest models and the chosen one refitted on all shown images."""

    cv: pd.DataFrame  # model, features, fold, auroc
    summary: pd.DataFrame  # model, features, cv_auroc_mean, cv_auroc_sd, n_images, n_positive
    coefficients: pd.DataFrame  # feature, coefficient (per standard deviation), odds_ratio_per_sd
    tree_rules: str
    features: list[str]
    model_name: str
    oof: pd.Series  # out-of-fold probability of high consensus, indexed like the training rows
    estimator: object = field(repr=False, default=None)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        x = frame[self.features].to_numpy(float)
        ok = np.isfinite(x).all(axis=1)
        out = np.full(len(frame), np.nan)
        if ok.any():
            out[ok] = self.estimator.predict_proba(x[ok])[:, 1]
        return out


def _logistic():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))


def _tree(depth: int, seed: int):
    from sklearn.tree import DecisionTreeClassifier

    return DecisionTreeClassifier(max_depth=depth, min_samples_leaf=10, class_weight="balanced", random_state=seed)


def fit_interest_model(table: pd.DataFrame, config: ComparisonConfig | None = None) -> InterestModel:
    """Cross-validate score-only and score+map models of P(high consensus); refit the configured one on all data."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.tree import export_text

    config = config or ComparisonConfig()
    config.validate()
    data = comparable(table, config)
    latent = [c for c in config.latent_features if c in data.columns]
    scores = list(config.score_columns)
    full = scores + latent
    data = data[np.isfinite(data[full].to_numpy(float)).all(axis=1)]
    y = data["high_consensus"].to_numpy(bool)
    n_pos = int(y.sum())
    folds = min(config.cv_folds, n_pos, int((~y).sum()))
    if folds < 2:
        raise ValueError(f"{n_pos} high-consensus and {int((~y).sum())} other images among {len(data)} shown "
                         f"at least {config.min_shown} times: need at least 2 of each to cross-validate")
    candidates = {
        "logistic: scores": (scores, lambda: _logistic()),
        "logistic: scores + map position": (full, lambda: _logistic()),
        f"tree (depth {config.tree_depth}): scores + map position": (full, lambda: _tree(config.tree_depth,
                                                                                        config.seed)),
    }
    chosen = "logistic: scores + map position" if config.model == "logistic" else \
        f"tree (depth {config.tree_depth}): scores + map position"
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=config.seed)
    cv_rows, oof = [], pd.Series(np.nan, index=data.index, dtype=float)
    for name, (feats, make) in candidates.items():
        x = data[feats].to_numpy(float)
        for fold, (tr, te) in enumerate(skf.split(x, y)):
            est = make().fit(x[tr], y[tr])
            p = est.predict_proba(x[te])[:, 1]
            cv_rows.append(dict(model=name, features=", ".join(feats), fold=fold,
                                auroc=float(roc_auc_score(y[te], p)) if len(set(y[te])) == 2 else np.nan))
            if name == chosen:
                oof.iloc[te] = p
    cv = pd.DataFrame(cv_rows)
    summary = (cv.groupby(["model", "features"], sort=False)["auroc"]
               .agg(cv_auroc_mean="mean", cv_auroc_sd="std").reset_index())
    summary["n_images"] = len(data)
    summary["n_positive"] = n_pos
    summary["n_folds"] = folds
    summary["used_for_next_round"] = summary["model"] == chosen

    feats = candidates[chosen][0]
    estimator = candidates[chosen][1]().fit(data[feats].to_numpy(float), y)
    logit = _logistic().fit(data[full].to_numpy(float), y)
    coef = logit[-1].coef_[0]
    coefficients = pd.DataFrame({"feature": full, "coefficient_per_sd": coef, "odds_ratio_per_sd": np.exp(coef)})
    tree = _tree(config.tree_depth, config.seed).fit(data[full].to_numpy(float), y)
    rules = export_text(tree, feature_names=full, show_weights=False)
    return InterestModel(cv=cv, summary=summary, coefficients=coefficients, tree_rules=rules, features=feats,
                         model_name=chosen, oof=oof, estimator=estimator)


# --------------------------------------------------------------------------------------------------------------
# Disagreements and the injected classes of the sample
# --------------------------------------------------------------------------------------------------------------


def disagreements(table: pd.DataFrame, config: ComparisonConfig | None = None, score: str = "anomaly_score",
                  n: int = 16) -> dict[str, pd.DataFrame]:
    """The four galleries' rows: top machine anomalies, top volunteer picks, and the two kinds of disagreement.

    ``machine_only``: in the score's top ``top_fraction`` but below the consensus threshold, highest score first.
    ``volunteer_only``: high consensus but score below the median, highest fraction first.
    """
    config = config or ComparisonConfig()
    data = comparable(table, config)
    all_scored = table[np.isfinite(pd.to_numeric(table[score], errors="coerce"))]
    cut = data[score].quantile(1 - config.top_fraction) if len(data) else np.inf
    med = data[score].median() if len(data) else np.nan
    return {
        "machine_top": all_scored.sort_values(score, ascending=False).head(n),
        "volunteer_top": data.sort_values(["fraction", "shown"], ascending=False).head(n),
        "machine_only": data[(data[score] >= cut) & ~data["high_consensus"]].sort_values(score, ascending=False)
        .head(n),
        "volunteer_only": data[data["high_consensus"] & (data[score] < med)]
        .sort_values(["fraction", "shown"], ascending=False).head(n),
    }


def by_class_table(table: pd.DataFrame, config: ComparisonConfig | None = None, class_col: str = "label",
                   score: str = "anomaly_score") -> pd.DataFrame:
    """Per injected class (sample only): volunteer fraction and machine score, each with a bootstrap interval.

    The intervals are percentile bootstraps of the class mean, drawn in class order from one generator seeded by
    ``config.seed``.

    Columns: class, n, mean_fraction (+ci), share_high_consensus, mean_score_sigma (+ci), share_machine_top
    (share in the score's top ``top_fraction`` over all shown images).
    """
    config = config or ComparisonConfig()
    data = comparable(table, config)
    if class_col not in data.columns:
        raise KeyError(f"no {class_col!r} column: by-class results need the sample's truth table")
    s = data[score].to_numpy(float)
    sigma_col = f"{score}_sigma"
    if sigma_col in data.columns and np.isfinite(data[sigma_col].to_numpy(float)).all():
        sigma = data[sigma_col].to_numpy(float)  # normalised over the whole scored sample
    else:
        sigma = (s - s.mean()) / (s.std() or 1.0)
    cut = np.quantile(s, 1 - config.top_fraction)
    data = data.assign(_sigma=sigma, _top=s >= cut)
    boot = dict(n_resamples=config.n_boot, confidence_level=config.ci_level, rng=np.random.default_rng(config.seed),
                paired=False)
    rows = []
    for cls, g in data.groupby(class_col, sort=True):
        f = g["fraction"].to_numpy(float)
        z = g["_sigma"].to_numpy(float)
        flo, fhi = bootstrap_interval((f,), np.mean, **boot)
        zlo, zhi = bootstrap_interval((z,), np.mean, **boot)
        rows.append(dict(
            **{"class": str(cls)}, n=len(g), mean_fraction=float(f.mean()), fraction_ci_low=flo, fraction_ci_high=fhi,
            share_high_consensus=float(g["high_consensus"].mean()), mean_score_sigma=float(z.mean()),
            score_sigma_ci_low=zlo, score_sigma_ci_high=zhi, share_machine_top=float(g["_top"].mean()),
        ))
    return pd.DataFrame(rows)
