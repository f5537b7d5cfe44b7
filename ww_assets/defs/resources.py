"""Resources shared by every asset group: the storage root and the DuckDB warehouse in it."""

from __future__ import annotations

import os

import dagster as dg
from dagster_duckdb import DuckDBResource

from ww_assets.storage import StorageLayout, default_root


class StorageResource(dg.ConfigurableResource):
    """The storage root every asset writes under (``data/`` by default; ``WW_DATA_ROOT`` overrides).

    On more than one machine, point this at storage all steps can see (a shared volume); nothing else is
    assumed to be shared between steps.
    """

    root: str = "data"

    @property
    def layout(self) -> StorageLayout:
        return StorageLayout(self.root)


class SampleResource(dg.ConfigurableResource):
    """The embedded sample: simulated HSC-like cutouts and W&W exports, generated from a seed on first use.

    ``size`` is one of ``ww_assets.simulation.SAMPLE_SIZES`` (tiny, small, medium, large); ``seed`` fixes every
    byte of it. The sample is built once under ``<storage root>/sample`` and rebuilt only if size or seed change.
    """

    size: str = "small"
    seed: int = 20211

    def ensure(self, layout: StorageLayout):
        from ww_assets.simulation import ensure_sample

        return ensure_sample(layout.sample_dir, size=self.size, seed=self.seed)


def duckdb_connection_config(environ=os.environ) -> dict:
    """DuckDB settings for the warehouse from the environment: ``WW_DUCKDB_MEMORY_LIMIT`` (e.g. ``4GB``; DuckDB's
    default is 80% of RAM) and ``WW_DUCKDB_THREADS``. A full consensus build sizes its partitions from the memory
    limit, so a small limit costs time, not a failure."""
    config = {}
    memory = (environ.get("WW_DUCKDB_MEMORY_LIMIT") or "").strip()
    if memory:
        config["memory_limit"] = memory
    threads = (environ.get("WW_DUCKDB_THREADS") or "").strip()
    if threads:
        if not threads.isdigit() or int(threads) < 1:
            raise ValueError(f"WW_DUCKDB_THREADS={threads!r}: expected a whole number of threads, 1 or more")
        config["threads"] = int(threads)
    return config


def shared_resources() -> dict:
    """The resources every group uses, keyed as the assets ask for them."""
    root = default_root()
    layout = StorageLayout(root)
    return {
        "storage": StorageResource(root=root),
        "sample": SampleResource(
            size=os.environ.get("WW_SAMPLE_SIZE", "small"), seed=int(os.environ.get("WW_SAMPLE_SEED", "20211"))
        ),
        "duckdb": DuckDBResource(database=str(layout.warehouse), connection_config=duckdb_connection_config()),
    }
