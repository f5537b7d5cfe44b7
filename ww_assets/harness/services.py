"""Real services in subprocesses, started and stopped cleanly: for the operations tests and the benchmarks.

Everything here starts a real program (dagster dev, dagster-webserver, PostgreSQL, a pipeline run) in its own
process group on 127.0.0.1, logs it to a file (shown when a test fails), and stops the whole group at the end, so
no test or benchmark leaves a server behind. It runs from a checkout (the workspace.yaml at its root).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKSPACE = REPO_ROOT / "workspace.yaml"
BIN = Path(sys.executable).parent  # the venv's bin: dagster, dagster-webserver, dagster-daemon


class ServiceError(RuntimeError):
    """A server did not come up (or died); the message carries the tail of its log."""


# --------------------------------------------------------------------------------------------- ports, waiting
def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.5,
               service: "Service | None" = None) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` (and the service's log)."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        if service is not None and service.proc.poll() is not None:
            raise ServiceError(f"{service.name} exited with code {service.proc.returncode} while waiting for "
                               f"{what}\n--- log tail ---\n{service.tail()}")
        try:
            value = predicate()
            if value:
                return value
        except ServiceError:
            raise
        except Exception as exc:  # noqa: BLE001 - keep polling; reported on timeout
            last_exc = exc
        time.sleep(interval)
    detail = f" (last error: {last_exc!r})" if last_exc else ""
    log = f"\n--- {service.name} log tail ---\n{service.tail()}" if service else ""
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}{detail}{log}")


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# --------------------------------------------------------------------------------------------- processes
@dataclass
class Service:
    """A program running in its own process group, logging to ``log_path``."""

    name: str
    proc: subprocess.Popen
    log_path: Path
    _log_file: Any = field(repr=False, default=None)

    def tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after ``grace`` seconds."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # Children (run workers, code servers) may outlive the leader: sweep the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        if self._log_file is not None:
            self._log_file.close()


def start_service(name: str, cmd: Sequence[str], env: Mapping[str, str], log_dir: Path,
                  cwd: Path = REPO_ROOT) -> Service:
    """Start ``cmd`` in a new session (own process group) with stdout+stderr to ``log_dir/<name>.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log_file = open(log_path, "ab")  # noqa: SIM115 - closed in Service.stop
    proc = subprocess.Popen(list(cmd), cwd=cwd, env=dict(env), stdout=log_file, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    return Service(name=name, proc=proc, log_path=log_path, _log_file=log_file)


@contextlib.contextmanager
def running(service: Service) -> Iterator[Service]:
    try:
        yield service
    finally:
        service.stop()


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (children first found by walking /proc via psutil)."""
    import psutil

    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return []
    return [pid] + [p.pid for p in parent.children(recursive=True)]


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> list[int]:
    """Send ``sig`` to ``pid`` and every descendant at once (what the OOM killer or ``kill -9`` would do)."""
    pids = process_tree(pid)
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, sig)
    return pids


# --------------------------------------------------------------------------------------------- environments
def dagster_env(home: Path, storage_root: Path, sample_size: str = "tiny", **extra: str) -> dict[str, str]:
    """Environment for a Dagster subprocess: its own DAGSTER_HOME and storage root, the tiny sample, the CI-sized
    wGAN preset, no telemetry, and no Zooniverse credentials inherited from the caller unless given in
    ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANOPTES_")}
    env.update({
        "DAGSTER_HOME": str(home),
        "WW_DATA_ROOT": str(storage_root),
        "WW_SAMPLE_SIZE": sample_size,
        "WW_WGAN_PRESET": "ci",          # the model helper's seconds-long CPU config (scores mean nothing)
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    })
    env.update(extra)
    return env


def project_instance_config() -> dict:
    """The project's dagster.yaml as a dict (the local, single-machine instance)."""
    return yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text()) or {}


def write_instance_yaml(home: Path, overrides: Mapping[str, Any] | None = None,
                        drop: Sequence[str] = ()) -> Path:
    """Write ``home/dagster.yaml``: the project's config, top-level keys in ``drop`` removed, ``overrides``
    merged one level deep (a dict value updates the section, anything else replaces it)."""
    config = project_instance_config()
    for key in drop:
        config.pop(key, None)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# --------------------------------------------------------------------------------------------- Dagster servers
@dataclass
class DagsterServer:
    """A running ``dagster dev`` (webserver + daemon + code server) or ``dagster-webserver``."""

    service: Service
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None, timeout: float = 60) -> dict:
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        req = urllib.request.Request(f"{self.url}/graphql", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback only
            payload = json.loads(resp.read())
        if payload.get("errors"):
            raise RuntimeError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]


LOCATION_STATUS = """
query { workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message stack } } } } } }
"""


