"""The raw tables (schema ``raw``): their DDL, one place, and :func:`ensure_raw_schema`.

Every table carries its natural key first and the same provenance columns last (``source_file``, ``source_line``,
``ingest_id``, ``ingested_at``), so any stored row can be traced to the line of the export it came from.
The column comments are the contract the consensus build reads against.
"""

from __future__ import annotations

__all__ = ["RAW_SCHEMA", "RAW_DDL", "ensure_raw_schema"]

RAW_SCHEMA = "raw"
_PROVENANCE = "source_file VARCHAR, source_line BIGINT, ingest_id VARCHAR, ingested_at TIMESTAMP"

RAW_DDL = {
    "classifications": f"""
        CREATE TABLE IF NOT EXISTS raw.classifications (
            classification_id BIGINT,          -- natural key
            volunteer_id VARCHAR,              -- keyed pseudonym (never the name or IP)
            is_anonymous BOOLEAN,              -- true for not-logged-in volunteers
            workflow_id BIGINT,
            workflow_name VARCHAR,
            workflow_version VARCHAR,          -- 'major.minor' kept as text (160.310 is not 160.31)
            created_at TIMESTAMP,              -- UTC
            page_subject_ids BIGINT[],         -- the page shown (subject_data '#group_subject_ids')
            selected_subject_ids BIGINT[],     -- annotation T0 values: the subjects clicked, in click order
            metadata JSON,                     -- allow-listed fields only (see formats.CLASSIFICATION_METADATA_KEEP)
            {_PROVENANCE},
            gold_standard BOOLEAN,             -- the export's gold_standard flag (NULL: an export without the column)
            expert BOOLEAN)                    -- the export's expert flag (NULL: an export without the column)""",
    "subjects": f"""
        CREATE TABLE IF NOT EXISTS raw.subjects (
            subject_id BIGINT,                 -- natural key: (subject_id, subject_set_id, workflow_id)
            subject_set_id BIGINT,
            workflow_id BIGINT,                -- NULL when the set is not linked to a workflow
            project_id BIGINT,
            object_id VARCHAR,                 -- survey identity of the image (image_id elsewhere)
            ra DOUBLE,
            dec DOUBLE,
            image_ref VARCHAR,
            metadata JSON,
            locations JSON,
            classifications_count BIGINT,
            retired_at TIMESTAMP,
            retirement_reason VARCHAR,
            created_at TIMESTAMP,
            updated_at TIMESTAMP,
            {_PROVENANCE})""",
    "workflows": f"""
        CREATE TABLE IF NOT EXISTS raw.workflows (
            workflow_id BIGINT,                -- natural key: (workflow_id, version, minor_version)
            version INTEGER,
            minor_version INTEGER,
            workflow_version VARCHAR,          -- 'version.minor_version', as in the classifications export
            display_name VARCHAR,
            active BOOLEAN,
            classifications_count BIGINT,
            pairwise BOOLEAN,
            grouped BOOLEAN,
            prioritized BOOLEAN,
            primary_language VARCHAR,
            first_task VARCHAR,
            tutorial_subject_id BIGINT,
            retired_set_member_subjects_count BIGINT,
            tasks JSON,
            retirement JSON,
            strings JSON,
            {_PROVENANCE})""",
    "talk_comments": f"""
        CREATE TABLE IF NOT EXISTS raw.talk_comments (
            comment_id BIGINT,                 -- natural key
            discussion_id BIGINT,
            discussion_title VARCHAR,          -- @mentions masked
            board_id BIGINT,
            board_title VARCHAR,
            board_description VARCHAR,
            focus_type VARCHAR,
            focus_id BIGINT,
            focus_subject_id BIGINT,           -- focus_id when focus_type = 'Subject'
            commenter_id VARCHAR,              -- keyed pseudonym of comment_user_id (login dropped)
            comment_body VARCHAR,              -- @mentions masked
            created_at TIMESTAMP,
            {_PROVENANCE})""",
    "talk_tags": f"""
        CREATE TABLE IF NOT EXISTS raw.talk_tags (
            tag_id BIGINT,                     -- natural key
            name VARCHAR,
            section VARCHAR,
            tagger_id VARCHAR,                 -- keyed pseudonym of user_id (login dropped)
            comment_id BIGINT,
            taggable_id BIGINT,
            taggable_type VARCHAR,
            project_id BIGINT,
            created_at TIMESTAMP,
            {_PROVENANCE})""",
    "quarantine": """
        CREATE TABLE IF NOT EXISTS raw.quarantine (
            table_name VARCHAR,
            source_file VARCHAR,
            source_line BIGINT,
            natural_key VARCHAR,               -- the record's id when it can be read, even from a broken row
            reason VARCHAR,
            ingest_id VARCHAR,
            quarantined_at TIMESTAMP,
            record_key VARCHAR)                -- identity: keyed hash of the record text '#' its occurrence""",
    "ingest_log": """
        CREATE TABLE IF NOT EXISTS raw.ingest_log (
            ingest_id VARCHAR,
            table_name VARCHAR,
            source_file VARCHAR,
            source_label VARCHAR,
            source_bytes BIGINT,               -- size and modification time of the file read, so an unchanged
            source_mtime TIMESTAMP,            -- file can be recognised without reading it again
            rows_seen BIGINT,
            rows_new BIGINT,
            rows_duplicate BIGINT,
            rows_quarantined BIGINT,
            newest_created_at TIMESTAMP,
            started_at TIMESTAMP,
            finished_at TIMESTAMP)""",
}


def _has_column(con, table: str, column: str) -> bool:
    return bool(con.execute(
        "SELECT count(*) FROM duckdb_columns() WHERE schema_name = ? AND table_name = ? AND column_name = ?",
        [RAW_SCHEMA, table, column]).fetchone()[0])


def _upgrade_quarantine(con) -> None:
    """Bring a ``raw.quarantine`` written before ``record_key`` existed up to date (once).

    Such a warehouse holds one copy of a bad row per read of its file; the copies (same table, file, line and
    reason) are folded into the first, so counts by reason are right again, and then the column is added. The
    fold is idempotent and comes first, so an upgrade killed half-way is finished by the next call. The old rows'
    ``record_key`` stays NULL until their file is read again (``bookkeeping.QuarantineBatch`` fills it then).
    """
    if _has_column(con, "quarantine", "record_key"):
        return
    con.execute("""DELETE FROM raw.quarantine WHERE rowid NOT IN (
                       SELECT min(rowid) FROM raw.quarantine GROUP BY table_name, source_file, source_line, reason)""")
    con.execute("ALTER TABLE raw.quarantine ADD COLUMN record_key VARCHAR")


def ensure_raw_schema(con) -> None:
    """Create schema ``raw`` and every raw table if missing, and add the columns that later versions added to
    an existing warehouse (idempotent; the schema evolution is :func:`_upgrade_quarantine`)."""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {RAW_SCHEMA}")
    for ddl in RAW_DDL.values():
        con.execute(ddl)
    _upgrade_quarantine(con)
    for flag in ("gold_standard", "expert"):       # added after the first warehouses were written
        if not _has_column(con, "classifications", flag):
            con.execute(f"ALTER TABLE raw.classifications ADD COLUMN {flag} BOOLEAN")
