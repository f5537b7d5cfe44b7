"""Volunteer consensus at scale: generate a W&W-format export, ingest it, build consensus, time every stage.

    python benchmarks/consensus_scale.py --pages 10000000 --workdir /work/bench   # the BENCHMARKS.md figures
    python benchmarks/consensus_scale.py --pages 200000                           # a quick run

What it does (each stage in its own subprocess, so each peak-memory figure is that stage's own):

1. generate: a classifications CSV in the exact Zooniverse export format (the W&W grouped workflow: 16-image pages
   in ``subject_data["#group_subject_ids"]``, clicks as ``{"index", "subject"}`` in annotation T0, realistic
   ``metadata`` JSON, ~700 bytes a row), a subjects CSV and Talk comments/tags JSON, written by DuckDB ``COPY``
   from generated SQL (seconds for millions of rows). Shape as in the embedded sample: every image gets ~20
   exposures (pages are made in rounds of random permutations, so a 10M-page export has 8M images), logged-in
   volunteers with heavy-tailed activity (a power law, exponent 1.1), 30% anonymous sessions, 3% repeat
   submissions of the same page, a click rate of ~5% (50% on the 4% odd images), 0.01% of pages with a click on
   a subject not on the page, ~1 Talk comment per 200 pages with hashtags.
2. e2e: into a fresh warehouse, the subjects and Talk exports are ingested, then the classifications export
   (``ingest_classifications_csv``, the zooniverse helper's code), then the four consensus builds. Two figures:
   the classification export to the consensus tables (its ingest + the builds; a project has its subjects long
   before its classifications, and a re-pull brings only classifications), and all exports to the consensus
   tables; pages/s, peak RSS.
3. consensus: the consensus builds alone, again, on the ingested raw tables (a forced full rebuild).
4. incremental: a second export file with ``--repull-pages`` more pages is ingested, then consensus updated; the
   consensus update is timed.
5. baseline: the row-by-row pandas reading the original analysis notebook did (``json.loads`` of subject_data
   and annotations per row, counting shown/selected per image with no per-volunteer deduplication) on the first
   ``--baseline-pages`` rows of the same file, twice: as the obvious ``iterrows`` loop, and as the same work over
   the two columns zipped (the fastest plain-Python form); the e2e / baseline speed ratios against both.

Prints one line per figure and the machine (CPU model, cores, memory, load average, DuckDB version).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PAGE = 16
WORKFLOW_ID = 20476
PROJECT_ID = 17317
SUBJECT_BASE = 84_000_000
CID_BASE = 451_000_000
EXPOSURES_PER_IMAGE = 20
BENCH_KEY = "benchmark-pseudonym-key-not-secret"

_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:105.0) Gecko/20100101 Firefox/105.0"


# ------------------------------------------------------------------------------------------------------------------
# generation
# ------------------------------------------------------------------------------------------------------------------

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

    Files: ``weird-and-wonderful-classifications.csv`` (+ ``-subjects.csv`` and ``project-17317-comments.json``,
    ``-tags.json`` when ``with_subjects``). Rows depend only on (seed, row index, shape), so a later range is the
    exact continuation of an earlier one (a re-pull). Returns counts and sizes.
    """
    import duckdb

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stop = pages if stop is None else stop
    shape = export_shape(pages, images)
    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    con.execute("SET preserve_insertion_order = true")
    out = {"shape": shape, "rows": stop - start}
    cls = folder / "weird-and-wonderful-classifications.csv"
    sql = _classification_csv_sql(shape, seed).replace("$start", str(start)).replace("$stop", str(stop))
    con.execute(f"COPY ({sql}) TO '{cls}' (FORMAT csv, HEADER true)")
    out["classifications_csv"] = str(cls)
    out["classifications_bytes"] = cls.stat().st_size
    if with_subjects:
        subj = folder / "weird-and-wonderful-subjects.csv"
        con.execute(f"COPY ({_subjects_csv_sql(shape, seed)}) TO '{subj}' (FORMAT csv, HEADER true)")
        comments_sql, tags_sql = _talk_sql(shape, seed, start, stop)
        com = folder / f"project-{PROJECT_ID}-comments.json"
        tag = folder / f"project-{PROJECT_ID}-tags.json"
        con.execute(f"COPY ({comments_sql}) TO '{com}' (FORMAT json, ARRAY true)")
        con.execute(f"COPY ({tags_sql}) TO '{tag}' (FORMAT json, ARRAY true)")
        out.update(subjects_csv=str(subj), comments_json=str(com), tags_json=str(tag))
    con.close()
    return out


