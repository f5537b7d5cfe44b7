"""The staged ingest of the small tables (subjects, workflows, Talk comments and tags).

A stage query turns the file into rows of the raw table plus ``_reason`` (why a row cannot be stored, NULL when it
can) and ``_nkey`` (its natural key as text, for the quarantine). The stage is materialised as a temporary table
(at most a few hundred thousand rows) and, in one transaction, its good rows that are not stored yet are appended
and its bad rows quarantined. The big classifications export takes another path (``classifications``) that
never copies the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import duckdb

from ww_assets.duckdb_sql import insertion_order, transaction
from ww_assets.zooniverse.errors import ExportFileError
from ww_assets.zooniverse.ingest.bookkeeping import IngestReport, IngestRun, QuarantineBatch
from ww_assets.zooniverse.ingest.csv_reader import (
    ReadableCopyNeeded,
    RejectedLine,
    drop_rejects,
    count_data_lines,
    is_reader_state_error,
    line_sql,
    n_rejected_records,
    needs_readable_copy,
    readable_copy,
    rejected_lines,
    require_header,
)
from ww_assets.zooniverse.ingest.schema import ensure_raw_schema

__all__ = ["ingest_staged", "ingest_staged_csv"]

_STAGE = "_ww_ingest_stage"

#: ``line_of(index_sql, rejected) -> SQL``: the source line of the staged row with 0-based index ``index_sql``.
LineOf = Callable[[str, list], str]


def _stage_columns(con) -> set[str]:
    return {d[0] for d in con.execute(f"SELECT * FROM {_STAGE} LIMIT 0").description}


def ingest_staged(con, run: IngestRun, *, stage_sql: str, columns: list[str], key: list[str],
                  created_col: str | None, params: dict, line_of: LineOf,
                  rejected: Callable[[], list[RejectedLine]] | list[RejectedLine]) -> IngestReport:
    """Append the good, new rows of ``stage_sql`` (``columns`` + ``_reason`` + ``_nkey``, optionally
    ``_record_hash``) to ``raw.<run.table>``.

    ``rejected`` lists the lines the reader dropped, or is called once the stage is built to read them from the
    CSV rejects table. Rows whose ``key`` is stored already are duplicates; a key twice in the file keeps its first
    line. A bad row's quarantine identity is ``_record_hash`` when the stage has it (a keyed hash of the record's
    text), else a hash of the staged row.
    """
    table = run.table
    key_match = " AND ".join(f"t.{k} IS NOT DISTINCT FROM s.{k}" for k in key)
    row_params = {"source_file": run.source_file, "iid": run.ingest_id, "now": run.started}
    with transaction(con):
        con.execute(f"CREATE OR REPLACE TEMP TABLE {_STAGE} AS {stage_sql}", params)
        if callable(rejected):
            rejected = rejected()
        # rowids of a table made inside a transaction start at an arbitrary offset: count from the first one
        base = con.execute(f"SELECT coalesce(min(rowid), 0) FROM {_STAGE}").fetchone()[0]
        line = line_of(f"(rowid - {int(base)})", rejected)
        n_kept = con.execute(f"SELECT count(*) FROM {_STAGE}").fetchone()[0]
        # the same key twice in one file keeps its first line; the window that finds it is only paid for when
        # the file has such keys (an aggregate over the key says so for a fraction of the cost). No ORDER BY: each
        # row carries its source_line, and sorting 8M wide subject rows cost more than the rest of the insert.
        repeated = con.execute(
            f"""SELECT count(*) FROM (SELECT 1 FROM {_STAGE} WHERE _reason IS NULL
                                      GROUP BY {', '.join(key)} HAVING count(*) > 1)""").fetchone()[0]
        nth = f"row_number() OVER (PARTITION BY {', '.join(key)} ORDER BY rowid)" if repeated else "1"
        cols = ", ".join(columns)
        n_new = con.execute(
            f"""INSERT INTO raw.{table} ({cols}, source_file, source_line, ingest_id, ingested_at)
                SELECT {cols}, $source_file, _line, $iid, $now FROM (
                    SELECT *, {line} AS _line, {nth} AS _nth FROM {_STAGE} WHERE _reason IS NULL) s
                WHERE _nth = 1 AND NOT EXISTS (SELECT 1 FROM raw.{table} t WHERE {key_match})""",
            row_params).fetchone()[0]
        quarantine = QuarantineBatch(con, run)
        stage_hash = ("_record_hash" if "_record_hash" in _stage_columns(con)
                      else f"sha256({_STAGE}::VARCHAR)")
        quarantine.add_sql(f"SELECT {line}, _nkey, _reason, {stage_hash} FROM {_STAGE} WHERE _reason IS NOT NULL")
        quarantine.add_rejected(rejected)
        con.execute(f"DROP TABLE IF EXISTS {_STAGE}")
        newest = (con.execute(f"SELECT max({created_col}) FROM raw.{table}").fetchone()[0]
                  if created_col else None)
        return run.finish(con, rows_seen=n_kept + sum(1 for r in rejected if r.reason), rows_new=n_new,
                          quarantine=quarantine,
                          newest_created_at=newest)


def ingest_staged_csv(con, path, *, table: str, required: tuple[str, ...],
                      stage_of: Callable[[Path, list[str]], str], columns: list[str], key: list[str],
                      created_col: str | None, source_label: str | None) -> IngestReport:
    """:func:`ingest_staged` of a CSV export: its header checked against ``required``, the stage
    ``stage_of(path, header)`` read through ``csv_reader.csv_source``, rejected lines quarantined (with the
    natural key read from their ``key[0]`` column when it can be). A file with broken quoting, a stray carriage
    return, a record over several lines or a blank line (the last two found by counting the file's lines; not in a
    gzip export) is read again from ``csv_reader.readable_copy``."""
    path = Path(path)
    header = require_header(path, required, table)
    ensure_raw_schema(con)
    run = IngestRun(table=table, source_file=str(path), source_label=source_label)
    key_index = header.index(key[0]) if key[0] in header else None

    lines = count_data_lines(path)

    def rejected(replaced: dict | None) -> list[RejectedLine]:
        # records over several lines, or a blank line: the reader's records are not the lines (csv_reader)
        if replaced is None and (needs_readable_copy(con) or (lines is not None and lines != n_rejected_records(
                con) + con.execute(f"SELECT count(*) FROM {_STAGE}").fetchone()[0])):
            raise ReadableCopyNeeded(str(path))
        return rejected_lines(con, hash_key="", key_index=key_index, replaced=replaced)

    def once(read_path: Path, replaced: dict | None) -> IngestReport:
        drop_rejects(con)
        try:
            with insertion_order(con, keep=True):
                return ingest_staged(con, run, stage_sql=stage_of(read_path, header), columns=columns, key=key,
                                     created_col=created_col, params={}, line_of=line_sql,
                                     rejected=lambda: rejected(replaced))
        finally:
            drop_rejects(con)

    try:
        return once(path, None)
    except (duckdb.Error, ReadableCopyNeeded) as exc:
        if not is_reader_state_error(exc):
            raise
    with readable_copy(path) as (copy, replaced):
        try:
            return once(copy, replaced)
        except ReadableCopyNeeded as exc:
            raise ExportFileError(f"{path}: a record still runs over several lines after setting aside the "
                                  f"{len(replaced)} lines with broken quoting; the file cannot be read") from exc
