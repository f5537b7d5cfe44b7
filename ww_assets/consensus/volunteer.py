"""Volunteer consensus per image: ``consensus.volunteer_consensus`` (and ``consensus.quarantine``).

Definitions (also in the README): for each image (subject), **shown** = distinct volunteers who had it on a page;
**selected** = distinct volunteers who clicked it on a page where it was shown; **fraction** = selected / shown,
with a Wilson score 95% interval (``ci_low``, ``ci_high``; ``ww_assets.consensus.wilson``). Repeat submissions by
the same volunteer (the same page re-submitted, or the image met again on another page) never count twice.
**pages** counts the pages that showed the image, repeats included; ``first_seen`` / ``last_seen`` are the
earliest / latest such page. A click on an image that was not on that page is **invalid**: it is written to
``consensus.quarantine`` with its reason and not counted (so is a click on a page with no subject list); the rest
of the page still counts.

Where volunteers are deduplicated (exact, in bounded memory): every (image, volunteer) pair is aggregated once,
grouped on the image id and the volunteer's 64-bit key (``ww_assets.consensus.volunteer_keys``), then the pairs per
image. For the most active volunteers the pairs are bits of the image's masks; for everyone else, shown = their
pages minus their repeats. Large exports are split into partitions by ``subject_id % K``, K from the memory limit
(``ww_assets.consensus.partitions``), so each ``GROUP BY`` fits in memory.

Incremental updates stay exact because the counts are additive: a new (image, volunteer) pair adds to ``shown``
(``selected``) only if that volunteer had not seen (clicked) that image before. For the top volunteers the answer
is a bit in the image's row; for everyone else it is looked up in their earlier pages (short histories, read for
the volunteers of the new pages only). Only the images on new pages are deleted and re-inserted.
"""

from __future__ import annotations

import math
import time

from ww_assets.consensus.counting import COUNTED
from ww_assets.consensus.partitions import partition_exposures_for
from ww_assets.consensus.schema import recreate_table
from ww_assets.consensus.state import (
    BuildResult,
    StageTimer,
    log_build,
    log_unchanged,
    next_build_id,
    plan_build,
    read_state,
    temp_ingest_ids,
    version_marker,
    write_state,
)
from ww_assets.consensus.volunteer_keys import (
    TOP_VOLUNTEERS_SQL,
    mask_sql,
    masks_sql,
    popcount_sql,
    refresh_volunteer_keys,
    vkey_sql,
)
from ww_assets.consensus.wilson import wilson_sql
from ww_assets.duckdb_sql import insertion_order, sql_literal, transaction

__all__ = ["REASON_NOT_ON_PAGE", "REASON_NO_PAGE", "build_volunteer_consensus"]

#: Why a click was not counted (consensus.quarantine.reason).
REASON_NOT_ON_PAGE = "clicked subject not on the page shown"
REASON_NO_PAGE = "click on a page with no subject list"

_TABLE = "volunteer_consensus"
# the classifications of a full build, and those of the new ingests in an incremental one
_ALL = "volunteer_id IS NOT NULL"
_NEW = "ingest_id IN (SELECT ingest_id FROM _cons_new_ids)"


class _Collision(Exception):
    """Two volunteers share a key: rebuild in full with the next salt."""


