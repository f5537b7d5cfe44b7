"""Recovering runs that died silently: the ``dead_run_reaper`` sensor (and ``reap_dead_runs`` for the CLI).

A run killed with SIGKILL (``kill -9``, the out-of-memory killer, a machine that lost power) cannot write its own
failure. Its record stays "started" and, worse, the pool slots it held (``gpu``, ``duckdb``) stay taken, so the
next run of the same steps waits for a slot forever. Runs launched by ``dagster dev`` are watched by the code
server; runs started from the command line (``dagster asset materialize``, ``make demo``) have nobody watching.

``reap_dead_runs`` finds such runs and marks them failed, naming the dead process, and hands their slots back.
It acts only on a single-machine instance (SQLite storage): there every run's process lives on this host and "no
such process" means dead. With PostgreSQL storage (deploy/), runs may live on other machines; Dagster's own run
monitoring handles them there. ``python -m ww_assets.defs.ops`` runs it once.
"""

import time
from dataclasses import dataclass

import dagster as dg

# run states in which a process should exist
_ACTIVE = (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)


@dataclass(frozen=True)
class ReapedRun:
    run_id: str
    pid: int
    reason: str


def is_single_host_instance(instance: dg.DagsterInstance) -> bool:
    """True when run storage is SQLite: the instance cannot be shared between machines."""
    return "sqlite" in type(instance.run_storage).__module__.lower()


def run_worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid of the process that runs ``run_id``: the first engine event that names one ("Started process for
    run (pid: N)" from a launched run worker, or "Executing steps ... (pid: N)" from an executor)."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=50).records
    for record in records:
        event = record.event_log_entry.dagster_event
        data = getattr(event, "event_specific_data", None) if event else None
        pid = (getattr(data, "metadata", None) or {}).get("pid")
        if pid is not None:
            try:
                return int(getattr(pid, "value", pid))
            except (TypeError, ValueError):
                continue
    return None


def process_gone(pid: int, run_started: float | None) -> str | None:
    """Why ``pid`` no longer runs the run (None when it still does)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return f"process {pid} has exited (zombie)"
        if run_started is not None and proc.create_time() > run_started + 1.0:  # a recycled pid
            return f"process {pid} exited (its pid now belongs to a newer process)"
        return None
    except psutil.NoSuchProcess:
        return f"process {pid} no longer exists"
    except psutil.AccessDenied:
        return None


def reap_dead_runs(instance: dg.DagsterInstance, min_age_seconds: float = 0.0) -> list[ReapedRun]:
    """Mark runs whose process is gone as failed and free their pool slots; returns what was done.

    Does nothing unless the instance is single-host (SQLite). A run that has not logged its process id yet is left
    alone; so are runs younger than ``min_age_seconds``.
    """
    if not is_single_host_instance(instance):
        return []
    reaped: list[ReapedRun] = []
    now = time.time()
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=list(_ACTIVE)), limit=500):
        run = record.dagster_run
        started = record.start_time or record.create_timestamp.timestamp()
        if now - started < min_age_seconds:
            continue
        pid = run_worker_pid(instance, run.run_id)
        reason = process_gone(pid, record.start_time) if pid is not None else None
        if reason is None:
            continue
        message = (f"Run worker died without reporting an end: {reason} (killed, out of memory, or its machine "
                   "restarted). Marked failed by dead_run_reaper; its outputs were written atomically, so "
                   "re-running the same selection is safe.")
        instance.report_engine_event(message, run)
        instance.report_run_failed(run, message)
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        reaped.append(ReapedRun(run.run_id, pid, reason))
    return reaped


@dg.sensor(name="dead_run_reaper", minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING,
           description=("Marks runs whose process died (SIGKILL, out of memory) as failed and frees their gpu/duckdb "
                        "pool slots, so a re-run is never blocked by a dead run. Single-machine (SQLite) instances "
                        "only; elsewhere Dagster's run monitoring does this."))
def dead_run_reaper(context: dg.SensorEvaluationContext):
    if not is_single_host_instance(context.instance):
        return dg.SkipReason("instance storage is shared between machines: Dagster's run monitoring handles dead "
                             "runs here")
    reaped = reap_dead_runs(context.instance)
    for r in reaped:
        context.log.warning(f"run {r.run_id}: {r.reason}; marked failed, pool slots freed")
    if reaped:
        return dg.SkipReason(f"marked {len(reaped)} dead run(s) failed: " + ", ".join(r.run_id for r in reaped))
    return dg.SkipReason("no dead runs")
