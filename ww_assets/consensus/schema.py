"""The DuckDB schema ``consensus``: every table's DDL, the two views, and why those two are views.

``image_exposures`` is a **view**, not a table. A 10-million-page export is 160 million exposures; materialising
them would copy ``raw.classifications`` 16-fold (gigabytes, and more time than the whole consensus computation) for
a table nobody reads whole; the consensus tables aggregate straight from the page lists.

``subject_consensus`` is also a view: ``consensus.subject_identity`` (stored, one row per subject) joined with the
two stored consensus tables. A re-pull changes ~20% of the images' counts; rewriting those rows a second time would
double the cost of an update, while the join costs about a second per full read (the analysis reads it once).

The bookkeeping tables (``state``, ``builds``, ``volunteer_keys``) and the per-image ``top_*`` columns exist for
exact incremental updates: ``ww_assets.consensus.state`` and ``ww_assets.consensus.volunteer_keys`` say how.
"""

from __future__ import annotations

from ww_assets.consensus.counting import ensure_counted_view
from ww_assets.zooniverse.ingest.schema import ensure_raw_schema

__all__ = [
    "IMAGE_EXPOSURES_VIEW",
    "SCHEMA",
    "SUBJECT_CONSENSUS_VIEW",
    "TABLE_DDL",
    "ensure_consensus_schema",
    "recreate_table",
]

SCHEMA = "consensus"

#: CREATE TABLE IF NOT EXISTS for every stored table of the schema, by table name.
TABLE_DDL = {
    "state": """
        CREATE TABLE IF NOT EXISTS consensus.state (
            table_name VARCHAR,      -- the consensus table
            source VARCHAR,          -- raw.<table> (marker = an absorbed ingest_id), 'version', 'salt', ...
            marker VARCHAR,
            recorded_at TIMESTAMP)""",
    "builds": """
        CREATE TABLE IF NOT EXISTS consensus.builds (
            build_id BIGINT,
            table_name VARCHAR,
            mode VARCHAR,            -- full | incremental | unchanged
            reason VARCHAR,          -- why a full build was needed
            rows_total BIGINT,
            rows_changed BIGINT,     -- rows (images) deleted and re-inserted
            new_input_rows BIGINT,   -- raw rows absorbed by this build
            seconds DOUBLE,
            finished_at TIMESTAMP)""",
    "quarantine": """
        CREATE TABLE IF NOT EXISTS consensus.quarantine (
            classification_id BIGINT,
            subject_id BIGINT,       -- the subject clicked
            reason VARCHAR,
            ingest_id VARCHAR,       -- the raw ingest the classification came from
            detected_at TIMESTAMP)""",
    "volunteer_keys": """
        CREATE TABLE IF NOT EXISTS consensus.volunteer_keys (
            volunteer_id VARCHAR,    -- pseudonym (as in raw.classifications)
            vkey UBIGINT,            -- hash(volunteer_id[, salt]); unique over all volunteers
            top_rank SMALLINT)       -- 0..255 for the most active volunteers at the last full build, else NULL""",
    "volunteer_consensus": """
        CREATE TABLE IF NOT EXISTS consensus.volunteer_consensus (
            subject_id BIGINT,
            shown BIGINT,            -- distinct volunteers who had the image on a page
            selected BIGINT,         -- distinct volunteers who clicked it on a page where it was shown
            fraction DOUBLE,         -- selected / shown
            ci_low DOUBLE,           -- Wilson score 95% interval of fraction
            ci_high DOUBLE,
            pages BIGINT,            -- pages that showed it (repeat submissions included)
            first_seen TIMESTAMP,
            last_seen TIMESTAMP,
            build_id BIGINT,         -- the consensus build that last wrote the row
            -- bookkeeping for exact incremental updates: bit r of top_seen_a (r < 128) / top_seen_b (r - 128)
            -- is set when the volunteer with volunteer_keys.top_rank = r has had the image on a page;
            -- top_selected_a/b: has clicked it
            top_seen_a UHUGEINT,
            top_seen_b UHUGEINT,
            top_selected_a UHUGEINT,
            top_selected_b UHUGEINT)""",
    "talk_consensus": """
        CREATE TABLE IF NOT EXISTS consensus.talk_consensus (
            subject_id BIGINT,
            comments BIGINT,         -- Talk comments focused on the image
            commenters BIGINT,       -- distinct volunteers among their authors
            taggers BIGINT,          -- distinct volunteers who used any hashtag on the image
            hashtags MAP(VARCHAR, BIGINT),  -- normalised tag -> distinct volunteers who used it
            top_tag VARCHAR,         -- tag with most volunteers (ties: alphabetical)
            top_tag_share DOUBLE,    -- its volunteers / taggers
            first_comment_at TIMESTAMP,
            last_comment_at TIMESTAMP,
            build_id BIGINT)""",
    "subject_identity": """
        CREATE TABLE IF NOT EXISTS consensus.subject_identity (
            subject_id BIGINT,       -- one row per subject in raw.subjects
            image_id VARCHAR,        -- survey identity: the HSC object_id
            ra DOUBLE,
            dec DOUBLE,
            image_ref VARCHAR,
            build_id BIGINT)""",
}

