"""Fixtures of the consensus tests."""

from __future__ import annotations

import duckdb
import pytest

from ww_assets.zooniverse.ingest.schema import ensure_raw_schema


@pytest.fixture
def raw_con():
    """An in-memory warehouse with the raw tables and subjects 10-19 (object ids 'obj<n>'), for hand-made pages."""
    con = duckdb.connect()
    ensure_raw_schema(con)
    con.execute("""INSERT INTO raw.subjects (subject_id, subject_set_id, object_id, ra, dec, image_ref, updated_at,
                                             ingest_id, ingested_at)
                   SELECT s, 1, 'obj' || s, 150.0 + s / 100, 2.0, s || '.png', TIMESTAMP '2022-01-01', 's1', now()
                   FROM range(10, 20) t(s)""")
    yield con
    con.close()
