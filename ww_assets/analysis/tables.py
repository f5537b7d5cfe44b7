"""What the analysis reads: the normalised scores of every batch, and the volunteer side from the warehouse.

The analysis never opens the warehouse for writing: ``read_warehouse`` opens it read-only (the assets that do so
share the ``duckdb`` pool with the writers, so they never meet one).
"""

from __future__ import annotations

import pandas as pd

from ww_assets.scores.normalise import SIGMA_SUFFIX, normalise_scores
from ww_assets.scores.release import SCORE_COLUMNS
from ww_assets.storage import StorageLayout

__all__ = ["read_scores", "read_warehouse", "CONSENSUS_COLUMNS"]

#: the columns of consensus.subject_consensus the analysis uses
CONSENSUS_COLUMNS = ("subject_id", "image_id", "object_id", "ra", "dec", "image_ref", "shown", "selected",
                     "fraction", "ci_low", "ci_high", "comments", "commenters", "top_tag", "top_tag_share")


def read_scores(layout: StorageLayout, score_family: str | None = None, log=None) -> pd.DataFrame:
    """Scores of all batches from ``scores/normalised.parquet`` (sigma scores and ranks).

    Scores of different models/formulas (``score_family``) are not on one scale and the same image may appear once
    per family: one family is compared at a time, ``score_family`` or else the one covering most images.
    """
    path = layout.normalised_scores_file
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: materialise anomaly_scores_normalised first")
    frame = pd.read_parquet(path)
    if "score_family" in frame.columns and frame["score_family"].nunique() > 1:
        counts = frame["score_family"].value_counts()
        family = score_family or str(counts.index[0])
        if family not in counts.index:
            raise ValueError(f"score_family {family!r} not in {path} (families: {list(counts.index)})")
        if log:
            log(f"{len(counts)} score families in {path}; comparing {family!r} ({counts[family]} images)")
        frame = frame[frame["score_family"] == family].reset_index(drop=True)
    frame["image_id"] = frame["image_id"].astype(str)
    if not all(f"{c}{SIGMA_SUFFIX}" in frame.columns for c in SCORE_COLUMNS):
        frame = normalise_scores(frame)
    return frame


def read_warehouse(layout: StorageLayout) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """``consensus.subject_consensus`` and (subject_id, image_id) from ``raw.subjects``, read-only; (None, None)
    when there is no warehouse yet."""
    import duckdb

    if not layout.warehouse.exists():
        return None, None
    try:
        con = duckdb.connect(str(layout.warehouse), read_only=True)
    except duckdb.IOException as exc:
        raise RuntimeError(f"cannot open {layout.warehouse} read-only: {exc}. Another process holds it for writing "
                           "(assets that touch the warehouse belong in the 'duckdb' pool)") from exc
    try:
        cols = con.execute("select table_schema, table_name, column_name from information_schema.columns").df()

        def columns(schema, table):
            return set(cols[(cols.table_schema == schema) & (cols.table_name == table)]["column_name"])

        consensus = subjects = None
        have = columns("consensus", "subject_consensus")
        if have:
            sel = ", ".join(f'"{c}"' for c in CONSENSUS_COLUMNS if c in have)
            consensus = con.execute(f"select {sel} from consensus.subject_consensus").df()
        if {"subject_id", "object_id"} <= columns("raw", "subjects"):
            subjects = con.execute("select distinct subject_id, cast(object_id as varchar) as image_id "
                                   "from raw.subjects where object_id is not null").df()
        return consensus, subjects
    finally:
        con.close()
