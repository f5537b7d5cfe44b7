"""Dagster layer for operations: the executor for a cluster, and recovering runs that died silently.

Executor (``executor_from_env``): by default Dagster's multiprocess executor (one machine). With
``WW_EXECUTOR=k8s`` every step runs in its own Kubernetes pod (dagster-k8s ``k8s_job_executor``); with
``WW_EXECUTOR=celery`` steps go to Celery workers (dagster-celery). ``WW_EXECUTOR_CONFIG`` names a YAML file
(deploy/k8s/executor.yaml, deploy/celery/executor.yaml) with the executor's config (``execution: config:``)
and how steps of the ``gpu`` concurrency pool are placed: ``gpu_step_k8s_config`` (node selector, tolerations, ``nvidia.com/gpu``
limit) for Kubernetes, ``gpu_queue`` (the Celery queue only GPU workers consume) for Celery. Which steps are GPU
steps is read from the assets' ``pool="gpu"``, so nothing is listed twice.

Dead runs:
A run killed with SIGKILL (``kill -9``, the out-of-memory killer, a machine that lost power) cannot write
its own failure. Its record stays "started" and, worse, the concurrency-pool slots it held (``gpu``,
``duckdb``) stay taken, so the next run of the same partition waits for a slot forever. Runs launched by
``dagster dev`` are watched by the code server, which marks a dead run worker failed; runs started from the
command line (``dagster asset materialize``, ``make demo``) have nobody watching.

``dead_run_reaper`` (a sensor, on by default, evaluated by the daemon every 15 s) and ``reap_dead_runs`` (the
same as a function; ``python -m ww_assets.defs.operations`` runs it once) find such runs and mark them failed,
naming the dead process, and hand their slots back. They act only on a single-machine instance (SQLite
storage): there every run's process lives on this host and "no such process" means dead. With PostgreSQL
storage (deploy/), runs may live on other machines; Dagster's own run monitoring handles them there.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

GPU_POOL = "gpu"

# Run states in which a process should exist.
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
    """The pid of the process that runs ``run_id``: the first engine event that names one ("Started process
    for run (pid: N)" from a launched run worker, or "Executing steps ... (pid: N)" from an executor)."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=50).records
    for record in records:
        event = record.event_log_entry.dagster_event
        data = getattr(event, "event_specific_data", None) if event else None
        metadata = getattr(data, "metadata", None) or {}
        pid = metadata.get("pid")
        if pid is not None:
            try:
                return int(getattr(pid, "value", pid))
            except (TypeError, ValueError):
                continue
    return None


def _process_gone(pid: int, run_started: float | None) -> str | None:
    """Why ``pid`` no longer runs the run (None when it still does)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return f"process {pid} has exited (zombie)"
        # A pid recycled by a later process is not our run worker.
        if run_started is not None and proc.create_time() > run_started + 1.0:
            return f"process {pid} exited (its pid now belongs to a newer process)"
        return None
    except psutil.NoSuchProcess:
        return f"process {pid} no longer exists"
    except psutil.AccessDenied:
        return None


def reap_dead_runs(instance: dg.DagsterInstance, min_age_seconds: float = 0.0) -> list[ReapedRun]:
    """Mark runs whose process is gone as failed and free their pool slots; returns what was done.

    Does nothing unless the instance is single-host (SQLite). A run that has not logged its process id yet is
    left alone; so are runs younger than ``min_age_seconds``.
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
        if pid is None:
            continue
        reason = _process_gone(pid, record.start_time)
        if reason is None:
            continue
        message = (f"Run worker died without reporting an end: {reason} (killed, out of memory, or its machine "
                   f"restarted). Marked failed by dead_run_reaper; its outputs were written atomically, so "
                   f"re-running the same selection is safe.")
        instance.report_engine_event(message, run)
        instance.report_run_failed(run, message)
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        reaped.append(ReapedRun(run.run_id, pid, reason))
    return reaped


@dg.sensor(
    name="dead_run_reaper",
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=("Marks runs whose process died (SIGKILL, out of memory) as failed and frees their gpu/duckdb "
                 "pool slots, so a re-run is never blocked by a dead run. Single-machine (SQLite) instances "
                 "only; elsewhere Dagster's run monitoring does this."),
)
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


# --------------------------------------------------------------------------------------------------------------
# Executor for a cluster
# --------------------------------------------------------------------------------------------------------------