def build_volunteer_consensus(con, *, full: bool = False, partition_exposures: int | None = None,
                              log=None) -> BuildResult:
    """Build or update ``consensus.volunteer_consensus`` (and ``consensus.quarantine``) from raw.classifications.

    Incremental unless ``full`` or a full rebuild is needed (``state.full_rebuild_reason``). ``partition_exposures``
    bounds the exposures aggregated at once in a full build (default: ``partition_exposures_for(con)``, from the
    memory limit). ``log``: optional callable for progress.
    """
    plan = plan_build(con, _TABLE, ("classifications",), full=full)
    if plan.unchanged:
        return log_unchanged(con, plan, _TABLE, "no new ingest")
    reason, stages = plan.reason, plan.stages
    salt_state = read_state(con, _TABLE, "salt")
    salt = int(salt_state[0]) if salt_state and reason is None else 0
    # not state.run_build: a key collision rolls the transaction back and starts again, in full, with a new salt
    with insertion_order(con, keep=False):
        temp_ingest_ids(con, "_cons_new_ids", plan.new["classifications"])
        while True:
            try:
                with transaction(con):
                    res = _build(con, reason, salt, partition_exposures, stages, log)
                    res.reason = reason or ""
                    write_state(con, _TABLE, "raw.classifications", plan.sources["classifications"])
                    write_state(con, _TABLE, "version", [version_marker()])
                    write_state(con, _TABLE, "salt", [salt])
                    res.seconds = time.perf_counter() - plan.t0
                    res.stages, res.stages_cpu = stages.times, stages.cpu
                    log_build(con, res)
                break
            except _Collision:
                salt += 1
                reason = f"volunteer key collision: rebuilt with salt {salt}"
        con.execute("DROP TABLE IF EXISTS temp._cons_new_ids")
    return res


def _build(con, reason: str | None, salt: int, partition_exposures: int | None, stages: StageTimer,
           log) -> BuildResult:
    """One attempt inside the build's transaction: full when ``reason`` is set; raises _Collision on a clash."""
    build_id = next_build_id(con)
    if reason is not None:
        res = _vc_full(con, build_id, salt, partition_exposures or partition_exposures_for(con), stages, log)
    else:
        res = _vc_incremental(con, build_id, salt, stages, log)
    if res is None:
        raise _Collision()
    return res


# ---------------------------------------------------------------------------------------------------------------
# SQL shared by both builds
# ---------------------------------------------------------------------------------------------------------------

def _click_pairs_sql(where: str, vk: str, part: str = "TRUE") -> str:
    """Distinct (image, volunteer, top rank) of the valid clicks (clicked subject on the page shown)."""
    return f"""
        SELECT DISTINCT s, vk, r
        FROM (SELECT unnest(list_filter(c.selected_subject_ids, lambda x: list_contains(c.page_subject_ids, x)))
                         AS s,
                     {vk} AS vk, t.top_rank AS r
              FROM {COUNTED} c LEFT JOIN {TOP_VOLUNTEERS_SQL} t USING (volunteer_id)
              WHERE {where} AND len(c.selected_subject_ids) > 0)
        WHERE {part}"""


def _quarantine_clicks(con, where: str) -> None:
    """Write the invalid clicks of the classifications matching ``where`` to consensus.quarantine."""
    con.execute(f"""
        INSERT INTO consensus.quarantine
        SELECT classification_id, s,
               CASE WHEN coalesce(len(page_subject_ids), 0) = 0 THEN {sql_literal(REASON_NO_PAGE)}
                    ELSE {sql_literal(REASON_NOT_ON_PAGE)} END,
               ingest_id, now()::TIMESTAMP
        FROM (SELECT classification_id, page_subject_ids, ingest_id,
                     unnest(list_filter(selected_subject_ids,
                                        lambda x: NOT coalesce(list_contains(page_subject_ids, x), false))) AS s
              FROM {COUNTED} WHERE {where} AND len(selected_subject_ids) > 0)""")


def _vc_select(counts_sql: str, build_id: int) -> str:
    """volunteer_consensus rows from per-image counts: adds the fraction, its interval and the build id."""
    frac, lo, hi = wilson_sql("selected", "shown")
    return f"""
        SELECT subject_id, shown, selected, {frac} AS fraction, {lo} AS ci_low, {hi} AS ci_high,
               pages, first_seen, last_seen, {int(build_id)} AS build_id, top_seen_a, top_seen_b,
               top_selected_a, top_selected_b
        FROM ({counts_sql})"""


def _drop_temp(con, *tables: str) -> None:
    for t in tables:
        con.execute(f"DROP TABLE IF EXISTS temp.{t}")


# ---------------------------------------------------------------------------------------------------------------
# full build
# ---------------------------------------------------------------------------------------------------------------

