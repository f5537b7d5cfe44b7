"""Shared fixtures. Every test writes under its own storage root and Dagster home; nothing touches data/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# A fixed key for tests; a live pull refuses to run without WW_PSEUDONYM_KEY set by the user.
os.environ.setdefault("WW_PSEUDONYM_KEY", "test-pseudonym-key-not-secret")
# Keep Dagster from phoning home during tests.
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]

# The loopback Zooniverse server (Panoptes + Talk wire format) and its fixtures.
pytest_plugins = ["ww_assets_tests.support.loopback_zooniverse"]


@pytest.fixture
def storage_root(tmp_path, monkeypatch) -> Path:
    """A fresh storage root, also exported as WW_DATA_ROOT for code that reads the environment."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("WW_DATA_ROOT", str(root))
    return root


@pytest.fixture
def dagster_home(tmp_path, monkeypatch) -> Path:
    """A fresh DAGSTER_HOME holding a copy of the project's dagster.yaml (if any)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    project_yaml = REPO_ROOT / "dagster.yaml"
    if project_yaml.exists():
        (home / "dagster.yaml").write_text(project_yaml.read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_sample(tmp_path_factory) -> Path:
    """The embedded sample at size 'tiny', built once per test session (read-only for tests: copy to change)."""
    from ww_assets.simulation.sample import build_sample

    out = tmp_path_factory.mktemp("sample") / "sample"
    build_sample(out, size="tiny", seed=20211)
    return out


@pytest.fixture
def torch_one_thread():
    """One intra-op thread for torch: fast on a busy 2-core machine (no spinning) and one fixed reduction order.
    Model tests use it for the whole module: ``pytestmark = pytest.mark.usefixtures("torch_one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
