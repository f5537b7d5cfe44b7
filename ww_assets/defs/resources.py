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


def shared_resources() -> dict:
    """The resources every group uses, keyed as the assets ask for them."""
    root = default_root()
    layout = StorageLayout(root)
    return {
        "storage": StorageResource(root=root),
        "sample": SampleResource(
            size=os.environ.get("WW_SAMPLE_SIZE", "small"), seed=int(os.environ.get("WW_SAMPLE_SEED", "20211"))
        ),
        "duckdb": DuckDBResource(database=str(layout.warehouse)),
    }
