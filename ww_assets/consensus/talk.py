"""Talk consensus per image: ``consensus.talk_consensus``, and how hashtags are found and normalised.

Definitions (also in the README): per image, **comments** = Talk comments focused on it, **commenters** = distinct
volunteers who wrote them. **Hashtags** come from the comment text (``#word`` at the start of the text or after a
space or punctuation other than ``&``, ``/``, ``#``: so ``&#39;`` and URL fragments are not tags) and from Talk's
tag records (``raw.talk_tags``, ``taggable_type = 'Subject'``), normalised (NFC, lower case, leading ``#`` and
trailing punctuation/symbols removed; a tag must contain a letter). A tag counts **distinct volunteers** who used
it on the image (the same rule as clicks: saying ``#merger`` twice, or in a comment and its tag record, counts
once). ``hashtags`` maps tag -> volunteers; ``top_tag`` is the tag most volunteers used (ties: alphabetical),
``top_tag_share`` its volunteers / ``taggers`` (distinct volunteers who used any tag on the image).

Incremental updates: the images with a new comment or tag record are recomputed from all their comments and tags.
Talk is small next to the classifications, so it needs none of the volunteer side's bookkeeping to stay fast.
"""

from __future__ import annotations

import unicodedata

from ww_assets.consensus.schema import recreate_table
from ww_assets.consensus.state import (
    BuildResult,
    log_unchanged,
    plan_build,
    run_build,
    temp_ingest_ids,
)
from ww_assets.duckdb_sql import sql_literal

__all__ = ["HASHTAG_PATTERN", "build_talk_consensus", "normalise_tag", "normalise_tag_sql"]

#: Hashtags in comment text: '#' at the start or after a character that is not a letter, digit, '_', '&', '/', '#'.
HASHTAG_PATTERN = r"(?:^|[^\pL\pN_&/#])#([\pL\pN_][\pL\pN_.\-]*)"

_TABLE = "talk_consensus"


def normalise_tag(text: str | None) -> str | None:
    """Python twin of the SQL tag normalisation (NFC, lower case, strip '#' and trailing punctuation)."""
    if text is None:
        return None
    t = unicodedata.normalize("NFC", text).strip().lower().lstrip("#")
    while t and (unicodedata.category(t[-1])[0] in "PSZ"):
        t = t[:-1]
    if not any(unicodedata.category(ch).startswith("L") for ch in t):
        return None
    return t or None


def normalise_tag_sql(x: str) -> str:
    """SQL: the normalised tag of the text expression ``x`` (NULL when it has no letter), as ``normalise_tag``."""
    stripped = f"regexp_replace(regexp_replace(lower(trim(nfc_normalize({x}))), '^#+', ''), '[\\pP\\pS\\s]+$', '')"
    return f"CASE WHEN regexp_matches({stripped}, '\\pL') THEN {stripped} END"


def _talk_sql(subject_filter: str, build_id: int) -> str:
    """talk_consensus rows for the subjects matching ``subject_filter`` (an SQL condition on ``{s}``)."""
    norm_body = normalise_tag_sql("m")
    norm_name = normalise_tag_sql("name")
    return f"""
    WITH c AS (
        SELECT comment_id, focus_subject_id AS s, commenter_id, comment_body, created_at
        FROM raw.talk_comments WHERE focus_subject_id IS NOT NULL AND ({subject_filter.format(s='focus_subject_id')})
    ), comment_stats AS (
        SELECT s, count(*) AS comments, count(DISTINCT commenter_id) AS commenters,
               min(created_at) AS first_comment_at, max(created_at) AS last_comment_at
        FROM c GROUP BY s
    ), uses AS (
        SELECT s, commenter_id AS who, {norm_body} AS tag
        FROM (SELECT s, commenter_id,
                     unnest(regexp_extract_all(comment_body, {sql_literal(HASHTAG_PATTERN)}, 1)) AS m
              FROM c WHERE comment_body LIKE '%#%')
        UNION ALL
        SELECT taggable_id AS s, tagger_id AS who, {norm_name} AS tag
        FROM raw.talk_tags
        WHERE taggable_type = 'Subject' AND taggable_id IS NOT NULL AND ({subject_filter.format(s='taggable_id')})
    ), per_tag AS (
        SELECT s, tag, count(DISTINCT who) AS n FROM uses WHERE tag IS NOT NULL AND who IS NOT NULL
        GROUP BY s, tag
    ), tag_stats AS (
        SELECT t.s, t.hashtags, t.top_tag, t.top_n, w.taggers
        FROM (SELECT s,
                     map_from_entries(list({{'k': tag, 'v': n}} ORDER BY n DESC, tag)) AS hashtags,
                     (list(tag ORDER BY n DESC, tag))[1] AS top_tag,
                     max(n) AS top_n
              FROM per_tag GROUP BY s) t
        JOIN (SELECT s, count(DISTINCT who) AS taggers FROM uses
              WHERE tag IS NOT NULL AND who IS NOT NULL GROUP BY s) w USING (s)
    )
    SELECT coalesce(cs.s, ts.s) AS subject_id,
           coalesce(cs.comments, 0) AS comments, coalesce(cs.commenters, 0) AS commenters,
           coalesce(ts.taggers, 0) AS taggers,
           coalesce(ts.hashtags, MAP {{}}::MAP(VARCHAR, BIGINT)) AS hashtags,
           ts.top_tag, ts.top_n::DOUBLE / nullif(ts.taggers, 0) AS top_tag_share,
           cs.first_comment_at, cs.last_comment_at, {int(build_id)} AS build_id
    FROM comment_stats cs FULL OUTER JOIN tag_stats ts ON cs.s = ts.s
    """


