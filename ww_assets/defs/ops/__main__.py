"""``python -m ww_assets.defs.ops``: hand back the pool slots of dead runs (no daemon needed).

    python -m ww_assets.defs.ops              mark runs whose processes died on this machine failed, free their
                                              slots (what every run also does before it waits for a slot)
    python -m ww_assets.defs.ops free RUN_ID  the same for runs this machine cannot judge (they ran on another
                                              machine or container): you say they are dead. Refused for a run
                                              whose process is seen running here.
    python -m ww_assets.defs.ops pools        who holds each pool slot, and whether it is alive

DAGSTER_HOME selects the instance, as for every dagster command.
"""

from __future__ import annotations

import argparse
import sys

import dagster as dg

from ww_assets.defs.ops import reclaim
from ww_assets.defs.pools import DUCKDB_POOL, GPU_POOL


def _reap(instance: dg.DagsterInstance) -> int:
    reaped = reclaim.reap_runs(instance, by="python -m ww_assets.defs.ops")
    for run_id, liveness in reaped:
        print(f"{run_id}: {liveness.reason} ({liveness.where}); marked failed, pool slots freed")
    print(f"{len(reaped)} dead run(s) found")
    return 0


def _free(instance: dg.DagsterInstance, run_ids: list[str]) -> int:
    rc = 0
    for run_id in run_ids:
        liveness = reclaim.run_liveness(instance, run_id)
        if liveness.state == reclaim.ALIVE:
            print(f"{run_id}: not freed: {liveness.reason} ({liveness.where}). Stop it first "
                  f"(dagster run delete / kill the process) or wait for it to end.", file=sys.stderr)
            rc = 1
            continue
        if instance.get_run_record_by_id(run_id) is None and liveness.state == reclaim.UNKNOWN:
            # no record: only its slots are left to free
            reason = "its slots were freed by hand (the run has no record)"
        else:
            reason = (liveness.reason if liveness.state == reclaim.DEAD
                      else f"declared dead by hand ({liveness.reason})")
        reclaim.mark_dead_and_free(instance, run_id, reason, by="python -m ww_assets.defs.ops free")
        print(f"{run_id}: {reason}; marked ended, pool slots freed")
    return rc


def _pools(instance: dg.DagsterInstance) -> int:
    result = reclaim.check_pools(instance, [GPU_POOL, DUCKDB_POOL], run_id="", by="", reclaim=False)
    holders = result.dead + result.alive + result.unknown
    for holder in holders:
        print(f"{holder.pool}: [{holder.liveness.state}] {holder.describe()}")
    if result.dead:
        print("free the dead ones with: python -m ww_assets.defs.ops")
    if not holders:
        print("no run holds or waits for a gpu / duckdb slot")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ww_assets.defs.ops", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("reap", help="free the slots of runs whose processes died on this machine (the default)")
    free = sub.add_parser("free", help="free the slots of runs you know are dead (e.g. on another machine)")
    free.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    sub.add_parser("pools", help="who holds the gpu / duckdb slots")
    args = parser.parse_args(argv)
    with dg.DagsterInstance.get() as instance:
        if args.command == "free":
            return _free(instance, args.run_ids)
        if args.command == "pools":
            return _pools(instance)
        return _reap(instance)


if __name__ == "__main__":
    sys.exit(main())
