"""What only the operations tests need on top of ``ww_assets.harness.services``: where artefacts go, and the
fault-injection shim that lets a test pause or kill a run's processes at a chosen point."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Mapping

from ww_assets.harness.services import (  # noqa: F401  (the tests reach the services through this module)
    REPO_ROOT,
    DagsterServer,
    Service,
    backfill_status,
    dagster_cmd,
    dagster_dev,
    dagster_env,
    dagster_webserver,
    free_port,
    http_get,
    kill_tree,
    launch_asset_backfill,
    pg_dump_text,
    port_open,
    postgres_bin_dir,
    postgres_server,
    process_tree,
    python_cmd,
    running,
    sqlite_instance_text,
    start_service,
    stop_sensor,
    wait_until,
    write_instance_yaml,
)

ARTIFACTS_DIR = REPO_ROOT / "test-artifacts"



def copy_artifact(path: Path, name: str | None = None) -> Path:
    """Keep ``path`` under test-artifacts/ (gitignored) for a person to look at after the run."""
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    dest = ARTIFACTS_DIR / (name or path.name)
    shutil.copy(path, dest)
    return dest



# --------------------------------------------------------------------------------------------- fault injection
# A sitecustomize that every Python process of a run (the CLI, the multiprocess executor's step workers) loads at
# start-up. When WW_FAULT_PAUSE_DIR names a folder, the pipeline's atomic_dir pauses for that folder after the
# step has written every file into the temporary folder and before the rename: the moment where a kill would
# do the most damage if writes were not atomic. It touches WW_FAULT_MARKER so the test knows when to kill.
FAULT_SITECUSTOMIZE = '''
import os
if os.environ.get("WW_FAULT_PAUSE_DIR"):
    import contextlib, time
    from pathlib import Path
    import ww_assets.storage as _storage
    _orig_atomic_dir = _storage.atomic_dir
    _target = Path(os.environ["WW_FAULT_PAUSE_DIR"]).resolve()

    @contextlib.contextmanager
    def _paused_atomic_dir(final):
        with _orig_atomic_dir(final) as tmp:
            yield tmp
            if Path(final).resolve() == _target:
                Path(os.environ["WW_FAULT_MARKER"]).write_text(f"{os.getpid()} {tmp}")
                time.sleep(float(os.environ.get("WW_FAULT_PAUSE_S", "600")))

    _storage.atomic_dir = _paused_atomic_dir
'''



def fault_env(base_env: Mapping[str, str], shim_dir: Path, pause_dir: Path, marker: Path) -> dict[str, str]:
    """``base_env`` plus the pause-before-rename shim for ``pause_dir`` (see FAULT_SITECUSTOMIZE)."""
    shim_dir.mkdir(parents=True, exist_ok=True)
    (shim_dir / "sitecustomize.py").write_text(FAULT_SITECUSTOMIZE)
    env = dict(base_env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(shim_dir), env.get("PYTHONPATH", "")) if p)
    env["WW_FAULT_PAUSE_DIR"] = str(pause_dir)
    env["WW_FAULT_MARKER"] = str(marker)
    return env



def mount_namespace_prefix() -> list[str] | None:
    """A command prefix that runs its command in a private mount namespace where it may mount (tmpfs, read-only
    binds) without touching the host: ``unshare -m`` as root, ``unshare -rm`` (user namespace) otherwise.
    None when neither works here (then disk-full / read-only tests cannot build their storage)."""
    if shutil.which("unshare") is None:
        return None
    candidates = [["unshare", "-m"], ["unshare", "-rm"]] if os.geteuid() == 0 else [["unshare", "-rm"]]
    for prefix in candidates:
        probe = subprocess.run([*prefix, "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /tmp && echo ok"],
                               capture_output=True, text=True, timeout=30)
        if probe.returncode == 0 and "ok" in probe.stdout:
            return prefix
    return None



# --------------------------------------------------------------------------------------------- pool slots
# A sitecustomize that pauses the orchestrating process of a run right after it has claimed a slot of every pool
# in WW_FAULT_PAUSE_AFTER_CLAIM (comma-separated; touching WW_FAULT_MARKER), so a test can SIGKILL a run at the
# moment it holds those pool slots: the state a killed `dagster asset materialize` leaves behind.
CLAIM_PAUSE_SITECUSTOMIZE = '''
import os
if os.environ.get("WW_FAULT_PAUSE_AFTER_CLAIM"):
    import time
    from pathlib import Path
    from dagster._core.execution.plan import instance_concurrency_context as _icc
    _orig_claim = _icc.InstanceConcurrencyContext.claim
    _wanted = set(os.environ["WW_FAULT_PAUSE_AFTER_CLAIM"].split(","))
    _claimed = set()

    def _claim_then_pause(self, concurrency_key, step_key, step_priority=0):
        claimed = _orig_claim(self, concurrency_key, step_key, step_priority)
        if claimed and concurrency_key in _wanted:
            _claimed.add(concurrency_key)
            if _claimed >= _wanted:
                Path(os.environ["WW_FAULT_MARKER"]).write_text(f"{os.getpid()} {sorted(_claimed)}")
                time.sleep(float(os.environ.get("WW_FAULT_PAUSE_S", "600")))
        return claimed

    _icc.InstanceConcurrencyContext.claim = _claim_then_pause
'''


def claim_pause_env(base_env: Mapping[str, str], shim_dir: Path, pools: list[str] | tuple[str, ...],
                    marker: Path) -> dict[str, str]:
    """``base_env`` plus the pause-after-claiming-``pools`` shim (see CLAIM_PAUSE_SITECUSTOMIZE)."""
    shim_dir.mkdir(parents=True, exist_ok=True)
    (shim_dir / "sitecustomize.py").write_text(CLAIM_PAUSE_SITECUSTOMIZE)
    env = dict(base_env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(shim_dir), env.get("PYTHONPATH", "")) if p)
    env["WW_FAULT_PAUSE_AFTER_CLAIM"] = ",".join(pools)
    env["WW_FAULT_MARKER"] = str(marker)
    return env