def _vc_full(con, build_id: int, salt: int, partition_exposures: int, stages: StageTimer,
             log) -> BuildResult | None:
    """Every image from all pages, in partitions of at most ``partition_exposures`` exposures (None: collision)."""
    vk = vkey_sql("volunteer_id", salt)
    if not refresh_volunteer_keys(con, salt, full=True, new_filter=None):
        return None
    stages("volunteer_keys")
    n_rows, n_exp = con.execute(
        f"SELECT count(*), coalesce(sum(len(page_subject_ids)), 0) FROM {COUNTED}").fetchone()
    k = max(1, math.ceil(n_exp / max(1, partition_exposures)))
    recreate_table(con, "volunteer_consensus")
    recreate_table(con, "quarantine")
    for i in range(k):
        # partitions by subject_id % k: every image is in one partition, and each GROUP BY fits in memory
        _full_partition(con, "TRUE" if k == 1 else f"s % {k} = {i}", vk, build_id, stages)
        if log:
            log(f"volunteer_consensus: partition {i + 1}/{k} done")
    _drop_temp(con, "_cons_img", "_cons_rep", "_cons_sel")
    _quarantine_clicks(con, "TRUE")
    stages("quarantine")
    total = con.execute("SELECT count(*) FROM consensus.volunteer_consensus").fetchone()[0]
    return BuildResult(_TABLE, "full", int(total), int(total), int(n_rows), 0.0, "", build_id)