def _location_loaded(server: DagsterServer) -> bool:
    data = server.graphql(LOCATION_STATUS, timeout=10)["workspaceOrError"]
    entries = data.get("locationEntries") or []
    if not entries or any(e["loadStatus"] != "LOADED" for e in entries):
        return False
    for e in entries:
        loc = e["locationOrLoadError"]
        if loc and loc["__typename"] == "PythonError":
            raise ServiceError(f"code location {e['name']} failed to load:\n{loc['message']}\n"
                               + "".join(loc.get("stack") or []))
    return True


@contextlib.contextmanager
def dagster_dev(env: Mapping[str, str], log_dir: Path, port: int | None = None, host: str | None = None,
                workspace: Path = WORKSPACE, timeout: float = 180) -> Iterator[DagsterServer]:
    """``dagster dev`` (webserver, daemon, code server) on 127.0.0.1, ready when the code location is loaded."""
    port = port or free_port()
    cmd = [str(BIN / "dagster"), "dev", "-w", str(workspace), "-p", str(port)]
    if host:
        cmd += ["-h", host]
    service = start_service("dagster-dev", cmd, env, log_dir)
    server = DagsterServer(service, host or "127.0.0.1", port)
    with running(service):
        wait_until(lambda: _location_loaded(server), timeout, "dagster dev to load the code location",
                   interval=1.0, service=service)
        yield server


@contextlib.contextmanager
def dagster_webserver(env: Mapping[str, str], log_dir: Path, port: int | None = None,
                      extra_args: Sequence[str] = (), workspace: Path = WORKSPACE,
                      timeout: float = 120) -> Iterator[DagsterServer]:
    """``dagster-webserver`` alone (no daemon). ``extra_args`` go on the command line as they are."""
    port = port or free_port()
    cmd = [str(BIN / "dagster-webserver"), "-w", str(workspace), "-p", str(port), *extra_args]
    service = start_service("dagster-webserver", cmd, env, log_dir)
    server = DagsterServer(service, "127.0.0.1", port)
    with running(service):
        wait_until(lambda: _location_loaded(server), timeout, "dagster-webserver to load the code location",
                   interval=1.0, service=service)
        yield server


LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId }
  ... on PythonError { message stack } ... on InvalidSubsetError { message }
  ... on UnauthorizedError { message } ... on PartitionSetNotFoundError { message }
  ... on InvalidStepError { invalidStepKey } ... on InvalidOutputError { stepKey invalidOutputName }
  ... on RunConflict { message } ... on PresetNotFoundError { message }
  ... on ConflictingExecutionParamsError { message } ... on NoModeProvidedError { message }
} }
"""

BACKFILL_STATUS = """
query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
  ... on PartitionBackfill { id status numPartitions } ... on PythonError { message } } }
"""


def launch_asset_backfill(server: DagsterServer, asset_keys: Sequence[str], partitions: Sequence[str],
                          run_config: Mapping[str, Any] | None = None, title: str = "") -> str:
    """Launch a partition backfill of ``asset_keys`` over ``partitions`` through the GraphQL API (as the UI
    does); returns the backfill id. The daemon turns it into one queued run per partition."""
    params: dict[str, Any] = {
        "assetSelection": [{"path": [k]} for k in asset_keys],
        "partitionNames": list(partitions),
        "fromFailure": False,
        "title": title or None,
    }
    if run_config:
        params["runConfigData"] = dict(run_config)
    result = server.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(f"backfill not launched: {result}")
    return result["backfillId"]


def backfill_status(server: DagsterServer, backfill_id: str) -> str:
    data = server.graphql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
    if data["__typename"] != "PartitionBackfill":
        raise RuntimeError(f"backfill {backfill_id}: {data}")
    return data["status"]


# --------------------------------------------------------------------------------------------- PostgreSQL
def postgres_bin_dir() -> Path | None:
    """The newest Debian PostgreSQL server binaries (/usr/lib/postgresql/<v>/bin), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(found[-1]).parent if found else None


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    db: str
    data_dir: Path
    service_log: Path

    def storage_config(self) -> dict:
        """The ``storage: postgres:`` section of a dagster.yaml pointing at this server."""
        return {"postgres": {"postgres_db": {"hostname": self.host, "port": self.port, "username": self.user,
                                             "password": "", "db_name": self.db}}}

    def url(self, db: str | None = None) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{db or self.db}"

    def create_database(self, name: str) -> str:
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return name


