"""New data reaches every result with no one acting: a batch folder dropped into the image source of a running
``dagster dev`` (the README's ``make ui``) ends in a catalogue with its images, through the ``new_image_batches``
sensor (cutouts + scores of the batch) and the ``results_follow_new_data`` automation sensor (everything downstream).

The pipeline is first materialised with one of the tiny sample's two cutout batches (the session's ``demo_site``,
``python -m ww_assets.demo``); the second batch arrives while the daemon runs. Nothing is launched by hand after that.
"""

from __future__ import annotations

import shutil
import time

import pandas as pd
import pytest

from ww_assets.storage import StorageLayout
from ww_assets_tests.ops.conftest import FIRST_BATCH, LATER_BATCH, age
from ww_assets_tests.support import ops

pytestmark = [pytest.mark.slow]

FIRST, LATER = FIRST_BATCH, LATER_BATCH


def _catalogue_rows(layout: StorageLayout) -> tuple[int, set[str]]:
    path = layout.analysis_file("catalogue")
    if not path.exists():
        return 0, set()
    frame = pd.read_parquet(path, columns=["object_id", "batch"])
    return len(frame), set(frame["batch"])


RUNS = """
query { runsOrError(limit: 50) { ... on Runs { results { runId status tags { key value }
  assetSelection { path } } } } }
"""


def test_a_new_batch_reaches_the_catalogue_with_no_one_acting(demo_site):
    layout, incoming = demo_site["layout"], demo_site["incoming"]
    env, logs = demo_site["env"], demo_site["logs"]
    rows_before, batches_before = _catalogue_rows(layout)
    assert rows_before > 0 and LATER not in batches_before and FIRST in batches_before

    with ops.dagster_dev(env, logs) as server:
        demo_runs = {r["runId"] for r in server.graphql(RUNS)["runsOrError"]["results"]}
        # the second batch arrives as a finished copy (copied under a hidden name, then renamed into place)
        staging = incoming / f".{LATER}.copying"
        shutil.copytree(layout.sample_dir / "cutouts" / LATER, staging)
        age(staging)
        staging.rename(incoming / LATER)
        started = time.monotonic()
        rows = rows_before
        while time.monotonic() < started + 600:
            rows, batches = _catalogue_rows(layout)
            if LATER in batches:
                break
            time.sleep(5)
        else:
            pytest.fail(f"the catalogue never took in {LATER} within 600 s (rows {rows_before} -> {rows}); "
                        f"dagster dev log:\n{server.service.tail(80)}")
        seconds = time.monotonic() - started
        runs = [r for r in server.graphql(RUNS)["runsOrError"]["results"] if r["runId"] not in demo_runs]

    rows_after, batches_after = _catalogue_rows(layout)
    assert {FIRST, LATER} <= batches_after and rows_after > rows_before
    print(f"batch arrived -> catalogue updated in {seconds:.0f} s ({rows_before} -> {rows_after} rows)")
    by_sensor: dict[str, set[str]] = {}
    for run in runs:
        tags = {t["key"]: t["value"] for t in run["tags"]}
        # every run since the demo was launched by a sensor: the batch's scoring by new_image_batches, the rest by
        # the automation; none by hand
        sensor = tags.get("dagster/sensor_name")
        assert sensor in ("new_image_batches", "results_follow_new_data"), tags
        by_sensor.setdefault(sensor, set()).update("/".join(a["path"]) for a in run["assetSelection"] or [])
        assert run["status"] in ("SUCCESS", "STARTED", "STARTING", "QUEUED"), (run["status"], tags)
    assert {"cutouts", "anomaly_scores"} <= by_sensor.get("new_image_batches", set()), by_sensor
    assert {"catalogue", "anomaly_scores_normalised", "plots"} <= by_sensor.get("results_follow_new_data", set()), \
        by_sensor
