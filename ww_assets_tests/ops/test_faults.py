"""Faults, as they happen to a real run: SIGKILL half way, a full disk, a read-only storage root.

Each run here is a real `dagster asset materialize` process against a DAGSTER_HOME holding the project's
dagster.yaml (pools gpu = 1, duckdb = 1), so what is checked is what a user gets:

* a scoring run killed with SIGKILL while its files are written leaves no partial output where readers look;
  the dead run is found and marked failed (its gpu slot handed back), and re-running the partition completes
  with exactly one row per image;
* a live ingestion run (the real panoptes-client against the loopback Zooniverse) killed with SIGKILL while the
  classifications export is streaming to disk leaves no partial download and no rows; the re-run ingests every
  classification exactly once, and a third run adds nothing;
* a full disk or a read-only storage root fails the run with an error naming the path and the cause, and leaves
  nothing half-written.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from ww_assets.images import cutouts as imaging
from ww_assets.scores import release
from ww_assets.storage import RELEASE_SCORES_FILE
from ww_assets_tests.support import ops

pytestmark = pytest.mark.slow

BATCH = "batch_000"
SCORE_CONFIG = {"ops": {"score_batch": {"config": {"device": "cpu", "batch_size": 32}}}}


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture
def site(tmp_path, tiny_sample):
    """A storage root, a DAGSTER_HOME with the project's dagster.yaml, the tiny sample's cutouts as the image
    source, and the environment a subprocess run needs to use them."""
    root = tmp_path / "data"
    root.mkdir()
    home = tmp_path / "home"
    ops.write_instance_yaml(home)
    env = ops.dagster_env(home, root, WW_IMAGES_SOURCE=str(tiny_sample / "cutouts"))
    return {"root": root, "home": home, "env": env, "tmp": tmp_path, "source": tiny_sample / "cutouts"}


def instance_for(home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(home))


def register_batches(home: Path, source: Path) -> list[str]:
    batches = sorted(p.name for p in source.iterdir() if p.is_dir())
    with instance_for(home) as instance:
        instance.add_dynamic_partitions("image_batches", batches)
    return batches


def materialize_cmd(select: str, partition: str, config: dict | None, tmp: Path) -> list[str]:
    cmd = ops.dagster_cmd("asset", "materialize", "-m", "ww_assets.definitions", "--select", select,
                          "--partition", partition)
    if config:
        path = tmp / f"run-config-{abs(hash(str(config)))}.yaml"
        path.write_text(yaml.safe_dump(config))
        cmd += ["-c", str(path)]
    return cmd


def run_cli(cmd: list[str], env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=ops.REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def save_random_model(root: Path) -> None:
    """A small wGAN with random weights where `wgan` would put one: these tests are about runs, not science."""
    import torch

    from ww_assets.model.checkpoints import save_wgan
    from ww_assets.model.networks import WGAN, WGANConfig
    from ww_assets.storage import StorageLayout

    torch.manual_seed(0)
    save_wgan(WGAN(WGANConfig.preset("ci")).eval(), StorageLayout(root).model_dir,
              card={"note": "random weights for the fault tests"})


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary or superseded folders/files that atomic writes leave only when interrupted."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def materializations(instance: dg.DagsterInstance, key: str, partition: str) -> int:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition]), limit=100).records
    return len(records)


# --------------------------------------------------------------------------------------------- SIGKILL
def test_scoring_run_killed_mid_partition_then_rerun(site):
    root, home, env, tmp = site["root"], site["home"], site["env"], site["tmp"]
    register_batches(home, site["source"])
    save_random_model(root)
    done = run_cli(materialize_cmd("cutouts", BATCH, None, tmp), env)
    assert done.returncode == 0, done.stderr[-4000:]

    scores_dir = root / "scores" / BATCH
    marker = tmp / "paused-in-write"
    victim = subprocess.Popen(
        materialize_cmd("anomaly_scores,latent_vectors", BATCH, SCORE_CONFIG, tmp),
        env=ops.fault_env(env, tmp / "shim", scores_dir, marker), cwd=ops.REPO_ROOT,
        stdout=open(tmp / "victim.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        ops.wait_until(marker.exists, 240, "the scoring step to reach its write (pause marker)",
                       service=ops.Service("scoring run", victim, tmp / "victim.log"))
        # Mid-partition: every file is in the temporary folder, nothing has been renamed into place.
        tmp_folders = [p for p in scores_dir.parent.iterdir() if p.name.startswith(f".{BATCH}.tmp-")]
        assert tmp_folders and any(tmp_folders[0].iterdir()), "expected a half-done temporary folder"
        assert not scores_dir.exists()
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL

    # Nothing half-written where a reader looks: no scores folder, so the batch reads as "not scored".
    assert not scores_dir.exists()
    from ww_assets.scores.normalise import collect_scores
    from ww_assets.storage import StorageLayout

    frame, missing, _ = collect_scores(StorageLayout(root), [BATCH])
    assert missing == [BATCH] and frame.empty

    # The killed run could not report its end: it is still "started" and still holds the gpu slot.
    from ww_assets.defs.ops.sensors import dead_run_reaper

    with instance_for(home) as instance:
        (dead,) = instance.get_run_records(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        assert instance.event_log_storage.get_concurrency_info("gpu").active_slot_count == 1
        # The reaper sensor (run by the daemon in `dagster dev`) marks it failed and frees the slot.
        result = dead_run_reaper(dg.build_sensor_context(instance=instance))
        assert dead.dagster_run.run_id in str(result.skip_message)
        after = instance.get_run_record_by_id(dead.dagster_run.run_id)
        assert after.dagster_run.status == dg.DagsterRunStatus.FAILURE
        assert instance.event_log_storage.get_concurrency_info("gpu").active_slot_count == 0

    # The re-run completes: one row per usable cutout, no duplicates, the four files agree, no leftovers.
    rerun = run_cli(materialize_cmd("anomaly_scores,latent_vectors", BATCH, SCORE_CONFIG, tmp), env)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    frame, latents, config = release.read_scores_folder(scores_dir)
    _, catalog = imaging.load_cutouts(root / "images" / BATCH)
    assert len(frame) == len(catalog) > 0
    assert not frame["image_id"].duplicated().any()
    assert list(frame["image_id"].astype(str)) == list(catalog["image_id"].astype(str))
    assert latents.shape == (len(catalog), release.LATENT_DIM)
    csv = pd.read_csv(scores_dir / RELEASE_SCORES_FILE)
    assert len(csv) == len(frame) and not csv.iloc[:, 0].duplicated().any()
    assert leftovers(scores_dir.parent) == []
    assert sorted(p.name for p in scores_dir.iterdir() if p.name.startswith(".")) == []
    with instance_for(home) as instance:
        assert materializations(instance, "anomaly_scores", BATCH) == 1
        assert materializations(instance, "latent_vectors", BATCH) == 1
        statuses = [r.dagster_run.status for r in instance.get_run_records(
            filters=dg.RunsFilter(tags={"dagster/partition": BATCH}), ascending=True)]
        # cutouts, the killed scoring run, its re-run
        assert statuses == [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.SUCCESS]


# --------------------------------------------------------------------------------------------- ingestion
def _slow_media_handler(server, base_handler, chunk: int = 2048, pause: float = 0.25):
    """A request handler for the loopback Zooniverse that streams export downloads (/media/...) a little at a
    time, so a download is still in progress when the test kills the run."""

    class SlowMediaHandler(base_handler):
        def _serve(self, method: str):
            if method != "GET" or not self.path.startswith("/media/") or "classifications" not in self.path:
                return super()._serve(method)
            status, headers, data = server.handle(method, self.path, self.headers, b"")
            server.requests.append((method, self.path.split("?")[0], status))
            self.send_head(status, headers, data)
            server.media_progress = (0, len(data))
            try:
                for i in range(0, len(data), chunk):
                    self.wfile.write(data[i:i + chunk])
                    self.wfile.flush()
                    server.media_progress = (i + len(data[i:i + chunk]), len(data))
                    time.sleep(pause if server.slow_downloads else 0)
            except (BrokenPipeError, ConnectionResetError):
                pass

    return SlowMediaHandler


def _raw_classifications(root: Path) -> tuple[int, int]:
    """(rows, distinct classification ids) in raw.classifications; (0, 0) before the table exists."""
    import duckdb

    warehouse = root / "warehouse.duckdb"
    if not warehouse.exists():
        return 0, 0
    with duckdb.connect(str(warehouse), read_only=True) as con:
        exists = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'raw' "
                             "AND table_name = 'classifications'").fetchone()[0]
        if not exists:
            return 0, 0
        return con.execute("SELECT count(*), count(DISTINCT classification_id) FROM raw.classifications").fetchone()


def test_ingestion_run_killed_mid_download_then_rerun(site):
    from ww_assets.defs.ops.sensors import reap_dead_runs
    from ww_assets_tests.support.loopback_zooniverse import LoopbackZooniverse, write_export_folder

    root, home, env, tmp = site["root"], site["home"], site["env"], site["tmp"]
    # Big enough that streaming it at 8 KiB/s takes a while; the seed's truth lists what must arrive.
    truth = write_export_folder(tmp / "served", n_pages=600)
    server = LoopbackZooniverse(truth.folder)
    server.slow_downloads = True
    server.media_progress = (0, 0)
    server._server.RequestHandlerClass = _slow_media_handler(server, server._server.RequestHandlerClass)
    server.start()
    live_env = {**env, **server.env(), "WW_ZOONIVERSE_PROJECT": server.slug,
                "WW_ZOONIVERSE_TALK_ENDPOINT": server.talk_endpoint}
    downloads = root / "downloads" / "classifications"
    cmd = ops.dagster_cmd("asset", "materialize", "-m", "ww_assets.definitions", "--select",
                          "zooniverse_classifications")
    try:
        victim = subprocess.Popen(cmd, env=live_env, cwd=ops.REPO_ROOT, stdout=open(tmp / "ingest.log", "wb"),
                                  stderr=subprocess.STDOUT, start_new_session=True)
        try:
            def streaming():
                sent, total = server.media_progress
                parts = list(downloads.glob(".*.tmp-*")) if downloads.exists() else []
                return parts and total and sent >= total // 3 and parts[0]
            partial = ops.wait_until(streaming, 240, "the classifications export to be a third downloaded",
                                     interval=0.1, service=ops.Service("ingestion run", victim, tmp / "ingest.log"))
            os.killpg(victim.pid, signal.SIGKILL)
            sent, total = server.media_progress
            victim.wait(timeout=30)
            assert sent < total, "the download finished before the kill"
        finally:
            if victim.poll() is None:
                os.killpg(victim.pid, signal.SIGKILL)
                victim.wait(timeout=30)
        assert victim.returncode == -signal.SIGKILL

        # Killed mid-download: whatever arrived is only in the hidden temporary file; nothing is ingested.
        assert partial.exists()
        assert [p.name for p in downloads.iterdir() if not p.name.startswith(".")] == []
        assert _raw_classifications(root) == (0, 0)

        with instance_for(home) as instance:
            reaped = reap_dead_runs(instance)
            assert len(reaped) == 1
            assert instance.event_log_storage.get_concurrency_info("duckdb").active_slot_count == 0

        server.slow_downloads = False
        for attempt in (1, 2):   # the re-run, then once more: the second adds nothing
            rerun = run_cli(cmd, live_env)
            assert rerun.returncode == 0, rerun.stderr[-4000:]
            rows, distinct = _raw_classifications(root)
            expected = len(set(truth.classification_ids))
            assert rows == distinct == expected, (attempt, rows, distinct, expected)
        # One complete download where readers look, and no half-download left behind.
        names = sorted(p.name for p in downloads.iterdir())
        assert len([n for n in names if not n.startswith(".")]) == 1, names
        assert not [n for n in names if ".tmp-" in n], f"stale partial download left: {names}"
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------- full / read-only
def _namespace_or_skip() -> list[str]:
    prefix = ops.mount_namespace_prefix()
    if prefix is None:  # pragma: no cover - depends on the machine
        pytest.skip("cannot create a private mount namespace here (unshare -m / -rm refused), so cannot build a "
                    "full or read-only filesystem without touching the host")
    return prefix


def _run_in_namespace(prefix: list[str], setup: str, cmd: list[str], root: Path, env: dict,
                      timeout: float = 300) -> tuple[int, str, list[str]]:
    """Run ``setup`` (mounts over ``root``), then ``cmd``, then list every file under ``root`` as the run left it
    (the mount disappears with the namespace, so the listing is taken inside it)."""
    quoted = " ".join(subprocess.list2cmdline([c]) for c in cmd)
    script = (f"set -e\n{setup}\nset +e\n{quoted}\nrc=$?\necho '--- files ---'\n"
              f"find {root} -mindepth 1 | sort\nexit $rc\n")
    out = subprocess.run([*prefix, "sh", "-c", script], env=env, cwd=ops.REPO_ROOT, capture_output=True,
                         text=True, timeout=timeout)
    text = out.stdout + out.stderr
    files = out.stdout.split("--- files ---", 1)[1].split() if "--- files ---" in out.stdout else []
    return out.returncode, text, files


def test_disk_full_storage_root_fails_clearly(site):
    prefix = _namespace_or_skip()
    root, home, env, tmp = site["root"], site["home"], site["env"], site["tmp"]
    register_batches(home, site["source"])
    # 256 KiB: room for the write probe, not for a batch of 48 cutouts (1.3 MB).
    setup = f"mount -t tmpfs -o size=256k ww-full {root}"
    rc, out, files = _run_in_namespace(prefix, setup, materialize_cmd("cutouts", BATCH, None, tmp), root, env)
    assert rc != 0, out[-3000:]
    # StorageError: cannot write <root>/images/batch_000: no space left on device (disk or quota full); ...
    assert f"StorageError: cannot write {root}/images/{BATCH}: no space left on device" in out, out[-3000:]
    # nothing half-written: no batch folder, no temporary folder left behind
    assert not [f for f in files if f"/images/{BATCH}" in f or ".tmp-" in f], files


def test_read_only_storage_root_fails_clearly(site):
    prefix = _namespace_or_skip()
    root, home, env, tmp = site["root"], site["home"], site["env"], site["tmp"]
    register_batches(home, site["source"])
    setup = f"mount --bind {root} {root}\nmount -o remount,bind,ro {root}"
    rc, out, files = _run_in_namespace(prefix, setup, materialize_cmd("cutouts", BATCH, None, tmp), root, env)
    assert rc != 0, out[-3000:]
    assert f"StorageError: cannot write {root}/images/{BATCH}: read-only file system" in out, out[-3000:]
    assert files == [], files
