"""Subject identity and ``subject_consensus``: the table the analysis reads, one row per subject.

``subject_consensus`` has one row per subject in ``raw.subjects``: its survey identity (``image_id`` = HSC object
id, ``ra``, ``dec``, ``image_ref``), left-joined with volunteer and Talk consensus; a subject never shown has
``shown = 0`` and a NULL fraction. It is a view (``ww_assets.consensus.schema`` says why) over the stored
``consensus.subject_identity``, which is what this module builds. Consensus rows whose subject is missing from
``raw.subjects`` do not reach it; ``ww_assets.consensus.checks.orphan_rows`` reports them.

raw.subjects has one row per (subject, subject set, workflow) link, so a subject can have several identities; the
one used is that of the most recently updated link. A full build copies the single-link subjects (the usual case)
as they are and picks among the links of the others, in partitions of ``SUBJECTS_PER_PARTITION`` subjects; an
incremental one redoes the subjects with new raw.subjects rows.
"""

from __future__ import annotations

import math

from ww_assets.consensus.schema import recreate_table
from ww_assets.consensus.state import (
    BuildResult,
    log_unchanged,
    plan_build,
    run_build,
    temp_ingest_ids,
)

__all__ = ["SUBJECTS_PER_PARTITION", "build_subject_consensus"]

#: Subjects with several raw.subjects links (sets x workflows) per partition of a full subject-identity build.
SUBJECTS_PER_PARTITION = 3_000_000

_TABLE = "subject_consensus"

_IDENT_SQL = """
    -- raw.subjects has one row per (subject, set, workflow) link; the identity comes from the most recently
    -- updated link (same second: the highest subject_set_id modulo 2^20)
    SELECT subject_id, ident.image_id, ident.ra, ident.dec, ident.image_ref FROM (
        SELECT subject_id,
               arg_max({{'image_id': object_id, 'ra': ra, 'dec': dec, 'image_ref': image_ref}},
                       epoch(coalesce(updated_at, TIMESTAMP '1970-01-01'))::BIGINT * 1048576
                       + coalesce(subject_set_id, 0) % 1048576) AS ident
        FROM raw.subjects WHERE subject_id IS NOT NULL AND ({where})
        GROUP BY subject_id)
"""


def build_subject_consensus(con, *, full: bool = False, log=None) -> BuildResult:
    """Build or update ``consensus.subject_consensus``: subjects joined with volunteer and Talk consensus.

    The view is current as soon as volunteer and Talk consensus are, so a re-pull of classifications costs it
    nothing; only the identity is built here: in full the first time, then only for subjects with new raw.subjects
    rows.
    """
    plan = plan_build(con, _TABLE, ("subjects",), full=full)
    if plan.unchanged:
        return log_unchanged(con, plan, "subject_identity",
                             "no new subjects (a view: volunteer and Talk columns are always current)")
    res = run_build(con, plan, "subjects", full=lambda build_id: _identity_full(con, build_id),
                    incremental=lambda build_id: _identity_incremental(con, build_id, plan.new["subjects"]))
    if log:
        log(f"subject_consensus: {res.mode}, {res.rows_changed} subject identities written")
    return res


def _insert_identity(con, where: str, build_id: int) -> None:
    con.execute(f"INSERT INTO consensus.subject_identity "
                f"SELECT *, {build_id} FROM ({_IDENT_SQL.format(where=where)})")


def _identity_full(con, build_id: int) -> tuple[int, int, int]:
    """Every subject's identity: (rows, rows written, raw rows read)."""
    recreate_table(con, "subject_identity")
    n_links = con.execute("SELECT count(*) FROM raw.subjects").fetchone()[0]
    # a subject with one link (the usual case) is its own identity: copied without the arg_max, which is kept for
    # subjects linked to several sets or workflows
    con.execute("""CREATE OR REPLACE TEMP TABLE _sc_multi AS SELECT subject_id FROM raw.subjects
                   WHERE subject_id IS NOT NULL GROUP BY subject_id HAVING count(*) > 1""")
    con.execute(f"""INSERT INTO consensus.subject_identity
                    SELECT subject_id, object_id, ra, dec, image_ref, {build_id} FROM raw.subjects
                    WHERE subject_id IS NOT NULL AND subject_id NOT IN (SELECT subject_id FROM _sc_multi)""")
    n_multi = con.execute("SELECT count(*) FROM _sc_multi").fetchone()[0]
    k = max(1, math.ceil(n_multi / SUBJECTS_PER_PARTITION))
    for i in range(k if n_multi else 0):
        part = "subject_id IN (SELECT subject_id FROM _sc_multi)" + ("" if k == 1 else f" AND subject_id % {k} = {i}")
        _insert_identity(con, part, build_id)
    con.execute("DROP TABLE IF EXISTS temp._sc_multi")
    total = con.execute("SELECT count(*) FROM consensus.subject_identity").fetchone()[0]
    return total, total, n_links


def _identity_incremental(con, build_id: int, new_ids: list[str]) -> tuple[int, int, int]:
    """Redo the identities of the subjects in the ingests ``new_ids``: as ``_identity_full``."""
    temp_ingest_ids(con, "_sc_ids", new_ids)
    con.execute("""CREATE OR REPLACE TEMP TABLE _sc_new AS SELECT DISTINCT subject_id FROM raw.subjects
                   WHERE ingest_id IN (SELECT ingest_id FROM _sc_ids) AND subject_id IS NOT NULL""")
    n_in = con.execute("SELECT count(*) FROM raw.subjects WHERE ingest_id IN (SELECT ingest_id FROM _sc_ids)"
                       ).fetchone()[0]
    changed = con.execute("SELECT count(*) FROM _sc_new").fetchone()[0]
    con.execute("DELETE FROM consensus.subject_identity WHERE subject_id IN (SELECT subject_id FROM _sc_new)")
    _insert_identity(con, "subject_id IN (SELECT subject_id FROM _sc_new)", build_id)
    total = con.execute("SELECT count(*) FROM consensus.subject_identity").fetchone()[0]
    con.execute("DROP TABLE IF EXISTS temp._sc_ids")
    con.execute("DROP TABLE IF EXISTS temp._sc_new")
    return total, changed, n_in
