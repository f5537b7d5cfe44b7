"""The paper's comparison, end to end: per-image table, score-vs-consensus statistics, the interest model.

``compare`` reads the normalised scores and the warehouse (read-only), joins them per image with the latent map
and, on the embedded sample, the injected labels, and returns everything the ``consensus_vs_score`` asset writes:
the per-image table (what the plots, "more like this" and the next round read), the comparison table, the
interest model and its description, the subject -> image map, and the by-class tables on the sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from ww_assets.analysis.comparison import (
    ComparisonConfig,
    InterestModel,
    build_image_table,
    by_class_table,
    compare_scores,
    fit_interest_model,
)
from ww_assets.analysis.tables import read_scores, read_warehouse
from ww_assets.scores.evaluation import read_truth
from ww_assets.storage import StorageLayout

__all__ = ["Comparison", "compare", "subject_map"]

TRUTH_COLUMNS = ("label", "kind", "is_odd", "is_artifact")


@dataclass
class Comparison:
    table: pd.DataFrame                         # one row per scored image
    result: pd.DataFrame                        # one row per score: Spearman, AUROC, top share, intervals
    model_info: dict                            # the interest model, or why it was not fitted
    subject_map: pd.DataFrame                   # subject_id, image_id
    model: InterestModel | None = None
    by_class: pd.DataFrame | None = None        # on the sample: by kind and by label, with column ``grouping``
    by_kind: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)


def subject_map(consensus: pd.DataFrame, subjects: pd.DataFrame | None) -> pd.DataFrame:
    """Every (subject_id, image_id) known, from the consensus table and raw.subjects."""
    id_col = "image_id" if "image_id" in consensus.columns else "object_id"
    out = pd.concat([consensus[["subject_id", id_col]].rename(columns={id_col: "image_id"}),
                     subjects if subjects is not None else pd.DataFrame(columns=["subject_id", "image_id"])],
                    ignore_index=True).dropna()
    if not len(out):
        return pd.DataFrame({"subject_id": pd.Series(dtype="int64"), "image_id": pd.Series(dtype=str)})
    return out.astype({"subject_id": "int64", "image_id": str}).drop_duplicates()


def _interest(table: pd.DataFrame, cfg: ComparisonConfig, log) -> tuple[InterestModel | None, dict]:
    table["predicted_interest"] = np.nan
    table["interest_oof"] = np.nan
    info: dict = {"fitted": False}
    model = None
    try:
        model = fit_interest_model(table, cfg)
        table["predicted_interest"] = model.predict(table)
        table.loc[model.oof.index, "interest_oof"] = model.oof
        info = {"fitted": True, "model": model.model_name, "features": model.features,
                "summary": model.summary.to_dict(orient="records"),
                "coefficients": model.coefficients.to_dict(orient="records"), "tree_rules": model.tree_rules}
    except ValueError as exc:
        log(f"interest model not fitted: {exc}; the next round ranks by anomaly score")
        info["reason"] = str(exc)
    info["config"] = cfg.__dict__ | {"score_columns": list(cfg.score_columns),
                                     "latent_features": list(cfg.latent_features)}
    return model, info


def compare(layout: StorageLayout, cfg: ComparisonConfig, score_family: str | None = None,
            log: Callable[[str], None] = lambda m: None) -> Comparison:
    cfg.validate()
    scores = read_scores(layout, score_family, log=log)
    consensus, subjects = read_warehouse(layout)
    if consensus is None:
        raise FileNotFoundError(f"no consensus.subject_consensus in {layout.warehouse}: materialise subject_consensus "
                                "first")
    umap_path = layout.analysis_file("latent_umap")
    umap = pd.read_parquet(umap_path) if umap_path.exists() else None
    truth = read_truth(layout.truth_file)
    table = build_image_table(scores, consensus, umap, subjects["image_id"] if subjects is not None else None, truth)
    if truth is not None and ("label" not in table.columns or table["label"].notna().sum() == 0):
        # a truth table that matches none of the scored images (real data beside an old sample): ignore it
        table = table.drop(columns=[c for c in TRUTH_COLUMNS if c in table.columns])
        truth = None
    log(f"{len(table)} scored images, {int(table['has_subject'].sum())} are subjects, "
        f"{int((table['shown'] >= cfg.min_shown).sum())} shown at least {cfg.min_shown} times")
    result = compare_scores(table, cfg)
    model, info = _interest(table, cfg, log)
    out = Comparison(table, result, info, subject_map(consensus, subjects), model=model)
    if truth is not None and "label" in table.columns:
        out.by_kind = by_class_table(table, cfg, class_col="kind")
        by_label = by_class_table(table, cfg, class_col="label")
        out.by_class = pd.concat([out.by_kind.assign(grouping="kind"), by_label.assign(grouping="label")],
                                 ignore_index=True)
    return out
