"""How much the Dagster instance database grows per demo run (target: under 2 MB per run of the whole graph).

In a fresh DAGSTER_HOME (the project's dagster.yaml: SQLite run, event-log and schedule storage) and a fresh
storage root, runs the README's demo (``python -m ww_assets.demo``: every asset on the embedded sample, phase by
phase, one run per phase and per image batch) twice, as subprocesses, and measures every file under DAGSTER_HOME
before, between and after: ``history/runs.db`` (runs), ``history/runs/*.db`` (one event log per run, and
``index.db``), ``schedules/``, ``storage/`` (local artefacts and compute logs), ``logs/``. The bytes added by the
second run are the figure: the first also creates the databases' schemas and the sample. What the second run's
event logs hold is broken down by event type and by asset (bytes of the serialised events), so the largest
contributor is named when the target is missed.

Run it as a module from the repository root (it imports only ``ww_assets``):

    python -m benchmarks.instance_growth                    # size small
    python -m benchmarks.instance_growth --size tiny --json out.json
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from ww_assets.harness.services import REPO_ROOT, dagster_env, python_cmd, write_instance_yaml
from ww_assets.machine import machine_info

TARGET_BYTES = 2 * 2**20


def machine() -> dict:
    import dagster

    return {**machine_info(), "dagster": dagster.__version__}


def part_of(rel: Path) -> str:
    """The instance-storage part a file under DAGSTER_HOME belongs to."""
    parts = rel.parts
    side = " (-wal, -shm)" if parts[-1].endswith(("-wal", "-shm")) else ""
    if parts[0] == "history" and len(parts) == 2:
        return f"history/{parts[1].split('-')[0]}{side}"            # runs.db
    if parts[:2] == ("history", "runs"):
        return ("history/runs/index.db" if parts[-1].startswith("index.db") else "history/runs/<run>.db") + side
    return parts[0] + ("/" if len(parts) > 1 else "")


def snapshot(home: Path) -> dict[str, int]:
    """Bytes of every file under ``home`` (relative path -> size), the instance's own dagster.yaml left out."""
    out = {}
    for p in home.rglob("*"):
        if p.is_file() and p.name != "dagster.yaml":
            out[str(p.relative_to(home))] = p.stat().st_size
    return out


def by_part(files: dict[str, int]) -> dict[str, int]:
    parts: dict[str, int] = defaultdict(int)
    for rel, size in files.items():
        parts[part_of(Path(rel))] += size
    return dict(sorted(parts.items()))


def growth(before: dict[str, int], after: dict[str, int]) -> dict:
    added = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    removed = {k: -v for k, v in before.items() if k not in after}
    delta = {**added, **removed}
    return {"bytes": sum(delta.values()), "by_part": by_part(delta),
            "new_files": sum(1 for k in after if k not in before)}


def event_breakdown(home: Path, run_dbs: list[str]) -> dict:
    """What the event logs of the given per-run databases hold: bytes of serialised events by event type and
    by asset key (materialisations and their planned / observed events), and the event count."""
    by_type: dict[str, int] = defaultdict(int)
    by_asset: dict[str, int] = defaultdict(int)
    count = 0
    for rel in run_dbs:
        con = sqlite3.connect(f"file:{home / rel}?mode=ro&immutable=1", uri=True)  # no -shm left behind
        try:
            tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
            if "event_logs" not in tables:
                continue
            cols = {r[1] for r in con.execute("pragma table_info(event_logs)")}
            asset = "asset_key" if "asset_key" in cols else "null"
            for etype, akey, size, n in con.execute(
                    f"select dagster_event_type, {asset}, sum(length(event)), count(*) from event_logs "
                    "group by 1, 2"):
                by_type[str(etype or "log message")] += int(size or 0)
                if akey:
                    try:
                        key = json.loads(akey)
                        name = "/".join(key["path"] if isinstance(key, dict) else key)
                    except (ValueError, KeyError, TypeError):
                        name = str(akey)
                    by_asset[name] += int(size or 0)
                count += int(n)
        finally:
            con.close()
    top = lambda d: dict(sorted(d.items(), key=lambda kv: -kv[1]))  # noqa: E731
    return {"events": count, "event_bytes": sum(by_type.values()), "event_bytes_by_type": top(by_type),
            "event_bytes_by_asset": top(by_asset)}


