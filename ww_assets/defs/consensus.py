"""Dagster layer for the 'consensus' group: volunteer and Talk consensus in the DuckDB warehouse.

Four assets over the raw Zooniverse tables, all computed in DuckDB SQL by ``ww_assets.consensus.build`` (definitions
there and in the README): ``image_exposures`` (a view: one row per image per page shown), ``volunteer_consensus``,
``talk_consensus`` and ``subject_consensus`` (the table the analysis reads). A re-materialisation after a re-pull
updates only the images whose inputs changed; the first one (or after a code change) builds in full.
"""


import tempfile
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from ww_assets.consensus import build as consensus
from ww_assets.defs.metadata import png_markdown, table_markdown
from ww_assets.defs.resources import StorageResource
from ww_assets.storage import atomic_path

GROUP = "consensus"
KINDS = {"duckdb"}
POOL = "duckdb"
#: Invalid clicks above this share of all clicks turn the quarantine check into a warning.
INVALID_CLICK_WARN_SHARE = 0.01


def _log(context):
    return lambda msg: context.log.info(msg)


def _table_meta(con, table: str) -> dict:
    n = con.execute(f"SELECT count(*) FROM consensus.{table}").fetchone()[0]
    return {"dagster/row_count": dg.MetadataValue.int(int(n)), "table": f"consensus.{table}"}


def _preview(con, sql: str) -> dg.MetadataValue:
    return table_markdown(con.execute(sql).df())


