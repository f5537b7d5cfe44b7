"""Small DuckDB helpers shared by the Zooniverse ingest and the consensus SQL.

Both stages build SQL text and run it on one connection in steps that must land whole or not at all, with
``preserve_insertion_order`` chosen per stage; those few helpers live here so the two stages write them once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["insertion_order", "sql_literal", "transaction"]


def sql_literal(text: object) -> str:
    """``text`` as a SQL string literal (single quotes doubled), for values written into generated SQL."""
    return "'" + str(text).replace("'", "''") + "'"


@contextlib.contextmanager
def transaction(con) -> Iterator[None]:
    """BEGIN ... COMMIT on ``con``; ROLLBACK and re-raise on any error, so a failed step leaves nothing behind."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


@contextlib.contextmanager
def insertion_order(con, keep: bool) -> Iterator[None]:
    """Set DuckDB's ``preserve_insertion_order`` to ``keep`` for the block, and restore what it was.

    The ingest keeps it (row order = file order gives each row its source line); consensus drops it (the order
    of aggregates does not matter, and dropping it saves memory).
    """
    before = bool(con.execute("SELECT current_setting('preserve_insertion_order')").fetchone()[0])
    if before != keep:
        con.execute(f"SET preserve_insertion_order = {str(keep).lower()}")
    try:
        yield
    finally:
        if before != keep:
            con.execute(f"SET preserve_insertion_order = {str(before).lower()}")
