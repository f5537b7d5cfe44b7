"""consensus_vs_score: the paper's comparison of volunteer consensus and machine scores
(``ww_assets.analysis.human_vs_machine``)."""

from typing import Optional

import dagster as dg
import numpy as np
import pandas as pd

from ww_assets.analysis.comparison import SCORE_COLUMNS, ComparisonConfig
from ww_assets.analysis.human_vs_machine import compare
from ww_assets.defs.automation import FOLLOW_INPUTS
from ww_assets.defs.metadata import table_markdown
from ww_assets.defs.pools import DUCKDB_POOL
from ww_assets.defs.resources import StorageResource
from ww_assets.storage import write_json, write_parquet


class ConsensusVsScoreConfig(dg.Config):
    """The comparison's settings (defaults: ``ww_assets.analysis.comparison.ComparisonConfig``): images shown fewer
    than ``min_shown`` times are left out; an image is 'high consensus' when its volunteer fraction is at least
    ``high_consensus_threshold``; intervals from ``n_boot`` bootstrap replicates at ``ci_level``; the interest
    model ('logistic' or 'tree') is cross-validated in ``cv_folds`` folds. ``score_family``: which model's scores
    to compare when several were normalised (default: the one covering most images)."""

    high_consensus_threshold: float = ComparisonConfig.high_consensus_threshold
    min_shown: int = ComparisonConfig.min_shown
    top_fraction: float = ComparisonConfig.top_fraction
    n_boot: int = ComparisonConfig.n_boot
    ci_level: float = ComparisonConfig.ci_level
    seed: int = ComparisonConfig.seed
    cv_folds: int = ComparisonConfig.cv_folds
    model: str = ComparisonConfig.model
    tree_depth: int = ComparisonConfig.tree_depth
    score_family: Optional[str] = None

    def to_comparison(self) -> ComparisonConfig:
        return ComparisonConfig(**self.model_dump(exclude={"score_family"}))


def _recovery_check(by_kind: pd.DataFrame | None) -> dg.AssetCheckResult:
    name = "simulated_volunteers_recovered"
    if by_kind is None or not {"normal", "oddity", "artifact"} <= set(by_kind["class"]):
        return dg.AssetCheckResult(check_name=name, passed=True,
                                   metadata={"skipped": "no injected classes (not the embedded sample)"})
    k = by_kind.set_index("class")
    odd_above = bool(k.loc["oddity", "fraction_ci_low"] > k.loc["normal", "fraction_ci_high"])
    art_below = bool(k.loc["artifact", "fraction_ci_high"] < k.loc["oddity", "fraction_ci_low"])
    art_machine = bool(k.loc["artifact", "score_sigma_ci_low"] > k.loc["normal", "score_sigma_ci_high"])
    return dg.AssetCheckResult(
        check_name=name, passed=odd_above and art_below and art_machine, severity=dg.AssetCheckSeverity.WARN,
        metadata={"oddities_more_selected_than_normal": odd_above, "artifacts_less_selected_than_oddities": art_below,
                  "artifacts_score_higher_than_normal": art_machine, "by_kind": table_markdown(by_kind.round(3))})


def _table_check(result: pd.DataFrame) -> dg.AssetCheckResult:
    est_in = all(r[f"{p}_ci_low"] - 1e-9 <= r[e] <= r[f"{p}_ci_high"] + 1e-9
                 for _, r in result.iterrows() for p, e in (("spearman", "spearman_rho"), ("auroc", "auroc")))
    finite = bool(np.isfinite(result[["spearman_rho", "spearman_ci_low", "spearman_ci_high", "auroc",
                                      "auroc_ci_low", "auroc_ci_high"]].to_numpy(float)).all())
    return dg.AssetCheckResult(check_name="comparison_table_complete",
                               passed=bool(len(result) == len(SCORE_COLUMNS) and finite and est_in),
                               metadata={"rows": len(result), "finite": finite, "estimates_inside_intervals": est_in})


@dg.asset(
    automation_condition=FOLLOW_INPUTS,
    kinds={"duckdb", "scikitlearn", "parquet"},
    deps=["anomaly_scores_normalised", "subject_consensus", "latent_umap"],
    pool=DUCKDB_POOL,
    check_specs=[
        dg.AssetCheckSpec("comparison_table_complete", asset="consensus_vs_score",
                          description="One row per score with finite estimates inside their intervals."),
        dg.AssetCheckSpec("simulated_volunteers_recovered", asset="consensus_vs_score", description=(
            "On the embedded sample: injected oddities are selected more than normal galaxies, artifacts less than "
            "oddities, and artifacts score higher than normal galaxies with the machine (95% intervals apart).")),
    ],
    description=(
        "The paper's comparison of volunteer consensus and machine scores. For image, feature and anomaly score: "
        "Spearman correlation with the volunteer fraction, AUROC for high-consensus images, and the share of "
        "high-consensus images in the score's top 5%, each with a bootstrap 95% interval; and a cross-validated "
        "logistic model of volunteer interest from the scores and the latent-map position (with a depth-3 decision "
        "tree beside it). Writes analysis/consensus_vs_score.parquet, interest_model.json, image_table.parquet (one "
        "row per scored image, what later assets read) and, on the sample, consensus_by_class.parquet."),
)
def consensus_vs_score(context: dg.AssetExecutionContext, config: ConsensusVsScoreConfig, storage: StorageResource):
    layout = storage.layout
    out = compare(layout, config.to_comparison(), config.score_family, log=context.log.info)
    if out.by_class is not None:
        write_parquet(out.by_class, layout.analysis_file("consensus_by_class"))
    write_parquet(out.table, layout.analysis_file("image_table"))
    write_parquet(out.result, layout.analysis_file("consensus_vs_score"))
    write_parquet(out.subject_map, layout.analysis_file("subject_map"))
    write_json(out.model_info, layout.analysis_file("interest_model"))
    r = out.result
    metadata = {
        "images_scored": len(out.table), "images_compared": int(r["n_images"].iloc[0]),
        "high_consensus_images": int(r["n_high_consensus"].iloc[0]),
        "comparison": table_markdown(r[["score", "spearman_rho", "spearman_ci_low", "spearman_ci_high", "auroc",
                                        "auroc_ci_low", "auroc_ci_high", "top_high_share", "base_rate"]].round(3)),
        "path": dg.MetadataValue.path(str(layout.analysis_file("consensus_vs_score"))),
        **{f"auroc_{row['score']}": round(float(row["auroc"]), 4) for _, row in r.iterrows()},
    }
    if out.model is not None:
        metadata["interest_model_cv"] = table_markdown(out.model.summary.round(3))
        metadata["interest_model_coefficients"] = table_markdown(out.model.coefficients.round(3))
        metadata["interest_model_rules"] = dg.MetadataValue.md(f"```\n{out.model.tree_rules}\n```")
    if out.by_kind is not None:
        metadata["by_injected_kind"] = table_markdown(out.by_kind.round(3))
    yield dg.MaterializeResult(metadata=metadata)
    yield _table_check(r)
    yield _recovery_check(out.by_kind)
