"""Checks on the consensus tables: counts in range, one row per image, every row tied to a subject."""

import dagster as dg

from ww_assets.consensus import checks, summaries
from ww_assets.defs.pools import DUCKDB_POOL
from ww_assets.defs.resources import WarehouseResource

#: invalid clicks above this share of all clicks turn the quarantine check into a warning
INVALID_CLICK_WARN_SHARE = 0.01


def _range(duckdb: WarehouseResource, table: str) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        c = checks.check_counts(con, table)
    return dg.AssetCheckResult(passed=c["selected_out_of_range"] == 0, metadata=c)


def _fractions(duckdb: WarehouseResource, table: str) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        c = checks.check_counts(con, table)
    return dg.AssetCheckResult(passed=c["fraction_out_of_range"] == 0 and c["interval_invalid"] == 0, metadata=c)


def _unique(duckdb: WarehouseResource, table: str) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        n, examples = checks.duplicate_keys(con, table)
        meta = {"duplicate_subject_ids": n, "examples": str(examples)}
        if table == "subject_consensus":
            n_img, img_examples = checks.duplicate_keys(con, table, "image_id")
            meta.update(image_ids_on_several_subjects=n_img, image_id_examples=str(img_examples))
    return dg.AssetCheckResult(passed=n == 0, metadata=meta)


_C = dict(pool=DUCKDB_POOL)


@dg.asset_check(asset="volunteer_consensus", **_C, description="0 <= selected <= shown on every row.")
def selected_within_shown(duckdb: WarehouseResource) -> dg.AssetCheckResult:
    return _range(duckdb, "volunteer_consensus")


@dg.asset_check(asset="volunteer_consensus", **_C, name="fraction_in_unit_interval",
                description="fraction in [0, 1] (NULL only when shown = 0), ci_low <= fraction <= ci_high.")
def vc_fraction_in_unit_interval(duckdb: WarehouseResource) -> dg.AssetCheckResult:
    return _fractions(duckdb, "volunteer_consensus")


@dg.asset_check(asset="volunteer_consensus", **_C, name="one_row_per_image", description="No duplicate subject rows.")
def vc_one_row_per_image(duckdb: WarehouseResource) -> dg.AssetCheckResult:
    return _unique(duckdb, "volunteer_consensus")


@dg.asset_check(asset="volunteer_consensus", **_C, name="quarantine_counts", description=(
    "Reports invalid clicks (consensus.quarantine) and raw rows quarantined at ingest, by reason; warns when invalid "
    f"clicks exceed {INVALID_CLICK_WARN_SHARE:.0%} of clicks."))
def vc_quarantine_counts(duckdb: WarehouseResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        counts = checks.quarantine_counts(con)
        clicks = summaries.total_clicks(con)
    invalid = sum(n for k, n in counts.items() if k.startswith("click: "))
    share = invalid / clicks if clicks else 0.0
    return dg.AssetCheckResult(
        passed=share <= INVALID_CLICK_WARN_SHARE, severity=dg.AssetCheckSeverity.WARN,
        metadata={"invalid_clicks": invalid, "clicks": clicks, "invalid_share": round(share, 6),
                  **{k: int(v) for k, v in counts.items()}})


@dg.asset_check(asset="talk_consensus", **_C, name="one_row_per_image", description="No duplicate subject rows.")
def tc_one_row_per_image(duckdb: WarehouseResource) -> dg.AssetCheckResult:
    return _unique(duckdb, "talk_consensus")


@dg.asset_check(asset="talk_consensus", **_C, name="top_tag_share_in_unit_interval",
                description="top_tag_share in [0, 1] and set exactly when the image has a tag.")
def tc_share_in_range(duckdb: WarehouseResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        bad = summaries.tag_share_violations(con)
    return dg.AssetCheckResult(passed=bad == 0, metadata={"rows_violating": bad})


@dg.asset_check(asset="subject_consensus", **_C, name="selected_within_shown", description="0 <= selected <= shown.")
def sc_selected_within_shown(duckdb: WarehouseResource) -> dg.AssetCheckResult:
    return _range(duckdb, "subject_consensus")


@dg.asset_check(asset="subject_consensus", **_C, name="fraction_in_unit_interval",
                description="fraction in [0, 1] (NULL only when shown = 0), ci_low <= fraction <= ci_high.")
def sc_fraction_in_unit_interval(duckdb: WarehouseResource) -> dg.AssetCheckResult:
    return _fractions(duckdb, "subject_consensus")


@dg.asset_check(asset="subject_consensus", **_C, name="one_row_per_image",
                description="No duplicate subject rows (image ids shared by several subjects are reported).")
def sc_one_row_per_image(duckdb: WarehouseResource) -> dg.AssetCheckResult:
    return _unique(duckdb, "subject_consensus")


@dg.asset_check(asset="subject_consensus", **_C, name="every_row_has_a_subject", description=(
    "Every volunteer/Talk consensus row has its subject in raw.subjects (so it reaches subject_consensus), and "
    "every subject_consensus row has an image_id."))
def sc_every_row_has_a_subject(duckdb: WarehouseResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        n_vc, ex_vc = checks.orphan_rows(con, "volunteer_consensus")
        n_tc, ex_tc = checks.orphan_rows(con, "talk_consensus")
        no_id = summaries.subjects_without_image_id(con)
    return dg.AssetCheckResult(
        passed=n_vc == 0 and n_tc == 0 and no_id == 0,
        metadata={"volunteer_rows_without_subject": n_vc, "examples_volunteer": str(ex_vc),
                  "talk_rows_without_subject": n_tc, "examples_talk": str(ex_tc),
                  "subjects_without_image_id": int(no_id)})
