"""What an ingest records about itself: :class:`IngestReport`, its ``raw.ingest_log`` row, the ``raw.quarantine``
rows of lines the reader rejected, and :func:`previous_ingest` (has this exact file been read already?).

A quarantined row is recorded by file, line, parsed natural key and reason, never by its content, so the
quarantine holds nothing personal. Every write here happens inside the ingest's own transaction: a failed ingest
leaves no log row and no quarantine rows behind.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time
import uuid

from ww_assets.zooniverse.ingest.schema import ensure_raw_schema

__all__ = ["IngestReport", "IngestRun", "previous_ingest", "log_ingest", "quarantine_rejected"]


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

    def finish(self, con, *, rows_seen: int, rows_new: int, rows_quarantined: int,
               newest_created_at: dt.datetime | None) -> IngestReport:
        """The report of this ingest, written to ``raw.ingest_log`` (call inside the ingest's transaction)."""
        report = IngestReport(
            table=self.table, source_file=self.source_file, rows_seen=rows_seen, rows_new=rows_new,
            rows_duplicate=rows_seen - rows_new - rows_quarantined, rows_quarantined=rows_quarantined,
            newest_created_at=newest_created_at, ingest_id=self.ingest_id, source_label=self.source_label,
            seconds=time.perf_counter() - self.clock, quarantine_reasons=_quarantine_reasons(con, self.ingest_id))
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


def _quarantine_reasons(con, ingest_id: str) -> dict[str, int]:
    rows = con.execute(
        "SELECT reason, count(*) FROM raw.quarantine WHERE ingest_id = ? GROUP BY 1 ORDER BY 2 DESC", [ingest_id]
    ).fetchall()
    return {reason: int(n) for reason, n in rows}


def quarantine_rejected(con, run: IngestRun, rejected: list[tuple[int, str]]) -> None:
    """Quarantine the lines the reader rejected: (line, reason) each, no natural key (none could be parsed)."""
    if rejected:
        con.executemany(
            "INSERT INTO raw.quarantine VALUES (?, ?, ?, NULL, ?, ?, ?)",
            [[run.table, run.source_file, line, reason, run.ingest_id, run.started] for line, reason in rejected],
        )