def _full_partition(con, part: str, vk: str, build_id: int, stages: StageTimer) -> None:
    """The images of one partition (``part``: a condition on the image id ``s``), in three passes and a write."""
    others = f"{_ALL} AND volunteer_id NOT IN (SELECT volunteer_id FROM {TOP_VOLUNTEERS_SQL})"
    # 1. per image, one pass: pages, first and last page, and which of the top volunteers saw it (exact
    #    distinct counts for them, as bits)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _cons_img AS
        SELECT s, count(*) AS pages, count(*) FILTER (WHERE top_rank IS NULL) AS other_pages,
               min(created_at) AS first_seen, max(created_at) AS last_seen,
               coalesce(bit_or({mask_sql('top_rank', 'a')}), 0::UHUGEINT) AS top_seen_a,
               coalesce(bit_or({mask_sql('top_rank', 'b')}), 0::UHUGEINT) AS top_seen_b
        FROM (SELECT unnest(c.page_subject_ids) AS s, c.created_at, t.top_rank
              FROM {COUNTED} c LEFT JOIN {TOP_VOLUNTEERS_SQL} t USING (volunteer_id) WHERE c.{_ALL})
        WHERE {part}
        GROUP BY s""")
    stages("pages")
    # 2. the other volunteers: exposures of an image to a volunteer beyond the first (repeats); every
    #    (image, volunteer) pair is aggregated once
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _cons_rep AS
        SELECT s, sum(n - 1) AS repeats FROM (
            SELECT s, vk, count(*) AS n
            FROM (SELECT unnest(page_subject_ids) AS s, {vk} AS vk FROM {COUNTED} WHERE {others})
            WHERE {part}
            GROUP BY s, vk HAVING count(*) > 1)
        GROUP BY s""")
    stages("repeats")
    # 3. valid clicks, one per (image, volunteer)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _cons_sel AS
        SELECT s, count(*) AS selected,
               coalesce(bit_or(ma), 0::UHUGEINT) AS top_selected_a,
               coalesce(bit_or(mb), 0::UHUGEINT) AS top_selected_b
        FROM (SELECT s, {masks_sql('r')}
              FROM ({_click_pairs_sql(_ALL, vk, part)}))
        GROUP BY s""")
    stages("clicks")
    con.execute(f"INSERT INTO consensus.volunteer_consensus {_vc_select(_FULL_COUNTS, build_id)}")
    stages("write")


# shown = distinct top volunteers (bits) + the other volunteers' pages - their repeats
_FULL_COUNTS = f"""
    SELECT i.s AS subject_id,
           {popcount_sql('i.top_seen_a')} + {popcount_sql('i.top_seen_b')} + i.other_pages
               - coalesce(r.repeats, 0) AS shown,
           coalesce(c.selected, 0) AS selected,
           i.pages, i.first_seen, i.last_seen, i.top_seen_a, i.top_seen_b,
           coalesce(c.top_selected_a, 0::UHUGEINT) AS top_selected_a,
           coalesce(c.top_selected_b, 0::UHUGEINT) AS top_selected_b
    FROM _cons_img i LEFT JOIN _cons_rep r USING (s) LEFT JOIN _cons_sel c USING (s)"""


# ---------------------------------------------------------------------------------------------------------------
# incremental update
# ---------------------------------------------------------------------------------------------------------------

def _vc_incremental(con, build_id: int, salt: int, stages: StageTimer, log) -> BuildResult | None:
    """Add the new pages to the per-image counts, exactly (see the module docstring; None: collision)."""
    vk = vkey_sql("c.volunteer_id", salt)
    if not refresh_volunteer_keys(con, salt, full=False, new_filter=_NEW):
        return None
    stages("volunteer_keys")
    n_new = con.execute(f"SELECT count(*) FROM {COUNTED} WHERE {_NEW}").fetchone()[0]
    _new_pairs(con, vk)
    stages("new_pairs")
    _history(con, vk, stages)
    con.execute(f"CREATE OR REPLACE TEMP TABLE _cons_vc AS {_vc_select(_INCREMENTAL_COUNTS, build_id)}")
    stages("merge")
    changed = con.execute("SELECT count(*) FROM _cons_vc").fetchone()[0]
    con.execute("DELETE FROM consensus.volunteer_consensus WHERE subject_id IN (SELECT subject_id FROM _cons_vc)")
    con.execute("INSERT INTO consensus.volunteer_consensus SELECT * FROM _cons_vc")
    _quarantine_clicks(con, _NEW)
    stages("write")
    _drop_temp(con, "_cons_np", "_cons_nc", "_cons_hist", "_cons_seen", "_cons_cseen", "_cons_vc", "_cons_batch_vol")
    total = con.execute("SELECT count(*) FROM consensus.volunteer_consensus").fetchone()[0]
    if log:
        log(f"volunteer_consensus: {n_new} new pages updated {changed} images")
    return BuildResult(_TABLE, "incremental", int(total), int(changed), int(n_new), 0.0, "", build_id)


def _new_pairs(con, vk: str) -> None:
    """Temp tables of the new pages' (image, volunteer) pairs: ``_cons_np`` (shown) and ``_cons_nc`` (clicked)."""
    # with the volunteer's top rank (NULL for most volunteers); the rank is fixed within a group, so its bit is
    # set after grouping
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _cons_np AS
        SELECT s, vk, r, n, f, l, {masks_sql('r')}
        FROM (SELECT s, vk, r, count(*) AS n, min(created_at) AS f, max(created_at) AS l
              FROM (SELECT unnest(c.page_subject_ids) AS s, {vk} AS vk, t.top_rank AS r, c.created_at
                    FROM {COUNTED} c LEFT JOIN {TOP_VOLUNTEERS_SQL} t USING (volunteer_id)
                    WHERE c.{_NEW} AND c.volunteer_id IS NOT NULL)
              GROUP BY s, vk, r)""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _cons_nc AS
        SELECT *, {masks_sql('r')}
        FROM ({_click_pairs_sql(_NEW + ' AND volunteer_id IS NOT NULL', vk)})""")


def _history(con, vk: str, stages: StageTimer) -> None:
    """Which new pairs of the other (not top) volunteers were already seen (``_cons_seen``) or clicked
    (``_cons_cseen``) on their earlier pages. (Top volunteers: a bit in the image's row, read in the merge.)"""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _cons_batch_vol AS
        SELECT DISTINCT volunteer_id FROM {COUNTED} WHERE {_NEW} AND volunteer_id IS NOT NULL""")
    old_light = (f"NOT ({_NEW}) AND volunteer_id IN (SELECT volunteer_id FROM _cons_batch_vol) "
                 f"AND volunteer_id NOT IN (SELECT volunteer_id FROM {TOP_VOLUNTEERS_SQL})")
    # their earlier pages, read once (a scan of raw.classifications), then looked up for pages and clicks
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _cons_hist AS
        SELECT {vk} AS vk, c.page_subject_ids AS page,
               CASE WHEN len(c.selected_subject_ids) > 0
                    THEN list_filter(c.selected_subject_ids, lambda x: list_contains(c.page_subject_ids, x)) END AS sel
        FROM {COUNTED} c WHERE {old_light}""")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _cons_seen AS
        SELECT DISTINCT o.s, o.vk FROM (SELECT unnest(page) AS s, vk FROM _cons_hist) o
        SEMI JOIN (SELECT s, vk FROM _cons_np WHERE r IS NULL) p ON o.s = p.s AND o.vk = p.vk""")
    stages("history_pages")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _cons_cseen AS
        SELECT DISTINCT o.s, o.vk FROM (SELECT unnest(sel) AS s, vk FROM _cons_hist WHERE len(sel) > 0) o
        SEMI JOIN (SELECT s, vk FROM _cons_nc WHERE r IS NULL) p ON o.s = p.s AND o.vk = p.vk""")
    stages("history_clicks")


