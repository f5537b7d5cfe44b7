"""The concurrency pools (one slot each unless ``dagster.yaml`` or ``dagster instance concurrency set`` says
otherwise): steps that use the GPU, and steps that write the DuckDB warehouse (one writing process at a time)."""

GPU_POOL = "gpu"
DUCKDB_POOL = "duckdb"

#: the Celery queue of GPU steps (only GPU workers consume it, see deploy/celery/executor.yaml); set on every step of
#: the gpu pool as dagster-celery's own op tag, so the stock Celery executor routes them with no code of ours
GPU_CELERY_QUEUE = "gpu"
GPU_OP_TAGS = {"dagster-celery/queue": GPU_CELERY_QUEUE}
