"""Declarative automation: which results follow new data, evaluated by Dagster on the project's real asset graph.

Materialisations are reported to a real (ephemeral) instance and ``dg.evaluate_automation_conditions`` decides, as
the daemon's ``results_follow_new_data`` sensor does on every tick.
"""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pytest

from ww_assets.defs.automation import FOLLOW_INPUTS, PER_BATCH_ASSETS, consensus_freshness, pull_interval
from ww_assets.defs.images.partitions import image_batches
from ww_assets.definitions import defs

GRAPH = defs.resolve_asset_graph()


def _report(instance, key: str, batch: str | None = None) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=batch))


def _requested(result) -> set[str]:
    return {k.to_user_string() for k in result._requested_partitions_by_asset_key}


def _following() -> set[str]:
    return {k.to_user_string() for k in GRAPH.toposorted_asset_keys if GRAPH.get(k).automation_condition is not None}


@pytest.fixture
def instance_with_everything():
    """An instance on which every asset has been materialised once (batch b0), and the automation's cursor."""
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(image_batches.name, ["b0"])
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    for key in GRAPH.toposorted_asset_keys:
        _report(instance, key.to_user_string(), "b0" if GRAPH.get(key).partitions_def else None)
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert result.total_requested == 0                      # everything is as new as its inputs
    return instance, result.cursor


def test_what_follows_new_data():
    following = _following()
    # every unpartitioned result downstream of the data; never the per-batch steps (the sensor asks for those), the
    # model (retraining is a decision) or the per-query "more like this"
    assert {"anomaly_scores_normalised", "latent_umap", "similar_images", "consensus_vs_score", "plots",
            "next_volunteer_round", "volunteer_consensus", "subject_consensus", "talk_consensus"} <= following
    assert not following & {"wgan", "more_like_this", "cutouts", "anomaly_scores", "latent_vectors"}
    assert all(GRAPH.get(dg.AssetKey(k)).partitions_def is None for k in following)
    assert all(GRAPH.get(dg.AssetKey(k)).automation_condition == FOLLOW_INPUTS for k in following)
    # the sensor that evaluates them runs by default in the daemon of `make ui`
    sensor = defs.get_sensor_def("results_follow_new_data")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_a_newly_scored_batch_updates_every_result_in_one_tick(instance_with_everything):
    instance, cursor = instance_with_everything
    instance.add_dynamic_partitions(image_batches.name, ["b1"])
    for key in ("cutouts", "anomaly_scores", "latent_vectors"):
        _report(instance, key, "b1")
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    requested = _requested(result)
    downstream = {k.to_user_string() for k in PER_BATCH_ASSETS.downstream().resolve(GRAPH)}
    assert requested == _following() & downstream                    # all of it, at once
    assert {"anomaly_scores_normalised", "consensus_vs_score", "plots", "next_volunteer_round"} <= requested
    assert not requested & {"volunteer_consensus", "subject_consensus", "wgan"}   # volunteer data did not change
    # the next tick asks for nothing more: one request per change
    again = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert again.total_requested == 0


def test_an_unscored_batch_does_not_hold_back_the_results(instance_with_everything):
    """A batch registered but never scored (e.g. stopped by the blocking cutouts check) is a missing partition;
    Dagster's eager() would wait for it forever. FOLLOW_INPUTS reads the batches that are scored."""
    instance, cursor = instance_with_everything
    instance.add_dynamic_partitions(image_batches.name, ["stuck", "b2"])
    for key in ("cutouts", "anomaly_scores", "latent_vectors"):
        _report(instance, key, "b2")
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert {"anomaly_scores_normalised", "consensus_vs_score", "plots"} <= _requested(result)
    eager = dg.AutomationCondition.eager()
    assert eager != FOLLOW_INPUTS                            # the difference this test is about


def test_a_pull_updates_the_consensus_and_what_reads_it(instance_with_everything):
    instance, cursor = instance_with_everything
    _report(instance, "zooniverse_classifications")
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    requested = _requested(result)
    assert {"image_exposures", "volunteer_consensus", "subject_consensus", "consensus_vs_score", "plots",
            "next_volunteer_round"} <= requested
    assert not requested & {"talk_consensus", "latent_umap", "anomaly_scores_normalised", "similar_images"}


def test_consensus_freshness_follows_the_pull_schedule():
    assert pull_interval("0 */6 * * *") == timedelta(hours=6)
    assert pull_interval("30 2 * * 1") == timedelta(days=7)
    assert pull_interval("0 6,18 * * *") == timedelta(hours=12)
    policy = consensus_freshness("0 */6 * * *")
    assert policy.warn_window.to_timedelta() == timedelta(hours=7)
    assert policy.fail_window.to_timedelta() == timedelta(hours=13)
    spec = GRAPH.get(dg.AssetKey("subject_consensus"))
    assert spec.freshness_policy is not None
