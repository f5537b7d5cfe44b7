"""DuckDB ingest of Zooniverse exports into the raw tables (schema ``raw``).

Every table is append-only and deduplicated by its natural key, so re-reading an export that overlaps what is
already stored adds exactly the rows that are new:

==========================  ==========================================  ========================================
table                       natural key                                 source
==========================  ==========================================  ========================================
raw.classifications         classification_id                           classifications CSV
raw.subjects                (subject_id, subject_set_id, workflow_id)   subjects CSV (one row per set x workflow)
raw.workflows               (workflow_id, version, minor_version)       workflows CSV
raw.talk_comments           comment_id                                  Talk comments JSON (or its .tar.gz)
raw.talk_tags               tag_id                                      Talk tags JSON (or its .tar.gz)
raw.quarantine              (log)                                       rows that could not be read, with why
raw.ingest_log              ingest_id                                   one row per file ingested
==========================  ==========================================  ========================================

People's data: volunteer names and IP addresses never leave the file reader. ``user_ip`` is never read at all;
``user_name`` and the Talk ``*_user_id`` columns only feed the keyed pseudonym (``ww_assets.zooniverse.pseudonym``)
computed in SQL; Talk logins are dropped and @mentions in Talk text are masked. A quarantined row is recorded by
file, line, parsed natural key and reason, never by its content.

Speed: the classifications CSV (the big one: ~10 million 16-image pages for a project of W&W's size) is read in
one parallel DuckDB pass with no per-row Python: JSON is parsed with DuckDB's JSON functions, the pseudonym is
``sha256`` in SQL, and rows already stored are recognised by a hash (mark) join on ``classification_id`` before
any of their other columns are parsed. Rows are appended in file order inside one transaction; bad rows and
duplicates are appended as bare placeholders and moved to ``raw.quarantine`` / dropped before the commit, which
is how every row gets its source line without a second pass or a staging copy. A reader never sees a placeholder;
a failed ingest rolls back whole.

``source_line`` is the line of the record in the file counting the header as line 1 (the physical line unless a
quoted field holds a newline, which Zooniverse exports do not do); for JSON sources it is the element's position
in the top-level array (1-based).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time
import uuid
from pathlib import Path

from ww_assets.duckdb_sql import insertion_order, transaction
from ww_assets.zooniverse import formats
from ww_assets.zooniverse.errors import ExportFileError
from ww_assets.zooniverse.pseudonym import sql_identity, sql_mask_mentions, sql_volunteer_id
from ww_assets.zooniverse.talk import talk_json_file

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
            {_PROVENANCE})""",
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
            natural_key VARCHAR,               -- the parsed key when it could be parsed, else NULL
            reason VARCHAR,
            ingest_id VARCHAR,
            quarantined_at TIMESTAMP)""",
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

_REJECTS = "_ww_csv_rejects"
_REJECTS_SCAN = "_ww_csv_rejects_scan"
_STAGE = "_ww_ingest_stage"


@dataclasses.dataclass(frozen=True)
class IngestReport:
    """What one file's ingest did. ``rows_seen = rows_new + rows_duplicate + rows_quarantined``."""

    table: str
    source_file: str
    rows_seen: int
    rows_new: int
    rows_duplicate: int
    rows_quarantined: int
    newest_created_at: dt.datetime | None     # newest created_at in the table after this ingest
    ingest_id: str
    source_label: str | None = None
    seconds: float = 0.0
    quarantine_reasons: dict[str, int] = dataclasses.field(default_factory=dict)

    def as_metadata(self) -> dict:
        """Plain values for asset metadata (no row content, so nothing personal)."""
        return {
            "table": f"raw.{self.table}",
            "source_file": self.source_file,
            "source_label": self.source_label or "",
            "rows_seen": self.rows_seen,
            "rows_new": self.rows_new,
            "rows_duplicate": self.rows_duplicate,
            "rows_quarantined": self.rows_quarantined,
            "newest_created_at": self.newest_created_at.isoformat() if self.newest_created_at else "",
            "ingest_id": self.ingest_id,
            "ingest_seconds": round(self.seconds, 3),
        }


def ensure_raw_schema(con) -> None:
    """Create schema ``raw`` and every raw table if missing (idempotent)."""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {RAW_SCHEMA}")
    for ddl in RAW_DDL.values():
        con.execute(ddl)


# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------

# WW_INGEST_PROFILE=1 prints wall and CPU seconds of each step of the classifications ingest (benchmarking aid).
_PROFILE = bool(os.environ.get("WW_INGEST_PROFILE"))
_last_tick: list = [None]


def _tick(label: str) -> None:
    if not _PROFILE:
        return
    now = (time.perf_counter(), time.process_time())
    if _last_tick[0] is not None and label != "start":
        print(f"  ingest step {label}: {now[0] - _last_tick[0][0]:.2f} s wall, "
              f"{now[1] - _last_tick[0][1]:.2f} s CPU", flush=True)
    _last_tick[0] = now


def _lit(text: str) -> str:
    """A SQL string literal."""
    return "'" + str(text).replace("'", "''") + "'"


def _new_ingest_id() -> str:
    now = dt.datetime.now(dt.timezone.utc)
    return f"ing_{now:%Y%m%dT%H%M%S}_{uuid.uuid4().hex[:10]}"


def _now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _drop_rejects(con) -> None:
    # The rejects tables hold offending CSV lines verbatim (names, IPs): they live only in memory, only for the
    # length of one ingest, and are dropped before it returns.
    con.execute(f"DROP TABLE IF EXISTS temp.{_REJECTS}")
    con.execute(f"DROP TABLE IF EXISTS temp.{_REJECTS_SCAN}")


#: Longest CSV record read (bytes). A W&W classification row is about a kilobyte; 4 MB leaves room for any real row,
#: and a longer one is quarantined as an unreadable line. Not larger: DuckDB sizes its read buffers from this, and
#: at 64 MB the parallel CSV scan of a multi-GB export ran 3.6x slower on one thread (benchmarks/consensus_scale.py).
_CSV_MAX_LINE_BYTES = 4 * 1024 * 1024


