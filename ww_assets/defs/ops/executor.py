"""The executor, chosen by ``WW_EXECUTOR``: Dagster's multiprocess executor on one machine (default), dagster-k8s's
``k8s_job_executor`` (a pod per step) or dagster-celery's executor (steps on Celery workers).

``WW_EXECUTOR_CONFIG`` names a YAML file (deploy/k8s/executor.yaml, deploy/celery/executor.yaml) with the
executor's own config under ``execution: config:`` and, for Kubernetes, ``gpu_step_k8s_config``, added to every
step of the ``gpu`` pool so those pods ask for a GPU. On Celery, steps of the ``gpu`` pool carry dagster-celery's
queue tag (``ww_assets.defs.pools.GPU_OP_TAGS``), so only GPU workers take them. Which steps are GPU steps is read
from the assets' ``pool``: nothing is listed twice.
"""


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


__all__ = ["executor_from_env", "gpu_op_names"]
