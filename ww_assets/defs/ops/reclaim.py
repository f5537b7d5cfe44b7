"""Who holds a pool slot, is that run still alive, and handing back the slots of runs that are proven dead.

A run killed with SIGKILL keeps its ``gpu`` / ``duckdb`` slot (Dagster frees slots only when a run ends, and a
killed run never records its end). Left alone, the next run of the same steps waits for that slot forever.

Every run records where its orchestrating process lives (run tags ``ww/worker_*``, written by the executor before
it claims anything: host name, boot id, pid namespace, pid, the process's start time, its process group). Liveness of a
holder is then decided, never guessed:

* **alive**: its process (or one of its step processes, or a process of its process group when it led one) still
  runs on this machine. Its slot is left alone: the new run waits, as Dagster intends.
* **dead**: it ran on this machine (same host name, boot id and pid namespace) and none of those processes
  exists any more (a pid that now belongs to a newer process counts as gone), or, on a SQLite instance (never
  shared between machines), it ran before this machine restarted. Its record is marked FAILURE (CANCELED if it was
  being cancelled), naming the dead process, and its slots are handed back.
* **unknown**: it ran on another machine or container, or it predates the tags on an instance shared between
  machines (PostgreSQL), or it never logged a process id. Nothing is freed; the caller says how to free it by hand
  (``FREE_COMMAND``).

Runs without the tags (started before this module existed) on a SQLite instance are judged by the pids their
events name, as the instance cannot be shared between machines.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

import dagster as dg

TAG_HOST = "ww/worker_host"
TAG_PIDNS = "ww/worker_pid_namespace"
TAG_PID = "ww/worker_pid"
TAG_PID_STARTED = "ww/worker_pid_started"
TAG_PGID = "ww/worker_pgid"
TAG_BOOT = "ww/worker_boot_id"
WORKER_TAGS = (TAG_HOST, TAG_BOOT, TAG_PIDNS, TAG_PID, TAG_PID_STARTED, TAG_PGID)

#: the one command that frees the slots of a run this process cannot judge
FREE_COMMAND = "python -m ww_assets.defs.ops free {run_id}"

ALIVE, DEAD, UNKNOWN = "alive", "dead", "unknown"

# run states in which a process should exist
ACTIVE_STATUSES = (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)

# a process whose start time differs from the recorded one by more than this is another process on a recycled pid
_SAME_PROCESS_S = 1.0


# --------------------------------------------------------------------------------------------- where a run lives
def pid_namespace() -> str:
    """The pid namespace of this process (Linux: the inode of /proc/self/ns/pid; "" elsewhere). Two containers on
    one machine may share a host name but never a pid namespace, and a pid means something only inside one."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def boot_id() -> str:
    """This boot of this machine's kernel (Linux: /proc/sys/kernel/random/boot_id; "" elsewhere). Two machines
    may share a host name (and every machine's first pid namespace has the same inode); they never share a boot
    id, and a machine that restarted has a new one."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def worker_tags() -> dict[str, str]:
    """The run tags that say where this process runs, so that another process can later tell whether it died."""
    import psutil

    pid = os.getpid()
    return {
        TAG_HOST: socket.gethostname(),
        TAG_BOOT: boot_id(),
        TAG_PIDNS: pid_namespace(),
        TAG_PID: str(pid),
        TAG_PID_STARTED: f"{psutil.Process(pid).create_time():.3f}",
        TAG_PGID: str(os.getpgid(pid)),
    }


def is_single_host_instance(instance: dg.DagsterInstance) -> bool:
    """True when run storage is SQLite: the instance cannot be shared between machines."""
    return "sqlite" in type(instance.run_storage).__module__.lower()


# --------------------------------------------------------------------------------------------- processes
def process_gone(pid: int, existed_at: float | None, exact: bool = False) -> str | None:
    """Why ``pid`` is no longer the process that was known to exist at ``existed_at`` (None when it still is).

    ``exact``: ``existed_at`` is the process's own start time (from the tags), so any other start time means a
    recycled pid; otherwise it is a moment the process existed (an event's time), and only a process started
    after it is another one.
    """
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return f"process {pid} has exited (zombie)"
        if existed_at is not None:
            started = proc.create_time()
            recycled = (abs(started - existed_at) > _SAME_PROCESS_S if exact
                        else started > existed_at + _SAME_PROCESS_S)
            if recycled:
                return f"process {pid} exited (its pid now belongs to a newer process)"
        return None
    except psutil.NoSuchProcess:
        return f"process {pid} no longer exists"
    except psutil.AccessDenied:
        return None


def group_members(pgid: int) -> list[int]:
    """Living processes of process group ``pgid`` (the step processes a killed run leader may leave behind)."""
    import psutil

    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def _event_pids(instance: dg.DagsterInstance, run_id: str) -> list[tuple[int, float]]:
    """(pid, time of the event) for every process a run's events name: the run worker or executor ("Started
    process for run (pid: N)", "Executing steps using multiprocess executor: parent process (pid: N)") and each
    step process ("Executing step ... in subprocess", pid in its metadata)."""
    types = {dg.DagsterEventType.ENGINE_EVENT, dg.DagsterEventType.STEP_WORKER_STARTED}
    out: list[tuple[int, float]] = []
    for record in instance.get_records_for_run(run_id, of_type=types, limit=1000).records:
        event = record.event_log_entry.dagster_event
        data = getattr(event, "event_specific_data", None) if event else None
        pid = (getattr(data, "metadata", None) or {}).get("pid")
        if pid is None:
            continue
        try:
            out.append((int(getattr(pid, "value", pid)), record.event_log_entry.timestamp))
        except (TypeError, ValueError):
            continue
    return out


def run_worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid of the process that runs ``run_id``: the first engine event that names one."""
    pids = _event_pids(instance, run_id)
    return pids[0][0] if pids else None


# --------------------------------------------------------------------------------------------- liveness
@dataclass(frozen=True)
class Liveness:
    state: str                 # ALIVE, DEAD or UNKNOWN
    reason: str                # e.g. "process 31608 no longer exists"
    where: str = ""            # e.g. "host ww-1, pid 31608"
    pid: int | None = None     # its (first) process


def run_liveness(instance: dg.DagsterInstance, run_id: str) -> Liveness:
    """Whether the processes of ``run_id`` still run (see the module docstring for the rules)."""
    record = instance.get_run_record_by_id(run_id)
    if record is None:
        return Liveness(UNKNOWN, "the instance has no record of it (deleted?)")
    tags = record.dagster_run.tags
    here = socket.gethostname()
    candidates: dict[int, tuple[float | None, bool]] = {}  # pid -> (when it is known to have existed, exact)
    pgid = None
    host = here
    if TAG_HOST in tags:
        host = tags[TAG_HOST]
        where = f"host {host}, pid {tags.get(TAG_PID, '?')}"
        if host != here:
            return Liveness(UNKNOWN, f"it runs on host {host}, not on this one ({here})", where)
        if tags.get(TAG_BOOT, "") != boot_id():
            if is_single_host_instance(instance):
                # SQLite is never shared between machines: same host name, new boot id = this machine restarted
                return Liveness(DEAD, f"this machine ({here}) has restarted since it started", where)
            return Liveness(UNKNOWN, f"it runs on another machine named {host} (another boot id), or before this "
                                     "one restarted", where)
        if tags.get(TAG_PIDNS, "") != pid_namespace():
            return Liveness(UNKNOWN, f"it runs in another container on host {here} (another pid namespace)",
                            where)
        try:
            candidates[int(tags[TAG_PID])] = (float(tags[TAG_PID_STARTED]), True)
            pgid = int(tags.get(TAG_PGID, "-1"))
        except (KeyError, ValueError):
            return Liveness(UNKNOWN, f"its {TAG_PID} / {TAG_PID_STARTED} tags are unreadable", where)
    elif not is_single_host_instance(instance):
        return Liveness(UNKNOWN, "it records no host (started before runs did) and this instance is shared "
                                 "between machines")
    for pid, at in _event_pids(instance, run_id):
        candidates.setdefault(pid, (at, False))
    if not candidates:
        return Liveness(UNKNOWN, "it never logged a process id", f"host {host}")
    leader = next(iter(candidates))
    where = f"host {host}, pid {leader}"
    reasons = {}
    for pid, (at, exact) in candidates.items():
        gone = process_gone(pid, at, exact)
        if gone is None:
            what = "its process" if pid == leader else "its step / worker process"
            return Liveness(ALIVE, f"{what} {pid} is still running", where, leader)
        reasons[pid] = gone
    if pgid == leader and not reasons[leader].endswith("newer process)"):
        # The leader is gone and its pid not reused, so the group's members (if any) are its own children.
        members = group_members(pgid)
        if members:
            return Liveness(ALIVE, f"process {members[0]} of its process group {pgid} is still running", where,
                            leader)
    return Liveness(DEAD, "; ".join(dict.fromkeys(reasons.values())), where, leader)


# --------------------------------------------------------------------------------------------- reclaiming
def mark_dead_and_free(instance: dg.DagsterInstance, run_id: str, reason: str, by: str) -> None:
    """Record why ``run_id`` ended (FAILURE, or CANCELED when it was being cancelled), unless its record already
    says it ended, and hand back every pool slot and queue place it holds."""
    record = instance.get_run_record_by_id(run_id)
    if record is not None and not record.dagster_run.is_finished:
        run = record.dagster_run
        message = (f"Run worker died without reporting an end: {reason} (killed, out of memory, or its machine "
                   f"restarted). Marked {'canceled' if run.status == dg.DagsterRunStatus.CANCELING else 'failed'} "
                   f"by {by}; its outputs were written atomically, so re-running the same selection is safe.")
        instance.report_engine_event(message, run)
        if run.status == dg.DagsterRunStatus.CANCELING:
            instance.report_run_canceled(run, message)
        else:
            instance.report_run_failed(run, message)
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)


