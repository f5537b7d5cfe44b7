"""Zooniverse export files in the real W&W format, generated at benchmark scale (millions of pages in seconds).

The embedded sample (``ww_assets.simulation.volunteers``) simulates each volunteer in Python, which is right for a
few thousand pages and far too slow for the 10M-page exports the consensus and ingest benchmarks need. This module
writes the same file formats from generated SQL through DuckDB ``COPY``: a classifications CSV (the grouped
workflow: 16-image pages in ``subject_data["#group_subject_ids"]``, clicks as ``{"index", "subject"}`` in
annotation T0, realistic ``metadata`` JSON, ~700 bytes a row), a subjects CSV, and Talk comments and tags JSON.

Shape, as in the embedded sample: every image gets ~20 exposures (pages are made in rounds of permutations, so a
10M-page export has 8M images), logged-in volunteers with heavy-tailed activity (a power law, exponent 1.1), 30%
anonymous sessions, 3% repeat submissions of the same page, a click rate of ~5% (50% on the 4% odd images), 0.01%
of pages with a click on a subject not on the page, ~1 Talk comment per 200 pages with hashtags.

Rows depend only on (seed, row index, shape), so rows [a, b) of a later call are the exact continuation of an
earlier call's [0, a): a re-pull. Used by ``benchmarks/consensus_scale.py``, ``benchmarks/zooniverse_ingest.py``
and the consensus tests (incremental == full rebuild).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from ww_assets.simulation.volunteers import PAGE_SIZE as PAGE
from ww_assets.simulation.volunteers import PROJECT_ID, WORKFLOW_ID

__all__ = [
    "CLASSIFICATIONS_CSV",
    "COMMENTS_JSON",
    "SUBJECTS_CSV",
    "TAGS_JSON",
    "export_shape",
    "generate_export",
]

SUBJECT_BASE = 84_000_000
CID_BASE = 451_000_000
EXPOSURES_PER_IMAGE = 20

#: The export file names, as Zooniverse names them for the W&W project.
CLASSIFICATIONS_CSV = "weird-and-wonderful-classifications.csv"
SUBJECTS_CSV = "weird-and-wonderful-subjects.csv"
COMMENTS_JSON = f"project-{PROJECT_ID}-comments.json"
TAGS_JSON = f"project-{PROJECT_ID}-tags.json"

_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:105.0) Gecko/20100101 Firefox/105.0"


def _primes_above(n: int, count: int) -> list[int]:
    """``count`` primes above max(n, 2^30): multipliers coprime with any image count, for page permutations."""
    out, x = [], max(n, 1 << 30) + 1
    while len(out) < count:
        if x % 2 and all(x % d for d in range(3, int(x ** 0.5) + 1, 2)):
            out.append(x)
        x += 2
    return out


def export_shape(pages: int, images: int | None = None) -> dict:
    """The generator's parameters for an export of ``pages`` pages (``images`` defaults to pages*16/20)."""
    if images is None:
        images = max(PAGE * 4, (pages * PAGE // EXPOSURES_PER_IMAGE) // PAGE * PAGE)
    images = max(PAGE, images // PAGE * PAGE)
    return {"pages": pages, "images": images, "pages_per_round": images // PAGE,
            "logged_in": max(20, pages // 8)}


def _page_sql(shape: dict, seed: int) -> str:
    """SQL over ``range(start, stop) t(i)``: one row per classification with its page and clicks (not text yet)."""
    n_img, ppr, n_vol = shape["images"], shape["pages_per_round"], shape["logged_in"]
    primes = _primes_above(n_img, 64)
    seconds_span = 150 * 86400
    total = max(shape["pages"], 1)
    # power-law activity: rank x in [1, n] with density ~ x^-1.1 (inverse CDF)
    vol = (f"(floor(pow(1 - (hash(hash(sess, {seed}, 1)) % 1000003) / 1000003.0 * (1 - pow({n_vol}, -0.1)), -10))"
           f"::BIGINT - 1) % {n_vol}")
    return f"""
    SELECT i, pg, sess,
        (hash(hash(sess, {seed}, 2)) % 100) < 30 AS anon,
        {vol} AS vol,
        (hash(hash(sess, {seed}, 3)) % 100) < 3 AS happy,
        TIMESTAMP '2022-10-04 14:00:00' + to_seconds((i * {seconds_span} // {total})
                                                     + (hash(hash(i, {seed}, 4)) % 60)::BIGINT) AS t,
        list_transform(range({PAGE}), lambda k:
            {SUBJECT_BASE} + ((({primes}::BIGINT[])[1 + (pg // {ppr}) % 64] * ((pg % {ppr}) * {PAGE} + k)
                               + (hash(hash(pg // {ppr}, {seed}, 5)) % {n_img})::BIGINT) % {n_img})) AS page,
        (hash(hash(i, {seed}, 9)) % 10000) = 0 AS invalid_click
    FROM (
        SELECT i,
               -- ~3% repeat submissions: the same volunteer re-submits the previous page (never twice in a row)
               CASE WHEN i > 0 AND hash(hash(i, {seed}, 7)) % 100 < 3 AND NOT (hash(hash(i - 1, {seed}, 7)) % 100 < 3)
                    THEN i - 1 ELSE i END AS pg,
               (CASE WHEN i > 0 AND hash(hash(i, {seed}, 7)) % 100 < 3 AND NOT (hash(hash(i - 1, {seed}, 7)) % 100 < 3)
                     THEN i - 1 ELSE i END) // 5 AS sess
        FROM range($start, $stop) t(i))
    """


def _classification_csv_sql(shape: dict, seed: int) -> str:
    clicks = f"""list_filter(range({PAGE}), lambda k:
        (hash(hash(i, k, {seed}, 11)) % 1000) < CASE WHEN happy THEN 400
                                              WHEN hash(hash(page[k + 1], {seed}, 12)) % 100 < 4 THEN 500
                                              ELSE 30 END)"""
    return f"""
    WITH p AS ({_page_sql(shape, seed)}),
    q AS (SELECT *, {clicks} AS ck,
                 strftime(t - INTERVAL 40 SECOND, '%Y-%m-%dT%H:%M:%S.') || lpad((i % 1000)::VARCHAR, 3, '0') || 'Z'
                     AS started,
                 strftime(t - INTERVAL 1 SECOND, '%Y-%m-%dT%H:%M:%S.') || lpad(((i * 7) % 1000)::VARCHAR, 3, '0')
                     || 'Z' AS finished,
                 CASE WHEN t < TIMESTAMP '2022-10-24 14:00:00' THEN '160.310' ELSE '160.317' END AS version
          FROM p)
    SELECT
        {CID_BASE} + i * 3 AS classification_id,
        CASE WHEN anon THEN 'not-logged-in-' || left(md5(sess::VARCHAR || '-{seed}'), 20)
             ELSE 'volunteer_' || vol::VARCHAR END AS user_name,
        CASE WHEN anon THEN NULL ELSE 1200000 + vol END AS user_id,
        '198.51.100.' || (1 + hash(hash(sess, {seed}, 13)) % 254)::VARCHAR AS user_ip,
        {WORKFLOW_ID} AS workflow_id,
        'Weird & Wonderful' AS workflow_name,
        version AS workflow_version,
        strftime(t, '%Y-%m-%d %H:%M:%S UTC') AS created_at,
        NULL::VARCHAR AS gold_standard,
        NULL::VARCHAR AS expert,
        '{{"source":"api","started_at":"' || started || '",'
        || '"user_agent":"{_UA}","finished_at":"' || finished || '","live_project":true,"user_language":"en",'
        || '"subject_selection_state":{{"retired":false,"already_seen":'
        || CASE WHEN pg < i THEN 'true' ELSE 'false' END || ',"selection_state":"normal"}},'
        || '"workflow_version":"' || version || '"}}'
            AS metadata,
        '[{{"task":"T0","value":[' || array_to_string(
            list_transform(ck, lambda k: '{{"index":' || k::VARCHAR || ',"subject":"' || page[k + 1]::VARCHAR || '"}}')
            || CASE WHEN invalid_click THEN ['{{"index":16,"subject":"{SUBJECT_BASE + 999_999_999}"}}']
                    ELSE []::VARCHAR[] END,
            ',') || ']}}]' AS annotations,
        '{{"' || (84100000 + pg)::VARCHAR || '":{{"retired":null,"#subject_group_id":' || (1500 + pg)::VARCHAR
        || ',"#group_subject_ids":"' || array_to_string(page, '-') || '"}}}}' AS subject_data,
        (84100000 + pg)::VARCHAR AS subject_ids
    FROM q
    """


def _subjects_csv_sql(shape: dict, seed: int) -> str:
    return f"""
    SELECT {SUBJECT_BASE} + j AS subject_id, {PROJECT_ID} AS project_id, {WORKFLOW_ID} AS workflow_id,
           set_id AS subject_set_id,
           '{{"object_id":"' || (37484563299000000 + j * 13)::VARCHAR || '","ra":'
           || round(140 + (hash(hash(j, {seed}, 21)) % 1000000) / 10000.0, 6)::VARCHAR || ',"dec":'
           || round(-1 + (hash(hash(j, {seed}, 22)) % 1000000) / 250000.0, 6)::VARCHAR || ',"#index":' || j::VARCHAR
           || ',"image":"' || (37484563299000000 + j * 13)::VARCHAR || '.png","batch":"batch_'
           || lpad((j // 1000)::VARCHAR, 3, '0') || '"}}' AS metadata,
           '{{"0":"https://panoptes-uploads.zooniverse.org/subject_location/' || md5(j::VARCHAR) || '.png"}}'
               AS locations,
           {EXPOSURES_PER_IMAGE} AS classifications_count,
           '2023-01-10 12:00:00 UTC' AS retired_at, 'classification_count' AS retirement_reason,
           '2022-09-30 10:00:00 UTC' AS created_at, '2023-01-10 12:00:00 UTC' AS updated_at
    FROM (SELECT j, 108000 + j // 50000 AS set_id FROM range({shape['images']}) t(j)
          UNION ALL
          SELECT j, 109999 AS set_id FROM range({shape['images']}) t(j) WHERE hash(hash(j, {seed}, 23)) % 100 < 5)
    """


def _talk_sql(shape: dict, seed: int, start: int, stop: int) -> tuple[str, str]:
    """(comments SELECT, tags SELECT): ~1 comment per 200 pages (logged-in volunteers), 0-3 hashtags each."""
    base = f"""
    WITH p AS ({_page_sql(shape, seed).replace('$start', str(start)).replace('$stop', str(stop))}),
    c AS (SELECT i, vol, t, page[1 + (hash(hash(i, {seed}, 31)) % {PAGE})::BIGINT] AS s,
                 (['merger', 'ring', 'lens', 'artifact', 'weird', 'greenpea'])
                     [1 + (hash(hash(i, {seed}, 32)) % 6)::BIGINT] AS tag1,
                 (['tidal', 'Ring', 'arc', 'Satellite', 'clumpy', 'blue'])
                     [1 + (hash(hash(i, {seed}, 33)) % 6)::BIGINT] AS tag2,
                 (hash(hash(i, {seed}, 34)) % 4)::BIGINT AS ntags
          FROM p WHERE NOT anon AND hash(hash(i, {seed}, 30)) % 200 = 0)
    """
    comments = base + f"""
    SELECT 5101 AS board_id, 'Notes' AS board_title, 'General comment threads about individual subjects'
               AS board_description, 310000 + s - {SUBJECT_BASE} AS discussion_id,
           'Subject ' || s::VARCHAR AS discussion_title, 2400000 + i AS comment_id,
           'Look at this one' || CASE WHEN ntags >= 1 THEN ' #' || tag1 ELSE '' END
               || CASE WHEN ntags >= 2 THEN ' #' || tag2 || '!' ELSE '' END
               || CASE WHEN ntags >= 3 THEN ' and #' || upper(tag1) || '.' ELSE '' END AS comment_body,
           s AS comment_focus_id, 'Subject' AS comment_focus_type, 1200000 + vol AS comment_user_id,
           'volunteer_' || vol::VARCHAR AS comment_user_login,
           strftime(t + INTERVAL 5 MINUTE, '%Y-%m-%dT%H:%M:%S.000Z') AS comment_created_at
    FROM c"""
    tags = base + f"""
    SELECT 880000 + i * 4 + k AS id, name, 'project-{PROJECT_ID}' AS section,
           strftime(t + INTERVAL 5 MINUTE, '%Y-%m-%dT%H:%M:%S.000Z') AS created_at, 1200000 + vol AS user_id,
           2400000 + i AS comment_id, s AS taggable_id, 'Subject' AS taggable_type, {PROJECT_ID} AS project_id,
           'volunteer_' || vol::VARCHAR AS user_login
    FROM (SELECT *, unnest([0, 1]) AS k, unnest([lower(tag1), lower(tag2)]) AS name FROM c WHERE ntags >= 1)
    WHERE k < least(ntags, 2)"""
    return comments, tags


def generate_export(folder: str | Path, pages: int, *, images: int | None = None, seed: int = 1,
                    start: int = 0, stop: int | None = None, with_subjects: bool = True,
                    threads: int | None = None) -> dict:
    """Write a W&W-format export of rows [start, stop) of a ``pages``-page project into ``folder``.

    Files: ``CLASSIFICATIONS_CSV`` (+ ``SUBJECTS_CSV``, ``COMMENTS_JSON`` and ``TAGS_JSON`` when
    ``with_subjects``). Rows depend only on (seed, row index, shape), so a later range is the
    exact continuation of an earlier one (a re-pull). Returns counts and sizes.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stop = pages if stop is None else stop
    shape = export_shape(pages, images)
    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    con.execute("SET preserve_insertion_order = true")
    out = {"shape": shape, "rows": stop - start}
    cls = folder / CLASSIFICATIONS_CSV
    sql = _classification_csv_sql(shape, seed).replace("$start", str(start)).replace("$stop", str(stop))
    con.execute(f"COPY ({sql}) TO '{cls}' (FORMAT csv, HEADER true)")
    out["classifications_csv"] = str(cls)
    out["classifications_bytes"] = cls.stat().st_size
    if with_subjects:
        subj = folder / SUBJECTS_CSV
        con.execute(f"COPY ({_subjects_csv_sql(shape, seed)}) TO '{subj}' (FORMAT csv, HEADER true)")
        comments_sql, tags_sql = _talk_sql(shape, seed, start, stop)
        com = folder / COMMENTS_JSON
        tag = folder / TAGS_JSON
        con.execute(f"COPY ({comments_sql}) TO '{com}' (FORMAT json, ARRAY true)")
        con.execute(f"COPY ({tags_sql}) TO '{tag}' (FORMAT json, ARRAY true)")
        out.update(subjects_csv=str(subj), comments_json=str(com), tags_json=str(tag))
    con.close()
    return out
