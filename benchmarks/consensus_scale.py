"""Volunteer consensus at scale: generate a W&W-format export, ingest it, build consensus, time every stage.

From the repository root:

    python -m benchmarks.consensus_scale --pages 10000000 --workdir /work/bench   # the BENCHMARKS.md figures
    python -m benchmarks.consensus_scale --pages 200000                           # a quick run

What it does (each stage in its own subprocess, so each peak-memory figure is that stage's own):

1. generate: a classifications CSV in the exact Zooniverse export format, a subjects CSV and Talk comments/tags
   JSON, written by ``ww_assets.simulation.scale_exports`` (its docstring gives the shape: 16-image pages, ~20
   exposures per image, so a 10M-page export has 8M images; heavy-tailed volunteers, repeats, invalid clicks).
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

BENCH_KEY = "benchmark-pseudonym-key-not-secret"


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
    # imported here only: ww_assets.simulation imports galsim, whose memory would count in every stage's peak RSS
    from ww_assets.simulation.scale_exports import generate_export

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
    from ww_assets.zooniverse.export_folder import find_export_file
    from ww_assets.zooniverse.ingest.classifications import ingest_classifications_csv
    from ww_assets.zooniverse.ingest.subjects import ingest_subjects_csv
    from ww_assets.zooniverse.ingest.talk import ingest_talk_comments, ingest_talk_tags

    times = {}
    if with_talk:
        t = time.perf_counter()
        ingest_subjects_csv(con, find_export_file(folder, "subjects"), pseudonym_key=BENCH_KEY)
        times["ingest_subjects_s"] = time.perf_counter() - t
        t = time.perf_counter()
        ingest_talk_comments(con, find_export_file(folder, "talk_comments"), pseudonym_key=BENCH_KEY)
        ingest_talk_tags(con, find_export_file(folder, "talk_tags"), pseudonym_key=BENCH_KEY)
        times["ingest_talk_s"] = time.perf_counter() - t
    t, c = time.perf_counter(), _cpu()
    r = ingest_classifications_csv(con, find_export_file(folder, "classifications"), pseudonym_key=BENCH_KEY)
    times["ingest_classifications_s"] = time.perf_counter() - t
    times["ingest_classifications_cpu_s"] = _cpu() - c
    times["classifications_new"] = r.rows_new
    times["classifications_quarantined"] = r.rows_quarantined
    return times


def _consensus(con, full: bool, partition_exposures: int) -> dict:
    from ww_assets.consensus.build import build_all

    out = {}
    t, c = time.perf_counter(), _cpu()
    res = build_all(con, full=full, partition_exposures=partition_exposures)
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
    from ww_assets.zooniverse.export_folder import find_export_file

    path = find_export_file(args.workdir / "export", "classifications")
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
    cmd = [sys.executable, "-m", "benchmarks.consensus_scale", "--stage", name, *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
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
