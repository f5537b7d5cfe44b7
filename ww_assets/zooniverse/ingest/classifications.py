"""Ingest of the classifications export (CSV, or gzip CSV) into ``raw.classifications``.

The classifications export is the big one (~10 million 16-image pages for a project of W&W's size), so it is read
in one parallel DuckDB pass with no per-row Python: JSON is parsed with DuckDB's JSON functions, the pseudonym is
``sha256`` in SQL, and rows already stored are recognised by their id before any other column is parsed. Rows are
appended in file order inside one transaction; bad rows and already-stored ones are appended as bare placeholders
and moved to ``raw.quarantine`` / dropped before the commit, which is how every row gets its source line without a
second pass or a staging copy. A reader never sees a placeholder; a failed ingest rolls back whole.

Export pitfalls handled here (shared ZOONIVERSE.md): the page a volunteer saw is ``subject_data``'s
``#group_subject_ids`` (``subject_ids`` for a workflow without subject groups); ``workflow_version`` stays text;
anonymous volunteers have an empty ``user_id`` and a ``not-logged-in-<hash>`` name; ``user_ip`` is only looked at
for a line break (broken quoting) and ``user_name`` only feeds the pseudonym and the quarantine's keyed record hash; the same classification twice in one file counts once.

``WW_INGEST_PROFILE=1`` prints the wall and CPU seconds of each step (a benchmarking aid, read per ingest).
"""

from __future__ import annotations

import dataclasses
import time
from functools import partial
from pathlib import Path

import duckdb

from ww_assets import settings
from ww_assets.duckdb_sql import insertion_order, transaction
from ww_assets.zooniverse import formats
from ww_assets.zooniverse.errors import ExportFileError
from ww_assets.zooniverse.ingest import csv_reader
from ww_assets.zooniverse.ingest.bookkeeping import IngestReport, IngestRun, QuarantineBatch
from ww_assets.zooniverse.ingest.csv_reader import (
    ReadableCopyNeeded,
    RejectedLine,
    csv_source,
    drop_rejects,
    is_reader_state_error,
    n_rejected_records,
    needs_readable_copy,
    readable_copy,
    rejected_lines,
    require_header,
    set_source_lines,
)
from ww_assets.zooniverse.ingest.schema import ensure_raw_schema
from ww_assets.zooniverse.ingest.sql import PANOPTES_FIRST_TIMES, column, lit
from ww_assets.zooniverse.pseudonym import sql_identity, sql_volunteer_id

__all__ = ["ingest_classifications_csv"]


class _StepTimer:
    """Prints the wall and CPU seconds since the previous step when ``WW_INGEST_PROFILE`` is on."""

    def __init__(self) -> None:
        self.enabled = bool(settings.get("WW_INGEST_PROFILE"))
        self.last = (time.perf_counter(), time.process_time())

    def __call__(self, label: str) -> None:
        if not self.enabled:
            return
        now = (time.perf_counter(), time.process_time())
        print(f"  ingest step {label}: {now[0] - self.last[0]:.2f} s wall, {now[1] - self.last[1]:.2f} s CPU",
              flush=True)
        self.last = now


#: The columns of a row that make its identity in the quarantine (every column the ingest reads but metadata,
#: which is read only on request).
_HASHED = ("cid_txt", "user_id", "user_name", "workflow_id", "workflow_name", "workflow_version", "created_at",
           "annotations", "subject_data", "subject_ids")

#: Why a row holding a line break is set aside; it sends the file to ``csv_reader.readable_copy`` (in the copy no
#: field can hold one).
LINE_BREAK_REASON = "a quoted field holds a line break (unbalanced quotes?)"


def _flag_sql(header: list[str], name: str) -> str:
    """SQL: the export's yes/no column ``name`` (Panoptes writes 'true' or leaves it empty) as a BOOLEAN; NULL when
    the export has no such column, so "not flagged" and "not known" stay apart."""
    if name not in header:
        return "NULL::BOOLEAN"
    return f"coalesce(lower(trim({column(header, name)})) IN ('true', 't', '1', 'yes'), false)"