# ------------------------------------------------------------------------------------------------------------------
# stages (each runs in its own process)
# ------------------------------------------------------------------------------------------------------------------

def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024  # KiB -> GiB


def _connect(db: Path, memory_limit: str):
    import duckdb

    con = duckdb.connect(str(db))
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute(f"SET temp_directory = '{db.parent / 'duckdb_tmp'}'")
    return con


def stage_generate(args) -> dict:
    t0 = time.perf_counter()
    info = generate_export(args.workdir / "export", args.pages, images=args.images, seed=args.seed)
    info["seconds"] = time.perf_counter() - t0
    if args.repull_pages:
        t1 = time.perf_counter()
        rep = generate_export(args.workdir / "repull", args.pages + args.repull_pages, images=args.images,
                              seed=args.seed, start=args.pages, with_subjects=False)
        info["repull_rows"] = rep["rows"]
        info["repull_seconds"] = time.perf_counter() - t1
    return info


def _ingest_all(con, folder: Path, with_talk: bool = True) -> dict:
    """Ingest the subjects and Talk exports (when ``with_talk``), then the classifications export."""
    from ww_assets.zooniverse import ingest as rt

    times = {}
    if with_talk:
        t = time.perf_counter()
        rt.ingest_subjects_csv(con, folder / "weird-and-wonderful-subjects.csv", pseudonym_key=BENCH_KEY)
        times["ingest_subjects_s"] = time.perf_counter() - t
        t = time.perf_counter()
        rt.ingest_talk_comments(con, folder / f"project-{PROJECT_ID}-comments.json", pseudonym_key=BENCH_KEY)
        rt.ingest_talk_tags(con, folder / f"project-{PROJECT_ID}-tags.json", pseudonym_key=BENCH_KEY)
        times["ingest_talk_s"] = time.perf_counter() - t
    t, c = time.perf_counter(), _cpu()
    r = rt.ingest_classifications_csv(con, folder / "weird-and-wonderful-classifications.csv",
                                      pseudonym_key=BENCH_KEY)
    times["ingest_classifications_s"] = time.perf_counter() - t
    times["ingest_classifications_cpu_s"] = _cpu() - c
    times["classifications_new"] = r.rows_new
    times["classifications_quarantined"] = r.rows_quarantined
    return times


def _consensus(con, full: bool, partition_exposures: int) -> dict:
    from ww_assets.consensus import build as consensus

    out = {}
    t, c = time.perf_counter(), _cpu()
    res = consensus.build_all(con, full=full, partition_exposures=partition_exposures)
    out["consensus_s"] = time.perf_counter() - t
    out["consensus_cpu_s"] = _cpu() - c
    for name, r in res.items():
        out[f"{name}_s"] = round(r.seconds, 3)
        out[f"{name}_mode"] = r.mode
        if r.stages:
            out[f"{name}_stages"] = r.stages
        if r.stages_cpu:
            out[f"{name}_stages_cpu"] = r.stages_cpu
    out["images"] = res["volunteer_consensus"].rows_total
    out["images_updated"] = res["volunteer_consensus"].rows_changed
    return out


def stage_e2e(args) -> dict:
    db = args.workdir / "warehouse.duckdb"
    for p in (db, Path(str(db) + ".wal")):
        if p.exists():
            p.unlink()
    con = _connect(db, args.memory_limit)
    t0, c0 = time.perf_counter(), _cpu()
    out = _ingest_all(con, args.workdir / "export")
    t1, c1 = time.perf_counter(), _cpu()
    out.update(_consensus(con, False, args.partition_exposures))
    out["ingest_s"], out["ingest_cpu_s"] = t1 - t0, c1 - c0
    out["e2e_s"], out["e2e_cpu_s"] = time.perf_counter() - t0, _cpu() - c0
    # the classification export alone (subjects and Talk were ingested first, as a project has them before
    # its first classification): its ingest plus every consensus table
    out["e2e_classifications_s"] = out["ingest_classifications_s"] + out["consensus_s"]
    out["e2e_classifications_cpu_s"] = out["ingest_classifications_cpu_s"] + out["consensus_cpu_s"]
    con.close()
    out["peak_rss_gb"] = _peak_gb()
    return out


def stage_consensus(args) -> dict:
    con = _connect(args.workdir / "warehouse.duckdb", args.memory_limit)
    out = _consensus(con, True, args.partition_exposures)
    con.close()
    out["peak_rss_gb"] = _peak_gb()
    return out


