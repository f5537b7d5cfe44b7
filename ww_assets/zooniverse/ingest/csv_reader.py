"""Reading an export CSV in DuckDB: every column as text, unreadable lines to a rejects table, and each kept
record's line in the file.

DuckDB's CSV reader drops the records it cannot split into the header's columns and records them in a rejects
table; it keeps the rest in file order. From the rejected records alone the line of every kept record follows
(:func:`line_sql`), so lines come without a second pass over the file. The rejects tables hold offending lines
verbatim (names, IPs): they live only in memory, only for the length of one ingest (:func:`drop_rejects`).

``source_line`` is the physical line, counting the header as line 1. Zooniverse exports hold no line break inside
a field, so a record is a line. Broken quoting breaks that: an unterminated quote swallows the lines after it, and
DuckDB's recovery then loses lines and numbers records, not lines. A carriage return inside an unquoted field, or a
mix of CRLF and LF line ends, makes the reader give up on the whole file. In all these cases (the fast read finds
them: :func:`needs_readable_copy`, :func:`count_data_lines` not matching the records the reader saw, or
:func:`is_reader_state_error`) the ingest reads :func:`readable_copy` instead, where every line that is not a
record on its own is replaced by a line the reader rejects, so each is quarantined on its own line with its reason
and no line is lost. A blank line in the middle (the reader skips it) is found the same way and keeps its place.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import re
import tempfile
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from ww_assets.zooniverse import formats
from ww_assets.zooniverse.errors import ExportFileError
from ww_assets.zooniverse.ingest.sql import lit

__all__ = ["CSV_MAX_LINE_BYTES", "LISTED_REJECTS_MAX", "RejectedLine", "ReadableCopyNeeded", "csv_source",
           "rejected_lines", "needs_readable_copy", "count_data_lines", "n_rejected_records", "readable_copy", "is_reader_state_error", "drop_rejects",
           "line_sql", "set_source_lines", "require_header", "record_hash", "field_id", "REPLACED_LINE"]

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


class RejectedLine(NamedTuple):
    """A line of the file that gave no row: its line, why (None for a blank line: no row, nothing to quarantine,
    but it counts for the lines after it), the id read from it, its record hash."""

    line: int
    reason: str | None
    natural_key: str | None
    record_hash: str | None


def record_hash(hash_key: str, text: str) -> str:
    """Keyed SHA-256 (hex) of a line's text: the quarantine's identity of a line no row came from. Keyed with the
    pseudonym key, so the hash of a line that holds a volunteer name cannot be matched against guessed names."""
    return hashlib.sha256((hash_key + "\x1f" + text).encode("utf-8", "replace")).hexdigest()


def field_id(text: str, index: int | None) -> str | None:
    """The integer in field ``index`` of one raw CSV line (the natural key of a broken row), else None."""
    if index is None:
        return None
    try:
        fields = next(csv.reader([text]), [])
    except (csv.Error, ValueError):
        fields = text.split(",")
    if index >= len(fields):
        return None
    value = fields[index].strip()
    return value if re.fullmatch(r"-?[1-9][0-9]{0,18}|0", value) and -2**63 <= int(value) < 2**63 else None


def rejected_lines(con, *, hash_key: str, key_index: int | None = None,
                   replaced: dict[int, tuple[str, str]] | None = None) -> list[RejectedLine]:
    """Every line of the file the reader rejected, in order, with its reason, the natural key read from its
    ``key_index`` field when it can be, and its record hash. ``replaced`` (line -> (original text, reason)) names
    the lines :func:`readable_copy` replaced by :data:`REPLACED_LINE`.

    DuckDB numbers records; they are the file's lines once no record runs over several lines, which
    :func:`needs_readable_copy` checks (and the ingest then reads :func:`readable_copy`, where none can).
    """
    replaced = replaced or {}
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE temporary AND table_name = ?", [_REJECTS]
    ).fetchone()[0]
    if not exists:
        return []
    rows = con.execute(
        f"""SELECT line, min(lower(error_type::VARCHAR) || coalesce(' (column ' || column_name || ')', '')),
                   max(csv_line)
            FROM temp.{_REJECTS} GROUP BY line ORDER BY line"""
    ).fetchall()
    out = []
    for line, reason, text in rows:
        text, why = replaced.get(int(line), (text or "", f"unreadable CSV line: {reason}"))
        out.append(RejectedLine(int(line), why, field_id(text, key_index), record_hash(hash_key, text)))
    return out


def n_rejected_records(con) -> int:
    """How many records (not rows of the rejects table: one record may have several errors) the reader rejected."""
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE temporary AND table_name = ?", [_REJECTS]
    ).fetchone()[0]
    return int(con.execute(f"SELECT count(DISTINCT line) FROM temp.{_REJECTS}").fetchone()[0]) if exists else 0


def needs_readable_copy(con) -> bool:
    """True when a rejected record ran over several lines or broke on an unterminated quote: DuckDB's reader then
    loses lines and numbers records, not lines (the ingest reads :func:`readable_copy` instead)."""
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE temporary AND table_name = ?", [_REJECTS]
    ).fetchone()[0]
    return bool(exists) and bool(con.execute(
        f"""SELECT count(*) FROM temp.{_REJECTS}
            WHERE error_type::VARCHAR = 'UNQUOTED VALUE' OR contains(csv_line, chr(10))""").fetchone()[0])


def count_data_lines(path: Path) -> int | None:
    """The lines after the header of a plain-text export, blank ones included and trailing line ends not (a byte
    count of LF in numpy: ~0.1 s for 250 MB). None for a gzip export (it would cost a decompression).

    Compared with the records the reader saw, it tells whether any record ran over several lines or a blank line
    was skipped: either would shift the lines of everything after it (the ingest then reads :func:`readable_copy`).
    """
    if formats.is_gzip(path):
        return None
    newlines, last = 0, b""
    buf = np.empty(1 << 24, dtype=np.uint8)
    with open(path, "rb") as fh:
        while n := fh.readinto(buf):
            newlines += int(np.count_nonzero(buf[:n] == 10))        # numpy: ~10x bytes.count
            last = (last + buf[max(0, n - 4096):n].tobytes())[-4096:]
    stripped = last.rstrip(b"\r\n")
    trailing = last[len(stripped):].count(b"\n")                   # line ends at the very end of the file
    lines = newlines - trailing + (1 if stripped else 0)
    return max(lines - 1, 0)


class ReadableCopyNeeded(Exception):
    """Raised inside an ingest's transaction (rolling it back) to read the file again from :func:`readable_copy`."""