def _csv_source(path: Path, header: list[str], keep_rejects: bool = True) -> str:
    """``read_csv`` of an export with every column VARCHAR, parsing left to SQL, bad lines to a rejects table."""
    columns = "{" + ", ".join(f"{_lit(c)}: 'VARCHAR'" for c in header) + "}"
    compression = "gzip" if formats.is_gzip(path) else "none"
    rejects = (f"store_rejects = true, rejects_table = '{_REJECTS}', rejects_scan = '{_REJECTS_SCAN}', "
               f"rejects_limit = 0" if keep_rejects else "ignore_errors = true")
    return (
        f"read_csv({_lit(str(path))}, header = true, columns = {columns}, auto_detect = false, delim = ',', "
        f"quote = '\"', escape = '\"', strict_mode = true, null_padding = false, compression = '{compression}', "
        f"max_line_size = {_CSV_MAX_LINE_BYTES}, {rejects})"
    )


def _rejected_lines(con) -> list[tuple[int, str]]:
    """(line, reason) of each CSV line the reader could not split into the header's columns."""
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE temporary AND table_name = ?", [_REJECTS]
    ).fetchone()[0]
    if not exists:
        return []
    rows = con.execute(
        f"""SELECT line, min(lower(error_type::VARCHAR) || coalesce(' (column ' || column_name || ')', ''))
            FROM temp.{_REJECTS} GROUP BY line ORDER BY line"""
    ).fetchall()
    return [(int(line), f"unreadable CSV line: {reason}") for line, reason in rows]


def _line_sql(index_sql: str, rejected: list[tuple[int, str]]) -> str:
    """SQL for the line of the record with 0-based ``index_sql`` among the records the reader kept.

    With rejected lines r_1 < r_2 < ... the kept record i sits on line i + 2 + #{k : r_k - k < i + 2}
    (k from 1; line 1 is the header): every rejected line before it pushes it one line down.
    """
    if not rejected:
        return f"({index_sql} + 2)"
    shifted = sorted(line - k for k, (line, _) in enumerate(rejected, start=1))
    # #{k : shifted_k < i + 2}; a list and a count of a filter is fine for the few rejects a file has, and the
    # (rare) file with many rejected lines gets a binary search over the sorted list instead.
    if len(shifted) <= 64:
        arr = "[" + ", ".join(str(s) for s in shifted) + "]::BIGINT[]"
        return f"({index_sql} + 2 + len(list_filter({arr}, lambda s: s < {index_sql} + 2)))"
    return None  # handled by _update_lines_many_rejects


def _require_header(path: Path, required: tuple[str, ...], kind: str) -> list[str]:
    if not path.exists():
        raise ExportFileError(f"{kind} export not found: {path}")
    header = formats.read_csv_header(path)
    formats.check_columns(path, header, required, kind)
    return header


def _col(header: list[str], name: str) -> str:
    """A column of the CSV, or a typed NULL when the export has no such column (older exports lack some)."""
    return f'"{name}"' if name in header else "NULL::VARCHAR"


def _file_identity(path: str) -> tuple[int | None, dt.datetime | None]:
    try:
        st = os.stat(path)
    except OSError:
        return None, None
    return st.st_size, dt.datetime.fromtimestamp(st.st_mtime, tz=dt.timezone.utc).replace(tzinfo=None)