def stage_incremental(args) -> dict:
    con = _connect(args.workdir / "warehouse.duckdb", args.memory_limit)
    t0, c0 = time.perf_counter(), _cpu()
    out = _ingest_all(con, args.workdir / "repull", with_talk=False)
    out["ingest_s"], out["ingest_cpu_s"] = time.perf_counter() - t0, _cpu() - c0
    out.update(_consensus(con, False, args.partition_exposures))
    con.close()
    out["peak_rss_gb"] = _peak_gb()
    return out


def _count_page(shown: dict, selected: dict, subject_data: str, annotations: str) -> None:
    """The notebook's per-row work: json.loads of both columns, count the page's images and its valid clicks."""
    data = json.loads(subject_data)
    page = [int(x) for x in next(iter(data.values()))["#group_subject_ids"].split("-")]
    for s in page:
        shown[s] = shown.get(s, 0) + 1
    on_page = set(page)
    for task in json.loads(annotations):
        if task.get("task") == "T0":
            for v in task.get("value") or []:
                s = int(v["subject"])
                if s in on_page:
                    selected[s] = selected.get(s, 0) + 1


def baseline_row_by_row(csv_path: Path, max_rows: int, style: str = "iterrows") -> dict:
    """The original notebook's approach: pandas reads the CSV, Python parses the JSON of every row.

    Counts per image the pages that showed it and the pages where it was clicked. It does *less* than the
    DuckDB path: no per-volunteer deduplication, no pseudonyms, no quarantine, no storage. ``style``:
    ``iterrows`` is the obvious notebook loop (``for _, row in df.iterrows()``); ``columns`` is the same work
    over the two columns zipped, the fastest plain-Python form of it.
    """
    import pandas as pd

    t0, c0 = time.perf_counter(), _cpu()
    shown: dict[int, int] = {}
    selected: dict[int, int] = {}
    n = 0
    for chunk in pd.read_csv(csv_path, dtype=str, keep_default_na=False, chunksize=100_000, nrows=max_rows):
        if style == "iterrows":
            for _, row in chunk.iterrows():
                _count_page(shown, selected, row["subject_data"], row["annotations"])
                n += 1
        else:
            for sd, ann in zip(chunk["subject_data"], chunk["annotations"]):
                _count_page(shown, selected, sd, ann)
                n += 1
    dt = time.perf_counter() - t0
    return {"baseline_rows": n, "baseline_s": dt, "baseline_cpu_s": _cpu() - c0, "baseline_pages_per_s": n / dt,
            "baseline_images": len(shown),
            "peak_rss_gb": _peak_gb()}


def stage_baseline(args) -> dict:
    path = args.workdir / "export" / "weird-and-wonderful-classifications.csv"
    out = {}
    for style in ("iterrows", "columns"):
        out[style] = baseline_row_by_row(path, args.baseline_pages, style)
    return out


STAGES = {"generate": stage_generate, "e2e": stage_e2e, "consensus": stage_consensus,
          "incremental": stage_incremental, "baseline": stage_baseline}


# ------------------------------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------------------------------

def machine() -> str:
    import duckdb

    from ww_assets.machine import machine_line

    return f"{machine_line()}, DuckDB {duckdb.__version__}"


