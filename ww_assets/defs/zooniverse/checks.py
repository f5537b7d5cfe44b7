"""Checks on the raw volunteer tables."""

import dagster as dg

from ww_assets.defs.pools import DUCKDB_POOL
from ww_assets.defs.resources import WarehouseResource
from ww_assets.zooniverse.ingest.checks import latest_ingest, page_consistency

#: more of the latest ingest's rows quarantined than this turns the check into a warning
QUARANTINE_WARN_FRACTION = 0.01


@dg.asset_check(asset="zooniverse_classifications", pool=DUCKDB_POOL, description=(
    f"The latest classifications ingest quarantined at most {QUARANTINE_WARN_FRACTION:.0%} of the rows it read "
    "(WARN above: raw.quarantine holds the reasons)."))
def classifications_quarantine_rate(duckdb: WarehouseResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        row = latest_ingest(con, "classifications")
    if row is None:
        return dg.AssetCheckResult(passed=False, description="no classifications ingest recorded")
    seen, bad, ingest_id = row
    fraction = (bad / seen) if seen else 0.0
    return dg.AssetCheckResult(
        passed=fraction <= QUARANTINE_WARN_FRACTION, severity=dg.AssetCheckSeverity.WARN,
        metadata={"rows_seen": int(seen), "rows_quarantined": int(bad), "quarantined_fraction": round(fraction, 6),
                  "ingest_id": ingest_id})


@dg.asset_check(asset="zooniverse_classifications", pool=DUCKDB_POOL, description=(
    "Every stored page has at least one subject and no classification_id is stored twice. Clicks on a subject "
    "not on its page are counted, not failed: they are kept by design and quarantined by the consensus build."))
def classifications_pages_consistent(duckdb: WarehouseResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        counts = page_consistency(con)
    return dg.AssetCheckResult(passed=counts["empty_pages"] == 0 and counts["duplicate_ids"] == 0, metadata=counts)