def _line_break_sql(header: list[str], keep_metadata: bool) -> tuple[str, str]:
    """(the extra ``src0`` columns, SQL over ``src0``: does any column of the row hold a line break). Every column
    is checked, those the ingest does not read too: a record over several lines means broken quoting."""
    read = {"classification_id", "user_id", "user_name", "workflow_id", "workflow_name", "workflow_version",
            "created_at", "annotations", "subject_data", "subject_ids"} | ({"metadata"} if keep_metadata else set())
    extra = [name for name in header if name not in read]
    columns = ", ".join(f"{column(header, name)} AS _nl_{i}" for i, name in enumerate(extra))
    checked = [h for h in _HASHED] + (["metadata"] if keep_metadata else []) + [f"_nl_{i}" for i in range(len(extra))]
    return (", " + columns if columns else ""), "coalesce(" + " OR ".join(f"contains({c}, chr(10))" for c in checked) \
        + ", false)"


def _classification_select(header: list[str], src_sql: str, *, live_sql: str, line_sql: str, task: str,
                           keep_metadata: bool = True, where_sql: str = "TRUE", check_breaks: bool = True) -> str:
    """The SELECT that turns CSV rows into ``raw.classifications`` rows (placeholders for non-live/bad rows).

    ``live_sql`` (over ``cid``) says which rows to parse; the others become bare ``(classification_id)``
    placeholders tagged ``$iid_cand``. Bad rows become placeholders tagged ``$iid_bad`` carrying their reason, record
    hash in ``metadata``; ``where_sql`` filters the rows. ``check_breaks`` checks every column for a line break
    (reading the unread ones too: ~20% more CPU, so only where the file's lines cannot be counted, a gzip export).
    One statement on purpose (longer than a function should be): split, DuckDB would lose the file order that
    gives each row its line, or parse the JSON columns twice.
    """
    c = lambda name: column(header, name if (keep_metadata or name != "metadata") else "")  # noqa: E731
    keep = formats.CLASSIFICATION_METADATA_KEEP
    meta_paths = "[" + ", ".join(lit('$."' + k + '"') for k in keep) + "]"
    meta_object = "json_object(" + ", ".join(f"{lit(k)}, m[{i + 1}]" for i, k in enumerate(keep)) + ")"
    identity = sql_identity("user_id", "user_name")
    ok = "live AND reason IS NULL"
    unread_columns, line_break = _line_break_sql(header, keep_metadata) if check_breaks else ("", "false")
    return f"""
    WITH src0 AS (
        SELECT
            nullif(trim({c('classification_id')}), '') AS cid_txt,
            {c('user_id')} AS user_id, {c('user_name')} AS user_name,
            {c('workflow_id')} AS workflow_id, {c('workflow_name')} AS workflow_name,
            {c('workflow_version')} AS workflow_version, {c('created_at')} AS created_at,
            {c('metadata')} AS metadata, {c('annotations')} AS annotations,
            {c('subject_data')} AS subject_data, {c('subject_ids')} AS subject_ids,
            {_flag_sql(header, 'gold_standard')} AS gold_standard_flag, {_flag_sql(header, 'expert')} AS expert_flag
            {unread_columns}
        FROM {src_sql}
    ), src AS (
        -- the id only when it is written as a plain integer ('0012' and '12.0' are not the id 12)
        SELECT *, CASE WHEN try_cast(cid_txt AS BIGINT)::VARCHAR = cid_txt THEN try_cast(cid_txt AS BIGINT) END AS cid
        FROM src0
    ), marked AS (
        -- a field holding a line break means broken quoting swallowed the lines after it: checked on every row
        SELECT *, coalesce({live_sql}, true) AS live, {line_break} AS line_break
        FROM src
    ), parsed AS (
        -- every parse sits under CASE WHEN live: rows already stored cost a comparison and nothing more
        SELECT *,
            CASE WHEN live THEN nullif(trim(user_id), '') END AS uid_txt,
            CASE WHEN live THEN nullif(trim(workflow_id), '') END AS wid_txt,
            CASE WHEN live THEN try_cast(nullif(trim(workflow_id), '') AS BIGINT) END AS wid,
            CASE WHEN live THEN try_strptime(trim(created_at), {PANOPTES_FIRST_TIMES}) END AS created,
            CASE WHEN live THEN try(json_extract_string(subject_data, '$.*."#group_subject_ids"')) END AS grp,
            -- one typed parse of the annotations; the clicks are the subjects in the value of the chosen task
            CASE WHEN live THEN
                try(flatten(list_transform(
                    list_filter(json_transform(annotations, '[{{"task": "VARCHAR", "value": [{{"subject": "BIGINT"}}]}}]'),
                                lambda a: a.task = {lit(task)}),
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
            CASE WHEN line_break THEN {lit(LINE_BREAK_REASON)} WHEN live THEN CASE
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
             WHEN reason IS NOT NULL THEN json_object(
                 'quarantine_reason', reason,
                 -- the quarantine identity: keyed hash of the fields read (never stored as text)
                 'record_hash', sha256($key || chr(31) || to_json(list_value({', '.join(_HASHED)})))) END,
        $source_file,
        {line_sql},
        CASE WHEN reason IS NOT NULL THEN $iid_bad WHEN NOT live THEN $iid_cand ELSE $iid END,
        $now,
        CASE WHEN {ok} THEN gold_standard_flag END,
        CASE WHEN {ok} THEN expert_flag END
    FROM judged
    WHERE {where_sql}
    """


