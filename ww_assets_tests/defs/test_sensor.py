"""The sensor: new batch folders and release pairs become partitions and scoring runs; nothing twice."""

from __future__ import annotations

import json
import os
import re
import time

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from ww_assets.defs.images import sensors as image_sensors
from ww_assets.defs.images.assets import cutouts
from ww_assets.defs.images.partitions import image_batches
from ww_assets.defs.images.sensors import new_image_batches
from ww_assets.defs.resources import ImageSourceResource, SampleResource, StorageResource
from ww_assets.defs.scores.assets import score_batch
from ww_assets.defs.scores.jobs import score_image_batches
from ww_assets.images import cutouts as imaging
from ww_assets.images.sources import ImageSourceError, batch_names
from ww_assets.scores import release
from ww_assets.settings import SettingError
from ww_assets.storage import StorageLayout


def discover_image_batches(images: ImageSourceResource, layout: StorageLayout) -> list[str]:
    """The batch names the demo registers for an image source (ImageSourceError listing any problems)."""
    return batch_names(images.images_root(layout), images.release_dir())


def _batch(folder, ids, seed=0):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    np.save(folder / "bands_gri.npy", rng.uniform(0, 1, (len(ids), 3, 96, 96)).astype(np.float32))
    pd.DataFrame({"object_id": ids}).to_csv(folder / "catalog.csv", index=False)


def _age(folder, seconds=3600):
    """Make a folder's files look old (settled), as a copy finished a while ago."""
    old = time.time() - seconds
    for p in folder.rglob("*"):
        os.utime(p, (old, old))


def _tick(instance, cursor, res):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources=res)
    result = new_image_batches(ctx)
    if isinstance(result, dg.SensorResult):
        for req in result.dynamic_partitions_requests or []:          # what the daemon does with them
            instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return result


@pytest.fixture
def setup(tmp_path, storage_root):
    src = tmp_path / "incoming"
    _batch(src / "night1", ["1", "2", "3"])
    _age(src / "night1")
    rel = tmp_path / "release"
    rel.mkdir()
    table = release.ScoreTable(["9", "8"], [1.0, 2.0], [3.0, 4.0], [5.0, 6.0], np.zeros((2, 128), np.float32))
    release.write_release_csv(rel / "run1_scores.csv", table)
    np.save(rel / "run1_latents.npy", table.latents)
    _age(rel)
    res = {"storage": StorageResource(root=str(storage_root)), "sample": SampleResource(size="tiny"),
           "images": ImageSourceResource(source=str(src), release=str(rel), settle_seconds=60)}
    return src, rel, res


def test_sensor_adds_partitions_and_requests_runs_once(setup):
    src, rel, res = setup
    instance = dg.DagsterInstance.ephemeral()
    result = _tick(instance, None, res)
    assert isinstance(result, dg.SensorResult)
    assert sorted(instance.get_dynamic_partitions(image_batches.name)) == ["night1", "release-run1"]
    requests = {r.partition_key: r for r in result.run_requests}
    assert sorted(requests) == ["night1", "release-run1"]
    assert [k.to_user_string() for k in requests["night1"].asset_selection] == [
        "cutouts", "anomaly_scores", "latent_vectors"]
    assert [k.to_user_string() for k in requests["release-run1"].asset_selection] == [
        "anomaly_scores", "latent_vectors"]                               # a release is loaded, not re-scored
    cursor = result.cursor

    # nothing new: nothing requested
    again = _tick(instance, cursor, res)
    assert isinstance(again, dg.SkipReason)

    # a folder still being copied waits; once settled it is added and requested
    _batch(src / "night2", ["4"])
    waiting = _tick(instance, cursor, res)
    assert isinstance(waiting, dg.SkipReason) and "night2" in waiting.skip_message
    assert "night2" not in instance.get_dynamic_partitions(image_batches.name)
    _age(src / "night2")
    result = _tick(instance, cursor, res)
    assert [r.partition_key for r in result.run_requests] == ["night2"]
    assert "night2" in instance.get_dynamic_partitions(image_batches.name)
    cursor = result.cursor

    # a batch whose files changed is scored again (the run replaces its partition), under a new run key
    _batch(src / "night1" / "extra", ["x"])          # sub-folders are not read: no change
    assert isinstance(_tick(instance, cursor, res), dg.SkipReason)
    np.save(src / "night1" / "bands_gri.npy", np.ones((3, 3, 96, 96), np.float32))
    _age(src / "night1")
    result = _tick(instance, cursor, res)
    assert [r.partition_key for r in result.run_requests] == ["night1"]
    assert result.run_requests[0].tags["ww/trigger"] == "changed"
    assert result.run_requests[0].run_key != requests["night1"].run_key
    assert sorted(json.loads(result.cursor)) == ["night1", "night2", "release-run1"]


