"""One pull: fetch export kinds from a source (the sample, an export folder, a live project) and ingest each.

A source answers ``fetch(kind) -> FetchedExport`` (``export_folder.ExportFolderSource``, ``live.LiveSource``);
the ingest functions (``ingest.kinds.INGESTERS``) append to the raw tables. An export file already read by an
earlier ingest (same path, size and time) is not read again unless asked, so a schedule that re-pulls within the
24-hour export window costs nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from ww_assets.zooniverse.export_folder import FetchedExport
from ww_assets.zooniverse.ingest.bookkeeping import IngestReport, previous_ingest
from ww_assets.zooniverse.ingest.kinds import INGESTERS

__all__ = ["PulledKind", "pull"]


@dataclass
class PulledKind:
    """What pulling one export kind did: the file, the ingest report, and the table's rows afterwards."""

    fetched: FetchedExport
    report: IngestReport
    table_rows: int
    reread: bool

    def metadata(self) -> dict:
        """Plain values (no row content: nothing personal) for the asset's metadata."""
        return {**self.report.as_metadata(), **self.fetched.as_metadata(), "table_rows": int(self.table_rows)}


def _unchanged(kind: str, fetched: FetchedExport, ingest_id: str) -> IngestReport:
    return IngestReport(table=kind, source_file=str(fetched.path), rows_seen=0, rows_new=0, rows_duplicate=0,
                        rows_quarantined=0, newest_created_at=None, ingest_id=ingest_id, source_label=fetched.label)


def pull(source, kinds: tuple[str, ...], connect, *, pseudonym_key: str, keep_classification_metadata: bool = False,
         task: str | None = None, reread_unchanged: bool = False,
         log: Callable[[str], None] = lambda m: None) -> list[PulledKind]:
    """Fetch and ingest each kind in order; ``connect()`` gives a DuckDB connection context for the warehouse.
    ``task``: the task whose annotation values are the clicks (default: the ingest's, ``WW_ZOONIVERSE_TASK``'s)."""
    out = []
    for kind in kinds:
        log(f"fetching the {kind} export")
        fetched = source.fetch(kind)
        for note in fetched.notes:
            log(note)
        extra = {"keep_metadata": keep_classification_metadata, **({"task": task} if task else {})} \
            if kind == "classifications" else {}
        with connect() as con:
            seen_by = None if reread_unchanged else previous_ingest(con, kind, fetched.path)
            if seen_by:
                report = _unchanged(kind, fetched, seen_by)
                fetched.notes.append(f"unchanged export file, already ingested by {seen_by}: not read again")
                log(fetched.notes[-1])
            else:
                report = INGESTERS[kind](con, fetched.path, pseudonym_key=pseudonym_key, source_label=fetched.label,
                                         **extra)
            total = con.execute(f"SELECT count(*) FROM raw.{report.table}").fetchone()[0]
            if report.newest_created_at is None and kind != "workflows":
                newest = con.execute(f"SELECT max(created_at) FROM raw.{report.table}").fetchone()[0]
                report = dataclasses.replace(report, newest_created_at=newest)
        log(f"raw.{report.table}: {report.rows_seen} rows seen, {report.rows_new} new, {report.rows_duplicate} "
            f"already stored, {report.rows_quarantined} quarantined ({report.seconds:.1f} s)")
        if report.quarantine_reasons:
            log(f"quarantined in raw.quarantine (ingest_id {report.ingest_id}): "
                + "; ".join(f"{n}x {why}" for why, n in report.quarantine_reasons.items()))
        out.append(PulledKind(fetched, report, int(total), reread=not seen_by))
    return out
