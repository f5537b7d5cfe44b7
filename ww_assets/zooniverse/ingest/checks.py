"""Counts the raw tables' asset checks read: the latest ingest of a table, and the pages' consistency."""

from __future__ import annotations

from ww_assets.zooniverse.ingest.schema import ensure_raw_schema

__all__ = ["latest_ingest", "page_consistency"]


def latest_ingest(con, table: str) -> tuple[int, int, str] | None:
    """(rows seen, rows quarantined, ingest_id) of the newest ingest of ``table``, or None."""
    ensure_raw_schema(con)
    return con.execute("""SELECT rows_seen, rows_quarantined, ingest_id FROM raw.ingest_log
                          WHERE table_name = ? ORDER BY finished_at DESC LIMIT 1""", [table]).fetchone()


def page_consistency(con) -> dict[str, int]:
    """Pages without subjects, clicks on a subject not on the page, repeated ids, pages not of 16 images.

    A click off its page is *kept* at ingest (the rest of the page is good) and quarantined alone by the consensus
    build (``consensus.quarantine``), so it is counted here, not treated as an error.
    """
    ensure_raw_schema(con)
    empty, off_page, twice, rows, not16 = con.execute(
        """SELECT count(*) FILTER (len(page_subject_ids) = 0 OR page_subject_ids IS NULL),
                  count(*) FILTER (NOT list_has_all(page_subject_ids, selected_subject_ids)),
                  count(*) - count(DISTINCT classification_id), count(*),
                  count(*) FILTER (len(page_subject_ids) <> 16)
           FROM raw.classifications""").fetchone()
    return {"rows": int(rows), "empty_pages": int(empty), "pages_with_clicks_off_page": int(off_page),
            "duplicate_ids": int(twice), "pages_not_16": int(not16)}
