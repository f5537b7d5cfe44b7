"""What an ingest records about itself: :class:`IngestReport`, its ``raw.ingest_log`` row, its ``raw.quarantine``
rows (:class:`QuarantineBatch`), and :func:`previous_ingest` (has this exact file been read already?).

A quarantined row is recorded by file, line, natural key (read from the broken row when it can be) and reason,
never by its content, so the quarantine holds nothing personal. Every write here happens inside the ingest's own
transaction: a failed ingest leaves no log row and no quarantine rows behind.

The quarantine is idempotent: a row's identity is ``record_key``, the keyed SHA-256 of the record's text and its
occurrence among identical records of the file (``<hash>#1``, ``#2``, ...), and a row is written only when no row
of that table has its key. So reading a file again, the same file under another name, or a later export that
repeats the earlier rows adds nothing; two identical bad lines in one file stay two rows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time
import uuid

from ww_assets.zooniverse.ingest.schema import ensure_raw_schema

__all__ = ["IngestReport", "IngestRun", "QuarantineBatch", "previous_ingest", "log_ingest"]


@dataclasses.dataclass(frozen=True)
class IngestReport:
    """What one file's ingest did. ``rows_seen = rows_new + rows_duplicate + rows_quarantined``.

    ``rows_quarantined`` counts this file's bad rows (lines), ``rows_quarantined_new`` those of them not in
    ``raw.quarantine`` before; ``quarantine_reasons`` counts this file's bad rows by reason."""

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
    rows_quarantined_new: int = 0

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
            "rows_quarantined_new": self.rows_quarantined_new,
            "newest_created_at": self.newest_created_at.isoformat() if self.newest_created_at else "",
            "ingest_id": self.ingest_id,
            "ingest_seconds": round(self.seconds, 3),
        }


def _now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _new_ingest_id() -> str:
    now = dt.datetime.now(dt.timezone.utc)
    return f"ing_{now:%Y%m%dT%H%M%S}_{uuid.uuid4().hex[:10]}"


@dataclasses.dataclass(frozen=True)
class IngestRun:
    """One file's ingest in progress: its id, its start (also the rows' ``ingested_at``), where rows come from."""

    table: str
    source_file: str
    source_label: str | None = None
    ingest_id: str = dataclasses.field(default_factory=_new_ingest_id)
    started: dt.datetime = dataclasses.field(default_factory=_now_utc)   # naive UTC, as DuckDB TIMESTAMP
    clock: float = dataclasses.field(default_factory=time.perf_counter)

    def finish(self, con, *, rows_seen: int, rows_new: int, quarantine: QuarantineBatch,
               newest_created_at: dt.datetime | None) -> IngestReport:
        """The report of this ingest, written to ``raw.ingest_log`` after ``quarantine`` is written (call inside
        the ingest's transaction)."""
        n_bad, n_bad_new, reasons = quarantine.write()
        report = IngestReport(
            table=self.table, source_file=self.source_file, rows_seen=rows_seen, rows_new=rows_new,
            rows_duplicate=rows_seen - rows_new - n_bad, rows_quarantined=n_bad,
            newest_created_at=newest_created_at, ingest_id=self.ingest_id, source_label=self.source_label,
            seconds=time.perf_counter() - self.clock, quarantine_reasons=reasons, rows_quarantined_new=n_bad_new)
        log_ingest(con, report, self.started)
        return report


def _file_identity(path: str) -> tuple[int | None, dt.datetime | None]:
    try:
        st = os.stat(path)
    except OSError:
        return None, None
    return st.st_size, dt.datetime.fromtimestamp(st.st_mtime, tz=dt.timezone.utc).replace(tzinfo=None)


def log_ingest(con, report: IngestReport, started: dt.datetime) -> None:
    """Append the ``raw.ingest_log`` row of ``report``, with the file's size and mtime as read now."""
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


_SEEN = "_ww_quarantine_seen"
_NUMBERED = "_ww_quarantine_numbered"


class QuarantineBatch:
    """The bad rows of one ingest: gathered while the ingest runs (:meth:`add_sql`, :meth:`add_rejected`), then
    written to ``raw.quarantine`` in one statement, each only when its ``record_key`` is not there yet.

    A row added with no record hash (a classification known bad by its id from an earlier read, whose text this
    ingest did not look at) is counted and never written: it is in the quarantine already. Rows written before
    ``record_key`` existed (NULL key) are matched by table, file and line, and get their key.
    """

    def __init__(self, con, run: IngestRun) -> None:
        self.con, self.run = con, run
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {_SEEN} (
                            source_line BIGINT, natural_key VARCHAR, reason VARCHAR, record_hash VARCHAR)""")

    def add_sql(self, select_sql: str, params: dict | None = None) -> None:
        """Add the rows of ``select_sql``: (source_line, natural_key, reason, record_hash)."""
        self.con.execute(f"INSERT INTO {_SEEN} {select_sql}", params or {})

    def add_rejected(self, rejected) -> None:
        """Add the lines the reader rejected (``csv_reader.RejectedLine`` each)."""
        rejected = [r for r in rejected if r.reason]          # a blank line is no row
        if rejected:   # one statement over four lists: executemany costs about a millisecond a row
            self.con.execute(
                f"INSERT INTO {_SEEN} SELECT unnest($lines), unnest($keys), unnest($reasons), unnest($hashes)",
                {"lines": [r.line for r in rejected], "keys": [r.natural_key for r in rejected],
                 "reasons": [r.reason for r in rejected], "hashes": [r.record_hash for r in rejected]})

    def write(self) -> tuple[int, int, dict[str, int]]:
        """Write the rows not quarantined yet. Returns (rows of this ingest, rows written, count by reason)."""
        con, run = self.con, self.run
        params = {"table": run.table, "source_file": run.source_file}
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {_NUMBERED} AS
                        SELECT *, record_hash || '#' || row_number() OVER (
                                      PARTITION BY record_hash ORDER BY source_line) AS record_key
                        FROM {_SEEN} WHERE record_hash IS NOT NULL""")
        con.execute(f"""UPDATE raw.quarantine q SET record_key = n.record_key FROM {_NUMBERED} n
                        WHERE q.record_key IS NULL AND q.table_name = $table AND q.source_file = $source_file
                          AND q.source_line = n.source_line""", params)
        written = con.execute(
            f"""INSERT INTO raw.quarantine (table_name, source_file, source_line, natural_key, reason, ingest_id,
                                            quarantined_at, record_key)
                SELECT $table, $source_file, source_line, natural_key, reason, $iid, $now, record_key
                FROM {_NUMBERED} n
                WHERE NOT EXISTS (SELECT 1 FROM raw.quarantine q
                                  WHERE q.table_name = $table AND q.record_key = n.record_key)
                ORDER BY source_line""", {**params, "iid": run.ingest_id, "now": run.started}).fetchone()[0]
        seen = con.execute(f"SELECT count(*) FROM {_SEEN}").fetchone()[0]
        reasons = {str(reason): int(n) for reason, n in con.execute(
            f"SELECT reason, count(*) FROM {_SEEN} GROUP BY 1 ORDER BY 2 DESC, 1").fetchall()}
        con.execute(f"DROP TABLE IF EXISTS {_SEEN}")
        con.execute(f"DROP TABLE IF EXISTS {_NUMBERED}")
        return int(seen), int(written), reasons
