"""The IO manager: ``defs.load_asset_value("catalogue")`` reads what an asset wrote (``ww_assets.analysis.load``).

Assets here write their own files atomically and return nothing (or a ``MaterializeResult``), so ``handle_output``
only accepts None; ``load_input`` reads the asset's file under the storage root, by the asset's name (and its
partition, the image batch, for ``anomaly_scores`` / ``cutouts`` / ``latent_vectors``). Registered as the
``io_manager`` resource by the ``@dg.definitions`` below (autoloaded with the rest of ``ww_assets/defs``).
"""

from __future__ import annotations

import dagster as dg

from ww_assets.defs.resources import StorageResource, from_env


class StorageIOManager(dg.ConfigurableIOManager):
    """Reads an asset's output from the storage root (``storage``); outputs are written by the assets themselves."""

    storage: StorageResource

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        if obj is not None:
            raise TypeError(f"{context.asset_key.to_user_string() if context.has_asset_key else context.name}: "
                            f"returned a {type(obj).__name__}; assets here write their own files and return None or "
                            "a MaterializeResult")

    def load_input(self, context: dg.InputContext):
        from ww_assets.analysis.load import load

        name = context.asset_key.path[-1]
        batch = context.asset_partition_key if context.has_asset_partitions else None
        return load(name, self.storage.layout.root, batch=batch)


@dg.definitions
def io_manager() -> dg.Definitions:
    return dg.Definitions(resources={"io_manager": StorageIOManager(storage=StorageResource(root=from_env("WW_DATA_ROOT")))})