@dataclass(frozen=True)
class Holder:
    """Another run that holds (or has been assigned) slots of ``pool``, or waits in its queue."""

    run_id: str
    pool: str
    steps: tuple[str, ...]     # its steps holding or assigned a slot (empty: only queued)
    liveness: Liveness

    def describe(self) -> str:
        steps = f" (step {', '.join(self.steps)})" if self.steps else " (queued)"
        where = f", {self.liveness.where}" if self.liveness.where else ""
        return f"run {self.run_id}{steps}{where}: {self.liveness.reason}"


@dataclass
class PoolCheck:
    reclaimed: list[Holder] = field(default_factory=list)
    dead: list[Holder] = field(default_factory=list)      # found dead, not freed (``reclaim=False``)
    alive: list[Holder] = field(default_factory=list)
    unknown: list[Holder] = field(default_factory=list)
    #: pools whose every slot is held by runs of unknown liveness: waiting could last forever
    stuck: dict[str, list[Holder]] = field(default_factory=dict)

    def stuck_message(self, run_id: str, steps_by_pool: dict[str, list[str]] | None = None) -> str:
        lines = []
        for pool, holders in self.stuck.items():
            steps = ", ".join((steps_by_pool or {}).get(pool, [])) or "steps"
            lines.append(f"Run {run_id}: {steps} need(s) a slot of pool {pool!r}, and every slot is held by a run "
                         f"this process cannot check:")
            lines += [f"  {h.describe()}" for h in holders]
        lines.append("If such a run is still running, wait for it to end and re-run. If it is dead (killed, or "
                     "its machine is gone), free its slots with")
        lines += [f"    {FREE_COMMAND.format(run_id=r)}" for r in
                  dict.fromkeys(h.run_id for hs in self.stuck.values() for h in hs)]
        lines.append("and re-run. Not waiting: no dagster-daemon run monitoring is running on this instance, so "
                     "nothing would ever hand a dead run's slot back.")
        return "\n".join(lines)


