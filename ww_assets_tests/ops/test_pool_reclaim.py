"""A SIGKILLed run never blocks the next one on its pool slot (issue #18, item 1).

The rules (``ww_assets.defs.ops.reclaim``), checked here on real processes and a real SQLite instance:

* a holder whose process (or a step process, or a member of its process group) still runs is alive, and its
  slot is never freed;
* a holder that ran on this machine and whose processes are all gone (or whose pid now belongs to a newer
  process) is dead: marked FAILURE naming the dead process, its slots and queue places handed back;
* a holder on another machine or container cannot be judged: nothing is freed, and when such runs fill the pool
  and no daemon watches for dead runs, the run fails at once naming ``python -m ww_assets.defs.ops free RUN_ID``.

The slow tests do it from the command line, as the issue did: `dagster asset materialize` subprocesses with their
own DAGSTER_HOME (the project's dagster.yaml: gpu = 1, duckdb = 1), no daemon; a run of `zooniverse_subjects` (duckdb pool)
and `wgan` (gpu pool) is SIGKILLed while it holds both slots, and the plain re-run completes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import dagster as dg
import psutil
import pytest
import yaml

from ww_assets.defs.ops import __main__ as ops_cli
from ww_assets.defs.ops import reclaim
from ww_assets.defs.ops.executor import _Watcher, guarded_executor
from ww_assets.defs.pools import DUCKDB_POOL, GPU_POOL
from ww_assets_tests.support import ops

BATCH = "batch_000"
PSEUDONYM_KEY = "pool-reclaim-test-key-0123456789abcdef"


# --------------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def instance_template(tmp_path_factory) -> Path:
    """A DAGSTER_HOME with the project's dagster.yaml and its SQLite schema created (seconds), copied per test."""
    home = tmp_path_factory.mktemp("instance") / "home"
    ops.write_instance_yaml(home)
    with dg.DagsterInstance.from_config(str(home)) as inst:
        inst.event_log_storage.get_concurrency_info(DUCKDB_POOL)
    return home


@pytest.fixture
def instance(tmp_path, instance_template):
    home = tmp_path / "home"
    shutil.copytree(instance_template, home)
    with dg.DagsterInstance.from_config(str(home)) as inst:
        yield inst