def _as_postgres_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: when we are root, run the command as the ``postgres`` (Debian) or
    ``nobody`` user via runuser."""
    if os.geteuid() != 0:
        return cmd
    import pwd

    for user in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(user)
            return ["runuser", "-u", user, "--", *cmd]
    raise ServiceError("running as root and neither a 'postgres' nor a 'nobody' user exists for PostgreSQL")


@contextlib.contextmanager
def postgres_server(log_dir: Path, db: str = "dagster", timeout: float = 60) -> Iterator[PostgresServer]:
    """A throw-away PostgreSQL server: initdb in a fresh temp dir, listening on 127.0.0.1:<free port> (and a
    Unix socket in the same dir), trust auth for the local user ``dagster``, durability off for speed."""
    bindir = postgres_bin_dir()
    if bindir is None:
        raise ServiceError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin; "
                           "run `bash scripts/install_system_deps.sh`")
    # pytest's tmp dirs are private to their owner; the server may run as another user, so use /tmp directly.
    base = Path(tempfile.mkdtemp(prefix="ww-pg-"))
    base.chmod(0o755)
    data_dir = base / "data"
    if os.geteuid() == 0:
        owner = _as_postgres_user(["true"])[2]
        shutil.chown(base, user=owner)
    log_dir.mkdir(parents=True, exist_ok=True)
    server_log = base / "server.log"
    port = free_port()
    user = "dagster"
    init = subprocess.run(
        _as_postgres_user([str(bindir / "initdb"), "-D", str(data_dir), "-U", user, "-A", "trust",
                           "-E", "UTF8", "--no-sync", "--locale=C"]),
        capture_output=True, text=True, timeout=120)
    if init.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        raise ServiceError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
    opts = (f"-h 127.0.0.1 -p {port} -k {base} -c fsync=off -c synchronous_commit=off "
            f"-c full_page_writes=off -c max_connections=200 -c shared_buffers=32MB")
    start = subprocess.run(
        _as_postgres_user([str(bindir / "pg_ctl"), "-D", str(data_dir), "-l", str(server_log), "-o", opts,
                           "-w", "-t", str(int(timeout)), "start"]),
        capture_output=True, text=True, timeout=timeout + 10)
    server = PostgresServer("127.0.0.1", port, user, db, data_dir, log_dir / "postgres.log")
    try:
        if start.returncode != 0:
            log = server_log.read_text(errors="replace") if server_log.exists() else ""
            raise ServiceError(f"pg_ctl start failed:\n{start.stdout}\n{start.stderr}\n{log}")
        wait_until(lambda: port_open("127.0.0.1", port), timeout, f"PostgreSQL on 127.0.0.1:{port}")
        server.create_database(db)
        yield server
    finally:
        subprocess.run(_as_postgres_user([str(bindir / "pg_ctl"), "-D", str(data_dir), "-m", "immediate",
                                          "-w", "stop"]), capture_output=True, timeout=60)
        with contextlib.suppress(OSError):
            shutil.copy(server_log, server.service_log)
        shutil.rmtree(base, ignore_errors=True)


def pg_dump_text(server: PostgresServer, db: str | None = None) -> str:
    """The whole database as SQL text (what an operator with database access could read)."""
    bindir = postgres_bin_dir()
    out = subprocess.run([str(bindir / "pg_dump"), "-h", server.host, "-p", str(server.port), "-U", server.user,
                          "--no-owner", db or server.db], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PGCONNECT_TIMEOUT": "10"})
    if out.returncode != 0:
        raise RuntimeError(f"pg_dump failed: {out.stderr}")
    return out.stdout


# --------------------------------------------------------------------------------------------- inspection
def sqlite_instance_text(home: Path) -> str:
    """Every byte Dagster keeps under a SQLite DAGSTER_HOME (run, event, schedule databases and compute logs),
    decoded leniently, so a test can grep it for things that must never be stored."""
    chunks: list[str] = []
    for path in sorted(home.rglob("*")):
        if path.is_file() and path.name != "dagster.yaml":
            chunks.append(path.read_bytes().decode("utf-8", errors="replace"))
    return "\n".join(chunks)


def python_cmd(*args: str) -> list[str]:
    return [sys.executable, *args]


def dagster_cmd(*args: str) -> list[str]:
    return [str(BIN / "dagster"), *args]


SENSOR_STATE = """
query($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) { __typename
  ... on Sensor { jobOriginId sensorState { selectorId status } } ... on PythonError { message } } }
"""
STOP_SENSOR = """
mutation($origin: String!, $selectorId: String!) { stopSensor(jobOriginId: $origin, jobSelectorId: $selectorId) {
  __typename ... on StopSensorMutationResult { instigationState { status } } ... on PythonError { message } } }
"""


def stop_sensor(server: DagsterServer, name: str, location: str = "ww_assets",
                repository: str = "__repository__") -> str:
    """Stop sensor ``name`` through the GraphQL API (as the UI's toggle does); returns its new status."""
    selector = {"repositoryLocationName": location, "repositoryName": repository, "sensorName": name}
    sensor = server.graphql(SENSOR_STATE, {"selector": selector})["sensorOrError"]
    if sensor["__typename"] != "Sensor":
        raise RuntimeError(f"sensor {name}: {sensor}")
    if sensor["sensorState"]["status"] == "STOPPED":
        return "STOPPED"
    result = server.graphql(STOP_SENSOR, {"origin": sensor["jobOriginId"],
                                          "selectorId": sensor["sensorState"]["selectorId"]})["stopSensor"]
    if result["__typename"] != "StopSensorMutationResult":
        raise RuntimeError(f"could not stop sensor {name}: {result}")
    return result["instigationState"]["status"]
