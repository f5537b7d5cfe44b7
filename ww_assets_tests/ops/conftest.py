"""The ops tests' shared site: the pipeline materialised once per session on the tiny sample, as `make demo` does."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from ww_assets.storage import StorageLayout
from ww_assets_tests.support import ops

#: the tiny sample's two cutout batches: the demo site's image source holds the first; the second arrives later
#: (ops/test_automation_daemon.py drops it in while dagster dev runs)
FIRST_BATCH, LATER_BATCH = "batch_000", "batch_001"


def age(folder: Path, seconds: float = 3600) -> None:
    """Make a copied folder look settled (its last change an hour ago)."""
    old = time.time() - seconds
    for p in [folder, *folder.rglob("*")]:
        os.utime(p, (old, old))


@pytest.fixture(scope="session")
def demo_site(tmp_path_factory) -> dict:
    """Storage root + DAGSTER_HOME (the project's dagster.yaml) with every asset materialised by
    ``python -m ww_assets.demo --size tiny``; the image source is a folder (``WW_IMAGES_SOURCE``) holding the first
    of the sample's batches, so the ``new_image_batches`` sensor watches it. Tests may add to it, never remove."""
    from ww_assets.simulation.sample import build_sample

    base = tmp_path_factory.mktemp("site")
    root, home, incoming = base / "data", base / "home", base / "incoming"
    layout = StorageLayout(root)
    build_sample(layout.sample_dir, size="tiny", seed=20211)     # the sample resource finds it and reuses it
    incoming.mkdir()
    shutil.copytree(layout.sample_dir / "cutouts" / FIRST_BATCH, incoming / FIRST_BATCH)
    age(incoming / FIRST_BATCH)
    ops.write_instance_yaml(home)
    env = ops.dagster_env(home, root, WW_IMAGES_SOURCE=str(incoming))
    started = time.monotonic()
    demo = subprocess.run(ops.python_cmd("-m", "ww_assets.demo", "--size", "tiny"), env=env, cwd=ops.REPO_ROOT,
                          capture_output=True, text=True, timeout=900)
    assert demo.returncode == 0, f"`python -m ww_assets.demo --size tiny` failed:\n{demo.stdout[-3000:]}\n" \
                                 f"{demo.stderr[-5000:]}"
    print(f"demo on the tiny sample: {time.monotonic() - started:.0f} s")
    return {"root": root, "home": home, "logs": base / "logs", "env": env, "layout": layout, "incoming": incoming}
