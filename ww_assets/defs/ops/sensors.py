"""Recovering runs that died silently: the ``dead_run_reaper`` sensor (and ``reap_dead_runs`` for the CLI).

A run killed with SIGKILL (``kill -9``, the out-of-memory killer, a machine that lost power) cannot write its own
failure. Its record stays "started" and, worse, the pool slots it held (``gpu``, ``duckdb``) stay taken, so the
next run of the same steps would wait for a slot forever. Runs launched by ``dagster dev`` are watched by the code
server; runs started from the command line (``dagster asset materialize``, ``make demo``) have nobody watching.

Three things hand such slots back, all deciding liveness the same way (``ww_assets.defs.ops.reclaim``: a run is
dead only when it ran on this machine and none of its processes exists any more):

* every run, before its steps wait for a slot (the executor's pool guard, ``ww_assets.defs.ops.executor``);
* this sensor, every 15 s while the daemon runs;
* ``python -m ww_assets.defs.ops`` once by hand, and ``python -m ww_assets.defs.ops free RUN_ID`` for a run this
  machine cannot judge (it ran on another machine).
"""

from dataclasses import dataclass

import dagster as dg

from ww_assets.defs.ops.reclaim import (  # noqa: F401  (re-exported: the names callers used before reclaim.py)
    ACTIVE_STATUSES,
    is_single_host_instance,
    process_gone,
    reap_runs,
    run_worker_pid,
)


@dataclass(frozen=True)
class ReapedRun:
    run_id: str
    pid: int | None
    reason: str


def reap_dead_runs(instance: dg.DagsterInstance, min_age_seconds: float = 0.0,
                   by: str = "dead_run_reaper") -> list[ReapedRun]:
    """Mark active runs whose processes are gone from this machine as failed and free their pool slots; returns
    what was done. Runs on other machines, and runs younger than ``min_age_seconds``, are left alone."""
    reaped = []
    for run_id, liveness in reap_runs(instance, by=by, min_age_seconds=min_age_seconds):
        reaped.append(ReapedRun(run_id, liveness.pid, liveness.reason))
    return reaped


@dg.sensor(name="dead_run_reaper", minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING,
           description=("Marks runs whose processes died on this machine (SIGKILL, out of memory) as failed and "
                        "frees their gpu/duckdb pool slots, so a re-run is never blocked by a dead run. Runs on "
                        "other machines are left to Dagster's run monitoring."))
def dead_run_reaper(context: dg.SensorEvaluationContext):
    reaped = reap_dead_runs(context.instance)
    for r in reaped:
        context.log.warning(f"run {r.run_id}: {r.reason}; marked failed, pool slots freed")
    if reaped:
        return dg.SkipReason(f"marked {len(reaped)} dead run(s) failed: " + ", ".join(r.run_id for r in reaped))
    return dg.SkipReason("no dead runs")