@dataclasses.dataclass(frozen=True)
class _Pass:
    """What every step of one ingest needs: the file, how to SELECT from it, and the ingest's row tags."""

    run: IngestRun
    path: Path            # the file read: the export, or its readable copy (csv_reader.readable_copy)
    header: list[str]
    select: partial       # _classification_select with header, task and keep_metadata bound
    ids: dict             # the ingest_id tags of new rows, of placeholders of known ids, of bad rows' placeholders
    params: dict          # every parameter of the SELECT
    replaced: dict        # line -> (original text, reason) of the lines the readable copy replaced
    lines: int | None     # lines after the header (csv_reader.count_data_lines), None for gzip


_THIS_INGEST = "ingest_id IN ($iid, $iid_cand, $iid_bad)"


def _append_file(con, p: _Pass) -> tuple[int, list[RejectedLine]]:
    """Append every record of the file in file order (rows above the largest stored id parsed, the rest as
    placeholders) and give each its line. Returns (records seen, lines that gave no row)."""
    hi = con.execute("SELECT max(classification_id) FROM raw.classifications").fetchone()[0]
    live = "TRUE" if hi is None else f"(cid IS NULL OR cid > {int(hi)})"
    first = p.select(csv_source(p.path, p.header), live_sql=live, line_sql="NULL::BIGINT")
    con.execute(f"INSERT INTO raw.classifications {first}", p.params)
    base = con.execute(f"SELECT min(rowid) FROM raw.classifications WHERE {_THIS_INGEST}", p.ids).fetchone()[0]
    # a record over several lines (broken quoting) or a blank line: DuckDB numbers records then, not lines, and
    # may lose some; told by the rejects, by the count of lines (plain files), by the line-break check (gzip)
    if not p.replaced and (needs_readable_copy(con) or _records_off_lines(con, p)):
        raise ReadableCopyNeeded(str(p.path))
    rejected = rejected_lines(con, hash_key=p.params["key"], key_index=p.header.index("classification_id"),
                              replaced=p.replaced)
    drop_rejects(con)
    if base is not None:
        set_source_lines(con, "raw.classifications", _THIS_INGEST, base, rejected, p.ids)
    seen = con.execute(f"SELECT count(*) FROM raw.classifications WHERE {_THIS_INGEST}", p.ids).fetchone()[0]
    return seen + sum(1 for r in rejected if r.reason), rejected


