"""Declarative automation: new data reaches every result with no one launching a run.

Two things bring new data in: the ``new_image_batches`` sensor (a new batch folder -> its cutouts and scores) and
the ``zooniverse_pull`` schedule (a re-pull -> the consensus and the analysis in one run). Everything downstream
that is not partitioned carries :data:`FOLLOW_INPUTS`, so the ``results_follow_new_data`` sensor, run by the daemon
of ``make ui`` / ``dagster dev``, materialises it again once an input has changed and nothing upstream is still
running. Command-line runs (``dagster asset materialize``, ``make demo``) have no daemon and are unaffected.

The consensus carries a freshness policy derived from the pull schedule (``WW_ZOONIVERSE_PULL_CRON``): it warns
after one missed pull and fails after two, so a stopped schedule or a failing pull shows in the UI.
"""

from __future__ import annotations

import time
from datetime import timedelta

import dagster as dg

from ww_assets import settings

#: the per-batch assets: a batch that is registered but not (yet) scored, e.g. one stopped by the ``cutouts_usable``
#: check, must not hold back every result; the analysis reads whichever batches are scored
PER_BATCH_ASSETS = dg.AssetSelection.assets("cutouts", "anomaly_scores", "latent_vectors")

#: Dagster's ``eager()``, except that a missing image batch does not count as a missing input
FOLLOW_INPUTS = (
    (dg.AutomationCondition.newly_missing() | dg.AutomationCondition.any_deps_updated()).since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing().ignore(PER_BATCH_ASSETS)
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("update when an input updates")


def pull_interval(cron: str | None = None, now: float | None = None, ticks: int = 64) -> timedelta:
    """The longest gap between two consecutive ticks of the pull schedule (over its next ``ticks`` ticks)."""
    from dagster._utils.schedules import cron_string_iterator

    cron = cron or settings.get("WW_ZOONIVERSE_PULL_CRON")
    it = cron_string_iterator(time.time() if now is None else now, cron, "UTC")
    stamps = [next(it).timestamp() for _ in range(ticks + 1)]
    return timedelta(seconds=max(b - a for a, b in zip(stamps, stamps[1:])))


def consensus_freshness(cron: str | None = None) -> dg.FreshnessPolicy:
    """Warn after one missed pull, fail after two (one hour of grace for the pull itself)."""
    interval = pull_interval(cron)
    return dg.FreshnessPolicy.time_window(warn_window=interval + timedelta(hours=1),
                                          fail_window=2 * interval + timedelta(hours=1))


results_follow_new_data = dg.AutomationConditionSensorDefinition(
    "results_follow_new_data",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description=(
        "Re-materialises every asset marked 'update when an input updates' (the normalised scores, the UMAP, the "
        "neighbours, the comparison, the catalogue, the plots, the next round) once one of its inputs has a new "
        "materialisation, e.g. a newly scored image batch, and nothing upstream is still running. Running by "
        "default; stop it in the UI (Automation) to update only by hand."),
)