def _log_ingest(con, report: IngestReport, started: dt.datetime) -> None:
    size, mtime = _file_identity(report.source_file)
    con.execute(
        """INSERT INTO raw.ingest_log (ingest_id, table_name, source_file, source_label, source_bytes, source_mtime,
                                       rows_seen, rows_new, rows_duplicate, rows_quarantined, newest_created_at,
                                       started_at, finished_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [report.ingest_id, report.table, report.source_file, report.source_label, size, mtime, report.rows_seen,
         report.rows_new, report.rows_duplicate, report.rows_quarantined, report.newest_created_at, started,
         _now_utc()],
    )


def previous_ingest(con, table: str, path) -> str | None:
    """The ingest_id that already read this exact file (same path, size and modification time), if any.

    Lets a caller skip re-reading an unchanged export (a live pull within the 24 h export window gets the same
    file again); reading it again would add nothing anyway.
    """
    ensure_raw_schema(con)
    size, mtime = _file_identity(str(path))
    if size is None:
        return None
    row = con.execute(
        """SELECT ingest_id FROM raw.ingest_log WHERE table_name = ? AND source_file = ? AND source_bytes = ?
           AND source_mtime = ? ORDER BY finished_at DESC LIMIT 1""", [table, str(path), size, mtime]).fetchone()
    return row[0] if row else None


def _quarantine_reasons(con, ingest_id: str) -> dict[str, int]:
    rows = con.execute(
        "SELECT reason, count(*) FROM raw.quarantine WHERE ingest_id = ? GROUP BY 1 ORDER BY 2 DESC", [ingest_id]
    ).fetchall()
    return {reason: int(n) for reason, n in rows}


def _insert_rejects(con, table: str, source_file: str, ingest_id: str, rejected, now) -> None:
    if rejected:
        con.executemany(
            "INSERT INTO raw.quarantine VALUES (?, ?, ?, NULL, ?, ?, ?)",
            [[table, source_file, line, reason, ingest_id, now] for line, reason in rejected],
        )


# --------------------------------------------------------------------------------------------------------------
# classifications: one parallel pass, placeholders for bad rows and known ids, no staging copy
# --------------------------------------------------------------------------------------------------------------

def _classification_select(header: list[str], src_sql: str, *, live_sql: str, line_sql: str, task: str,
                           keep_metadata: bool = True) -> str:
    """The SELECT that turns CSV rows into ``raw.classifications`` rows (placeholders for non-live/bad rows).

    ``live_sql`` (over ``cid``) says which rows to parse; the others become bare ``(classification_id)``
    placeholders tagged ``$iid_cand``. Bad rows become placeholders tagged ``$iid_bad`` carrying their reason.
    """
    c = lambda name: _col(header, name if (keep_metadata or name != "metadata") else "")  # noqa: E731
    keep = formats.CLASSIFICATION_METADATA_KEEP
    meta_paths = "[" + ", ".join(_lit('$."' + k + '"') for k in keep) + "]"
    meta_object = "json_object(" + ", ".join(f"{_lit(k)}, m[{i + 1}]" for i, k in enumerate(keep)) + ")"
    time_formats = "[" + ", ".join(_lit(f) for f in formats.PANOPTES_TIME_FORMATS + formats.ISO_TIME_FORMATS) + "]"
    identity = sql_identity("user_id", "user_name")
    ok = "live AND reason IS NULL"
    return f"""
    WITH src AS (
        SELECT
            nullif(trim({c('classification_id')}), '') AS cid_txt,
            try_cast(nullif(trim({c('classification_id')}), '') AS BIGINT) AS cid,
            {c('user_id')} AS user_id, {c('user_name')} AS user_name,
            {c('workflow_id')} AS workflow_id, {c('workflow_name')} AS workflow_name,
            {c('workflow_version')} AS workflow_version, {c('created_at')} AS created_at,
            {c('metadata')} AS metadata, {c('annotations')} AS annotations,
            {c('subject_data')} AS subject_data, {c('subject_ids')} AS subject_ids
        FROM {src_sql}
    ), marked AS (
        SELECT *, coalesce({live_sql}, true) AS live FROM src
    ), parsed AS (
        -- every parse sits under CASE WHEN live: rows already stored cost a comparison and nothing more
        SELECT *,
            CASE WHEN live THEN nullif(trim(user_id), '') END AS uid_txt,
            CASE WHEN live THEN nullif(trim(workflow_id), '') END AS wid_txt,
            CASE WHEN live THEN try_cast(nullif(trim(workflow_id), '') AS BIGINT) END AS wid,
            CASE WHEN live THEN try_strptime(trim(created_at), {time_formats}) END AS created,
            CASE WHEN live THEN try(json_extract_string(subject_data, '$.*."#group_subject_ids"')) END AS grp,
            -- one typed parse of the annotations; the clicks are the subjects in the value of the chosen task
            CASE WHEN live THEN
                try(flatten(list_transform(
                    list_filter(json_transform(annotations, '[{{"task": "VARCHAR", "value": [{{"subject": "BIGINT"}}]}}]'),
                                lambda a: a.task = {_lit(task)}),
                    lambda a: list_transform(a.value, lambda v: v.subject))))
            END AS ann,
            CASE WHEN live AND {str(keep_metadata).upper()} THEN try(json_extract(metadata, {meta_paths})) END AS m
        FROM marked
    ), pages AS (
        SELECT *,
            CASE WHEN live THEN
                CASE WHEN len(grp) > 0 AND grp[1] IS NOT NULL
                     THEN try_cast(string_split(grp[1], '-') AS BIGINT[])
                     ELSE try_cast(string_split(nullif(trim(subject_ids), ''), ';') AS BIGINT[]) END
            END AS page,
            ann AS sel
        FROM parsed
    ), judged AS (
        SELECT *,
            CASE WHEN live THEN CASE
                WHEN cid_txt IS NULL THEN 'classification_id is empty'
                WHEN cid IS NULL OR cid::VARCHAR <> cid_txt THEN 'classification_id is not an integer'
                WHEN uid_txt IS NOT NULL AND try_cast(uid_txt AS BIGINT)::VARCHAR IS DISTINCT FROM uid_txt
                    THEN 'user_id is not an integer'
                WHEN uid_txt IS NULL AND nullif(trim(user_name), '') IS NULL
                    THEN 'no volunteer identity: user_id and user_name are both empty'
                WHEN wid_txt IS NOT NULL AND wid::VARCHAR IS DISTINCT FROM wid_txt THEN 'workflow_id is not an integer'
                WHEN created IS NULL THEN 'created_at is missing or not a timestamp'
                WHEN subject_data IS NULL THEN 'subject_data is empty'
                WHEN grp IS NULL THEN 'subject_data is not valid JSON'
                WHEN annotations IS NULL THEN 'annotations is empty'
                WHEN ann IS NULL THEN 'annotations is not valid JSON'
                WHEN left(ltrim(annotations), 1) <> '[' THEN 'annotations is not a JSON list'
                WHEN metadata IS NOT NULL AND m IS NULL THEN 'metadata is not valid JSON'
                WHEN page IS NULL OR len(page) = 0
                    THEN 'no page of subject ids (subject_data #group_subject_ids or subject_ids)'
                WHEN list_count(page) <> len(page) THEN 'a subject id on the page is not an integer'
                WHEN sel IS NULL THEN 'annotation value is not a list of subjects'
                WHEN list_count(sel) <> len(sel) THEN 'a selected subject id is not an integer'
                -- a click on a subject that was not on the page is kept here as exported: the consensus build
                -- quarantines that one click (consensus.quarantine) and still counts the rest of the page
            END END AS reason
        FROM pages
    )
    SELECT
        cid,
        CASE WHEN {ok} THEN {sql_volunteer_id('$key', identity)} END,
        CASE WHEN {ok} THEN uid_txt IS NULL END,
        CASE WHEN {ok} THEN wid END,
        CASE WHEN {ok} THEN workflow_name END,
        CASE WHEN {ok} THEN nullif(trim(workflow_version), '') END,
        CASE WHEN {ok} THEN created END,
        CASE WHEN {ok} THEN page END,
        CASE WHEN {ok} THEN sel END,
        CASE WHEN {ok} AND m IS NOT NULL THEN {meta_object}
             WHEN reason IS NOT NULL THEN json_object('quarantine_reason', reason) END,
        $source_file,
        {line_sql},
        CASE WHEN NOT live THEN $iid_cand WHEN reason IS NULL THEN $iid ELSE $iid_bad END,
        $now
    FROM judged
    """


def ingest_classifications_csv(con, path, *, pseudonym_key: str, source_label: str | None = None,
                               task: str = "T0", keep_metadata: bool = False) -> IngestReport:
    """Append the new rows of a classifications export (CSV, or gzip CSV) to ``raw.classifications``.

    ``page_subject_ids`` comes from ``subject_data``'s ``#group_subject_ids`` (falling back to ``subject_ids`` for
    a workflow without subject groups), ``selected_subject_ids`` from the ``value`` of annotation ``task``. Rows
    that cannot be read go to ``raw.quarantine``; everything else lands. Runs in its own transaction on ``con``
    (which must not be inside one). Returns an :class:`IngestReport`.

    ``keep_metadata=True`` keeps the allow-listed fields of each row's ``metadata`` (formats.
    CLASSIFICATION_METADATA_KEEP: start/finish times, live_project, language, selection state) as JSON, and sends
    rows whose metadata is not valid JSON to quarantine. It is off by default: metadata is the largest column of
    the export and reading, checking, scrubbing and storing it about doubles the ingest time
    (benchmarks/zooniverse_ingest.py), while nothing downstream needs it. Off, ``metadata`` is NULL and the column
    is not even read.

    How rows already stored are skipped cheaply: Panoptes classification ids grow with time, so a row whose id is
    above the largest stored id is new and is parsed; a row at or below it is appended as a bare placeholder.
    Placeholders whose id is stored are duplicates; those quarantined before are quarantined again with the same
    reason (export rows never change); any other (a project export read after a workflow export) is re-read from
    the file by id in a second, filtered scan.
    A join in the first pass would cost DuckDB its file order, which is what gives each row its line.
    """
    if not pseudonym_key:
        raise ValueError("pseudonym_key is empty")
    path = Path(path)
    header = _require_header(path, formats.CLASSIFICATION_REQUIRED, "classifications")
    started = _now_utc()
    t0 = dt.datetime.now()
    ingest_id = _new_ingest_id()
    source_file = str(path)
    ensure_raw_schema(con)
    now = _now_utc()
    ids = {"iid": ingest_id, "iid_cand": ingest_id + "#known", "iid_bad": ingest_id + "#bad"}
    this_ingest = "ingest_id IN ($iid, $iid_cand, $iid_bad)"
    params = {"key": pseudonym_key, "source_file": source_file, "now": now, **ids}
    with insertion_order(con, keep=True):
        _drop_rejects(con)
        try:
            with transaction(con):
                _tick("start")
                hi = con.execute("SELECT max(classification_id) FROM raw.classifications").fetchone()[0]
                live = "TRUE" if hi is None else f"(cid IS NULL OR cid > {int(hi)})"
                first = _classification_select(header, _csv_source(path, header), live_sql=live,
                                               line_sql="NULL::BIGINT", task=task, keep_metadata=keep_metadata)
                con.execute(f"INSERT INTO raw.classifications {first}", params)
                _tick("insert")
                rejected = _rejected_lines(con)
                _drop_rejects(con)
                base = con.execute(f"SELECT min(rowid) FROM raw.classifications WHERE {this_ingest}",
                                   ids).fetchone()[0]
                if base is not None:
                    _set_source_lines(con, "raw.classifications", this_ingest, base, rejected, ids)
                _tick("lines")
                seen = con.execute(f"SELECT count(*) FROM raw.classifications WHERE {this_ingest}",
                                   ids).fetchone()[0] + len(rejected)
                # Placeholders (ids at or below the largest stored one) are duplicates when stored; quarantined
                # again with their earlier reason when quarantined before (export rows never change); and new
                # after all otherwise, parsed from a second scan filtered by id.
                con.execute(
                    """CREATE OR REPLACE TEMP TABLE _ww_unknown AS
                       SELECT k.classification_id AS cid, k.source_line AS line
                       FROM (SELECT classification_id, source_line FROM raw.classifications
                             WHERE ingest_id = $iid_cand) k
                       ANTI JOIN (SELECT classification_id FROM raw.classifications
                                  WHERE ingest_id <> $iid_cand AND classification_id IS NOT NULL) e
                       ON k.classification_id = e.classification_id""", {"iid_cand": ids["iid_cand"]})
                n_again = con.execute(
                    """INSERT INTO raw.quarantine
                       SELECT 'classifications', $source_file, u.line, u.cid::VARCHAR, q.reason, $iid, $now
                       FROM _ww_unknown u JOIN (
                           SELECT natural_key, arg_max(reason, quarantined_at) AS reason FROM raw.quarantine
                           WHERE table_name = 'classifications' AND natural_key IS NOT NULL GROUP BY 1) q
                       ON q.natural_key = u.cid::VARCHAR ORDER BY u.line""",
                    {"source_file": source_file, "iid": ingest_id, "now": now}).fetchone()[0]
                if n_again:
                    con.execute("""DELETE FROM _ww_unknown WHERE cid::VARCHAR IN (
                                       SELECT natural_key FROM raw.quarantine WHERE table_name = 'classifications')""")
                n_unknown = con.execute("SELECT count(*) FROM _ww_unknown").fetchone()[0]
                if n_unknown:
                    src = _csv_source(path, header, keep_rejects=False)
                    second = _classification_select(
                        header, f"{src} WHERE try_cast(nullif(trim(classification_id), '') AS BIGINT) IN "
                                f"(SELECT cid FROM _ww_unknown)",
                        live_sql="TRUE",
                        line_sql="(SELECT min(line) FROM _ww_unknown u WHERE u.cid = judged.cid)",
                        task=task, keep_metadata=keep_metadata)
                    con.execute(f"INSERT INTO raw.classifications {second}", params)
                con.execute("DROP TABLE IF EXISTS _ww_unknown")
                _tick("known ids")
                con.execute(
                    """INSERT INTO raw.quarantine
                       SELECT 'classifications', source_file, source_line, classification_id::VARCHAR,
                              metadata->>'quarantine_reason', $iid, $now
                       FROM raw.classifications WHERE ingest_id = $iid_bad ORDER BY source_line""",
                    {"iid": ingest_id, "iid_bad": ids["iid_bad"], "now": now})
                _insert_rejects(con, "classifications", source_file, ingest_id, rejected, now)
                _tick("quarantine")
                n_bad = con.execute("DELETE FROM raw.classifications WHERE ingest_id = $iid_bad",
                                    {"iid_bad": ids["iid_bad"]}).fetchone()[0]
                con.execute("DELETE FROM raw.classifications WHERE ingest_id = $iid_cand",
                            {"iid_cand": ids["iid_cand"]})
                _tick("delete placeholders")
                # The same classification twice in one file: keep its first line.
                n_twice = con.execute(
                    """DELETE FROM raw.classifications WHERE ingest_id = $iid AND rowid IN (
                           SELECT rowid FROM (
                               SELECT rowid, min(rowid) OVER (PARTITION BY classification_id) AS first_rowid
                               FROM raw.classifications WHERE ingest_id = $iid AND classification_id IN (
                                   SELECT classification_id FROM raw.classifications WHERE ingest_id = $iid
                                   GROUP BY 1 HAVING count(*) > 1))
                           WHERE rowid <> first_rowid)""", {"iid": ingest_id}).fetchone()[0]
                n_ok = con.execute("SELECT count(*) FROM raw.classifications WHERE ingest_id = $iid",
                                   {"iid": ingest_id}).fetchone()[0]
                _tick("twice")
                newest = con.execute("SELECT max(created_at) FROM raw.classifications").fetchone()[0]
                quarantined = n_bad + n_again + len(rejected)
                report = IngestReport(
                    table="classifications", source_file=source_file, rows_seen=seen, rows_new=n_ok,
                    rows_duplicate=seen - n_ok - quarantined, rows_quarantined=quarantined,
                    newest_created_at=newest, ingest_id=ingest_id, source_label=source_label,
                    seconds=(dt.datetime.now() - t0).total_seconds(),
                    quarantine_reasons=_quarantine_reasons(con, ingest_id))
                _log_ingest(con, report, started)
                _tick("log")
            _tick("commit")
        finally:
            _drop_rejects(con)
    return report


def _set_source_lines(con, table: str, where: str, base: int, rejected, params: dict) -> None:
    """Write ``source_line`` of the rows just appended (rowids base, base+1, ... in file order)."""
    index = f"(rowid - {int(base)})"
    expr = _line_sql(index, rejected)
    if expr is not None:
        con.execute(f"UPDATE {table} SET source_line = {expr} WHERE {where}", params)
        return
    # Many rejected lines: an ASOF join finds, for each kept record, how many rejected lines precede it.
    shifted = sorted(line - k for k, (line, _) in enumerate(rejected, start=1))
    con.execute("CREATE OR REPLACE TEMP TABLE _ww_shift (s BIGINT, k BIGINT)")
    con.executemany("INSERT INTO _ww_shift VALUES (?, ?)", [[s, k] for k, s in enumerate(shifted, start=1)])
    con.execute(
        f"""UPDATE {table} SET source_line = x.line FROM (
                SELECT r.rid, r.i + 2 + coalesce(m.k, 0) AS line
                FROM (SELECT rowid AS rid, rowid - {int(base)} AS i FROM {table} WHERE {where}) r
                ASOF LEFT JOIN (SELECT s, max(k) AS k FROM _ww_shift GROUP BY s) m ON r.i + 2 > m.s) x
            WHERE {table}.rowid = x.rid""", params)
    con.execute("DROP TABLE IF EXISTS _ww_shift")


# --------------------------------------------------------------------------------------------------------------
# the small tables: staged (the stage is at most a few hundred thousand rows)
# --------------------------------------------------------------------------------------------------------------

def _staged_ingest(con, *, table: str, kind: str, source_file: str, source_label: str | None, stage_sql: str,
                   columns: list[str], key: list[str], created_col: str | None, params: dict,
                   line_of: callable, rejected: list[tuple[int, str]]) -> IngestReport:
    """Insert the good, new rows of ``_ww_ingest_stage`` (columns + ``_reason`` + ``_nkey``) into ``raw.<table>``."""
    started = _now_utc()
    t0 = dt.datetime.now()
    ingest_id = _new_ingest_id()
    now = _now_utc()
    cols = ", ".join(columns)
    key_match = " AND ".join(f"t.{k} IS NOT DISTINCT FROM s.{k}" for k in key)
    with transaction(con):
        con.execute(f"CREATE OR REPLACE TEMP TABLE {_STAGE} AS {stage_sql}", params)
        if rejected is None:
            rejected = _rejected_lines(con)
        # rowids of a table made inside a transaction start at an arbitrary offset: count from the first one
        base = con.execute(f"SELECT coalesce(min(rowid), 0) FROM {_STAGE}").fetchone()[0]
        line = line_of(f"(rowid - {int(base)})", rejected)
        n_seen_kept, n_bad = con.execute(
            f"SELECT count(*), count(*) FILTER (_reason IS NOT NULL) FROM {_STAGE}").fetchone()
        # the same key twice in one file keeps its first line; the window that finds it is only paid for when
        # the file has such keys (an aggregate over the key says so for a fraction of the cost). No ORDER BY: each
        # row carries its source_line, and sorting 8M wide subject rows cost more than the rest of the insert.
        repeated = con.execute(
            f"""SELECT count(*) FROM (SELECT 1 FROM {_STAGE} WHERE _reason IS NULL
                                      GROUP BY {', '.join(key)} HAVING count(*) > 1)""").fetchone()[0]
        nth = (f"row_number() OVER (PARTITION BY {', '.join(key)} ORDER BY rowid)" if repeated else "1")
        n_new = con.execute(
            f"""INSERT INTO raw.{table} ({cols}, source_file, source_line, ingest_id, ingested_at)
                SELECT {cols}, $source_file, _line, $iid, $now FROM (
                    SELECT *, {line} AS _line, {nth} AS _nth FROM {_STAGE} WHERE _reason IS NULL) s
                WHERE _nth = 1 AND NOT EXISTS (SELECT 1 FROM raw.{table} t WHERE {key_match})""",
            {"source_file": source_file, "iid": ingest_id, "now": now}).fetchone()[0]
        con.execute(
            f"""INSERT INTO raw.quarantine
                SELECT $table, $source_file, {line}, _nkey, _reason, $iid, $now
                FROM {_STAGE} WHERE _reason IS NOT NULL ORDER BY rowid""",
            {"table": table, "source_file": source_file, "iid": ingest_id, "now": now})
        _insert_rejects(con, table, source_file, ingest_id, rejected, now)
        con.execute(f"DROP TABLE IF EXISTS {_STAGE}")
        newest = (con.execute(f"SELECT max({created_col}) FROM raw.{table}").fetchone()[0]
                  if created_col else None)
        report = IngestReport(
            table=table, source_file=source_file, rows_seen=n_seen_kept + len(rejected), rows_new=n_new,
            rows_duplicate=n_seen_kept - n_bad - n_new, rows_quarantined=n_bad + len(rejected),
            newest_created_at=newest, ingest_id=ingest_id, source_label=source_label,
            seconds=(dt.datetime.now() - t0).total_seconds(), quarantine_reasons=_quarantine_reasons(con, ingest_id))
        _log_ingest(con, report, started)
    return report


def _csv_line_of(index_sql: str, rejected) -> str:
    expr = _line_sql(index_sql, rejected)
    if expr is None:  # a small table with very many rejected lines: the plain count is still fine here
        shifted = sorted(line - k for k, (line, _) in enumerate(rejected, start=1))
        arr = "[" + ", ".join(str(s) for s in shifted) + "]::BIGINT[]"
        expr = f"({index_sql} + 2 + len(list_filter({arr}, lambda s: s < {index_sql} + 2)))"
    return expr


def _int_check(col_sql: str) -> str:
    """SQL: true when a VARCHAR column is empty or a plain integer."""
    return (f"(nullif(trim({col_sql}), '') IS NULL OR "
            f"try_cast(trim({col_sql}) AS BIGINT)::VARCHAR IS NOT DISTINCT FROM trim({col_sql}))")


def _int(col_sql: str) -> str:
    return f"try_cast(nullif(trim({col_sql}), '') AS BIGINT)"


_SUBJECT_META_KEYS = (formats.SUBJECT_OBJECT_ID_KEYS, formats.SUBJECT_RA_KEYS, formats.SUBJECT_DEC_KEYS,
                      formats.SUBJECT_IMAGE_KEYS)


def _subject_meta_sql(metadata_sql: str) -> tuple[str, list[str]]:
    """One JSON parse of a subject's metadata for all its identity keys: (SQL of the value list ``m``, and per
    key group the SQL of its first value present, over ``m``)."""
    paths, firsts = [], []
    for keys in _SUBJECT_META_KEYS:
        firsts.append("coalesce(" + ", ".join(f"m[{len(paths) + 1 + i}]" for i in range(len(keys))) + ")")
        paths += [_lit('$."' + k + '"') for k in keys]
    return f"try(json_extract_string({metadata_sql}, [{', '.join(paths)}]))", firsts


def ingest_subjects_csv(con, path, *, pseudonym_key: str | None = None,
                        source_label: str | None = None) -> IngestReport:
    """Append the new (subject, set, workflow) links of a subjects export to ``raw.subjects``.

    ``object_id``, ``ra``, ``dec`` and ``image_ref`` are read from the subject metadata (W&W writes the survey
    identity there, sometimes behind a '#' or '!' prefix that hides it from volunteers). Subjects carry no
    volunteer data, so ``pseudonym_key`` is accepted for a uniform signature and not used.
    """
    path = Path(path)
    header = _require_header(path, formats.SUBJECT_REQUIRED, "subjects")
    ensure_raw_schema(con)
    c = lambda name: _col(header, name)  # noqa: E731
    times = "[" + ", ".join(_lit(f) for f in formats.PANOPTES_TIME_FORMATS + formats.ISO_TIME_FORMATS) + "]"
    meta_values, (oid, ra, dec, img) = _subject_meta_sql(c('metadata'))
    stage = f"""
    SELECT
        {_int('subject_id')} AS subject_id, {_int('subject_set_id')} AS subject_set_id,
        {_int('workflow_id')} AS workflow_id, {_int('project_id')} AS project_id,
        {oid} AS object_id, try_cast({ra} AS DOUBLE) AS ra, try_cast({dec} AS DOUBLE) AS dec,
        coalesce({img}, locations->>'$."0"') AS image_ref,
        metadata, locations,
        {_int('classifications_count')} AS classifications_count,
        try_strptime(nullif(trim(retired_at), ''), {times}) AS retired_at,
        nullif(trim(retirement_reason), '') AS retirement_reason,
        try_strptime(nullif(trim(created_at), ''), {times}) AS created_at,
        try_strptime(nullif(trim(updated_at), ''), {times}) AS updated_at,
        CASE
            WHEN nullif(trim(subject_id_txt), '') IS NULL THEN 'subject_id is empty'
            WHEN NOT {_int_check('subject_id_txt')} THEN 'subject_id is not an integer'
            WHEN nullif(trim(subject_set_id), '') IS NULL THEN 'subject_set_id is empty'
            WHEN NOT {_int_check('subject_set_id')} THEN 'subject_set_id is not an integer'
            WHEN NOT {_int_check('workflow_id')} THEN 'workflow_id is not an integer'
            WHEN raw_metadata IS NOT NULL AND metadata IS NULL THEN 'metadata is not valid JSON'
            WHEN raw_locations IS NOT NULL AND locations IS NULL THEN 'locations is not valid JSON'
            WHEN nullif(trim(retired_at), '') IS NOT NULL AND try_strptime(trim(retired_at), {times}) IS NULL
                THEN 'retired_at is not a timestamp'
        END AS _reason,
        CASE WHEN {_int_check('subject_id_txt')} THEN {_int('subject_id_txt')}::VARCHAR END AS _nkey
    FROM (
        SELECT {c('subject_id')} AS subject_id, {c('subject_id')} AS subject_id_txt,
               {c('subject_set_id')} AS subject_set_id, {c('workflow_id')} AS workflow_id,
               {c('project_id')} AS project_id,
               -- try_cast gives NULL for text that is not JSON; the identity keys come from one more parse
               try_cast({c('metadata')} AS JSON) AS metadata, {c('metadata')} AS raw_metadata,
               {meta_values} AS m,
               try_cast({c('locations')} AS JSON) AS locations,
               {c('locations')} AS raw_locations,
               {c('classifications_count')} AS classifications_count, {c('retired_at')} AS retired_at,
               {c('retirement_reason')} AS retirement_reason, {c('created_at')} AS created_at,
               {c('updated_at')} AS updated_at
        FROM {_csv_source(path, header)})
    """
    columns = ["subject_id", "subject_set_id", "workflow_id", "project_id", "object_id", "ra", "dec", "image_ref",
               "metadata", "locations", "classifications_count", "retired_at", "retirement_reason", "created_at",
               "updated_at"]
    _drop_rejects(con)
    try:
        with insertion_order(con, keep=True):
            return _staged_ingest(
                con, table="subjects", kind="subjects", source_file=str(path), source_label=source_label,
                stage_sql=stage, columns=columns, key=["subject_id", "subject_set_id", "workflow_id"],
                created_col="created_at", params={}, line_of=_csv_line_of, rejected=None)
    finally:
        _drop_rejects(con)


def ingest_workflows_csv(con, path, *, pseudonym_key: str | None = None,
                         source_label: str | None = None) -> IngestReport:
    """Append the new workflow versions of a workflows export to ``raw.workflows``."""
    path = Path(path)
    header = _require_header(path, formats.WORKFLOW_REQUIRED, "workflows")
    ensure_raw_schema(con)
    c = lambda name: _col(header, name)  # noqa: E731

    def json_or_null(name: str) -> str:
        return f"CASE WHEN json_valid({c(name)}) THEN {c(name)}::JSON END"

    stage = f"""
    SELECT
        {_int(c('workflow_id'))} AS workflow_id,
        try_cast(nullif(trim({c('version')}), '') AS INTEGER) AS version,
        coalesce(try_cast(nullif(trim({c('minor_version')}), '') AS INTEGER), 0) AS minor_version,
        trim({c('version')}) || '.' || coalesce(nullif(trim({c('minor_version')}), ''), '0') AS workflow_version,
        {c('display_name')} AS display_name,
        try_cast({c('active')} AS BOOLEAN) AS active,
        {_int(c('classifications_count'))} AS classifications_count,
        try_cast({c('pairwise')} AS BOOLEAN) AS pairwise,
        try_cast({c('grouped')} AS BOOLEAN) AS grouped,
        try_cast({c('prioritized')} AS BOOLEAN) AS prioritized,
        {c('primary_language')} AS primary_language,
        {c('first_task')} AS first_task,
        {_int(c('tutorial_subject_id'))} AS tutorial_subject_id,
        {_int(c('retired_set_member_subjects_count'))} AS retired_set_member_subjects_count,
        {json_or_null('tasks')} AS tasks, {json_or_null('retirement')} AS retirement,
        {json_or_null('strings')} AS strings,
        CASE
            WHEN nullif(trim({c('workflow_id')}), '') IS NULL THEN 'workflow_id is empty'
            WHEN NOT {_int_check(c('workflow_id'))} THEN 'workflow_id is not an integer'
            WHEN NOT {_int_check(c('version'))} OR nullif(trim({c('version')}), '') IS NULL
                THEN 'version is not an integer'
            WHEN NOT {_int_check(c('minor_version'))} THEN 'minor_version is not an integer'
            WHEN {c('tasks')} IS NOT NULL AND NOT coalesce(json_valid({c('tasks')}), false)
                THEN 'tasks is not valid JSON'
        END AS _reason,
        CASE WHEN {_int_check(c('workflow_id'))} THEN {_int(c('workflow_id'))}::VARCHAR END AS _nkey
    FROM {_csv_source(path, header)}
    """
    columns = ["workflow_id", "version", "minor_version", "workflow_version", "display_name", "active",
               "classifications_count", "pairwise", "grouped", "prioritized", "primary_language", "first_task",
               "tutorial_subject_id", "retired_set_member_subjects_count", "tasks", "retirement", "strings"]
    _drop_rejects(con)
    try:
        with insertion_order(con, keep=True):
            return _staged_ingest(
                con, table="workflows", kind="workflows", source_file=str(path), source_label=source_label,
                stage_sql=stage, columns=columns, key=["workflow_id", "version", "minor_version"],
                created_col=None, params={}, line_of=_csv_line_of, rejected=None)
    finally:
        _drop_rejects(con)


# --------------------------------------------------------------------------------------------------------------
# Talk: a JSON array (or the .tar.gz Talk serves, holding one)
# --------------------------------------------------------------------------------------------------------------

def _json_array_source(path: Path) -> str:
    return f"read_json_objects({_lit(str(path))}, format = 'array', maximum_object_size = 268435456)"


def _stage_json(con, path: Path, stage_sql_of, kind: str, params: dict):
    try:
        con.execute(f"SELECT count(*) FROM {_json_array_source(path)}").fetchone()
    except Exception as exc:  # duckdb.Error subclasses; message names the problem
        raise ExportFileError(f"{path} is not a readable JSON array of Talk {kind}: {exc}") from exc
    return stage_sql_of(_json_array_source(path))


def _talk_times() -> str:
    return "[" + ", ".join(_lit(f) for f in formats.ISO_TIME_FORMATS + formats.PANOPTES_TIME_FORMATS) + "]"


def _j_int(field: str) -> str:
    return f"try_cast(nullif(trim(json->>{_lit('$.' + field)}), '') AS BIGINT)"


def _j_int_ok(field: str) -> str:
    v = f"nullif(trim(json->>{_lit('$.' + field)}), '')"
    return f"({v} IS NULL OR try_cast({v} AS BIGINT)::VARCHAR IS NOT DISTINCT FROM {v})"


def ingest_talk_comments(con, path, *, pseudonym_key: str, source_label: str | None = None) -> IngestReport:
    """Append the new comments of a Talk comments export (JSON array, or its tar.gz) to ``raw.talk_comments``.

    ``comment_user_id`` becomes ``commenter_id`` (the same pseudonym as in classifications),
    ``comment_user_login`` is dropped, and @mentions in the body and discussion title are masked.
    """
    if not pseudonym_key:
        raise ValueError("pseudonym_key is empty")
    ensure_raw_schema(con)
    times = _talk_times()

    def stage_of(src: str) -> str:
        uid = "nullif(trim(json->>'$.comment_user_id'), '')"
        return f"""
        SELECT
            {_j_int('comment_id')} AS comment_id,
            {_j_int('discussion_id')} AS discussion_id,
            {sql_mask_mentions("json->>'$.discussion_title'")} AS discussion_title,
            {_j_int('board_id')} AS board_id,
            json->>'$.board_title' AS board_title,
            json->>'$.board_description' AS board_description,
            json->>'$.comment_focus_type' AS focus_type,
            {_j_int('comment_focus_id')} AS focus_id,
            CASE WHEN json->>'$.comment_focus_type' = 'Subject' THEN {_j_int('comment_focus_id')} END
                AS focus_subject_id,
            CASE WHEN {_j_int_ok('comment_user_id')} AND {uid} IS NOT NULL
                 THEN {sql_volunteer_id('$key', sql_identity(uid))} END AS commenter_id,
            {sql_mask_mentions("json->>'$.comment_body'")} AS comment_body,
            try_strptime(json->>'$.comment_created_at', {times}) AS created_at,
            CASE
                WHEN json_type(json) <> 'OBJECT' THEN 'not a JSON object'
                WHEN nullif(trim(json->>'$.comment_id'), '') IS NULL THEN 'comment_id is missing'
                WHEN NOT {_j_int_ok('comment_id')} THEN 'comment_id is not an integer'
                WHEN {uid} IS NULL THEN 'comment_user_id is missing'
                WHEN NOT {_j_int_ok('comment_user_id')} THEN 'comment_user_id is not an integer'
                WHEN NOT {_j_int_ok('comment_focus_id')} THEN 'comment_focus_id is not an integer'
                WHEN NOT {_j_int_ok('discussion_id')} THEN 'discussion_id is not an integer'
                WHEN try_strptime(json->>'$.comment_created_at', {times}) IS NULL
                    THEN 'comment_created_at is missing or not a timestamp'
            END AS _reason,
            CASE WHEN json_type(json) = 'OBJECT' AND {_j_int_ok('comment_id')} THEN {_j_int('comment_id')}::VARCHAR
            END AS _nkey
        FROM {src}
        """

    columns = ["comment_id", "discussion_id", "discussion_title", "board_id", "board_title", "board_description",
               "focus_type", "focus_id", "focus_subject_id", "commenter_id", "comment_body", "created_at"]
    with talk_json_file(path) as json_path, insertion_order(con, keep=True):
        stage = _stage_json(con, json_path, stage_of, "comments", {})
        return _staged_ingest(
            con, table="talk_comments", kind="talk comments", source_file=str(path), source_label=source_label,
            stage_sql=stage, columns=columns, key=["comment_id"], created_col="created_at",
            params={"key": pseudonym_key}, line_of=lambda idx, _rej: f"({idx} + 1)", rejected=[])


def ingest_talk_tags(con, path, *, pseudonym_key: str, source_label: str | None = None) -> IngestReport:
    """Append the new tags of a Talk tags export (JSON array, or its tar.gz) to ``raw.talk_tags``."""
    if not pseudonym_key:
        raise ValueError("pseudonym_key is empty")
    ensure_raw_schema(con)
    times = _talk_times()

    def stage_of(src: str) -> str:
        uid = "nullif(trim(json->>'$.user_id'), '')"
        return f"""
        SELECT
            {_j_int('id')} AS tag_id,
            json->>'$.name' AS name,
            json->>'$.section' AS section,
            CASE WHEN {_j_int_ok('user_id')} AND {uid} IS NOT NULL
                 THEN {sql_volunteer_id('$key', sql_identity(uid))} END AS tagger_id,
            {_j_int('comment_id')} AS comment_id,
            {_j_int('taggable_id')} AS taggable_id,
            json->>'$.taggable_type' AS taggable_type,
            {_j_int('project_id')} AS project_id,
            try_strptime(json->>'$.created_at', {times}) AS created_at,
            CASE
                WHEN json_type(json) <> 'OBJECT' THEN 'not a JSON object'
                WHEN nullif(trim(json->>'$.id'), '') IS NULL THEN 'id is missing'
                WHEN NOT {_j_int_ok('id')} THEN 'id is not an integer'
                WHEN nullif(trim(json->>'$.name'), '') IS NULL THEN 'name is missing'
                WHEN NOT {_j_int_ok('user_id')} THEN 'user_id is not an integer'
                WHEN NOT {_j_int_ok('taggable_id')} THEN 'taggable_id is not an integer'
                WHEN NOT {_j_int_ok('comment_id')} THEN 'comment_id is not an integer'
                WHEN json->>'$.created_at' IS NOT NULL AND try_strptime(json->>'$.created_at', {times}) IS NULL
                    THEN 'created_at is not a timestamp'
            END AS _reason,
            CASE WHEN json_type(json) = 'OBJECT' AND {_j_int_ok('id')} THEN {_j_int('id')}::VARCHAR END AS _nkey
        FROM {src}
        """

    columns = ["tag_id", "name", "section", "tagger_id", "comment_id", "taggable_id", "taggable_type",
               "project_id", "created_at"]
    with talk_json_file(path) as json_path, insertion_order(con, keep=True):
        stage = _stage_json(con, json_path, stage_of, "tags", {})
        return _staged_ingest(
            con, table="talk_tags", kind="talk tags", source_file=str(path), source_label=source_label,
            stage_sql=stage, columns=columns, key=["tag_id"], created_col="created_at",
            params={"key": pseudonym_key}, line_of=lambda idx, _rej: f"({idx} + 1)", rejected=[])


#: The ingest function of each export kind (all share the signature (con, path, *, pseudonym_key, source_label)).
INGESTERS = {
    "classifications": ingest_classifications_csv,
    "subjects": ingest_subjects_csv,
    "workflows": ingest_workflows_csv,
    "talk_comments": ingest_talk_comments,
    "talk_tags": ingest_talk_tags,
}


def table_counts(con) -> dict[str, int]:
    """Rows per raw table (for metadata and checks)."""
    ensure_raw_schema(con)
    return {name: int(con.execute(f"SELECT count(*) FROM raw.{name}").fetchone()[0]) for name in RAW_DDL}
