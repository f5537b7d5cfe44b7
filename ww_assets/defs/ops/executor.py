"""The executor, chosen by ``WW_EXECUTOR``: Dagster's multiprocess executor on one machine (default), dagster-k8s's
``k8s_job_executor`` (a pod per step) or dagster-celery's executor (steps on Celery workers).

``WW_EXECUTOR_CONFIG`` names a YAML file (deploy/k8s/executor.yaml, deploy/celery/executor.yaml) with the
executor's own config under ``execution: config:`` and, for Kubernetes, ``gpu_step_k8s_config``, added to every
step of the ``gpu`` pool so those pods ask for a GPU. On Celery, steps of the ``gpu`` pool carry dagster-celery's
queue tag (``ww_assets.defs.pools.GPU_OP_TAGS``), so only GPU workers take them. Which steps are GPU steps is read
from the assets' ``pool``: nothing is listed twice.

Whichever it is, ``guarded_executor`` wraps it in the pool guard (``PoolGuardExecutor``): before a run's steps
claim a ``gpu`` / ``duckdb`` slot it records where the run lives (run tags, ``ww_assets.defs.ops.reclaim``), then
hands back the slots of runs proven dead on this machine (a SIGKILLed ``dagster asset materialize``), marking
them failed. When every slot of a pool is held by runs it cannot judge (another machine) and no dagster-daemon
watches for dead runs, the run fails at once naming the command that frees them, instead of waiting forever.
While steps wait, a watcher re-checks every ``WATCH_INTERVAL_S`` seconds, so a holder that dies later is reclaimed
too. Live runs' slots are never touched.
"""

import threading

import dagster as dg

from ww_assets.defs.ops import reclaim

from ww_assets import settings
from ww_assets.defs.pools import GPU_POOL


def gpu_op_names(assets) -> list[str]:
    """Names of the ops (steps) of ``assets`` that are in the ``gpu`` pool."""
    names = set()
    for a in assets:
        node = getattr(a, "node_def", None)
        if node is not None and GPU_POOL in (getattr(node, "pools", None) or {getattr(node, "pool", None)}):
            names.add(node.name)
    return sorted(names)


def _settings_file(environ) -> dict:
    import yaml

    path = settings.get("WW_EXECUTOR_CONFIG", environ)
    if path is None:
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise settings.SettingError(f"WW_EXECUTOR_CONFIG={str(path)!r}: expected a mapping with 'execution: config:'")
    return data


def executor_from_env(environ=None, assets=()):
    """The executor ``WW_EXECUTOR`` asks for (None: Dagster's default, multiprocess on one machine)."""
    kind = settings.get("WW_EXECUTOR", environ)
    if kind == "multiprocess":
        return None
    file = _settings_file(environ)
    config = dict((file.get("execution") or {}).get("config") or {})
    if kind == "k8s":
        from dagster_k8s import k8s_job_executor

        per_step = dict(config.get("per_step_k8s_config") or {})
        for op in gpu_op_names(assets):
            per_step.setdefault(op, file.get("gpu_step_k8s_config") or {})
        if per_step:
            config["per_step_k8s_config"] = per_step
        return k8s_job_executor.configured(config, name="k8s_gpu_pool")
    from dagster_celery import celery_executor

    return celery_executor.configured(config, name="celery_gpu_queue")


# --------------------------------------------------------------------------------------------- the pool guard
#: seconds between the watcher's checks while a run's steps wait for a slot
WATCH_INTERVAL_S = 5.0


class PoolSlotHeldError(dg.DagsterError):
    """Every slot of a pool this run needs is held by runs whose liveness cannot be known from here."""


def plan_pools(execution_plan) -> dict[str, list[str]]:
    """pool -> the keys of the steps of ``execution_plan`` (to execute) that claim it."""
    pools: dict[str, list[str]] = {}
    for step in execution_plan.get_steps_to_execute_in_topo_order():
        pool = getattr(step, "pool", None) or step.tags.get("dagster/concurrency_key")
        if pool:
            pools.setdefault(pool, []).append(step.key)
    return pools


def _pools_claimed_per_step(instance: dg.DagsterInstance) -> bool:
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return False
    try:
        granularity = storage.get_pool_config().pool_granularity
    except Exception:  # noqa: BLE001 - an instance without pool config claims per step (Dagster's default)
        return True
    return getattr(granularity, "value", granularity) != "run"


