"""Bad settings: the code location still loads where a setting is not needed to load it, and using the setting
fails with a message that names the variable and its value."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ww_assets import settings
from ww_assets.defs.resources import resolved, resources
from ww_assets.storage import StorageLayout

BAD = {
    "WW_SAMPLE_SEED": "abc",
    "WW_SAMPLE_SIZE": "enormous",
    "WW_ZOONIVERSE_EXPORT_FOLDER": "/no/such/export/folder",
    "WW_ZOONIVERSE_PROJECT": "12/ab cd",
    "WW_DUCKDB_THREADS": "many",
    "WW_IMAGES_SOURCE": "/no/such/cutouts",
    "WW_WGAN_PRESET": "huge",
}


def _load(env: dict) -> subprocess.CompletedProcess:
    code = "import ww_assets.definitions as d; print(len(list(d.defs.resolve_asset_graph().get_all_asset_keys())))"
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=300)


def test_the_location_loads_with_every_bad_value_it_does_not_need():
    run = _load(BAD)
    assert run.returncode == 0, run.stderr[-2000:]
    assert int(run.stdout.strip().splitlines()[-1]) >= 20


def test_a_setting_needed_to_load_names_itself():
    run = _load({"WW_ZOONIVERSE_PULL_CRON": "every tuesday"})
    assert run.returncode != 0
    assert "WW_ZOONIVERSE_PULL_CRON='every tuesday'" in run.stderr


@pytest.mark.parametrize("name", sorted(BAD))
def test_using_a_bad_setting_names_the_variable_and_the_value(name, monkeypatch, tmp_path):
    monkeypatch.setenv(name, BAD[name])
    res = resources().resources
    layout = StorageLayout(tmp_path)
    use = {
        "WW_SAMPLE_SEED": lambda: res["sample"].spec(),
        "WW_SAMPLE_SIZE": lambda: res["sample"].spec(),
        "WW_ZOONIVERSE_EXPORT_FOLDER": lambda: res["zooniverse"].open_source(layout, res["sample"]),
        "WW_ZOONIVERSE_PROJECT": lambda: res["zooniverse"].open_source(layout, res["sample"]),
        "WW_DUCKDB_THREADS": lambda: res["duckdb"].duckdb_config(),
        "WW_IMAGES_SOURCE": lambda: res["images"].images_root(layout),
        "WW_WGAN_PRESET": lambda: res["model"].preset_setting(),
    }[name]
    with pytest.raises(settings.SettingError) as err:
        use()
    assert f"{name}={BAD[name]!r}" in str(err.value), str(err.value)


def test_resources_take_environment_variables_as_envvars(monkeypatch):
    import dagster as dg

    monkeypatch.setenv("WW_SAMPLE_SEED", "7")
    sample = resources().resources["sample"]
    assert isinstance(sample.seed, dg.EnvVar) and sample.seed.env_var_name == "WW_SAMPLE_SEED"
    assert resolved(sample.seed) == "7" and sample.spec()[1] == 7


def test_secrets_are_never_shown():
    assert "<secret>" in str(pytest.raises(settings.SettingError, settings.check_value, "PANOPTES_PASSWORD", "").value)
    rows = dict((n, shown) for n, shown, _ in settings.describe({"PANOPTES_PASSWORD": "hunter2"}))
    assert rows["PANOPTES_PASSWORD"] == "<set>"