def build_talk_consensus(con, *, full: bool = False, log=None) -> BuildResult:
    """Build or update ``consensus.talk_consensus`` from raw.talk_comments and raw.talk_tags."""
    plan = plan_build(con, _TABLE, ("talk_comments", "talk_tags"), full=full)
    if plan.unchanged:
        return log_unchanged(con, plan, _TABLE, "no new ingest")
    res = run_build(con, plan, "talk", full=lambda build_id: _talk_full(con, build_id),
                    incremental=lambda build_id: _talk_incremental(con, build_id, plan.new))
    if log:
        log(f"talk_consensus: {res.mode}, {res.rows_changed} images recomputed")
    return res


def _talk_full(con, build_id: int) -> tuple[int, int, int]:
    """Every image from all comments and tags: (rows, rows written, raw rows read)."""
    n_in = con.execute("SELECT (SELECT count(*) FROM raw.talk_comments) + "
                       "(SELECT count(*) FROM raw.talk_tags)").fetchone()[0]
    recreate_table(con, "talk_consensus")
    con.execute(f"INSERT INTO consensus.talk_consensus {_talk_sql('TRUE', build_id)}")
    total = con.execute("SELECT count(*) FROM consensus.talk_consensus").fetchone()[0]
    return total, total, n_in


def _talk_incremental(con, build_id: int, new: dict[str, list[str]]) -> tuple[int, int, int]:
    """Recompute the images with new comments or tags (``new``: raw table -> new ingest ids): as ``_talk_full``."""
    temp_ingest_ids(con, "_cons_tc_ids", [i for v in new.values() for i in v])
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _cons_tc_subjects AS
        SELECT DISTINCT s FROM (
            SELECT focus_subject_id AS s FROM raw.talk_comments
            WHERE ingest_id IN (SELECT ingest_id FROM _cons_tc_ids) AND focus_subject_id IS NOT NULL
            UNION ALL
            SELECT taggable_id FROM raw.talk_tags
            WHERE ingest_id IN (SELECT ingest_id FROM _cons_tc_ids) AND taggable_type = 'Subject'
              AND taggable_id IS NOT NULL)""")
    n_in = con.execute("""
        SELECT (SELECT count(*) FROM raw.talk_comments WHERE ingest_id IN (SELECT ingest_id FROM _cons_tc_ids))
             + (SELECT count(*) FROM raw.talk_tags WHERE ingest_id IN (SELECT ingest_id FROM _cons_tc_ids))
    """).fetchone()[0]
    con.execute("DELETE FROM consensus.talk_consensus WHERE subject_id IN (SELECT s FROM _cons_tc_subjects)")
    con.execute(f"INSERT INTO consensus.talk_consensus "
                f"{_talk_sql('{s} IN (SELECT s FROM _cons_tc_subjects)', build_id)}")
    changed = con.execute("SELECT count(*) FROM _cons_tc_subjects").fetchone()[0]
    total = con.execute("SELECT count(*) FROM consensus.talk_consensus").fetchone()[0]
    con.execute("DROP TABLE IF EXISTS temp._cons_tc_ids")
    con.execute("DROP TABLE IF EXISTS temp._cons_tc_subjects")
    return total, changed, n_in