@pytest.fixture
def sleeper():
    """Start ``sleep`` processes (each its own session); every one still running is killed at the end."""
    procs = []

    def start(seconds: int = 120) -> subprocess.Popen:
        proc = subprocess.Popen(["sleep", str(seconds)], start_new_session=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def tags_of(pid: int, host: str | None = None, pidns: str | None = None, started: float | None = None,
            pgid: int | None = None, boot: str | None = None) -> dict[str, str]:
    """The worker tags a run in process ``pid`` would carry (or a variant of them)."""
    return {
        reclaim.TAG_HOST: host or socket.gethostname(),
        reclaim.TAG_BOOT: reclaim.boot_id() if boot is None else boot,
        reclaim.TAG_PIDNS: reclaim.pid_namespace() if pidns is None else pidns,
        reclaim.TAG_PID: str(pid),
        reclaim.TAG_PID_STARTED: f"{psutil.Process(pid).create_time() if started is None else started:.3f}",
        reclaim.TAG_PGID: str(pid if pgid is None else pgid),
    }


def add_run(instance: dg.DagsterInstance, tags: dict[str, str],
            status: dg.DagsterRunStatus = dg.DagsterRunStatus.STARTED) -> str:
    run = dg.DagsterRun(job_name="__ASSET_JOB", run_id=str(uuid.uuid4()), status=status, tags=tags)
    instance.add_run(run)
    return run.run_id


def claim(instance: dg.DagsterInstance, pool: str, run_id: str, step: str):
    storage = instance.event_log_storage
    storage.initialize_concurrency_limit_to_default(pool)
    return storage.claim_concurrency_slot(pool, run_id, step)


def holders(instance: dg.DagsterInstance, pool: str) -> set[str]:
    return instance.event_log_storage.get_concurrency_info(pool).active_run_ids


def status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    return instance.get_run_record_by_id(run_id).dagster_run.status


def failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    return records[-1].event_log_entry.message if records else ""


# --------------------------------------------------------------------------------------------- liveness
def test_alive_dead_recycled_and_foreign_holders(instance, sleeper, monkeypatch):
    proc = sleeper()
    alive = add_run(instance, tags_of(proc.pid))
    assert reclaim.run_liveness(instance, alive).state == reclaim.ALIVE
    # the same pid, but the recorded start time is not this process's: the run's process is gone
    recycled = add_run(instance, tags_of(proc.pid, started=psutil.Process(proc.pid).create_time() - 50))
    gone = reclaim.run_liveness(instance, recycled)
    assert gone.state == reclaim.DEAD and "newer process" in gone.reason
    # another machine, or another container here: cannot be judged from this process
    elsewhere = reclaim.run_liveness(instance, add_run(instance, tags_of(proc.pid, host="gpu-node-7")))
    assert elsewhere.state == reclaim.UNKNOWN and "gpu-node-7" in elsewhere.reason
    container = reclaim.run_liveness(instance, add_run(instance, tags_of(proc.pid, pidns="4026532999")))
    assert container.state == reclaim.UNKNOWN and "pid namespace" in container.reason
    # a machine of the same name (or this one before it restarted): dead only where storage is SQLite, which
    # is never shared between machines
    other_boot = add_run(instance, tags_of(proc.pid, boot="0f1e2d3c-another-boot"))
    restarted = reclaim.run_liveness(instance, other_boot)
    assert restarted.state == reclaim.DEAD and "restarted" in restarted.reason
    monkeypatch.setattr(reclaim, "is_single_host_instance", lambda _instance: False)
    assert reclaim.run_liveness(instance, other_boot).state == reclaim.UNKNOWN
    monkeypatch.undo()
    # no tags and no process id logged (SQLite): unknown, never assumed dead
    assert reclaim.run_liveness(instance, add_run(instance, {})).state == reclaim.UNKNOWN
    proc.kill()
    proc.wait(timeout=10)
    dead = reclaim.run_liveness(instance, alive)
    assert dead.state == reclaim.DEAD and dead.reason == f"process {proc.pid} no longer exists"


def test_a_surviving_step_process_keeps_a_run_alive(instance, sleeper):
    """SIGKILL of the run's own process only: its step process (named in its events, or left in its process
    group) may still be writing, so the run is alive until that process is gone too."""
    # A leader that exits at once, leaving its child in its process group (as a killed CLI leaves step workers).
    leader = subprocess.Popen(["sh", "-c", "sleep 120 </dev/null >/dev/null 2>&1 & echo $!; read line"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    child = int(leader.stdout.readline())
    try:
        started = psutil.Process(leader.pid).create_time()
        leader.communicate("go\n", timeout=10)   # the leader exits; its child stays in its group
        run_id = add_run(instance, tags_of(leader.pid, started=started, pgid=leader.pid))
        claim(instance, DUCKDB_POOL, run_id, "zooniverse_subjects")
        liveness = reclaim.run_liveness(instance, run_id)
        assert liveness.state == reclaim.ALIVE and f"process {child} of its process group" in liveness.reason
        result = reclaim.check_pools(instance, [DUCKDB_POOL], "another-run", by="test")
        assert result.reclaimed == [] and [h.run_id for h in result.alive] == [run_id]
        assert holders(instance, DUCKDB_POOL) == {run_id} and status(instance, run_id) == dg.DagsterRunStatus.STARTED
    finally:
        os.kill(child, signal.SIGKILL)
    ops.wait_until(lambda: not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE,
                   10, "the step process to die")
    assert reclaim.run_liveness(instance, run_id).state == reclaim.DEAD

    # A step process named only in the run's events (not in its group): alive while it runs.
    from dagster._core.events import EngineEventData

    step = sleeper()
    gone_leader = sleeper()
    other = add_run(instance, tags_of(gone_leader.pid, pgid=1))
    run = instance.get_run_by_id(other)
    instance.report_engine_event('Executing step "score_batch" in subprocess.', run,
                                 EngineEventData(metadata={"pid": dg.MetadataValue.text(str(step.pid))}))
    gone_leader.kill()
    gone_leader.wait(timeout=10)
    assert reclaim.run_liveness(instance, other).state == reclaim.ALIVE
    step.kill()
    step.wait(timeout=10)
    assert reclaim.run_liveness(instance, other).state == reclaim.DEAD


def test_check_pools_frees_only_the_dead(instance, sleeper):
    live_proc, dead_proc = sleeper(), sleeper()
    live = add_run(instance, tags_of(live_proc.pid))
    dead = add_run(instance, tags_of(dead_proc.pid))
    assert claim(instance, GPU_POOL, live, "wgan").is_claimed
    assert claim(instance, DUCKDB_POOL, dead, "zooniverse_subjects").is_claimed
    dead_proc.kill()
    dead_proc.wait(timeout=10)

    result = reclaim.check_pools(instance, [GPU_POOL, DUCKDB_POOL], "the-new-run", by="run the-new-run")
    assert [h.run_id for h in result.reclaimed] == [dead] and [h.run_id for h in result.alive] == [live]
    assert result.stuck == {}
    assert holders(instance, GPU_POOL) == {live} and holders(instance, DUCKDB_POOL) == set()
    assert status(instance, live) == dg.DagsterRunStatus.STARTED
    assert status(instance, dead) == dg.DagsterRunStatus.FAILURE
    message = failure_message(instance, dead)
    assert f"process {dead_proc.pid} no longer exists" in message and "run the-new-run" in message


def test_a_dead_run_assigned_a_queue_place_is_reclaimed(instance, sleeper):
    """A run SIGKILLed while waiting is assigned the slot when it frees (Dagster's queue): it then blocks as
    surely as a holder, and is reclaimed the same way."""
    first, waiter_proc = sleeper(), sleeper()
    holder = add_run(instance, tags_of(first.pid))
    waiter = add_run(instance, tags_of(waiter_proc.pid))
    assert claim(instance, DUCKDB_POOL, holder, "a").is_claimed
    assert not claim(instance, DUCKDB_POOL, waiter, "b").is_claimed
    waiter_proc.kill()
    waiter_proc.wait(timeout=10)
    instance.event_log_storage.free_concurrency_slots_for_run(holder)   # the holder ends normally
    assert not claim(instance, DUCKDB_POOL, "the-new-run", "c").is_claimed  # the dead waiter has the slot now

    result = reclaim.check_pools(instance, [DUCKDB_POOL], "the-new-run", by="test")
    assert [h.run_id for h in result.reclaimed] == [waiter]
    assert claim(instance, DUCKDB_POOL, "the-new-run", "c").is_claimed


def test_pool_of_unknown_holders_is_stuck_and_names_the_command(instance, sleeper):
    proc = sleeper()
    foreign = add_run(instance, tags_of(proc.pid, host="gpu-node-7"))
    claim(instance, GPU_POOL, foreign, "score_batch")
    result = reclaim.check_pools(instance, [GPU_POOL], "the-new-run", by="test")
    assert list(result.stuck) == [GPU_POOL] and result.reclaimed == []
    message = result.stuck_message("the-new-run", {GPU_POOL: ["score_batch"]})
    assert f"python -m ww_assets.defs.ops free {foreign}" in message and "gpu-node-7" in message
    assert holders(instance, GPU_POOL) == {foreign}   # nothing freed
    assert not reclaim.dead_runs_are_watched(instance)
    # With a run-monitoring daemon heartbeating, a run waits for it instead of failing.
    from dagster._daemon.types import DaemonHeartbeat

    instance.add_daemon_heartbeat(DaemonHeartbeat(timestamp=time.time(), daemon_type="MONITORING",
                                                  daemon_id="test", errors=[]))
    assert reclaim.dead_runs_are_watched(instance)


def test_watcher_reclaims_a_holder_that_dies_while_the_run_waits(instance, sleeper):
    holder_proc = sleeper()
    holder = add_run(instance, tags_of(holder_proc.pid))
    waiting = add_run(instance, tags_of(os.getpid()))
    assert claim(instance, DUCKDB_POOL, holder, "a").is_claimed
    assert not claim(instance, DUCKDB_POOL, waiting, "b").is_claimed
    with _Watcher(instance, instance.get_run_by_id(waiting), [DUCKDB_POOL], interval=0.2):
        time.sleep(1.0)  # a few checks while the holder is alive: nothing may be freed
        assert holders(instance, DUCKDB_POOL) == {holder}
        holder_proc.kill()
        holder_proc.wait(timeout=10)
        ops.wait_until(lambda: claim(instance, DUCKDB_POOL, waiting, "b").is_claimed, 30,
                       "the watcher to hand the dead holder's slot to the waiting run")
    assert status(instance, holder) == dg.DagsterRunStatus.FAILURE
    logged = [r.event_log_entry.message for r in instance.get_records_for_run(
        waiting, of_type=dg.DagsterEventType.ENGINE_EVENT).records]
    assert any(holder in m and "is dead" in m for m in logged), logged


def test_free_command_refuses_a_live_run_and_frees_one_declared_dead(instance, sleeper, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", instance.root_directory)
    proc = sleeper()
    live = add_run(instance, tags_of(proc.pid))
    foreign = add_run(instance, tags_of(proc.pid, host="gpu-node-7"))
    claim(instance, DUCKDB_POOL, live, "a")
    claim(instance, GPU_POOL, foreign, "b")
    assert ops_cli.main(["free", live]) == 1
    assert "not freed" in capsys.readouterr().err
    assert ops_cli.main(["pools"]) == 0
    shown = capsys.readouterr().out
    assert f"[alive] run {live}" in shown and f"[unknown] run {foreign}" in shown
    assert ops_cli.main(["free", foreign]) == 0
    assert holders(instance, DUCKDB_POOL) == {live} and holders(instance, GPU_POOL) == set()
    assert status(instance, live) == dg.DagsterRunStatus.STARTED
    assert status(instance, foreign) == dg.DagsterRunStatus.FAILURE
    assert "declared dead by hand" in failure_message(instance, foreign)


def test_guarded_executor_keeps_the_wrapped_executors_name_and_config():
    base = dg.multi_or_in_process_executor
    guarded = guarded_executor(None)
    assert guarded.name == base.name and guarded.config_schema is base.config_schema
    assert guarded.executor_creation_fn is not base.executor_creation_fn


# --------------------------------------------------------------------------------------------- from the CLI
@pytest.fixture
def site(tmp_path, tiny_sample):
    """A storage root, a DAGSTER_HOME with the project's dagster.yaml, the tiny sample's exports and a batch of its
    cutouts, a small random model as the checkpoint ``wgan`` loads, and the command of a run with one step in each
    pool: ``zooniverse_subjects`` (duckdb) and ``wgan`` (gpu)."""
    from ww_assets.images.cutouts import read_cutout_folder, write_cutout_batch
    from ww_assets.storage import StorageLayout, atomic_dir
    from ww_assets_tests.ops.test_faults import save_random_model

    root, home = tmp_path / "data", tmp_path / "home"
    root.mkdir()
    ops.write_instance_yaml(home)
    with atomic_dir(StorageLayout(root).images_dir(BATCH)) as tmp:
        write_cutout_batch(read_cutout_folder(tiny_sample / "cutouts" / BATCH, BATCH), tmp)
    checkpoint = tmp_path / "checkpoint"
    save_random_model(checkpoint)  # written as <checkpoint>/models/wgan
    env = ops.dagster_env(home, root, WW_IMAGES_SOURCE=str(tiny_sample / "cutouts"),
                          WW_ZOONIVERSE_SOURCE="export_folder",
                          WW_ZOONIVERSE_EXPORT_FOLDER=str(tiny_sample / "exports"), WW_PSEUDONYM_KEY=PSEUDONYM_KEY)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"ops": {"wgan": {"config": {
        "checkpoint": str(checkpoint / "models" / "wgan"), "device": "cpu", "log_every_s": 60}}}}))
    command = ops.dagster_cmd("asset", "materialize", "-m", "ww_assets.definitions",
                              "--select", "zooniverse_subjects,wgan", "-c", str(config))
    return {"root": root, "home": home, "env": env, "tmp": tmp_path, "command": command}


def _runs(home: Path) -> dict[str, dg.DagsterRunStatus]:
    with dg.DagsterInstance.from_config(str(home)) as inst:
        return {r.dagster_run.run_id: r.dagster_run.status for r in inst.get_run_records()}


def _kill_once_holding(site, pools: list[str]) -> int:
    """Start the run, SIGKILL it (its whole process group) once it holds a slot of each of ``pools``."""
    marker = site["tmp"] / "holding"
    env = ops.claim_pause_env(site["env"], site["tmp"] / "shim", pools, marker)
    log_path = site["tmp"] / "victim.log"
    with open(log_path, "wb") as log:
        victim = subprocess.Popen(site["command"], env=env, cwd=ops.REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        try:
            ops.wait_until(marker.exists, 240, f"the run to hold its {' and '.join(pools)} slots",
                           service=ops.Service("victim run", victim, log_path))
            os.killpg(victim.pid, signal.SIGKILL)
        finally:
            if victim.poll() is None:
                os.killpg(victim.pid, signal.SIGKILL)
            victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    return victim.pid


@pytest.mark.slow
def test_rerun_after_sigkill_completes_for_both_pools(site):
    home = site["home"]
    pid = _kill_once_holding(site, [DUCKDB_POOL, GPU_POOL])
    with dg.DagsterInstance.from_config(str(home)) as inst:
        (dead,) = holders(inst, DUCKDB_POOL)
        assert holders(inst, GPU_POOL) == {dead}
    assert _runs(home) == {dead: dg.DagsterRunStatus.STARTED}

    # The plain re-run, as a person would type it: no daemon, no reaper, no command in between.
    started = time.monotonic()
    rerun = subprocess.run(site["command"], env=site["env"], cwd=ops.REPO_ROOT, capture_output=True, text=True,
                           timeout=400)
    seconds = time.monotonic() - started
    output = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, output[-4000:]

    # it said what it did, in its own log, and never waited
    for pool in (DUCKDB_POOL, GPU_POOL):
        assert f"Pool '{pool}': run {dead}" in output, output[-4000:]
    assert "That run is dead" in output and "Step blocked by limit" not in output
    with dg.DagsterInstance.from_config(str(home)) as inst:
        # the dead run is marked failed, naming its dead process; no slot is left taken
        assert status(inst, dead) == dg.DagsterRunStatus.FAILURE
        assert f"process {pid} no longer exists" in failure_message(inst, dead)
        assert holders(inst, DUCKDB_POOL) == holders(inst, GPU_POOL) == set()
        (new,) = [r.dagster_run for r in inst.get_run_records() if r.dagster_run.run_id != dead]
        assert new.status == dg.DagsterRunStatus.SUCCESS
        assert new.tags[reclaim.TAG_HOST] == socket.gethostname()
        for key in ("zooniverse_subjects", "wgan"):
            assert inst.get_latest_materialization_event(dg.AssetKey(key)).run_id == new.run_id
        record = inst.get_run_record_by_id(new.run_id)
    ops.ARTIFACTS_DIR.mkdir(exist_ok=True)
    (ops.ARTIFACTS_DIR / "pool_reclaim_rerun.json").write_text(json.dumps(
        {"rerun_command_wall_s": round(seconds, 1),
         "rerun_run_start_to_end_s": round(record.end_time - record.start_time, 1)}))


@pytest.mark.slow
def test_slot_held_by_a_run_on_another_machine_fails_fast_naming_the_command(site):
    home = site["home"]
    with dg.DagsterInstance.from_config(str(home)) as inst:
        foreign = add_run(inst, tags_of(os.getpid(), host="gpu-node-7"))
        assert claim(inst, DUCKDB_POOL, foreign, "zooniverse_subjects").is_claimed
    out = subprocess.run(site["command"], env=site["env"], cwd=ops.REPO_ROOT, capture_output=True, text=True,
                         timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode != 0, text[-3000:]
    assert "PoolSlotHeldError" in text and f"python -m ww_assets.defs.ops free {foreign}" in text, text[-3000:]
    assert "gpu-node-7" in text
    with dg.DagsterInstance.from_config(str(home)) as inst:
        (new,) = [r for r in inst.get_run_records() if r.dagster_run.run_id != foreign]
        assert new.dagster_run.status == dg.DagsterRunStatus.FAILURE
        events = [r.event_log_entry.dagster_event.event_type_value for r in inst.get_records_for_run(
            new.dagster_run.run_id).records if r.event_log_entry.dagster_event]
        # it failed without waiting: it never queued for a slot, never started a step
        assert "STEP_START" not in events and holders(inst, DUCKDB_POOL) == {foreign}
        for pool in (DUCKDB_POOL, GPU_POOL):
            assert not [p for p in inst.event_log_storage.get_concurrency_info(pool).pending_steps
                        if p.run_id == new.dagster_run.run_id]
        assert status(inst, foreign) == dg.DagsterRunStatus.STARTED   # nothing done to the foreign run
        waited = new.end_time - new.start_time

    # The named command, as printed, frees it.
    freed = subprocess.run(ops.python_cmd("-m", "ww_assets.defs.ops", "free", foreign), env=site["env"],
                           cwd=ops.REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert freed.returncode == 0, freed.stderr
    with dg.DagsterInstance.from_config(str(home)) as inst:
        assert holders(inst, DUCKDB_POOL) == set()
        assert status(inst, foreign) == dg.DagsterRunStatus.FAILURE
    ops.ARTIFACTS_DIR.mkdir(exist_ok=True)
    (ops.ARTIFACTS_DIR / "pool_reclaim_fail_fast.json").write_text(json.dumps({"run_start_to_failure_s":
                                                                                round(waited, 2)}))