def check_pools(instance: dg.DagsterInstance, pools, run_id: str, by: str, reclaim: bool = True) -> PoolCheck:
    """Look at every other run that holds a slot of ``pools`` or waits in their queues; hand back the slots of
    those proven dead (``reclaim``); report which are alive and which cannot be judged, and the pools that only
    runs of unknown liveness keep full."""
    storage = instance.event_log_storage
    out = PoolCheck()
    if not storage.supports_global_concurrency_limits:
        return out
    # Read every pool first: one dead run may hold several (a run of a duckdb and a gpu step), and freeing it
    # frees them all.
    infos = {pool: storage.get_concurrency_info(pool) for pool in sorted(set(pools))}
    judged: dict[str, Liveness] = {}
    freed: set[str] = set()
    for pool, info in infos.items():
        in_use: dict[str, set[str]] = {}
        for slot in info.claimed_slots:
            in_use.setdefault(slot.run_id, set()).add(slot.step_key)
        for step in info.pending_steps:
            steps = in_use.setdefault(step.run_id, set())
            if step.assigned_timestamp is not None:
                steps.add(step.step_key)
        in_use.pop(run_id, None)
        unknown_slots = 0
        holders = []
        for other, steps in in_use.items():
            if other not in judged:
                judged[other] = run_liveness(instance, other)
            holder = Holder(other, pool, tuple(sorted(steps)), judged[other])
            holders.append(holder)
            if holder.liveness.state == DEAD and reclaim:
                if other not in freed:
                    mark_dead_and_free(instance, other, holder.liveness.reason, by)
                    freed.add(other)
                out.reclaimed.append(holder)
            elif holder.liveness.state == DEAD:
                out.dead.append(holder)
            elif holder.liveness.state == ALIVE:
                out.alive.append(holder)
            else:
                out.unknown.append(holder)
                unknown_slots += len(steps)
        if info.limit is not None and info.limit > 0 and unknown_slots >= info.limit:
            out.stuck[pool] = [h for h in holders if h.liveness.state == UNKNOWN and h.steps]
    return out


def dead_runs_are_watched(instance: dg.DagsterInstance) -> bool:
    """True when a dagster-daemon with run monitoring is alive on this instance (it marks dead runs failed and
    frees their slots where it can see them, e.g. Kubernetes pods), so waiting on an unknown holder can end."""
    try:
        if not instance.run_monitoring_enabled:
            return False
        status = instance.get_daemon_statuses(["MONITORING"]).get("MONITORING")
        return bool(status and status.healthy)
    except Exception:  # noqa: BLE001 - no daemon information is "not watched"
        return False


def reap_runs(instance: dg.DagsterInstance, by: str, min_age_seconds: float = 0.0) -> list[tuple[str, Liveness]]:
    """Every active run (started / canceling) proven dead on this machine: marked ended, slots freed."""
    import time

    done = []
    now = time.time()
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=list(ACTIVE_STATUSES)), limit=500):
        started = record.start_time or record.create_timestamp.timestamp()
        if now - started < min_age_seconds:
            continue
        liveness = run_liveness(instance, record.dagster_run.run_id)
        if liveness.state == DEAD:
            mark_dead_and_free(instance, record.dagster_run.run_id, liveness.reason, by)
            done.append((record.dagster_run.run_id, liveness))
    return done