def _run_stage(name: str, argv: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--stage", name, *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"stage {name} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=1_000_000)
    ap.add_argument("--images", type=int, default=None, help="distinct images (default: pages*16/20)")
    ap.add_argument("--repull-pages", type=int, default=None, help="pages in the re-pull (default: pages/100)")
    ap.add_argument("--baseline-pages", type=int, default=300_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=Path("/work/bench_consensus"))
    ap.add_argument("--memory-limit", default="3.5GB",
                    help="DuckDB memory_limit for ingest and consensus (3.5GB keeps peak RSS under the 4 GB target)")
    ap.add_argument("--partition-exposures", type=int, default=None)
    ap.add_argument("--stages", default="generate,e2e,consensus,incremental,baseline")
    ap.add_argument("--keep", action="store_true", help="keep the generated files and warehouse")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.repull_pages is None:
        args.repull_pages = max(1, args.pages // 100)
    if args.stage:
        print(json.dumps(STAGES[args.stage](args), default=str))
        return 0

    passthrough = ["--pages", str(args.pages), "--repull-pages", str(args.repull_pages), "--baseline-pages",
                   str(args.baseline_pages), "--seed", str(args.seed), "--workdir", str(args.workdir),
                   "--memory-limit", args.memory_limit]
    if args.partition_exposures:
        passthrough += ["--partition-exposures", str(args.partition_exposures)]
    if args.images:
        passthrough += ["--images", str(args.images)]
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    print(f"machine: {machine()}", flush=True)
    results: dict[str, dict] = {}
    try:
        for name in stages:
            if name == "generate":
                args.workdir.mkdir(parents=True, exist_ok=True)
            results[name] = r = _run_stage(name, passthrough)
            print(f"[{name}] load {os.getloadavg()[0]:.2f} " + json.dumps(r, default=str), flush=True)
    finally:
        if not args.keep and "generate" in stages:
            shutil.rmtree(args.workdir, ignore_errors=True)
    _report(args, results)
    return 0


def _report(args, results: dict) -> None:
    n = args.pages
    print("\n== consensus_scale: summary ==")
    print(f"machine: {machine()}")
    g = results.get("generate")
    if g:
        size = g["classifications_bytes"]
        print(f"export: {n:,} pages, {g['shape']['images']:,} images, {size / 2**30:.2f} GiB "
              f"({size / max(n, 1):.0f} bytes/row); generated in {g['seconds']:.1f} s")
    e = results.get("e2e")
    if e:
        print(f"end to end, classification export -> consensus tables (subjects and Talk already ingested): "
              f"{e['e2e_classifications_s']:.1f} s = {n / e['e2e_classifications_s']:,.0f} pages/s "
              f"({e['e2e_classifications_cpu_s']:.1f} CPU-s)")
        print(f"end to end, all exports (subjects, Talk, classifications) -> consensus tables: {e['e2e_s']:.1f} s "
              f"= {n / e['e2e_s']:,.0f} pages/s ({e['e2e_cpu_s']:.1f} CPU-s); peak RSS {e['peak_rss_gb']:.2f} GiB")
        print(f"  ingest {e['ingest_s']:.1f} s / {e['ingest_cpu_s']:.1f} CPU-s (classifications "
              f"{e['ingest_classifications_s']:.1f} s / {e['ingest_classifications_cpu_s']:.1f} CPU-s, subjects "
              f"{e.get('ingest_subjects_s', 0):.1f} s, talk {e.get('ingest_talk_s', 0):.1f} s); "
              f"consensus {e['consensus_s']:.1f} s / {e['consensus_cpu_s']:.1f} CPU-s")
    c = results.get("consensus")
    if c:
        print(f"raw tables -> consensus tables (full rebuild): {c['consensus_s']:.1f} s = "
              f"{n / c['consensus_s']:,.0f} pages/s ({c['consensus_cpu_s']:.1f} CPU-s); peak RSS "
              f"{c['peak_rss_gb']:.2f} GiB; subject_consensus {c.get('subject_consensus_s')} s; "
              f"volunteer_consensus CPU-s by stage {c.get('volunteer_consensus_stages_cpu')}")
    i = results.get("incremental")
    if i:
        print(f"incremental re-pull of {args.repull_pages:,} pages: ingest {i['ingest_s']:.2f} s, consensus update "
              f"{i['consensus_s']:.2f} s / {i['consensus_cpu_s']:.1f} CPU-s ({i['images_updated']:,} images updated); "
              f"peak RSS {i['peak_rss_gb']:.2f} GiB; CPU-s by stage {i.get('volunteer_consensus_stages_cpu')}")
    b = results.get("baseline")
    if b:
        for style, what in (("iterrows", "the notebook's iterrows loop"), ("columns", "a zip over the two columns")):
            r = b[style]
            print(f"row-by-row pandas baseline, {what}: {r['baseline_rows']:,} pages in {r['baseline_s']:.1f} s = "
                  f"{r['baseline_pages_per_s']:,.0f} pages/s ({r['baseline_cpu_s']:.1f} CPU-s)")
            if not e:
                continue
            for label, key in (("classification export", "e2e_classifications"), ("all exports", "e2e")):
                ratio = (n / e[f"{key}_s"]) / r["baseline_pages_per_s"]
                per_cpu = (r["baseline_cpu_s"] / r["baseline_rows"]) / (e[f"{key}_cpu_s"] / n)
                print(f"  end-to-end speed-up over it ({label}): {ratio:.2f}x (wall); {per_cpu:.2f}x per CPU-second")

if __name__ == "__main__":
    raise SystemExit(main())