def empty_event_db_bytes() -> int:
    """Bytes of a per-run event-log database holding no event: its schema (about 25 tables and indexes, a page
    each), what every run costs before it logs anything. Made with Dagster's own SQLite event-log storage."""
    import dagster as dg

    with dg.instance_for_test() as inst:
        storage = inst.event_log_storage
        with storage.run_connection("empty-run"):     # creates the run's database
            pass
        path = Path(storage.path_for_shard("empty-run"))
        return path.stat().st_size if path.exists() else 0


def run_demo(env: dict, size: str, log: Path) -> float:
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run(python_cmd("-m", "ww_assets.demo", "--size", size), env=env, cwd=REPO_ROOT,
                              stdout=out, stderr=subprocess.STDOUT, timeout=3600)
    if proc.returncode != 0:
        tail = log.read_text()[-4000:]
        raise SystemExit(f"`python -m ww_assets.demo --size {size}` failed (exit {proc.returncode}); "
                         f"log {log}:\n{tail}")
    return time.monotonic() - started


def runs_in(home: Path) -> int:
    db = home / "history" / "runs.db"
    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True)
    try:
        return int(con.execute("select count(*) from runs").fetchone()[0])
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", help="embedded sample size (tiny, small, ...)")
    parser.add_argument("--work", type=Path, default=None, help="folder for DAGSTER_HOME and the storage root "
                        "(default: a temporary folder, kept and printed)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="ww-instance-growth-"))
    home, root = work / "dagster_home", work / "data"
    root.mkdir(parents=True, exist_ok=True)
    write_instance_yaml(home)
    # The demo's own settings (a shipped model, the sample); dagster_env's CI preset only matters when training.
    env = dagster_env(home, root, sample_size=args.size)
    print(f"DAGSTER_HOME {home}, storage root {root}, sample '{args.size}'", flush=True)

    snaps, seconds, runs = [snapshot(home)], [], [runs_in(home)]
    for i in (1, 2):
        seconds.append(run_demo(env, args.size, work / f"demo-{i}.log"))
        snaps.append(snapshot(home))
        runs.append(runs_in(home))
        print(f"demo run {i}: {seconds[-1]:.0f} s, {runs[-1] - runs[-2]} Dagster runs, instance "
              f"{sum(snaps[-1].values()) / 2**20:.2f} MiB", flush=True)
    first, second = growth(snaps[0], snaps[1]), growth(snaps[1], snaps[2])
    (work / "snapshots.json").write_text(json.dumps(snaps))
    new_run_dbs = [k for k in snaps[2] if k not in snaps[1] and part_of(Path(k)) == "history/runs/<run>.db"]
    result = {
        "machine": machine(), "size": args.size, "work": str(work),
        "demo_seconds": [round(s, 1) for s in seconds], "dagster_runs_per_demo": [runs[1] - runs[0],
                                                                                  runs[2] - runs[1]],
        "first_run": first, "second_run": second,
        "second_run_events": event_breakdown(home, new_run_dbs),
        "empty_run_db_bytes": empty_event_db_bytes(),
        "instance_total_bytes": sum(snaps[2].values()), "instance_by_part": by_part(snaps[2]),
        "target_bytes": TARGET_BYTES, "target_met": second["bytes"] < TARGET_BYTES,
    }
    print(json.dumps(result, indent=2))
    n_runs = max(1, result["dagster_runs_per_demo"][1])
    events = result["second_run_events"]
    print(f"\nsecond demo run added {second['bytes'] / 2**20:.2f} MiB to the instance "
          f"({second['bytes']:,} bytes; {n_runs} Dagster run{'s' if n_runs != 1 else ''}, {second['bytes'] / n_runs / 2**10:.0f} KiB per run); "
          f"target < 2 MiB: {'met' if result['target_met'] else 'NOT met'}. Its {events['events']} events are "
          f"{events['event_bytes'] / 2**10:.0f} KiB of serialised JSON; an empty per-run database is "
          f"{result['empty_run_db_bytes'] / 2**10:.0f} KiB of schema")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
