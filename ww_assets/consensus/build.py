"""Every consensus table, built in the asset graph's order: what the four Dagster assets do one by one.

For a benchmark, a test or a script that wants the whole stage without Dagster. Each build reads the raw tables
and decides by itself whether it is full, incremental or unchanged; the order only makes ``subject_consensus``
current once this returns, since it joins the two tables built before it.
"""

from __future__ import annotations

from ww_assets.consensus.exposures import build_image_exposures
from ww_assets.consensus.state import BuildResult
from ww_assets.consensus.subjects import build_subject_consensus
from ww_assets.consensus.talk import build_talk_consensus
from ww_assets.consensus.volunteer import build_volunteer_consensus

__all__ = ["build_all"]


def build_all(con, *, full: bool = False, log=None, partition_exposures: int | None = None) -> dict[str, BuildResult]:
    """Build or update every consensus table on ``con``: table name -> its ``BuildResult``.

    ``full`` forces full rebuilds; ``partition_exposures`` goes to ``build_volunteer_consensus``.
    """
    out = {"image_exposures": build_image_exposures(con)}
    out["volunteer_consensus"] = build_volunteer_consensus(con, full=full, log=log,
                                                           partition_exposures=partition_exposures)
    out["talk_consensus"] = build_talk_consensus(con, full=full, log=log)
    out["subject_consensus"] = build_subject_consensus(con, full=full, log=log)
    return out