def _fraction_histogram(con, storage: "StorageResource | None") -> "dg.MetadataValue | None":
    """A two-panel PNG: fraction over images shown, and volunteers per image. Binned in SQL (no big fetch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = 20
    frac = con.execute(f"""
        SELECT least(floor(fraction * {bins}), {bins - 1})::INT AS b, count(*) FROM consensus.volunteer_consensus
        WHERE shown > 0 GROUP BY 1 ORDER BY 1""").fetchall()
    if not frac:
        return None
    shown = con.execute("""
        SELECT shown, count(*) FROM consensus.volunteer_consensus GROUP BY 1 ORDER BY 1""").fetchall()
    counts = [0] * bins
    for b, n in frac:
        counts[b] = n
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax1.bar([(i + 0.5) / bins for i in range(bins)], counts, width=1 / bins, color="#3b6ea8", edgecolor="white")
    ax1.set_yscale("log")
    ax1.set_xlabel("volunteer consensus fraction (selected / shown)")
    ax1.set_ylabel("images")
    ax1.set_title(f"Consensus over {sum(counts):,} images shown")
    ax1.axvline(0.5, color="0.4", ls="--", lw=1)
    ax2.bar([s for s, _ in shown], [n for _, n in shown], width=1.0, color="#a8553b")
    ax2.set_xlabel("distinct volunteers who saw the image (shown)")
    ax2.set_ylabel("images")
    ax2.set_title("Volunteers per image")
    fig.tight_layout()
    if storage is not None:
        final = storage.layout.plots_dir / "volunteer_consensus_fraction.png"
        with atomic_path(final) as tmp:
            fig.savefig(tmp, dpi=90, format="png")
        plt.close(fig)
        return png_markdown(final, "volunteer consensus fraction histogram")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "hist.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        return png_markdown(path, "volunteer consensus fraction histogram")


# ---------------------------------------------------------------------------------------------------------------
# assets
# ---------------------------------------------------------------------------------------------------------------

@dg.asset(
    group_name=GROUP, kinds=KINDS, pool=POOL, deps=["zooniverse_classifications"],
    description="One row per image per page shown (selected or not): a view over raw.classifications, "
                "consensus.image_exposures. A view because a 10M-page export is 160M exposures.",
)
def image_exposures(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> dg.MaterializeResult:
    with duckdb.get_connection() as con:
        res = consensus.build_image_exposures(con)
        pages = con.execute("SELECT count(*) FROM raw.classifications").fetchone()[0]
    context.log.info(f"consensus.image_exposures: {res.rows_total:,} exposures on {pages:,} pages")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(res.rows_total),
        "pages": int(pages),
        "view": "consensus.image_exposures",
    })


@dg.asset(
    group_name=GROUP, kinds=KINDS, pool=POOL, deps=[image_exposures, "zooniverse_classifications"],
    description="Per image: shown (distinct volunteers who had it on a page), selected (distinct volunteers who "
                "clicked it there), fraction with a Wilson 95% interval, pages, first/last seen. Invalid clicks "
                "go to consensus.quarantine. Incremental on re-pulls.",
)
def volunteer_consensus(context: dg.AssetExecutionContext, duckdb: DuckDBResource,
                        storage: StorageResource) -> dg.MaterializeResult:
    with duckdb.get_connection() as con:
        res = consensus.build_volunteer_consensus(con, log=_log(context))
        meta = {**_table_meta(con, "volunteer_consensus"), **res.as_metadata()}
        meta.update({k: v for k, v in consensus.fraction_summary(con).items() if v is not None})
        q = con.execute("SELECT count(*) FROM consensus.quarantine").fetchone()[0]
        meta["invalid_clicks_quarantined"] = int(q)
        meta["preview_most_selected"] = _preview(con, """
            SELECT subject_id, shown, selected, round(fraction, 3) AS fraction, round(ci_low, 3) AS ci_low,
                   round(ci_high, 3) AS ci_high, pages
            FROM consensus.volunteer_consensus WHERE shown > 0 ORDER BY ci_low DESC, subject_id LIMIT 10""")
        hist = _fraction_histogram(con, storage)
        if hist is not None:
            meta["fraction_histogram"] = hist
    context.log.info(f"volunteer_consensus: {res.mode} build, {res.rows_changed:,} of {res.rows_total:,} images "
                     f"written in {res.seconds:.2f} s")
    return dg.MaterializeResult(metadata=meta)


@dg.asset(
    group_name=GROUP, kinds=KINDS, pool=POOL, deps=["talk_comments", "talk_tags"],
    description="Per image: Talk comments, distinct commenters, normalised hashtags (tag -> distinct volunteers), "
                "the top tag and its share. Incremental on re-pulls.",
)
def talk_consensus(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> dg.MaterializeResult:
    with duckdb.get_connection() as con:
        res = consensus.build_talk_consensus(con, log=_log(context))
        meta = {**_table_meta(con, "talk_consensus"), **res.as_metadata()}
        meta["comments"], meta["images_with_tags"] = (int(x or 0) for x in con.execute(
            "SELECT sum(comments), count(*) FILTER (WHERE top_tag IS NOT NULL) FROM consensus.talk_consensus"
        ).fetchone())
        meta["top_tags"] = _preview(con, """
            SELECT tag, sum(n)::BIGINT AS volunteer_uses, count(*) AS images
            FROM (SELECT unnest(map_keys(hashtags)) AS tag, unnest(map_values(hashtags)) AS n
                  FROM consensus.talk_consensus)
            GROUP BY tag ORDER BY volunteer_uses DESC, tag LIMIT 15""")
    return dg.MaterializeResult(metadata=meta)


@dg.asset(
    group_name=GROUP, kinds=KINDS, pool=POOL,
    deps=[volunteer_consensus, talk_consensus, "zooniverse_subjects"],
    description="One row per subject: survey identity (image_id = HSC object id, ra, dec, image_ref) joined with "
                "volunteer and Talk consensus. The table the analysis reads.",
)
def subject_consensus(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> dg.MaterializeResult:
    with duckdb.get_connection() as con:
        res = consensus.build_subject_consensus(con, log=_log(context))
        meta = {**_table_meta(con, "subject_consensus"), **res.as_metadata()}
        meta.update({k: v for k, v in consensus.fraction_summary(con, "subject_consensus").items()
                     if v is not None})
        meta["subjects_never_shown"] = int(con.execute(
            "SELECT count(*) FROM consensus.subject_consensus WHERE shown = 0").fetchone()[0])
        meta["preview"] = _preview(con, """
            SELECT subject_id, image_id, round(ra, 5) AS ra, round(dec, 5) AS dec, shown, selected,
                   round(fraction, 3) AS fraction, comments, top_tag
            FROM consensus.subject_consensus ORDER BY ci_low DESC NULLS LAST, subject_id LIMIT 10""")
    return dg.MaterializeResult(metadata=meta)


# ---------------------------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------------------------

def _range_check(duckdb: DuckDBResource, table: str, key: str) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        c = consensus.check_counts(con, table)
    return dg.AssetCheckResult(passed=c[key] == 0, metadata=c)


def _unique_check(duckdb: DuckDBResource, table: str) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        n, examples = consensus.duplicate_keys(con, table)
        meta = {"duplicate_subject_ids": n, "examples": str(examples)}
        if table == "subject_consensus":
            n_img, img_examples = consensus.duplicate_keys(con, table, "image_id")
            meta.update(image_ids_on_several_subjects=n_img, image_id_examples=str(img_examples))
    return dg.AssetCheckResult(passed=n == 0, metadata=meta)


def _fraction_check(duckdb: DuckDBResource, table: str) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        c = consensus.check_counts(con, table)
    return dg.AssetCheckResult(passed=c["fraction_out_of_range"] == 0 and c["interval_invalid"] == 0, metadata=c)


@dg.asset_check(asset=volunteer_consensus, pool=POOL, description="0 <= selected <= shown on every row.")
def selected_within_shown(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    return _range_check(duckdb, "volunteer_consensus", "selected_out_of_range")


@dg.asset_check(asset=volunteer_consensus, pool=POOL, name="fraction_in_unit_interval",
                description="fraction in [0, 1] (NULL only when shown = 0), ci_low <= fraction <= ci_high.")
def vc_fraction_in_unit_interval(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    return _fraction_check(duckdb, "volunteer_consensus")


@dg.asset_check(asset=volunteer_consensus, pool=POOL, name="one_row_per_image",
                description="No duplicate subject rows.")
def vc_one_row_per_image(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    return _unique_check(duckdb, "volunteer_consensus")


@dg.asset_check(asset=volunteer_consensus, pool=POOL, name="quarantine_counts",
                description="Reports invalid clicks (consensus.quarantine) and raw rows quarantined at ingest, by "
                            f"reason; warns when invalid clicks exceed {INVALID_CLICK_WARN_SHARE:.0%} of clicks.")
def vc_quarantine_counts(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        counts = consensus.quarantine_counts(con)
        clicks = con.execute(
            "SELECT coalesce(sum(len(selected_subject_ids)), 0) FROM raw.classifications").fetchone()[0]
    invalid = sum(n for k, n in counts.items() if k.startswith("click: "))
    share = invalid / clicks if clicks else 0.0
    return dg.AssetCheckResult(
        passed=share <= INVALID_CLICK_WARN_SHARE, severity=dg.AssetCheckSeverity.WARN,
        metadata={"invalid_clicks": invalid, "clicks": int(clicks), "invalid_share": round(share, 6),
                  **{k: int(v) for k, v in counts.items()}})


@dg.asset_check(asset=talk_consensus, pool=POOL, name="one_row_per_image", description="No duplicate subject rows.")
def tc_one_row_per_image(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    return _unique_check(duckdb, "talk_consensus")


@dg.asset_check(asset=talk_consensus, pool=POOL, name="top_tag_share_in_unit_interval",
                description="top_tag_share in [0, 1] and set exactly when the image has a tag.")
def tc_share_in_range(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        bad = con.execute("""
            SELECT count(*) FROM consensus.talk_consensus
            WHERE (top_tag IS NULL) <> (top_tag_share IS NULL)
               OR NOT coalesce(top_tag_share BETWEEN 0 AND 1, true)
               OR commenters > comments""").fetchone()[0]
    return dg.AssetCheckResult(passed=bad == 0, metadata={"rows_violating": int(bad)})


@dg.asset_check(asset=subject_consensus, pool=POOL, name="selected_within_shown", description="0 <= selected <= shown.")
def sc_selected_within_shown(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    return _range_check(duckdb, "subject_consensus", "selected_out_of_range")


@dg.asset_check(asset=subject_consensus, pool=POOL, name="fraction_in_unit_interval",
                description="fraction in [0, 1] (NULL only when shown = 0), ci_low <= fraction <= ci_high.")
def sc_fraction_in_unit_interval(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    return _fraction_check(duckdb, "subject_consensus")


@dg.asset_check(asset=subject_consensus, pool=POOL, name="one_row_per_image",
                description="No duplicate subject rows (image ids shared by several subjects are reported).")
def sc_one_row_per_image(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    return _unique_check(duckdb, "subject_consensus")


@dg.asset_check(asset=subject_consensus, pool=POOL, name="every_row_has_a_subject",
                description="Every volunteer/Talk consensus row has its subject in raw.subjects (so it reaches "
                            "subject_consensus), and every subject_consensus row has an image_id.")
def sc_every_row_has_a_subject(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        n_vc, ex_vc = consensus.orphan_rows(con, "volunteer_consensus")
        n_tc, ex_tc = consensus.orphan_rows(con, "talk_consensus")
        no_id = con.execute(
            "SELECT count(*) FROM consensus.subject_consensus WHERE image_id IS NULL").fetchone()[0]
    return dg.AssetCheckResult(
        passed=n_vc == 0 and n_tc == 0 and no_id == 0,
        metadata={"volunteer_rows_without_subject": n_vc, "examples_volunteer": str(ex_vc),
                  "talk_rows_without_subject": n_tc, "examples_talk": str(ex_tc),
                  "subjects_without_image_id": int(no_id)})


defs = dg.Definitions(
    assets=[image_exposures, volunteer_consensus, talk_consensus, subject_consensus],
    asset_checks=[selected_within_shown, vc_fraction_in_unit_interval, vc_one_row_per_image, vc_quarantine_counts,
                  tc_one_row_per_image, tc_share_in_range, sc_selected_within_shown, sc_fraction_in_unit_interval,
                  sc_one_row_per_image, sc_every_row_has_a_subject],
)
