"""The production instance (deploy/dagster.yaml) against a real PostgreSQL server.

A throw-away PostgreSQL (Debian's server binaries, initdb in a temp dir, 127.0.0.1 on a free port) holds the
instance; `dagster dev` (webserver + daemon + code server) runs with exactly deploy/dagster.yaml; a partition
backfill of many image batches (cutouts, then scoring) is launched through the GraphQL API, as the UI does.
Checked: every run succeeds, runs overlap (the queue runs them in parallel, never more than allowed), the
`gpu` pool keeps scoring steps one at a time across runs, every partition is materialised exactly once, no
lock / serialisation error appears anywhere, and the files on disk are complete.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from ww_assets_tests.support import ops

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

N_BATCHES = 10
# deploy/dagster.yaml allows 8 runs at once; CI has 2 cores, so the test allows 3 (the only change to the file).
MAX_RUNS = 3
BATCH_SIZE = 8
DEPLOY_YAML = ops.REPO_ROOT / "deploy" / "dagster.yaml"
LOCK_ERRORS = re.compile(r"database is locked|could not obtain lock|deadlock detected|could not serialize|"
                         r"Could not set lock on file|lock timeout|SerializationFailure|LockNotAvailable",
                         re.IGNORECASE)


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    if ops.postgres_bin_dir() is None:
        pytest.fail("PostgreSQL server binaries not found: run `bash scripts/install_system_deps.sh`")
    with ops.postgres_server(tmp_path_factory.mktemp("pg-logs")) as server:
        yield server


@pytest.fixture(scope="module")
def pg_site(pg, tmp_path_factory):
    """DAGSTER_HOME with deploy/dagster.yaml as it is, pointed at the test server through its environment
    variables; a storage root; a sample of N_BATCHES small image batches as the image source; a CI-sized model."""
    base = tmp_path_factory.mktemp("pg-site")
    home, root, logs = base / "home", base / "data", base / "logs"
    home.mkdir()
    root.mkdir()
    config = yaml.safe_load(DEPLOY_YAML.read_text())
    config["concurrency"]["runs"]["max_concurrent_runs"] = MAX_RUNS
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    from ww_assets.simulation.sample import build_sample

    build_sample(base / "sample", size=N_BATCHES * BATCH_SIZE, n_batches=N_BATCHES, batch_size=BATCH_SIZE,
                 cutout_format="npy", thumbnails=False)
    # The image source is given to the runs as resource config (below), not as WW_IMAGES_SOURCE, which would
    # also switch on the new-batch sensor and have it score the same batches alongside the backfill.
    env = ops.dagster_env(home, root, DAGSTER_PG_HOST=pg.host, DAGSTER_PG_PORT=str(pg.port), DAGSTER_PG_USERNAME=pg.user,
                          DAGSTER_PG_PASSWORD="", DAGSTER_PG_DB=pg.db)
    _save_ci_model(root)
    return {"home": home, "root": root, "logs": logs, "env": env, "sample": base / "sample"}


def _save_ci_model(root: Path) -> None:
    import torch

    from ww_assets.model.checkpoints import save_wgan
    from ww_assets.model.networks import WGAN, WGANConfig
    from ww_assets.storage import StorageLayout

    torch.manual_seed(0)
    save_wgan(WGAN(WGANConfig.preset("ci")).eval(), StorageLayout(root).model_dir,
              card={"note": "random weights: the backfill test is about the instance, not the science"})


def _instance(site) -> dg.DagsterInstance:
    """The instance as the servers see it (same yaml, same environment)."""
    import os

    saved = {k: os.environ.get(k) for k in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USERNAME",
                                           "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")}
    os.environ.update({k: site["env"][k] for k in saved})
    try:
        return dg.DagsterInstance.from_config(str(site["home"]))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_deploy_yaml_is_the_production_shape():
    config = yaml.safe_load(DEPLOY_YAML.read_text())
    assert "postgres" in config["storage"]
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["concurrency"]["pools"] == {"default_limit": 1, "granularity": "op"}
    # credentials come from the environment, never from the file
    assert config["storage"]["postgres"]["postgres_db"]["password"] == {"env": "DAGSTER_PG_PASSWORD"}


@pytest.mark.parametrize("folder", ["deploy", "deploy/k8s", "deploy/celery", "."])
def test_every_instance_yaml_is_valid(folder, monkeypatch):
    """The local and the three production instance files pass Dagster's own schema (env vars set as a
    deployment would set them) and keep the pools the pipeline relies on."""
    from dagster._core.instance.config import dagster_instance_config

    for key, value in {"DAGSTER_PG_HOST": "db", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_USERNAME": "dagster",
                       "DAGSTER_PG_PASSWORD": "x", "DAGSTER_PG_DB": "dagster", "WW_IMAGE": "ww:1"}.items():
        monkeypatch.setenv(key, value)
    config, _ = dagster_instance_config(str(ops.REPO_ROOT / folder), config_filename="dagster.yaml")
    assert config["concurrency"]["pools"] == {"default_limit": 1, "granularity": "op"}
    assert config["run_monitoring"]["enabled"] and config["run_monitoring"]["free_slots_after_run_end_seconds"]
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"


def test_cluster_executors_place_gpu_steps_by_pool():
    """WW_EXECUTOR picks the executor; the GPU steps that k8s/executor.yaml sends to GPU nodes (and Celery to the
    gpu queue) are read from the assets' pools, and include training and scoring."""
    from ww_assets.definitions import defs
    from ww_assets.defs.ops.executor import executor_from_env, gpu_op_names
    from ww_assets.defs.pools import GPU_POOL

    assert executor_from_env({}) is None
    assert executor_from_env({"WW_EXECUTOR": "multiprocess"}) is None
    with pytest.raises(ValueError, match="WW_EXECUTOR"):
        executor_from_env({"WW_EXECUTOR": "spark"})
    # the assets of the loaded code location, as `dagster dev` and the executor see them
    assets = list(defs.assets or ())
    gpu_ops = gpu_op_names(assets)
    assert {"wgan", "score_batch"} <= set(gpu_ops)
    k8s = yaml.safe_load((ops.REPO_ROOT / "deploy" / "k8s" / "executor.yaml").read_text())
    gpu = k8s["gpu_step_k8s_config"]
    assert gpu["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["pod_spec_config"]["node_selector"]
    # Celery: every step of the gpu pool carries dagster-celery's queue tag naming the queue only GPU workers take
    # (deploy/celery/executor.yaml starts them with `-q gpu`); no other step does.
    celery = yaml.safe_load((ops.REPO_ROOT / "deploy" / "celery" / "executor.yaml").read_text())
    assert "broker" in celery["execution"]["config"]
    assert "-q gpu" in (ops.REPO_ROOT / "deploy" / "celery" / "executor.yaml").read_text()
    graph = defs.resolve_asset_graph()
    queue_by_op = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key).assets_def.node_def
        queue_by_op[node.name] = (node.tags.get("dagster-celery/queue"), GPU_POOL in (node.pools or set()))
    tagged = sorted(name for name, (queue, _) in queue_by_op.items() if queue is not None)
    in_gpu_pool = sorted(name for name, (_, gpu_pool) in queue_by_op.items() if gpu_pool)
    assert tagged == in_gpu_pool == gpu_ops, (tagged, in_gpu_pool, gpu_ops)
    assert {queue for queue, _ in queue_by_op.values() if queue is not None} == {"gpu"}


