"""Reading an export CSV in DuckDB: every column as text, unreadable lines to a rejects table, and each kept
record's line in the file.

DuckDB's CSV reader drops the lines it cannot split into the header's columns and records them in a rejects
table; it keeps the rest in file order. From the rejected line numbers alone the line of every kept record follows
(:func:`line_sql`), so lines come without a second pass over the file. The rejects tables hold offending lines
verbatim (names, IPs): they live only in memory, only for the length of one ingest (:func:`drop_rejects`).

``source_line`` counts the header as line 1 (the physical line unless a quoted field holds a newline, which
Zooniverse exports do not do).
"""

from __future__ import annotations

from pathlib import Path

from ww_assets.zooniverse import formats
from ww_assets.zooniverse.errors import ExportFileError
from ww_assets.zooniverse.ingest.sql import lit

__all__ = ["CSV_MAX_LINE_BYTES", "LISTED_REJECTS_MAX", "csv_source", "rejected_lines", "drop_rejects",
           "line_sql", "set_source_lines", "require_header"]

#: Longest CSV record read (bytes). A W&W classification row is about a kilobyte; 4 MB leaves room for any real row,
#: and a longer one is quarantined as an unreadable line. Not larger: DuckDB sizes its read buffers from this, and
#: at 64 MB the parallel CSV scan of a multi-GB export ran 3.6x slower on one thread (benchmarks/consensus_scale.py).
CSV_MAX_LINE_BYTES = 4 * 1024 * 1024

#: Up to this many rejected lines a record's line is a count over a literal list in SQL; :func:`set_source_lines`
#: takes an ASOF join past it (the rare file with very many rejects).
LISTED_REJECTS_MAX = 64

_REJECTS = "_ww_csv_rejects"
_REJECTS_SCAN = "_ww_csv_rejects_scan"


def csv_source(path: Path, header: list[str], keep_rejects: bool = True) -> str:
    """``read_csv`` of an export with every column VARCHAR, parsing left to SQL, bad lines to a rejects table."""
    columns = "{" + ", ".join(f"{lit(c)}: 'VARCHAR'" for c in header) + "}"
    compression = "gzip" if formats.is_gzip(path) else "none"
    rejects = (f"store_rejects = true, rejects_table = '{_REJECTS}', rejects_scan = '{_REJECTS_SCAN}', "
               f"rejects_limit = 0" if keep_rejects else "ignore_errors = true")
    return (
        f"read_csv({lit(str(path))}, header = true, columns = {columns}, auto_detect = false, delim = ',', "
        f"quote = '\"', escape = '\"', strict_mode = true, null_padding = false, compression = '{compression}', "
        f"max_line_size = {CSV_MAX_LINE_BYTES}, {rejects})"
    )


def drop_rejects(con) -> None:
    con.execute(f"DROP TABLE IF EXISTS temp.{_REJECTS}")
    con.execute(f"DROP TABLE IF EXISTS temp.{_REJECTS_SCAN}")


def rejected_lines(con) -> list[tuple[int, str]]:
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


def _shifted(rejected: list[tuple[int, str]]) -> list[int]:
    return sorted(line - k for k, (line, _) in enumerate(rejected, start=1))


def line_sql(index_sql: str, rejected: list[tuple[int, str]]) -> str:
    """SQL for the line of the record with 0-based ``index_sql`` among the records the reader kept.

    With rejected lines r_1 < r_2 < ... the kept record i sits on line i + 2 + #{k : r_k - k < i + 2}
    (k from 1; line 1 is the header): every rejected line before it pushes it one line down. The count is a
    filter over a literal list: fine for the few rejects a file has.
    """
    if not rejected:
        return f"({index_sql} + 2)"
    arr = "[" + ", ".join(str(s) for s in _shifted(rejected)) + "]::BIGINT[]"
    return f"({index_sql} + 2 + len(list_filter({arr}, lambda s: s < {index_sql} + 2)))"


def set_source_lines(con, table: str, where: str, base: int, rejected, params: dict) -> None:
    """Write ``source_line`` of the rows just appended to ``table`` (rowids base, base+1, ... in file order)."""
    if len(rejected) <= LISTED_REJECTS_MAX:
        con.execute(f"UPDATE {table} SET source_line = {line_sql(f'(rowid - {int(base)})', rejected)} "
                    f"WHERE {where}", params)
        return
    # Many rejected lines: an ASOF join finds, for each kept record, how many rejected lines precede it.
    con.execute("CREATE OR REPLACE TEMP TABLE _ww_shift (s BIGINT, k BIGINT)")
    con.executemany("INSERT INTO _ww_shift VALUES (?, ?)",
                    [[s, k] for k, s in enumerate(_shifted(rejected), start=1)])
    con.execute(
        f"""UPDATE {table} SET source_line = x.line FROM (
                SELECT r.rid, r.i + 2 + coalesce(m.k, 0) AS line
                FROM (SELECT rowid AS rid, rowid - {int(base)} AS i FROM {table} WHERE {where}) r
                ASOF LEFT JOIN (SELECT s, max(k) AS k FROM _ww_shift GROUP BY s) m ON r.i + 2 > m.s) x
            WHERE {table}.rowid = x.rid""", params)
    con.execute("DROP TABLE IF EXISTS _ww_shift")


def require_header(path: Path, required: tuple[str, ...], kind: str) -> list[str]:
    """The header of a ``kind`` export, refused (ExportFileError naming file and columns) when it lacks one."""
    if not path.exists():
        raise ExportFileError(f"{kind} export not found: {path}")
    header = formats.read_csv_header(path)
    formats.check_columns(path, header, required, kind)
    return header