def test_batches_scored_before_the_sensor_are_not_rescored(setup, storage_root):
    src, rel, res = setup
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(image_batches.name, ["night1"])
    instance.report_runless_asset_event(dg.AssetMaterialization("anomaly_scores", partition="night1"))
    result = _tick(instance, None, res)
    assert [r.partition_key for r in result.run_requests] == ["release-run1"]
    assert "night1" in json.loads(result.cursor)


def test_requested_run_executes(setup, storage_root):
    """The job the sensor targets runs a requested partition (cutouts only here: no model needed)."""
    src, rel, res = setup
    instance = dg.DagsterInstance.ephemeral()
    result = _tick(instance, None, res)
    req = next(r for r in result.run_requests if r.partition_key == "night1")
    defs = dg.Definitions(assets=[cutouts, score_batch], jobs=[score_image_batches], sensors=[new_image_batches],
                          resources=res)
    job = defs.resolve_job_def("score_image_batches")
    run = job.execute_in_process(instance=instance, partition_key=req.partition_key,
                                 asset_selection=[dg.AssetKey("cutouts")])
    assert run.success
    images, catalog = imaging.load_cutouts(StorageLayout(storage_root).images_dir("night1"))
    assert list(catalog["image_id"]) == ["1", "2", "3"] and images.shape == (3, 3, 96, 96)


def test_discover_and_problems(setup, tmp_path, storage_root):
    src, rel, res = setup
    layout = StorageLayout(storage_root)
    assert discover_image_batches(res["images"], layout) == ["night1", "release-run1"]
    (src / "bad name!").mkdir()
    (src / "bad name!" / "1.png").write_bytes(b"x")
    with pytest.raises(ImageSourceError, match="bad name!"):
        discover_image_batches(res["images"], layout)
    # the sensor skips the bad folder and says so, and still registers the good ones
    instance = dg.DagsterInstance.ephemeral()
    result = _tick(instance, None, res)
    assert sorted(r.partition_key for r in result.run_requests) == ["night1", "release-run1"]
    # a folder that does not exist names the setting (its variable, the resource field and the value)
    nope = tmp_path / "nope"
    named = re.escape(f"='{nope}'")
    with pytest.raises(SettingError, match=rf"WW_IMAGES_SOURCE{named} \(resource images\.source\): .*no such folder"):
        discover_image_batches(ImageSourceResource(source=str(nope)), layout)
    with pytest.raises(SettingError, match=rf"WW_RELEASE_DIR{named} \(resource images\.release\): .*no such folder"):
        discover_image_batches(ImageSourceResource(source=str(src), release=str(nope)), layout)


def test_sample_source(tiny_sample, storage_root):
    import shutil

    layout = StorageLayout(storage_root)
    images = ImageSourceResource(settle_seconds=0)                   # source = "sample"
    with pytest.raises(ImageSourceError, match="sample"):
        images.images_root(layout)                                    # not built, and no sample resource given
    res = {"storage": StorageResource(root=str(storage_root)), "images": images}
    instance = dg.DagsterInstance.ephemeral()
    skipped = _tick(instance, None, res)                               # the sensor never builds the sample
    assert isinstance(skipped, dg.SkipReason) and "make demo" in skipped.skip_message
    shutil.copytree(tiny_sample, layout.sample_dir)
    batches = discover_image_batches(images, layout)
    assert batches == sorted(p.name for p in (tiny_sample / "cutouts").iterdir() if p.is_dir())
    result = _tick(instance, None, res)
    assert sorted(r.partition_key for r in result.run_requests) == batches


def test_default_status_follows_configuration(monkeypatch):
    monkeypatch.delenv("WW_IMAGES_SOURCE", raising=False)
    monkeypatch.delenv("WW_RELEASE_DIR", raising=False)
    assert image_sensors._default_status() == dg.DefaultSensorStatus.STOPPED
    monkeypatch.setenv("WW_IMAGES_SOURCE", "/data/hsc/cutouts")
    assert image_sensors._default_status() == dg.DefaultSensorStatus.RUNNING
    monkeypatch.setenv("WW_IMAGES_SOURCE", "sample")
    monkeypatch.setenv("WW_RELEASE_DIR", "/data/release")
    assert image_sensors._default_status() == dg.DefaultSensorStatus.RUNNING
