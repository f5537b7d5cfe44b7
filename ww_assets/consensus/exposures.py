"""Image exposures: the unit every volunteer count is made of.

An **exposure** is one image on one 16-image page shown to one volunteer: one element of
``raw.classifications.page_subject_ids``. ``consensus.image_exposures`` is a view with one row per exposure
(``ww_assets.consensus.schema`` says why a view); this module keeps its row count, which the Dagster layer reports.
The count is kept per raw ingest in ``consensus.state`` (an ingest's rows never change once committed), so after a
re-pull only the new ingests' pages are summed, not the whole table.
"""

from __future__ import annotations

import time

from ww_assets.consensus.counting import COUNTED
from ww_assets.consensus.schema import IMAGE_EXPOSURES_VIEW, ensure_consensus_schema
from ww_assets.consensus.state import (
    BuildResult,
    ingest_ids,
    read_state,
    version_marker,
    write_state,
)

__all__ = ["build_image_exposures"]

_TABLE = "image_exposures"
_COUNTS = "exposures per ingest"     # state source: markers '<ingest_id>=<exposures>'


def build_image_exposures(con) -> BuildResult:
    """(Re)create the ``consensus.image_exposures`` view; its row count is the sum of page lengths."""
    t0 = time.perf_counter()
    ensure_consensus_schema(con)
    con.execute(IMAGE_EXPOSURES_VIEW)
    present = ingest_ids(con, "classifications")
    known = {}
    if read_state(con, _TABLE, "version") == [version_marker()]:
        known = {i: int(n) for i, _, n in (m.rpartition("=") for m in read_state(con, _TABLE, _COUNTS))
                 if i in present}
    new_ids = sorted(present - set(known))
    if new_ids:
        known.update({i: int(n) for i, n in con.execute(
            f"SELECT ingest_id, coalesce(sum(len(page_subject_ids)), 0) FROM {COUNTED} "
            "WHERE ingest_id IN (SELECT unnest($ids)) GROUP BY 1", {"ids": new_ids}).fetchall()})
    write_state(con, _TABLE, _COUNTS, [f"{i}={n}" for i, n in sorted(known.items())])
    write_state(con, _TABLE, "version", [version_marker()])
    n = sum(known.values())
    return BuildResult(_TABLE, "full", int(n), 0, 0, time.perf_counter() - t0,
                       reason=f"view; counted the pages of {len(new_ids)} new ingest(s)")
