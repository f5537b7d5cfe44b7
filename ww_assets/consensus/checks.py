"""Invariants and summaries of the consensus tables, as plain values.

The Dagster layer turns these into asset checks and metadata; keeping them here means a test, a notebook or a
benchmark can ask the same questions of a warehouse without Dagster. Each function reads, never writes.
"""

from __future__ import annotations

__all__ = ["check_counts", "duplicate_keys", "fraction_summary", "orphan_rows", "quarantine_counts"]


def check_counts(con, table: str) -> dict:
    """Invariant violations of a table with shown/selected/fraction: each count must be 0."""
    return dict(zip(
        ("rows", "selected_out_of_range", "fraction_out_of_range", "interval_invalid"),
        (int(x) for x in con.execute(f"""
            SELECT count(*),
                   count(*) FILTER (WHERE NOT (selected >= 0 AND selected <= shown)),
                   count(*) FILTER (WHERE fraction IS NOT NULL AND NOT (fraction >= 0 AND fraction <= 1)
                                    OR (fraction IS NULL) <> (shown = 0)),
                   count(*) FILTER (WHERE shown > 0 AND NOT (ci_low <= fraction AND fraction <= ci_high
                                                             AND ci_low >= 0 AND ci_high <= 1))
            FROM consensus.{table}""").fetchone())))


def duplicate_keys(con, table: str, column: str = "subject_id") -> tuple[int, list]:
    """(number of key values that appear more than once, a few of them)."""
    rows = con.execute(f"""
        SELECT {column}, count(*) FROM consensus.{table} GROUP BY 1 HAVING count(*) > 1
        ORDER BY 2 DESC, 1 LIMIT 1000""").fetchall()
    return len(rows), [r[0] for r in rows[:10]]


def orphan_rows(con, table: str) -> tuple[int, list]:
    """Consensus rows whose subject_id has no row in raw.subjects: (count, up to 10 ids)."""
    rows = con.execute(f"""
        SELECT subject_id FROM consensus.{table}
        WHERE subject_id NOT IN (SELECT subject_id FROM raw.subjects WHERE subject_id IS NOT NULL)
        ORDER BY subject_id""").fetchall()
    return len(rows), [r[0] for r in rows[:10]]


def quarantine_counts(con) -> dict[str, int]:
    """Invalid clicks by reason (consensus.quarantine) and raw rows quarantined at ingest by table/reason."""
    out = {}
    for reason, n in con.execute(
            "SELECT reason, count(*) FROM consensus.quarantine GROUP BY 1 ORDER BY 2 DESC").fetchall():
        out[f"click: {reason}"] = int(n)
    for table, reason, n in con.execute(
            "SELECT table_name, reason, count(*) FROM raw.quarantine GROUP BY 1, 2 ORDER BY 3 DESC").fetchall():
        out[f"raw.{table}: {reason}"] = int(n)
    return out


def fraction_summary(con, table: str = "volunteer_consensus") -> dict:
    """Mean and quantiles of fraction over images shown at least once; images with fraction > 0.5."""
    row = con.execute(f"""
        SELECT count(*) FILTER (WHERE shown > 0), avg(fraction), quantile_cont(fraction, [0.1, 0.25, 0.5, 0.75, 0.9]),
               count(*) FILTER (WHERE fraction > 0.5), avg(shown), max(shown), sum(shown), sum(selected), sum(pages)
        FROM consensus.{table}""").fetchone()
    n, mean, q, over_half, mean_shown, max_shown, sum_shown, sum_sel, sum_pages = row
    q = q or [None] * 5
    return {
        "images_shown": int(n or 0),
        "fraction_mean": None if mean is None else round(float(mean), 5),
        "fraction_p10": q[0], "fraction_p25": q[1], "fraction_median": q[2], "fraction_p75": q[3],
        "fraction_p90": q[4],
        "images_fraction_over_half": int(over_half or 0),
        "volunteers_per_image_mean": None if mean_shown is None else round(float(mean_shown), 3),
        "volunteers_per_image_max": int(max_shown or 0),
        "volunteer_image_pairs": int(sum_shown or 0),
        "selections": int(sum_sel or 0),
        "exposures": int(sum_pages or 0),
    }
