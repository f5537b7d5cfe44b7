"""Who a volunteer is, as the consensus SQL counts them: 64-bit keys, and bit masks for the most active ones.

A **volunteer** is the pseudonymised ``volunteer_id``: the keyed pseudonym of the user id for logged-in volunteers,
of the ``not-logged-in-...`` name for anonymous ones (``ww_assets.zooniverse`` makes it). Counting distinct
volunteers per image means grouping (image, volunteer) pairs; grouping on a 64-bit hash of the id (``vkey``)
instead of the string keeps those aggregations small. A hash is exact only while no two volunteers share one, so
``consensus.volunteer_keys`` holds every volunteer with its key and each refresh checks them collision-free; on a
collision the caller draws a new salt and rebuilds (``ww_assets.consensus.volunteer``).

The ``TOP_VOLUNTEERS`` most active volunteers (a third of all pages) have long histories that an incremental
update could not afford to re-read; each gets a rank, and every image row carries two 128-bit masks of the ranks
that have seen it (``top_seen_a``/``_b``) and clicked it (``top_selected_a``/``_b``): "has this volunteer seen this
image before" is then a bit test.
"""

from __future__ import annotations

from ww_assets.consensus.counting import COUNTED

__all__ = [
    "TOP_VOLUNTEERS",
    "TOP_VOLUNTEERS_SQL",
    "mask_sql",
    "masks_sql",
    "popcount_sql",
    "refresh_volunteer_keys",
    "vkey_sql",
]

#: The most active volunteers whose pages per image are tracked as bits (two UHUGEINT columns), so an incremental
#: update need not re-read their (long) histories. 256 = 2 x 128 bits.
TOP_VOLUNTEERS = 256

#: The ranked volunteers (volunteer_id, top_rank). Joined with LEFT JOIN ... USING (volunteer_id). Not an inner
#: join: DuckDB 2.0.0 fails with an internal error ("dict-surviving cache: global dictionary column ... changed
#: identity") on an inner join of raw.classifications with this on volunteer_id followed by unnest of the page lists
#: (seen at 10M pages, 2026-11-24), and so on a LEFT JOIN filtered to its matches (the optimizer makes it an inner
#: join).
TOP_VOLUNTEERS_SQL = "(SELECT volunteer_id, top_rank FROM consensus.volunteer_keys WHERE top_rank IS NOT NULL)"


def vkey_sql(col: str, salt: int) -> str:
    """SQL: the 64-bit key of the volunteer id in column ``col`` (``salt`` 0: the plain hash)."""
    return f"hash({col})" if salt == 0 else f"hash({col}, {int(salt)}::BIGINT)"


def mask_sql(rank: str, half: str) -> str:
    """SQL: half ``half`` ('a': ranks 0-127, 'b': 128-255) of the one-bit mask of ``rank`` (NULL in the other)."""
    if half == "a":
        return f"CASE WHEN {rank} < 128 THEN 1::UHUGEINT << {rank}::UHUGEINT END"
    return f"CASE WHEN {rank} >= 128 THEN 1::UHUGEINT << ({rank} - 128)::UHUGEINT END"


def masks_sql(rank: str) -> str:
    """SQL select list: both halves of the mask of ``rank``, as ``ma`` and ``mb`` (NULL, NULL when rank is NULL)."""
    return f"{mask_sql(rank, 'a')} AS ma, {mask_sql(rank, 'b')} AS mb"


def popcount_sql(mask: str) -> str:
    """SQL: set bits of a UHUGEINT (bit_count takes signed integers: count the two 64-bit halves)."""
    return (f"(bit_count(({mask} >> 64::UHUGEINT)::HUGEINT)::BIGINT "
            f"+ bit_count(({mask} & 18446744073709551615::UHUGEINT)::HUGEINT)::BIGINT)")


def refresh_volunteer_keys(con, salt: int, *, full: bool, new_filter: str | None) -> bool:
    """Keep consensus.volunteer_keys = every volunteer with hash key; True when the keys are collision-free.

    ``full``: recompute all keys and the top ranks; otherwise add the volunteers of the classifications matching
    ``new_filter`` (an SQL condition) that have no key yet, keeping the ranks.
    """
    vk = vkey_sql("volunteer_id", salt)
    if full:
        con.execute("DELETE FROM consensus.volunteer_keys")
        con.execute(f"""
            INSERT INTO consensus.volunteer_keys
            SELECT volunteer_id, {vk},
                   CASE WHEN rn <= {TOP_VOLUNTEERS} THEN (rn - 1)::SMALLINT END
            FROM (SELECT volunteer_id, row_number() OVER (ORDER BY count(*) DESC, volunteer_id) AS rn
                  FROM {COUNTED} WHERE volunteer_id IS NOT NULL GROUP BY volunteer_id)""")
        n, nk = con.execute(
            "SELECT count(*), count(DISTINCT vkey) FROM consensus.volunteer_keys").fetchone()
        return n == nk
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _cons_newvol AS
        SELECT volunteer_id, {vk} AS vkey FROM (
            SELECT DISTINCT volunteer_id FROM {COUNTED} WHERE {new_filter} AND volunteer_id IS NOT NULL)
        WHERE volunteer_id NOT IN (SELECT volunteer_id FROM consensus.volunteer_keys)""")
    clash = con.execute("""
        SELECT (SELECT count(*) FROM _cons_newvol n JOIN consensus.volunteer_keys k USING (vkey))
             + (SELECT count(*) - count(DISTINCT vkey) FROM _cons_newvol)""").fetchone()[0]
    if clash:
        return False
    con.execute("INSERT INTO consensus.volunteer_keys SELECT volunteer_id, vkey, NULL FROM _cons_newvol")
    con.execute("DROP TABLE _cons_newvol")
    return True