def test_parallel_backfill_on_postgres(pg_site):
    batches = [f"batch_{i:03d}" for i in range(N_BATCHES)]
    with _instance(pg_site) as instance:  # creates the schema once, before three servers race to
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        instance.add_dynamic_partitions("image_batches", batches)
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    run_config = {
        "resources": {"images": {"config": {"source": str(pg_site["sample"] / "cutouts")}}},
        "ops": {"score_batch": {"config": {"device": "cpu", "batch_size": 64}}},
        # one process per run (the multiprocess executor would add a process per step on a 2-core CI machine);
        # pools are enforced per step by either executor
        "execution": {"config": {"in_process": {}}},
    }
    started = time.monotonic()
    with ops.dagster_dev(pg_site["env"], pg_site["logs"]) as server:
        backfill_id = ops.launch_asset_backfill(server, ["cutouts", "anomaly_scores", "latent_vectors"], batches,
                                                run_config=run_config, title="postgres backfill test")
        with _instance(pg_site) as instance:
            def all_runs_done():
                runs = instance.get_run_records(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
                finished = [r for r in runs if r.dagster_run.is_finished]
                return runs if len(runs) >= N_BATCHES and len(finished) == len(runs) else None

            runs = ops.wait_until(all_runs_done, 600, f"the {N_BATCHES} backfill runs to finish", interval=2,
                                  service=server.service)
            status = ops.wait_until(lambda: (s := ops.backfill_status(server, backfill_id)) in (
                "COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED") and s, 120,
                "the backfill to be marked complete", interval=2, service=server.service)
            elapsed = time.monotonic() - started
            failed = [r.dagster_run.run_id for r in runs if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS]
            assert not failed, f"failed runs: {failed}\n{_failures(instance, failed)}"
            assert status in ("COMPLETED", "COMPLETED_SUCCESS"), status
            assert sorted(r.dagster_run.tags["dagster/partition"] for r in runs) == batches

            # Parallel runs, within the queue's limit.
            peak = _peak_overlap([(r.start_time, r.end_time) for r in runs])
            assert 2 <= peak <= MAX_RUNS, f"peak concurrent runs {peak}"

            # The gpu pool (limit 1) keeps scoring steps one at a time across the parallel runs.
            spans = _step_spans(instance, [r.dagster_run.run_id for r in runs], "score_batch")
            assert len(spans) == N_BATCHES
            assert _peak_overlap(spans) == 1, f"scoring steps overlapped: {sorted(spans)}"

            # Every partition materialised exactly once, per asset.
            for key in ("cutouts", "anomaly_scores", "latent_vectors"):
                records = instance.fetch_materializations(dg.AssetKey(key), limit=1000).records
                per_partition = sorted(r.partition_key for r in records)
                assert per_partition == batches, f"{key}: {per_partition}"

            # No lock errors anywhere: run events, and the servers' own log.
            texts = [e.message or "" for r in runs for e in instance.all_logs(r.dagster_run.run_id)]
            texts.append(server.service.log_path.read_text(errors="replace"))
            hits = [m.group(0) for t in texts for m in [LOCK_ERRORS.search(t)] if m]
            assert not hits, hits

    # Files complete on disk.
    from ww_assets.images import cutouts as imaging
    from ww_assets.scores import release

    for b in batches:
        _, catalog = imaging.load_cutouts(pg_site["root"] / "images" / b)
        frame, latents, _ = release.read_scores_folder(pg_site["root"] / "scores" / b)
        assert len(catalog) == len(frame) == latents.shape[0] == BATCH_SIZE
        assert not frame["image_id"].duplicated().any()
    print(f"{N_BATCHES} partitions, peak {peak} parallel runs, {elapsed:.0f} s")


# --------------------------------------------------------------------------------------------- helpers
def _peak_overlap(spans) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    peak = cur = 0
    for _, d in events:
        cur += d
        peak = max(peak, cur)
    return peak


def _step_spans(instance, run_ids, step_key: str) -> list[tuple[float, float]]:
    spans = []
    for run_id in run_ids:
        start = end = None
        for e in instance.all_logs(run_id):
            if e.step_key != step_key or not e.dagster_event:
                continue
            if e.dagster_event.event_type == dg.DagsterEventType.STEP_START:
                start = e.timestamp
            elif e.dagster_event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
                end = e.timestamp
        if start is not None and end is not None:
            spans.append((start, end))
    return spans


def _failures(instance, run_ids) -> str:
    """What went wrong in the first failed runs: failures, engine events and their errors."""
    out = []
    for run_id in run_ids[:2]:
        for e in instance.all_logs(run_id):
            if not e.dagster_event:
                continue
            kind = e.dagster_event.event_type
            if kind in (dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE,
                        dg.DagsterEventType.ENGINE_EVENT):
                out.append(f"{run_id[:8]} {kind.value}: {e.message}")
                data = e.dagster_event.event_specific_data
                err = getattr(data, "error", None)
                if err is not None:
                    out.append(err.to_string()[-2000:])
    return "\n".join(out)


# --------------------------------------------------------------------------------------------- security
def test_live_run_leaves_no_secret_or_identity_in_the_instance(pg, tmp_path):
    """A live-mode pull (the real panoptes-client against the loopback Zooniverse) recorded in a PostgreSQL
    instance: neither the credentials, the OAuth tokens, the pseudonym key, nor any volunteer's name, IP address
    or Talk login appears in the instance database (pg_dump of every table: runs, event log, asset metadata),
    the compute logs, or the run's console output."""
    import secrets

    from ww_assets_tests.support.loopback_zooniverse import LoopbackZooniverse, write_export_folder

    db = pg.create_database(f"security_{secrets.token_hex(4)}")
    home, root = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    root.mkdir()
    (home / "dagster.yaml").write_text(DEPLOY_YAML.read_text())
    truth = write_export_folder(tmp_path / "served", n_pages=60)
    pseudonym_key = f"pseudonym-key-{secrets.token_hex(12)}"
    with LoopbackZooniverse(truth.folder) as server:
        env = ops.dagster_env(home, root, DAGSTER_PG_HOST=pg.host, DAGSTER_PG_PORT=str(pg.port),
                              DAGSTER_PG_USERNAME=pg.user, DAGSTER_PG_PASSWORD="", DAGSTER_PG_DB=db,
                              WW_ZOONIVERSE_PROJECT=server.slug, WW_ZOONIVERSE_TALK_ENDPOINT=server.talk_endpoint,
                              WW_PSEUDONYM_KEY=pseudonym_key, **server.env())
        cmd = ops.dagster_cmd("asset", "materialize", "-m", "ww_assets.definitions", "--select",
                              "zooniverse_subjects,zooniverse_classifications,talk_comments,talk_tags")
        done = subprocess.run(cmd, env=env, cwd=ops.REPO_ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-4000:]
        tokens = list(server._tokens)
        password = server.password
    # the run really was live: it logged in and downloaded exports
    assert tokens and any(p.startswith("/media/") for _, p, _ in server.requests)

    dump = ops.pg_dump_text(pg, db)
    # positive control: the dump holds the event log, with the assets' own log lines and metadata
    assert "event_logs" in dump and "fetching the classifications export" in dump and "table_rows" in dump
    places = {"instance database (pg_dump)": dump,
              "compute logs and other files under DAGSTER_HOME": ops.sqlite_instance_text(home),
              "run console output": done.stdout + done.stderr}
    forbidden = {"PANOPTES_PASSWORD": password, "pseudonym key": pseudonym_key,
                 **{f"OAuth token {t[:6]}…": t for t in tokens},
                 **{f"volunteer name {n}": n for n in truth.volunteer_names},
                 **{f"volunteer IP {ip}": ip for ip in truth.volunteer_ips},
                 **{f"Talk login {login}": login for login in truth.volunteer_logins_in_talk}}
    leaks = [f"{what} in the {where}" for where, text in places.items() for what, value in forbidden.items()
             if value and value in text]
    assert not leaks, leaks
