"""The consensus group: volunteer and Talk consensus in the warehouse, computed in DuckDB SQL by
``ww_assets.consensus``. A re-materialisation after a re-pull updates only the images whose inputs changed; the
first one (or one after a change of the consensus code) builds in full."""

import dagster as dg

from ww_assets.analysis.comparison import ComparisonConfig
from ww_assets.consensus import checks, reductions, summaries
from ww_assets.consensus.counting import current_rules
from ww_assets.consensus.exposures import build_image_exposures
from ww_assets.consensus.subjects import build_subject_consensus
from ww_assets.consensus.talk import build_talk_consensus
from ww_assets.consensus.volunteer import build_volunteer_consensus
from ww_assets.defs.automation import FOLLOW_INPUTS, consensus_freshness
from ww_assets.defs.metadata import png_markdown, table_markdown, table_metadata, table_schema
from ww_assets.defs.pools import DUCKDB_POOL
from ww_assets.defs.resources import StorageResource, WarehouseResource, ZooniverseResource
from ww_assets.plotting.consensus import fraction_histogram

#: every consensus table: in the warehouse, written by one process at a time, updated when its inputs are, and
#: expected to be as fresh as the pull schedule makes it
_COMMON = dict(kinds={"duckdb"}, pool=DUCKDB_POOL, automation_condition=FOLLOW_INPUTS,
               freshness_policy=consensus_freshness())


def _table_meta(con, table: str, result, fractions: bool = False) -> dict:
    """Row count, table name and the build's figures; with ``fractions``, the table's fraction summary too."""
    meta = {"dagster/row_count": dg.MetadataValue.int(summaries.table_rows(con, table)),
            "table": f"consensus.{table}", **result.as_metadata()}
    if fractions:
        meta.update({k: v for k, v in checks.fraction_summary(con, table).items() if v is not None})
    return meta


@dg.asset(**_COMMON, deps=["zooniverse_classifications"], description=(
    "One row per image per page shown (selected or not): a view over raw.classifications, "
    "consensus.image_exposures. A view because a 10M-page export is 160M exposures."))
def image_exposures(context: dg.AssetExecutionContext, duckdb: WarehouseResource) -> dg.MaterializeResult:
    with duckdb.get_connection() as con:
        res = build_image_exposures(con)
    context.log.info(f"consensus.image_exposures: {res.rows_total:,} exposures")
    return dg.MaterializeResult(metadata={"dagster/row_count": dg.MetadataValue.int(res.rows_total),
                                          "view": "consensus.image_exposures"})


@dg.asset(**_COMMON, deps=["image_exposures", "zooniverse_classifications"], description=(
    "Per image: shown (distinct volunteers who had it on a page), selected (distinct volunteers who clicked it "
    "there), fraction with a Wilson 95% interval, pages, first/last seen. Invalid clicks go to "
    "consensus.quarantine. Incremental on re-pulls."))
def volunteer_consensus(context: dg.AssetExecutionContext, duckdb: WarehouseResource,
                        storage: StorageResource) -> dg.MaterializeResult:
    with duckdb.get_connection() as con:
        res = build_volunteer_consensus(con, log=context.log.info)
        meta = _table_meta(con, "volunteer_consensus", res, fractions=True)
        meta["invalid_clicks_quarantined"] = sum(n for k, n in checks.quarantine_counts(con).items()
                                                 if k.startswith("click: "))
        meta["preview_most_selected"] = table_markdown(summaries.most_selected(con))
        bins, shown = summaries.fraction_bins(con), summaries.shown_counts(con)
    if sum(bins):
        path = fraction_histogram(bins, shown, storage.layout.plot_file("volunteer_consensus_fraction"),
                                  ComparisonConfig.high_consensus_threshold)
        meta["fraction_histogram"] = png_markdown(path, "volunteer consensus fraction histogram")
    context.log.info(f"volunteer_consensus: {res.mode} build, {res.rows_changed:,} of {res.rows_total:,} images "
                     f"written in {res.seconds:.2f} s")
    return dg.MaterializeResult(metadata=meta)


@dg.asset(**_COMMON, deps=["talk_comments", "talk_tags"], description=(
    "Per image: Talk comments, distinct commenters, normalised hashtags (tag -> distinct volunteers), the top tag "
    "and its share. Incremental on re-pulls."))
def talk_consensus(context: dg.AssetExecutionContext, duckdb: WarehouseResource) -> dg.MaterializeResult:
    with duckdb.get_connection() as con:
        res = build_talk_consensus(con, log=context.log.info)
        meta = _table_meta(con, "talk_consensus", res)
        meta["comments"], meta["images_with_tags"] = summaries.talk_totals(con)
        meta["top_tags"] = table_markdown(summaries.top_tags(con))
    return dg.MaterializeResult(metadata=meta)


@dg.asset(**_COMMON, deps=["volunteer_consensus", "talk_consensus", "zooniverse_subjects"], description=(
    "One row per subject: survey identity (image_id = HSC object id, ra, dec, image_ref) joined with volunteer "
    "and Talk consensus. The table the analysis reads."))
def subject_consensus(context: dg.AssetExecutionContext, duckdb: WarehouseResource) -> dg.MaterializeResult:
    with duckdb.get_connection() as con:
        res = build_subject_consensus(con, log=context.log.info)
        meta = _table_meta(con, "subject_consensus", res, fractions=True)
        meta["subjects_never_shown"] = summaries.subjects_never_shown(con)
        meta["preview"] = table_markdown(summaries.subject_preview(con))
    return dg.MaterializeResult(metadata=meta)


@dg.asset(kinds={"duckdb", "csv"}, deps=["subject_consensus"], automation_condition=FOLLOW_INPUTS, description=(
    "Per-subject reductions in panoptes_aggregation's flat shape (subject_id, workflow_id, task, reducer, "
    "data.shown, data.selected, data.fraction and its Wilson interval, data.pages, Talk counts), one row per "
    "subject, as analysis/subject_reductions.csv. task is WW_ZOONIVERSE_TASK (default T0); which classifications "
    "count is set by WW_CONSENSUS_WORKFLOW_ID and WW_CONSENSUS_MIN_WORKFLOW_VERSION (default: all)."))
def subject_reductions(context: dg.AssetExecutionContext, duckdb: WarehouseResource, storage: StorageResource,
                       zooniverse: ZooniverseResource) -> dg.MaterializeResult:
    rules = current_rules()
    with duckdb.get_connection() as con:
        frame = reductions.subject_reductions(con, rules, zooniverse.task)
    path = reductions.write_reductions_csv(frame, storage.layout.analysis_file("subject_reductions"))
    context.log.info(f"subject_reductions: {len(frame):,} subjects ({rules.describe()}) -> {path}")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(len(frame)),
        "dagster/column_schema": table_schema(frame),
        "counted": rules.describe(), "path": dg.MetadataValue.path(str(path)),
        "preview": table_metadata(frame, max_rows=10)})