# (column, value for a subject with no row) of the two consensus tables, as subject_consensus shows them
_VC_COLS = (("shown", "0"), ("selected", "0"), ("fraction", None), ("ci_low", None), ("ci_high", None),
            ("pages", "0"), ("first_seen", None), ("last_seen", None))
_TC_COLS = (("comments", "0"), ("commenters", "0"), ("hashtags", "MAP {}::MAP(VARCHAR, BIGINT)"), ("top_tag", None),
            ("top_tag_share", None))

SUBJECT_CONSENSUS_VIEW = f"""
CREATE OR REPLACE VIEW consensus.subject_consensus AS
SELECT s.subject_id, s.image_id, s.ra, s.dec, s.image_ref,
       {", ".join(f"coalesce(v.{c}, {d}) AS {c}" if d else f"v.{c}" for c, d in _VC_COLS)},
       {", ".join(f"coalesce(t.{c}, {d}) AS {c}" if d else f"t.{c}" for c, d in _TC_COLS)}
FROM consensus.subject_identity s
LEFT JOIN consensus.volunteer_consensus v USING (subject_id)
LEFT JOIN consensus.talk_consensus t USING (subject_id)
"""

IMAGE_EXPOSURES_VIEW = """
CREATE OR REPLACE VIEW consensus.image_exposures AS
SELECT
    classification_id,
    volunteer_id,
    is_anonymous,
    workflow_id,
    workflow_version,
    created_at,
    unnest(page_subject_ids) AS subject_id,
    unnest(generate_series(1, len(page_subject_ids))) AS page_position,   -- 1..16, reading order of the page
    list_contains(selected_subject_ids, unnest(page_subject_ids)) AS selected,
    ingest_id
FROM consensus.counted_classifications
"""


def ensure_consensus_schema(con) -> None:
    """Create schema ``consensus`` and its tables if missing (and the raw tables they read)."""
    ensure_raw_schema(con)
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    ensure_counted_view(con)
    for ddl in TABLE_DDL.values():
        con.execute(ddl)
    kind = con.execute("SELECT table_type FROM information_schema.tables WHERE table_schema = 'consensus' "
                       "AND table_name = 'subject_consensus'").fetchone()
    if kind is None or kind[0] != "VIEW":
        if kind is not None:
            con.execute("DROP TABLE consensus.subject_consensus")
        con.execute(SUBJECT_CONSENSUS_VIEW)


def recreate_table(con, table: str) -> None:
    """Empty a table for a full build by recreating it (so a changed definition takes effect)."""
    con.execute(f"DROP TABLE IF EXISTS consensus.{table}")
    con.execute(TABLE_DDL[table])
