"""How many exposures a full volunteer-consensus build aggregates at once, from DuckDB's memory limit.

A full build groups every (image, volunteer) pair; at 10M pages that is 160M exposures, more than a small machine's
memory limit holds in one ``GROUP BY``. So the build splits the images into partitions (``subject_id % K``), each
of at most ``partition_exposures_for(con)`` exposures. Each partition re-reads the page lists, so fewer partitions
are faster: the size is the largest that fits.
"""

from __future__ import annotations

__all__ = [
    "BYTES_PER_PARTITION_EXPOSURE",
    "DEFAULT_PARTITION_EXPOSURES",
    "memory_limit_bytes",
    "partition_exposures_for",
]

#: Most exposures per partition of a full volunteer-consensus build, when the memory limit allows it
#: (BENCHMARKS.md has the timings at 10M pages).
DEFAULT_PARTITION_EXPOSURES = 80_000_000
#: Memory one exposure needs in a partition's aggregations (bytes), for sizing partitions to the memory limit.
BYTES_PER_PARTITION_EXPOSURE = 40


def memory_limit_bytes(con) -> int | None:
    """DuckDB's ``memory_limit`` on ``con`` in bytes (None when it cannot be read)."""
    text = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    units = {"b": 1, "bytes": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
             "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
    try:
        number, unit = str(text).strip().split()
        return int(float(number) * units[unit.lower()])
    except (ValueError, KeyError):
        return None


def partition_exposures_for(con) -> int:
    """Exposures per partition of a full build on ``con``: DEFAULT_PARTITION_EXPOSURES, fewer under a small
    memory limit (at least 1M)."""
    limit = memory_limit_bytes(con)
    if limit is None:
        return DEFAULT_PARTITION_EXPOSURES
    return max(1_000_000, min(DEFAULT_PARTITION_EXPOSURES, limit // BYTES_PER_PARTITION_EXPOSURE))