def gpu_op_names(assets) -> list[str]:
    """Names of the ops (steps) of ``assets`` that are in the ``gpu`` pool."""
    names = set()
    for a in assets:
        node = getattr(a, "node_def", None)
        if node is not None and GPU_POOL in (getattr(node, "pools", None) or {getattr(node, "pool", None)}):
            names.add(node.name)
    return sorted(names)


def _project_assets() -> list:
    from ww_assets.defs import analysis, consensus, images, model, scores, zooniverse

    return [a for m in (zooniverse, consensus, images, model, scores, analysis) for a in (m.defs.assets or [])]


def _executor_config(settings: dict) -> dict:
    """The executor config block: ``execution: config:`` (the layout dagster-celery's worker CLI reads too)."""
    return dict(((settings.get("execution") or {}).get("config")) or {})


def _load_executor_file(path: str) -> dict:
    import yaml

    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"WW_EXECUTOR_CONFIG={path!r}: no such file (see deploy/README.md)")
    data = yaml.safe_load(file.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{file}: expected a mapping with 'execution: config:' and the gpu placement")
    return data


def k8s_executor(settings: dict, gpu_ops: list[str]):
    """dagster-k8s ``k8s_job_executor`` configured from ``settings``; GPU steps get ``gpu_step_k8s_config``."""
    from dagster_k8s import k8s_job_executor

    config = _executor_config(settings)
    gpu_cfg = settings.get("gpu_step_k8s_config") or {}
    per_step = dict(config.get("per_step_k8s_config") or {})
    for op in gpu_ops:
        per_step.setdefault(op, gpu_cfg)
    if per_step:
        config["per_step_k8s_config"] = per_step
    return k8s_job_executor.configured(config, name="k8s_gpu_pool")


def celery_executor(settings: dict):
    """dagster-celery's executor with steps of the ``gpu`` pool sent to the ``gpu_queue`` Celery queue."""
    from dagster._core.definitions.executor_definition import multiple_process_executor_requirements
    from dagster._core.execution.retries import RetryMode
    from dagster_celery.executor import CELERY_CONFIG, CeleryExecutor, _submit_task

    gpu_queue = str(settings.get("gpu_queue") or "gpu")

    class PoolRoutedCeleryExecutor(CeleryExecutor):
        def execute(self, plan_context, execution_plan):
            from dagster_celery.core_execution_loop import core_celery_execution_loop

            def submit(app, context, step, queue, priority, known_state):
                if getattr(step, "pool", None) == GPU_POOL:
                    queue = gpu_queue
                return _submit_task(app, context, step, queue, priority, known_state)

            return core_celery_execution_loop(plan_context, execution_plan, step_execution_fn=submit)

    @dg.executor(name="celery_gpu_pool", config_schema=CELERY_CONFIG,
                 requirements=multiple_process_executor_requirements())
    def _celery(init_context):
        cfg = init_context.executor_config
        return PoolRoutedCeleryExecutor(broker=cfg.get("broker"), backend=cfg.get("backend"),
                                        config_source=cfg.get("config_source"), include=cfg.get("include"),
                                        retries=RetryMode.from_config(cfg["retries"]))

    return _celery.configured(_executor_config(settings), name="celery_gpu_pool")


def executor_from_env(environ=os.environ, assets=None):
    """The executor ``WW_EXECUTOR`` asks for (None: Dagster's default, multiprocess on one machine)."""
    kind = (environ.get("WW_EXECUTOR") or "").strip().lower()
    if kind in ("", "default", "multiprocess"):
        return None
    if kind not in ("k8s", "celery"):
        raise ValueError(f"WW_EXECUTOR={kind!r}: expected multiprocess (default), k8s or celery")
    path = environ.get("WW_EXECUTOR_CONFIG")
    settings = _load_executor_file(path) if path else {}
    if kind == "k8s":
        return k8s_executor(settings, gpu_op_names(assets if assets is not None else _project_assets()))
    return celery_executor(settings)


defs = dg.Definitions(sensors=[dead_run_reaper], executor=executor_from_env())


def main() -> int:
    """``python -m ww_assets.defs.operations``: reap dead runs once (no daemon needed)."""
    with dg.DagsterInstance.get() as instance:
        if not is_single_host_instance(instance):
            print("instance storage is not SQLite: runs may live on other machines; use Dagster's run "
                  "monitoring instead (deploy/README.md)", file=sys.stderr)
            return 2
        reaped = reap_dead_runs(instance, min_age_seconds=0)
        for r in reaped:
            print(f"{r.run_id}: {r.reason}; marked failed, pool slots freed")
        print(f"{len(reaped)} dead run(s) found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