class _Watcher:
    """While the inner executor runs: every ``interval`` s, if this run has steps waiting in a pool's queue,
    reclaim the slots of holders that have died since (on its own instance connection, in a thread, as the
    executor's loop does not return while it waits)."""

    def __init__(self, instance: dg.DagsterInstance, run: dg.DagsterRun, pools, interval: float):
        self._run, self._pools, self._interval = run, list(pools), interval
        self._stop = threading.Event()
        self._warned: set[str] = set()
        try:
            self._ref = instance.get_ref()
        except Exception:  # noqa: BLE001 - an ephemeral instance: one process, nobody else holds its slots
            self._ref = None
        self._thread = threading.Thread(target=self._loop, name="ww-pool-guard", daemon=True)

    def __enter__(self):
        if self._ref is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _waiting_pools(self, instance) -> list[str]:
        infos = [instance.event_log_storage.get_concurrency_info(p) for p in self._pools]
        return [i.concurrency_key for i in infos
                if any(s.run_id == self._run.run_id and s.assigned_timestamp is None for s in i.pending_steps)]

    def _loop(self) -> None:
        try:
            with dg.DagsterInstance.from_ref(self._ref) as instance:
                while not self._stop.wait(self._interval):
                    waiting = self._waiting_pools(instance)
                    if waiting:
                        self.check(instance, waiting)
        except Exception as exc:  # noqa: BLE001 - the guard must never break the run it guards
            import logging

            logging.getLogger(__name__).warning("pool guard watcher stopped: %r", exc)

    def check(self, instance, pools) -> None:
        result = reclaim.check_pools(instance, pools, self._run.run_id, by=f"run {self._run.run_id}")
        for holder in result.reclaimed:
            instance.report_engine_event(_reclaimed_message(holder), self._run)
        for holder in result.unknown:
            if holder.run_id not in self._warned:
                self._warned.add(holder.run_id)
                instance.report_engine_event(_unknown_message(holder), self._run)


def _reclaimed_message(holder: reclaim.Holder) -> str:
    return (f"Pool {holder.pool!r}: {holder.describe()}. That run is dead: marked it ended and handed its pool "
            "slots back; continuing.")


def _unknown_message(holder: reclaim.Holder) -> str:
    return (f"Pool {holder.pool!r}: waiting on {holder.describe()}. This process cannot tell whether it is alive; "
            f"if it is dead, free its slots with: {reclaim.FREE_COMMAND.format(run_id=holder.run_id)}")


class PoolGuardExecutor(dg.Executor):
    """``inner`` (any executor), preceded by the pool guard (see the module docstring)."""

    def __init__(self, inner: dg.Executor, watch_interval_s: float = WATCH_INTERVAL_S):
        self._inner = inner
        self._watch_interval_s = watch_interval_s

    @property
    def inner(self) -> dg.Executor:
        return self._inner

    @property
    def retries(self):
        return self._inner.retries

    @property
    def step_dependency_config(self):
        return self._inner.step_dependency_config

    def execute(self, plan_context, execution_plan):
        instance, run = plan_context.instance, plan_context.dagster_run
        # Where this run lives, before it claims anything: what lets a later run tell whether it died.
        instance.add_run_tags(run.run_id, reclaim.worker_tags())
        pools = plan_pools(execution_plan)
        if not pools or not _pools_claimed_per_step(instance):
            yield from self._inner.execute(plan_context, execution_plan)
            return
        result = reclaim.check_pools(instance, pools, run.run_id, by=f"run {run.run_id}")
        for holder in result.reclaimed:
            plan_context.log.warning(_reclaimed_message(holder))
        if result.stuck and not reclaim.dead_runs_are_watched(instance):
            raise PoolSlotHeldError(result.stuck_message(run.run_id, pools))
        for holder in result.unknown:
            plan_context.log.warning(_unknown_message(holder))
        with _Watcher(instance, run, pools, self._watch_interval_s):
            yield from self._inner.execute(plan_context, execution_plan)


def guarded_executor(executor_def: dg.ExecutorDefinition | None = None) -> dg.ExecutorDefinition:
    """``executor_def`` (None: Dagster's default, multiprocess or in-process by run config) behind the pool guard:
    same name, config and requirements, so run configs written for it still apply."""
    base = executor_def if executor_def is not None else dg.multi_or_in_process_executor
    create = base.executor_creation_fn

    def create_guarded(init_context) -> dg.Executor:
        return PoolGuardExecutor(create(init_context))

    return dg.ExecutorDefinition(name=base.name, config_schema=base.config_schema,
                                 requirements=base.get_requirements, executor_creation_fn=create_guarded,
                                 description=(base.description or "") + " (with the ww pool guard: slots of dead "
                                 "runs are handed back before steps wait)")


__all__ = ["PoolGuardExecutor", "PoolSlotHeldError", "executor_from_env", "gpu_op_names", "guarded_executor",
           "plan_pools"]