def _added_sql(old: str, new: str) -> str:
    """SQL: the bits of mask ``new`` not yet in ``old`` (new top volunteers of an image), counted."""
    return popcount_sql(f"(coalesce({new}, 0::UHUGEINT) & ~coalesce({old}, 0::UHUGEINT))")


# New volunteers per image: the other volunteers' pairs not in their history, plus the top volunteers' bits that
# the image's row did not have yet (popcount(new & ~old)). The current rows are joined once, in place.
_INCREMENTAL_COUNTS = f"""
    SELECT d.s AS subject_id,
           coalesce(o.shown, 0) + d.light + {_added_sql('o.top_seen_a', 'd.ma')}
               + {_added_sql('o.top_seen_b', 'd.mb')} AS shown,
           coalesce(o.selected, 0) + coalesce(c.light, 0) + {_added_sql('o.top_selected_a', 'c.ma')}
               + {_added_sql('o.top_selected_b', 'c.mb')} AS selected,
           coalesce(o.pages, 0) + d.pages AS pages,
           least(o.first_seen, d.first_seen) AS first_seen,
           greatest(o.last_seen, d.last_seen) AS last_seen,
           coalesce(o.top_seen_a, 0::UHUGEINT) | coalesce(d.ma, 0::UHUGEINT) AS top_seen_a,
           coalesce(o.top_seen_b, 0::UHUGEINT) | coalesce(d.mb, 0::UHUGEINT) AS top_seen_b,
           coalesce(o.top_selected_a, 0::UHUGEINT) | coalesce(c.ma, 0::UHUGEINT) AS top_selected_a,
           coalesce(o.top_selected_b, 0::UHUGEINT) | coalesce(c.mb, 0::UHUGEINT) AS top_selected_b
    FROM (SELECT p.s, count(*) FILTER (WHERE p.r IS NULL AND sn.s IS NULL) AS light,
                 sum(p.n)::BIGINT AS pages, min(p.f) AS first_seen, max(p.l) AS last_seen,
                 bit_or(p.ma) AS ma, bit_or(p.mb) AS mb
          FROM _cons_np p LEFT JOIN _cons_seen sn ON p.s = sn.s AND p.vk = sn.vk
          GROUP BY p.s) d
    LEFT JOIN (SELECT c.s, count(*) FILTER (WHERE c.r IS NULL AND sn.s IS NULL) AS light,
                      bit_or(c.ma) AS ma, bit_or(c.mb) AS mb
               FROM _cons_nc c LEFT JOIN _cons_cseen sn ON c.s = sn.s AND c.vk = sn.vk
               GROUP BY c.s) c ON c.s = d.s
    LEFT JOIN consensus.volunteer_consensus o ON o.subject_id = d.s"""