def is_reader_state_error(exc: BaseException) -> bool:
    """True for the errors :func:`readable_copy` cures: DuckDB's reader giving up on a stray carriage return or
    mixed line ends, or an ingest that found a record running over several lines."""
    return isinstance(exc, ReadableCopyNeeded) or "state machine reached an invalid state" in str(exc)


#: What :func:`readable_copy` writes in place of a line DuckDB's reader cannot read line by line (one field, too few
#: for any export, so the reader rejects it).
REPLACED_LINE = "\x01ww-replaced-line"
_CR_REASON = "unreadable CSV line: a carriage return (\\r) inside the line"
_QUOTES_REASON = "unreadable CSV line: broken quoting (a quote that does not open and close a whole field)"

# A CSV line as a CSV writer writes it: each field unquoted and free of quotes, or quoted with quotes doubled
# inside. Stricter than DuckDB's reader (which takes a quote inside an unquoted field as text, and skips a space
# before an opening quote but not two): a line it refuses may be one DuckDB would read, never the other way round,
# so every line of the copy is one record. Each alternative starts with its own character: matching is linear.
_FIELD = rb'(?:[^",\n]*|"(?:[^"]|"")*")'
_LINE_RE = re.compile(_FIELD + rb"(?:," + _FIELD + rb")*")


@contextlib.contextmanager
def readable_copy(path: Path) -> Iterator[tuple[Path, dict[int, tuple[str, str]]]]:
    """A copy of an export that DuckDB's reader reads line by line: every line ended by LF, and each line that is
    not a CSV record on its own (an unclosed quote, a carriage return inside) or is blank replaced by
    :data:`REPLACED_LINE`. Yields (copy, {line: (original text, reason, None for a blank line)}); the copy is
    removed afterwards. The slow path (Python reads the whole file), taken only when the fast read found such a
    line."""
    opener = gzip.open if formats.is_gzip(path) else open
    replaced: dict[int, tuple[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="ww-csv-") as tmp:
        copy = Path(tmp) / "export.csv"
        with opener(path, "rb") as src, open(copy, "wb") as dst:
            for number, raw in enumerate(src, start=1):
                line = raw[:-1] if raw.endswith(b"\n") else raw
                line = line[:-1] if line.endswith(b"\r") else line
                if not line and number > 1:          # a blank line: no row, but it keeps its place
                    replaced[number] = ("", None)
                    dst.write(REPLACED_LINE.encode() + b"\n")
                    continue
                why = _CR_REASON if b"\r" in line else None if _LINE_RE.fullmatch(line) else _QUOTES_REASON
                if why:
                    replaced[number] = (line.decode("utf-8", "replace"), why)
                    line = REPLACED_LINE.encode()
                dst.write(line + b"\n")
        yield copy, replaced


def _shifted(rejected) -> list[int]:
    return sorted(r[0] - k for k, r in enumerate(rejected, start=1))


def line_sql(index_sql: str, rejected: list[RejectedLine]) -> str:
    """SQL for the line of the record with 0-based ``index_sql`` among the records the reader kept.

    With rejected (physical) lines r_1 < r_2 < ... the kept record i sits on line i + 2 + #{k : r_k - k < i + 2}
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
