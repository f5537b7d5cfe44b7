"""The package as a user installs it: a wheel without the tests, carrying the pretrained model and the groups, that
runs the demo in a fresh environment outside the checkout; and an install that is exactly the lock."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_the_installed_environment_is_the_lock():
    """Every locked package at its locked version, and nothing beside the lock but torch and the project."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import check_environment as ce
    finally:
        sys.path.pop(0)
    pins = ce.locked()
    assert ce.differences(pins, ce.installed()) == []
    # the check itself notices drift, a missing package and an unlocked one
    drifted = dict(ce.installed(), numpy="0.0.1")
    drifted.pop("duckdb")
    drifted["left-pad"] = "1.0"
    problems = ce.differences(pins, drifted)
    assert any("numpy" in p and "wrong version" in p for p in problems)
    assert any("missing: duckdb" in p for p in problems) and any("left-pad" in p for p in problems)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(REPO)], check=True, cwd=out)
    (path,) = out.glob("ww_pipeline-*.whl")
    return path


def test_wheel_holds_the_package_and_its_data_but_no_tests(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith("ww_assets_tests")]
    for part in ("generator", "discriminator", "encoder"):
        assert f"ww_assets/model/pretrained/wgan-cpu/{part}.safetensors" in names
    assert "ww_assets/model/pretrained/wgan-cpu/card.json" in names
    assert {f"ww_assets/defs/{g}/defs.yaml" for g in ("zooniverse", "consensus", "images", "model", "scores",
                                                        "analysis")} <= set(names)


@pytest.mark.slow
def test_installed_wheel_runs_the_demo_outside_the_checkout(wheel, tmp_path):
    """A fresh venv that sees this environment's dependencies but not the checkout, the wheel installed into it,
    the demo run from an empty folder: every asset materialises and the shipped model is the one loaded."""
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # the dependencies (not the editable checkout: a plain path entry does not run its .pth import hooks)
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site, str(wheel)], check=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WW_") and k != "PYTHONPATH"}
    env.update(DAGSTER_HOME=str(work / "home"), WW_DATA_ROOT=str(work / "data"), WW_PSEUDONYM_KEY="test")
    (work / "home").mkdir()
    where = subprocess.run([str(python), "-c", "import ww_assets; print(ww_assets.__file__)"], cwd=work, env=env,
                           check=True, capture_output=True, text=True).stdout.strip()
    assert where.startswith(site) and str(REPO) not in where
    run = subprocess.run([str(python), "-m", "ww_assets.demo", "--size", "tiny"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "every asset materialised" in run.stdout
    card = (work / "data" / "models" / "wgan" / "card.json").read_text()
    assert '"source": "checkpoint"' in card and "wgan-cpu" in card
