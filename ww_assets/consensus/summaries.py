"""Small summaries of the consensus tables for the UI: previews, top tags and the histograms' counts.

Binned and limited in SQL, so a warehouse of millions of images hands the UI a few hundred numbers. No personal
data: previews show subject ids and counts, never volunteers.
"""

from __future__ import annotations

import pandas as pd

from ww_assets.consensus.counting import COUNTED

__all__ = ["table_rows", "most_selected", "top_tags", "subject_preview", "fraction_bins", "shown_counts",
           "total_clicks", "talk_totals", "subjects_never_shown", "subjects_without_image_id", "tag_share_violations"]


def table_rows(con, table: str) -> int:
    return int(con.execute(f"SELECT count(*) FROM consensus.{table}").fetchone()[0])


def most_selected(con, n: int = 10) -> pd.DataFrame:
    """The images volunteers agree on most (ranked by the lower end of the Wilson interval, not the raw fraction,
    so one click out of one view does not top the list)."""
    return con.execute(f"""
        SELECT subject_id, shown, selected, round(fraction, 3) AS fraction, round(ci_low, 3) AS ci_low,
               round(ci_high, 3) AS ci_high, pages
        FROM consensus.volunteer_consensus WHERE shown > 0 ORDER BY ci_low DESC, subject_id LIMIT {int(n)}""").df()


def top_tags(con, n: int = 15) -> pd.DataFrame:
    return con.execute(f"""
        SELECT tag, sum(n)::BIGINT AS volunteer_uses, count(*) AS images
        FROM (SELECT unnest(map_keys(hashtags)) AS tag, unnest(map_values(hashtags)) AS n FROM consensus.talk_consensus)
        GROUP BY tag ORDER BY volunteer_uses DESC, tag LIMIT {int(n)}""").df()


def subject_preview(con, n: int = 10) -> pd.DataFrame:
    return con.execute(f"""
        SELECT subject_id, image_id, round(ra, 5) AS ra, round(dec, 5) AS dec, shown, selected,
               round(fraction, 3) AS fraction, comments, top_tag
        FROM consensus.subject_consensus ORDER BY ci_low DESC NULLS LAST, subject_id LIMIT {int(n)}""").df()


def fraction_bins(con, bins: int = 20) -> list[int]:
    """Images per fraction bin (``bins`` equal bins over [0, 1]) among images shown at least once."""
    counts = [0] * bins
    for b, k in con.execute(f"""
            SELECT least(floor(fraction * {bins}), {bins - 1})::INT AS b, count(*)
            FROM consensus.volunteer_consensus WHERE shown > 0 GROUP BY 1""").fetchall():
        counts[b] = int(k)
    return counts


def shown_counts(con) -> list[tuple[int, int]]:
    """(shown, images) for every distinct number of volunteers who saw an image."""
    return [(int(s), int(k)) for s, k in con.execute(
        "SELECT shown, count(*) FROM consensus.volunteer_consensus GROUP BY 1 ORDER BY 1").fetchall()]


def total_clicks(con) -> int:
    return int(con.execute(f"SELECT coalesce(sum(len(selected_subject_ids)), 0) FROM {COUNTED}").fetchone()[0])


def talk_totals(con) -> tuple[int, int]:
    """(comments, images with a tag)."""
    a, b = con.execute("SELECT sum(comments), count(*) FILTER (WHERE top_tag IS NOT NULL) "
                       "FROM consensus.talk_consensus").fetchone()
    return int(a or 0), int(b or 0)


def subjects_never_shown(con) -> int:
    return int(con.execute("SELECT count(*) FROM consensus.subject_consensus WHERE shown = 0").fetchone()[0])


def subjects_without_image_id(con) -> int:
    return int(con.execute("SELECT count(*) FROM consensus.subject_consensus WHERE image_id IS NULL").fetchone()[0])


def tag_share_violations(con) -> int:
    """Rows whose top-tag share is outside [0, 1], or set without a tag, or with more commenters than comments."""
    return int(con.execute("""
        SELECT count(*) FROM consensus.talk_consensus
        WHERE (top_tag IS NULL) <> (top_tag_share IS NULL) OR NOT coalesce(top_tag_share BETWEEN 0 AND 1, true)
           OR commenters > comments""").fetchone()[0])
