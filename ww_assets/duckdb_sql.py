"""Small DuckDB helpers shared by the ingest (``ww_assets.zooniverse.ingest``) and ``ww_assets.consensus.build``."""

from __future__ import annotations

import contextlib
from typing import Iterator


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
