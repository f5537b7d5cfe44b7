"""Per-subject reductions in the shape Zooniverse teams know from panoptes_aggregation: one flat CSV row per
subject, ``subject_id, workflow_id, task, reducer`` then the reduced values as ``data.<name>`` columns.

The values are those of ``consensus.subject_consensus`` (so they follow the counting rules of
``ww_assets.consensus.counting``): ``data.shown`` / ``data.selected`` are distinct volunteers who had the subject on
a page / clicked it there, ``data.fraction`` with its Wilson 95% interval, ``data.pages`` (repeats included), and
the Talk counts. ``workflow_id`` is the one workflow counted (by rule, or because only one occurs); with several, it
is the subject's own when all its counted pages come from one workflow, else empty.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ww_assets.consensus.counting import COUNTED, CountingRules
from ww_assets.storage import atomic_path

__all__ = ["REDUCER", "REDUCTION_COLUMNS", "subject_reductions", "write_reductions_csv"]

#: what the reducer column says: the volunteer-selection consensus of a subject-group comparison task
REDUCER = "ww_subject_group_selection"

#: data.<name> -> the subject_consensus column it comes from
_DATA = {"shown": "shown", "selected": "selected", "fraction": "fraction", "fraction_ci_low": "ci_low",
         "fraction_ci_high": "ci_high", "pages": "pages", "talk_comments": "comments",
         "talk_commenters": "commenters", "talk_top_tag": "top_tag"}
REDUCTION_COLUMNS = ["subject_id", "workflow_id", "task", "reducer", *(f"data.{k}" for k in _DATA)]


def _workflow_sql(con, rules: CountingRules) -> str:
    if rules.workflow_id is not None:
        return f"SELECT subject_id, {int(rules.workflow_id)}::BIGINT AS workflow_id FROM consensus.subject_consensus"
    workflows = con.execute(f"SELECT DISTINCT workflow_id FROM {COUNTED} WHERE workflow_id IS NOT NULL LIMIT 2"
                            ).fetchall()
    if len(workflows) == 1:
        return f"SELECT subject_id, {int(workflows[0][0])}::BIGINT AS workflow_id FROM consensus.subject_consensus"
    return """SELECT subject_id, CASE WHEN min(workflow_id) = max(workflow_id) THEN min(workflow_id) END AS workflow_id
              FROM consensus.image_exposures GROUP BY subject_id"""


def subject_reductions(con, rules: CountingRules, task: str) -> pd.DataFrame:
    """The reductions of every subject of ``consensus.subject_consensus``, ordered by subject id."""
    data = ", ".join(f"s.{src} AS \"data.{name}\"" for name, src in _DATA.items())
    frame = con.execute(f"""
        SELECT s.subject_id, w.workflow_id, $task AS task, $reducer AS reducer, {data}
        FROM consensus.subject_consensus s LEFT JOIN ({_workflow_sql(con, rules)}) w USING (subject_id)
        ORDER BY s.subject_id""", {"task": task, "reducer": REDUCER}).df()
    frame["workflow_id"] = frame["workflow_id"].astype("Int64")
    return frame[REDUCTION_COLUMNS]


def write_reductions_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write the reductions as CSV, atomically (full float precision; empty cells for missing values)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.17g")
    return Path(path)