def _records_off_lines(con, p: _Pass) -> bool:
    """True when the records DuckDB saw are not the file's lines (see :func:`_append_file`)."""
    if p.lines is None:                      # gzip: the rows themselves were checked for line breaks
        return bool(con.execute(
            "SELECT count(*) FROM raw.classifications WHERE ingest_id = $iid_bad AND metadata->>'quarantine_reason' "
            "= $why", {"iid_bad": p.ids["iid_bad"], "why": LINE_BREAK_REASON}).fetchone()[0])
    kept = con.execute(f"SELECT count(*) FROM raw.classifications WHERE {_THIS_INGEST}", p.ids).fetchone()[0]
    return kept + n_rejected_records(con) != p.lines


#: The earlier quarantine reasons that say a row itself is bad (export rows never change). Not the lines the reader
#: could not split: a later export may hold the whole row where an earlier one held a line cut short.
_TRUSTED_EARLIER = f"""
    SELECT natural_key, arg_max(reason, quarantined_at) AS reason FROM raw.quarantine
    WHERE table_name = 'classifications' AND natural_key IS NOT NULL
      AND reason NOT LIKE 'unreadable CSV line%' AND reason <> {lit(LINE_BREAK_REASON)}
    GROUP BY 1"""


def _resolve_placeholders(con, p: _Pass, quarantine: QuarantineBatch) -> int:
    """Sort the placeholders out. Stored ids are duplicates (dropped later); ids quarantined before are counted
    as quarantined again with their earlier reason (and not written twice); any other is new after all (a project
    export read after a workflow export) and parsed from a second scan filtered by id. Returns the number counted
    as quarantined again."""
    con.execute(
        """CREATE OR REPLACE TEMP TABLE _ww_unknown AS
           SELECT k.classification_id AS cid, k.source_line AS line
           FROM (SELECT classification_id, source_line FROM raw.classifications WHERE ingest_id = $iid_cand) k
           ANTI JOIN (SELECT classification_id FROM raw.classifications
                      WHERE ingest_id <> $iid_cand AND classification_id IS NOT NULL) e
           ON k.classification_id = e.classification_id""", {"iid_cand": p.ids["iid_cand"]})
    n_before = con.execute("SELECT count(*) FROM _ww_unknown").fetchone()[0]
    if n_before:
        quarantine.add_sql(f"""SELECT u.line, u.cid::VARCHAR, q.reason, NULL
                               FROM _ww_unknown u JOIN ({_TRUSTED_EARLIER}) q ON q.natural_key = u.cid::VARCHAR""")
        con.execute(f"""DELETE FROM _ww_unknown WHERE cid::VARCHAR IN (SELECT natural_key FROM ({_TRUSTED_EARLIER}))""")
    n_left = con.execute("SELECT count(*) FROM _ww_unknown").fetchone()[0]
    if n_left:
        src = csv_source(p.path, p.header, keep_rejects=False)
        strict_id = "try_cast(nullif(trim(classification_id), '') AS BIGINT)"
        second = p.select(
            f"{src} WHERE {strict_id} IN (SELECT cid FROM _ww_unknown) "
            f"AND {strict_id}::VARCHAR = trim(classification_id)",
            live_sql="TRUE", line_sql="(SELECT min(line) FROM _ww_unknown u WHERE u.cid = judged.cid)",
            where_sql="NOT line_break")     # (none here: the first scan sent such a file to the readable copy)
        con.execute(f"INSERT INTO raw.classifications {second}", p.params)
    con.execute("DROP TABLE IF EXISTS _ww_unknown")
    return n_before - n_left


def _quarantine_bad_rows(con, p: _Pass, rejected: list[RejectedLine], quarantine: QuarantineBatch) -> int:
    """Move the bad rows' placeholders (and the rejected lines) to the quarantine. Returns the bad rows."""
    quarantine.add_sql(
        """SELECT source_line, classification_id::VARCHAR, metadata->>'quarantine_reason', metadata->>'record_hash'
           FROM raw.classifications WHERE ingest_id = $iid_bad""", {"iid_bad": p.ids["iid_bad"]})
    quarantine.add_rejected(rejected)
    return con.execute("DELETE FROM raw.classifications WHERE ingest_id = $iid_bad",
                       {"iid_bad": p.ids["iid_bad"]}).fetchone()[0]


