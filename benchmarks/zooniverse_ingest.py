"""Classifications ingest throughput: ``ingest_classifications_csv`` on a W&W-format export of N pages.

    python benchmarks/zooniverse_ingest.py                      # 1,000,000 pages (~0.75 GB), then extrapolates
    python benchmarks/zooniverse_ingest.py --pages 10000000     # the full 10M-page figure (~7.5 GB of disk)

The export is written by ``ww_assets.simulation.scale_exports``' generator (the same file the end-to-end consensus
benchmark ingests: 16-image pages, clicks in annotation T0, realistic metadata JSON, ~700 bytes a row). Each run
ingests into a fresh warehouse in its own process (so peak RSS is the ingest's own) and is followed by a re-read of
the same file (every row already stored: the 6-hourly re-pull case). Runs with and without the classification
metadata (``keep_metadata``). Prints one line per figure, the linear extrapolation to 10M pages, and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def machine() -> str:
    import duckdb

    from ww_assets.machine import machine_line

    return f"{machine_line()}, DuckDB {duckdb.__version__}"


def run_ingest(args) -> dict:
    """(subprocess) ingest the file twice into a fresh warehouse; print a JSON line of figures."""
    import duckdb

    from ww_assets.zooniverse.ingest.classifications import ingest_classifications_csv

    db = Path(args.workdir) / f"warehouse-{args.keep_metadata}.duckdb"
    for stale in (db, db.with_suffix(".duckdb.wal")):
        stale.unlink(missing_ok=True)
    con = duckdb.connect(str(db))
    con.execute(f"SET threads = {int(args.threads)}")
    con.execute(f"SET memory_limit = '{args.memory_limit}'")
    con.execute(f"SET temp_directory = '{Path(args.workdir) / 'duckdb_tmp'}'")
    out = {}
    for label in ("first", "reread"):
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        report = ingest_classifications_csv(con, args.csv, pseudonym_key="benchmark-key",
                                            keep_metadata=args.keep_metadata == "yes")
        wall = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        out[label] = {"wall_s": wall, "cpu_s": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
                      "rows_new": report.rows_new, "rows_duplicate": report.rows_duplicate,
                      "rows_quarantined": report.rows_quarantined}
    con.close()
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out["db_bytes"] = db.stat().st_size
    db.unlink(missing_ok=True)
    print("RESULT " + json.dumps(out), flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=1_000_000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ww_bench_ingest"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--memory-limit", default="3GB")
    ap.add_argument("--keep-metadata", choices=["yes", "no", "both"], default="both")
    ap.add_argument("--csv", help=argparse.SUPPRESS)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        run_ingest(args)
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    export = args.workdir / f"export-{args.pages}"
    csv_path = export / "weird-and-wonderful-classifications.csv"
    if not csv_path.exists():
        from ww_assets.simulation.scale_exports import generate_export

        t0 = time.perf_counter()
        generate_export(export, args.pages, with_subjects=False)
        print(f"generated {args.pages:,} pages in {time.perf_counter() - t0:.1f} s")
    size = csv_path.stat().st_size
    print(f"export: {csv_path} {size / 1e9:.2f} GB, {size / args.pages:.0f} bytes/row")
    print(f"machine before: {machine()}")
    modes = ["yes", "no"] if args.keep_metadata == "both" else [args.keep_metadata]
    for mode in modes:
        cmd = [sys.executable, __file__, "--child", "--csv", str(csv_path), "--workdir", str(args.workdir),
               "--threads", str(args.threads), "--memory-limit", args.memory_limit, "--keep-metadata", mode,
               "--pages", str(args.pages)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not line:
            print(proc.stdout, proc.stderr)
            return 1
        r = json.loads(line[0][7:])
        first, again = r["first"], r["reread"]
        scale = 10_000_000 / args.pages
        print(f"keep_metadata={mode}: ingest {args.pages:,} pages in {first['wall_s']:.2f} s wall "
              f"({first['cpu_s']:.2f} s CPU, {args.pages / first['wall_s'] / 1e3:.0f} k rows/s, "
              f"{size / first['wall_s'] / 1e6:.0f} MB/s), new {first['rows_new']:,}, quarantined "
              f"{first['rows_quarantined']:,}; re-read (all stored) {again['wall_s']:.2f} s; "
              f"peak RSS {r['peak_rss_gib']:.2f} GiB; warehouse {r['db_bytes'] / 1e6:.0f} MB")
        print(f"keep_metadata={mode}: extrapolated to 10,000,000 pages: {first['wall_s'] * scale:.1f} s first ingest, "
              f"{again['wall_s'] * scale:.1f} s re-read ({args.threads} threads)")
    print(f"machine after: {machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
