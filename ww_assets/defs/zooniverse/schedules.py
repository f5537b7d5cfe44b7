"""The scheduled re-pull of volunteer data and the job it runs."""

import dagster as dg

from ww_assets import settings

#: the zooniverse group and everything downstream of it that is not partitioned (a re-pull never changes images,
#: and one run cannot hold partitioned and unpartitioned assets)
REFRESH_SELECTION = (dg.AssetSelection.groups("zooniverse").downstream()
                     - dg.AssetSelection.groups("images", "scores", "model"))

zooniverse_refresh = dg.define_asset_job(
    name="zooniverse_refresh",
    selection=REFRESH_SELECTION,
    description="Re-pull volunteer data (group zooniverse) and recompute what depends on it (consensus, analysis).",
    tags={"ww/trigger": "zooniverse_pull"},
)

zooniverse_pull = dg.ScheduleDefinition(
    name="zooniverse_pull",
    job=zooniverse_refresh,
    cron_schedule=settings.get("WW_ZOONIVERSE_PULL_CRON"),  # needed to load: a bad value names the variable
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=("Re-pull volunteer data every 6 hours by default (WW_ZOONIVERSE_PULL_CRON). Stopped by default: "
                 "start it in the UI (Automation) or with `dagster schedule start zooniverse_pull`."),
)