def _drop_repeats(con, p: _Pass) -> int:
    """Drop the known ids' placeholders and the later lines of a classification twice in the file. Returns the
    rows this ingest adds."""
    con.execute("DELETE FROM raw.classifications WHERE ingest_id = $iid_cand", {"iid_cand": p.ids["iid_cand"]})
    con.execute(
        """DELETE FROM raw.classifications WHERE ingest_id = $iid AND rowid IN (
               SELECT rowid FROM (
                   SELECT rowid, min(rowid) OVER (PARTITION BY classification_id) AS first_rowid
                   FROM raw.classifications WHERE ingest_id = $iid AND classification_id IN (
                       SELECT classification_id FROM raw.classifications WHERE ingest_id = $iid
                       GROUP BY 1 HAVING count(*) > 1))
               WHERE rowid <> first_rowid)""", {"iid": p.run.ingest_id})
    return con.execute("SELECT count(*) FROM raw.classifications WHERE ingest_id = $iid",
                       {"iid": p.run.ingest_id}).fetchone()[0]


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
    above the largest stored id is new and is parsed; a row at or below it is appended as a bare placeholder and
    sorted out afterwards (:func:`_resolve_placeholders`). A join in the first pass would cost DuckDB its file
    order, which is what gives each row its line.
    """
    if not pseudonym_key:
        raise ValueError("pseudonym_key is empty")
    path = Path(path)
    header = require_header(path, formats.CLASSIFICATION_REQUIRED, "classifications")
    run = IngestRun(table="classifications", source_file=str(path), source_label=source_label)
    ensure_raw_schema(con)
    ids = {"iid": run.ingest_id, "iid_cand": run.ingest_id + "#known", "iid_bad": run.ingest_id + "#bad"}
    select = partial(_classification_select, header, task=task, keep_metadata=keep_metadata)
    params = {"key": pseudonym_key, "source_file": run.source_file, "now": run.started, **ids}
    lines = csv_reader.count_data_lines(path)
    # a gzip export cannot be counted cheaply: its rows are checked for line breaks instead (every column is read)
    select = partial(select, check_breaks=lines is None)
    try:
        return _ingest(con, _Pass(run=run, path=path, header=header, select=select, ids=ids, params=params,
                                  replaced={}, lines=lines))
    except (duckdb.Error, ReadableCopyNeeded) as exc:
        if not is_reader_state_error(exc):
            raise
    # broken quoting or a stray carriage return: read a copy where each such line is one rejected line
    with readable_copy(path) as (copy, replaced):
        try:
            return _ingest(con, _Pass(run=run, path=copy, header=header, select=select, ids=ids, params=params,
                                      replaced=replaced, lines=None))
        except ReadableCopyNeeded as exc:
            raise ExportFileError(f"{path}: a record still runs over several lines after setting aside the "
                                  f"{len(replaced)} lines with broken quoting; the file cannot be read") from exc


def _ingest(con, p: _Pass) -> IngestReport:
    """One ingest of ``p.path`` in one transaction (the steps of :func:`ingest_classifications_csv`)."""
    step = _StepTimer()
    with insertion_order(con, keep=True):
        drop_rejects(con)
        try:
            with transaction(con):
                quarantine = QuarantineBatch(con, p.run)
                seen, rejected = _append_file(con, p)
                step("insert and lines")
                _resolve_placeholders(con, p, quarantine)
                step("known ids")
                _quarantine_bad_rows(con, p, rejected, quarantine)
                step("quarantine")
                n_new = _drop_repeats(con, p)
                step("placeholders and repeats")
                newest = con.execute("SELECT max(created_at) FROM raw.classifications").fetchone()[0]
                report = p.run.finish(con, rows_seen=seen, rows_new=n_new, quarantine=quarantine,
                                      newest_created_at=newest)
            step("log and commit")
        finally:
            drop_rejects(con)
    return report
