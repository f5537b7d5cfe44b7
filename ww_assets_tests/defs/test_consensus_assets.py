"""The Dagster layer of the consensus group: materialised on the embedded sample with real resources, and the
warehouse resource's DuckDB settings from the environment."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest

from ww_assets.consensus import partitions
from ww_assets.consensus.reductions import REDUCTION_COLUMNS
from ww_assets.defs.resources import (ImageSourceResource, ModelSourceResource, SampleResource, StorageResource,
                                      WarehouseResource, ZooniverseResource)
from ww_assets.storage import StorageLayout


def sample_resources(tiny_sample: Path, storage_root: Path) -> dict:
    """Every resource of the code location, real, on the storage root, reading the embedded sample (the session's
    tiny one, copied in: the sample resource finds it built with this size and seed and does not build it again)."""
    layout = StorageLayout(storage_root)
    shutil.copytree(tiny_sample, layout.sample_dir)
    return {"storage": StorageResource(root=str(storage_root)), "sample": SampleResource(size="tiny", seed="20211"),
            "zooniverse": ZooniverseResource(source="sample"),
            "duckdb": WarehouseResource(database=str(layout.warehouse)),
            "images": ImageSourceResource(source="sample"), "model": ModelSourceResource()}


def test_assets_materialise_with_passing_checks(tiny_sample, storage_root):
    from ww_assets.definitions import defs

    resources = sample_resources(tiny_sample, storage_root)
    instance = dg.DagsterInstance.ephemeral()
    everything = list(defs.assets) + list(defs.asset_checks)
    # the raw tables first, pulled by the zooniverse group from the sample's exports
    pulled = dg.materialize(everything, resources=resources, instance=instance,
                            selection=dg.AssetSelection.groups("zooniverse"))
    assert pulled.success
    result = dg.materialize(everything, resources=resources, instance=instance,
                            selection=dg.AssetSelection.groups("consensus"))
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert evaluations and all(e.passed for e in evaluations), [
        (e.asset_key.to_user_string(), e.check_name, e.metadata) for e in evaluations if not e.passed]
    names = {(e.asset_key.to_user_string(), e.check_name) for e in evaluations}
    assert ("volunteer_consensus", "selected_within_shown") in names
    assert ("subject_consensus", "every_row_has_a_subject") in names
    mats = {m.asset_key.to_user_string(): m.metadata for m in result.get_asset_materialization_events()
            for m in [m.event_specific_data.materialization]}
    assert set(mats) == {"image_exposures", "volunteer_consensus", "talk_consensus", "subject_consensus",
                         "subject_reductions"}
    assert mats["volunteer_consensus"]["dagster/row_count"].value > 0
    assert "fraction_histogram" in mats["volunteer_consensus"]
    # the reductions CSV: one row per subject, panoptes_aggregation's columns, the warehouse's numbers
    layout = StorageLayout(storage_root)
    reductions = pd.read_csv(layout.analysis_file("subject_reductions"))
    assert list(reductions.columns) == REDUCTION_COLUMNS
    with duckdb.connect(str(layout.warehouse), read_only=True) as con:
        cons = con.execute("SELECT subject_id, shown, selected, fraction FROM consensus.subject_consensus "
                           "ORDER BY subject_id").df()
        workflows = [r[0] for r in con.execute("SELECT DISTINCT workflow_id FROM raw.classifications").fetchall()]
    assert reductions["subject_id"].tolist() == cons["subject_id"].tolist() and reductions["subject_id"].is_unique
    assert reductions["data.shown"].tolist() == cons["shown"].tolist()
    assert reductions["data.selected"].tolist() == cons["selected"].tolist()
    assert np.allclose(reductions["data.fraction"], cons["fraction"], equal_nan=True, rtol=0, atol=1e-15)
    assert len(workflows) == 1 and set(reductions["workflow_id"]) == set(workflows)
    assert set(reductions["task"]) == {"T0"} and mats["subject_reductions"]["counted"].value == "every classification"
    # nothing personal in the metadata
    text = json.dumps({k: str(v) for m in mats.values() for k, v in m.items()})
    assert "not-logged-in" not in text and "user_name" not in text


def test_warehouse_memory_limit_and_threads_come_from_the_environment(storage_root, monkeypatch):
    from ww_assets.defs.resources import resources as project_resources
    from ww_assets.settings import SettingError

    def warehouse() -> WarehouseResource:
        """The ``duckdb`` resource as the code location builds it from the environment."""
        return project_resources().resources["duckdb"]

    monkeypatch.delenv("WW_DUCKDB_MEMORY_LIMIT", raising=False)
    monkeypatch.delenv("WW_DUCKDB_THREADS", raising=False)
    assert warehouse().duckdb_config() == {}
    monkeypatch.setenv("WW_DUCKDB_MEMORY_LIMIT", "1GB")
    monkeypatch.setenv("WW_DUCKDB_THREADS", "1")
    resource = warehouse()
    assert resource.duckdb_config() == {"memory_limit": "1GB", "threads": 1}
    assert Path(resource.database) == StorageLayout(storage_root).warehouse      # under WW_DATA_ROOT
    with resource.get_connection() as con:
        assert con.execute("SELECT current_setting('threads')").fetchone()[0] == 1
        assert partitions.memory_limit_bytes(con) == pytest.approx(1e9, rel=0.01)
        assert partitions.partition_exposures_for(con) < partitions.DEFAULT_PARTITION_EXPOSURES
    monkeypatch.setenv("WW_DUCKDB_THREADS", "two")
    with pytest.raises(SettingError, match="WW_DUCKDB_THREADS='two'"):
        warehouse().duckdb_config()
