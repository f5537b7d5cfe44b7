"""Dagster layer for the 'zooniverse' group: raw volunteer data in DuckDB, from one of three sources.

* ``sample`` (default): the embedded sample's ``exports/`` folder (built on first use by the ``sample`` resource).
* ``export_folder``: exports a project owner downloaded by hand (classifications / subjects / workflows CSV, Talk
  comments / tags JSON or the tar.gz as downloaded), all in one folder.
* ``live``: a live project through panoptes-client (credentials from PANOPTES_USERNAME / PANOPTES_PASSWORD or
  PANOPTES_CLIENT_ID / PANOPTES_CLIENT_SECRET).

The ``zooniverse`` resource is built from the environment (``WW_ZOONIVERSE_SOURCE``, ``WW_ZOONIVERSE_PROJECT``,
``WW_ZOONIVERSE_EXPORT_FOLDER``, ``WW_ZOONIVERSE_TALK_ENDPOINT``; ``PANOPTES_ENDPOINT`` for the API), or configure
it in the launchpad. Real volunteer data needs ``WW_PSEUDONYM_KEY`` (a secret of yours): names and IPs are
replaced by keyed pseudonyms at ingest.

Schedule ``zooniverse_pull`` (STOPPED by default) re-pulls every 6 hours (``WW_ZOONIVERSE_PULL_CRON``) and runs
the group plus everything downstream that is not partitioned, so consensus and plots follow. Turn it on in the UI
(Automation -> zooniverse_pull -> toggle) or with ``dagster schedule start zooniverse_pull -m ww_assets.definitions``
(with a running ``dagster-daemon``).
"""

import dataclasses
import os
from typing import Optional

import dagster as dg
from dagster import AssetExecutionContext
from dagster_duckdb import DuckDBResource
from pydantic import Field

from ww_assets.defs.resources import SampleResource, StorageResource
from ww_assets.storage import StorageLayout
from ww_assets.zooniverse import ingest as raw_tables
from ww_assets.zooniverse.export_folder import ExportFolderSource, FetchedExport
from ww_assets.zooniverse.pseudonym import pseudonym_key

GROUP = "zooniverse"
SOURCES = ("sample", "export_folder", "live")
DEFAULT_PULL_CRON = "0 */6 * * *"


class ZooniverseResource(dg.ConfigurableResource):
    """Where volunteer data comes from: the embedded sample, a folder of downloaded exports, or a live project."""

    source: str = Field(default="sample", description="sample | export_folder | live")
    export_folder: Optional[str] = Field(default=None, description="folder of hand-downloaded exports")
    project: Optional[str] = Field(default=None, description="live: project id or slug 'owner/name'")
    panoptes_endpoint: Optional[str] = Field(
        default=None, description="live: Panoptes API root (default $PANOPTES_ENDPOINT or https://www.zooniverse.org)")
    talk_endpoint: Optional[str] = Field(
        default=None, description="live: Talk API root (default https://talk.zooniverse.org/)")
    generate_exports: str = Field(
        default="auto", description="live: auto (only when the newest is older than max_export_age_hours) | "
                                    "always | never")
    max_export_age_hours: float = Field(default=24.0, description="live: reuse ready exports younger than this")
    wait_timeout_s: float = Field(default=900.0, gt=0, description="live: wait this long for a new export")
    http_timeout_s: float = Field(default=60.0, gt=0, description="live: time-out of each HTTP call / chunk")
    attempts: int = Field(default=5, ge=1, description="live: tries per call on 5xx / time-outs")
    backoff_s: float = Field(default=2.0, ge=0, description="live: first retry delay, doubling")
    talk_poll_s: float = Field(default=5.0, gt=0, description="live: Talk data-request polling interval")
    keep_classification_metadata: bool = Field(
        default=False, description="keep the allow-listed classification metadata JSON (about doubles ingest time)")
    reread_unchanged: bool = Field(
        default=False, description="read an export file again even when this exact file was ingested before")

    def open_source(self, layout: StorageLayout, sample: SampleResource):
        """A source object with ``fetch(kind) -> FetchedExport`` (and ``close()``)."""
        if self.source not in SOURCES:
            raise dg.Failure(f"zooniverse.source must be one of {', '.join(SOURCES)}, not {self.source!r}")
        if self.source == "sample":
            built = sample.ensure(layout)
            folder = getattr(built, "exports_dir", None) or (
                (built if built is not None else layout.sample_dir) / "exports")
            return ExportFolderSource(folder, source="sample")
        if self.source == "export_folder":
            if not self.export_folder:
                raise dg.Failure("zooniverse.source is 'export_folder' but no export_folder is configured "
                                 "(set WW_ZOONIVERSE_EXPORT_FOLDER or the resource's export_folder)")
            return ExportFolderSource(self.export_folder, source="export_folder")
        if not self.project:
            raise dg.Failure("zooniverse.source is 'live' but no project is configured (set WW_ZOONIVERSE_PROJECT "
                             "to the project id or slug)")
        from ww_assets.zooniverse.live import LiveSettings, LiveSource

        settings = LiveSettings(
            project=self.project, panoptes_endpoint=self.panoptes_endpoint, talk_endpoint=self.talk_endpoint,
            generate=self.generate_exports, max_export_age_hours=self.max_export_age_hours,
            wait_timeout_s=self.wait_timeout_s, http_timeout_s=self.http_timeout_s, attempts=self.attempts,
            backoff_s=self.backoff_s, talk_poll_s=self.talk_poll_s)
        return LiveSource(settings, layout.downloads_dir)

    def pseudonym_key(self) -> str:
        """The pseudonym key for this source (raises with instructions when real data has none)."""
        return pseudonym_key(self.source)


def zooniverse_resource_from_env(env=None) -> ZooniverseResource:
    """The resource as the environment describes it (the source follows from what is set, sample otherwise)."""
    env = os.environ if env is None else env
    project = env.get("WW_ZOONIVERSE_PROJECT") or None
    folder = env.get("WW_ZOONIVERSE_EXPORT_FOLDER") or None
    source = env.get("WW_ZOONIVERSE_SOURCE") or ("live" if project else "export_folder" if folder else "sample")
    return ZooniverseResource(source=source, project=project, export_folder=folder,
                              talk_endpoint=env.get("WW_ZOONIVERSE_TALK_ENDPOINT") or None)


# ------------------------------------------------------------------------------------------------------------------
# assets
# ------------------------------------------------------------------------------------------------------------------

def _pull(context: AssetExecutionContext, zooniverse: ZooniverseResource, storage: StorageResource,
          sample: SampleResource, duckdb: DuckDBResource, kinds: tuple) -> dg.MaterializeResult:
    """Fetch each export kind from the configured source and ingest it; metadata from the first kind's report."""
    layout = storage.layout
    layout.ensure_writable()
    try:
        key = zooniverse.pseudonym_key()
    except Exception as exc:  # PseudonymKeyMissing: say it as a Failure so the UI shows the instructions
        raise dg.Failure(str(exc)) from exc
    source = zooniverse.open_source(layout, sample)
    metadata: dict = {}
    try:
        for n, kind in enumerate(kinds):
            context.log.info(f"fetching the {kind} export ({zooniverse.source})")
            fetched: FetchedExport = source.fetch(kind)
            for note in fetched.notes:
                context.log.warning(note) if fetched.fallback else context.log.info(note)
            ingest = raw_tables.INGESTERS[kind]
            extra = ({"keep_metadata": zooniverse.keep_classification_metadata} if kind == "classifications" else {})
            with duckdb.get_connection() as con:
                seen_by = None if zooniverse.reread_unchanged else raw_tables.previous_ingest(con, kind, fetched.path)
                if seen_by:
                    report = raw_tables.IngestReport(
                        table=kind, source_file=str(fetched.path), rows_seen=0, rows_new=0, rows_duplicate=0,
                        rows_quarantined=0, newest_created_at=None, ingest_id=seen_by, source_label=fetched.label)
                    fetched.notes.append(f"unchanged export file, already ingested by {seen_by}: not read again")
                    context.log.info(fetched.notes[-1])
                else:
                    report = ingest(con, fetched.path, pseudonym_key=key, source_label=fetched.label, **extra)
                total = con.execute(f"SELECT count(*) FROM raw.{report.table}").fetchone()[0]
                if report.newest_created_at is None and kind != "workflows":
                    newest = con.execute(f"SELECT max(created_at) FROM raw.{report.table}").fetchone()[0]
                    report = dataclasses.replace(report, newest_created_at=newest)
            context.log.info(
                f"raw.{report.table}: {report.rows_seen} rows seen, {report.rows_new} new, {report.rows_duplicate} "
                f"already stored, {report.rows_quarantined} quarantined ({report.seconds:.1f} s)")
            if report.quarantine_reasons:
                context.log.warning("quarantined in raw.quarantine (ingest_id " + report.ingest_id + "): " +
                                    "; ".join(f"{n_}x {why}" for why, n_ in report.quarantine_reasons.items()))
            prefix = "" if n == 0 else f"{kind}_"
            metadata.update({prefix + k: v for k, v in report.as_metadata().items()})
            metadata.update({prefix + k: v for k, v in fetched.as_metadata().items()})
            metadata[prefix + "table_rows"] = int(total)
            if n == 0:
                metadata["dagster/row_count"] = int(total)
                if report.quarantine_reasons:
                    metadata["quarantine_reasons"] = dg.MetadataValue.json(report.quarantine_reasons)
    finally:
        source.close() if hasattr(source, "close") else None
    return dg.MaterializeResult(metadata=metadata)


_COMMON = dict(group_name=GROUP, kinds={"duckdb"}, pool="duckdb")


@dg.asset(**_COMMON, description=(
    "Raw Zooniverse subjects (raw.subjects, one row per subject x subject set x workflow, with the image's survey "
    "identity object_id / ra / dec read from the subject metadata), plus the workflows export (raw.workflows). "
    "Append-only, deduplicated by natural key."))
def zooniverse_subjects(context: AssetExecutionContext, zooniverse: ZooniverseResource,
                        storage: StorageResource, sample: SampleResource,
                        duckdb: DuckDBResource) -> dg.MaterializeResult:
    return _pull(context, zooniverse, storage, sample, duckdb, ("subjects", "workflows"))


@dg.asset(**_COMMON, description=(
    "Raw volunteer classifications (raw.classifications): one row per 16-image page shown, with the page's "
    "subject ids and the ones clicked. Volunteer names and IPs are replaced by keyed pseudonyms at ingest; bad "
    "rows go to raw.quarantine with file, line and reason. Append-only, deduplicated by classification_id."))
def zooniverse_classifications(context: AssetExecutionContext, zooniverse: ZooniverseResource,
                               storage: StorageResource, sample: SampleResource,
                               duckdb: DuckDBResource) -> dg.MaterializeResult:
    return _pull(context, zooniverse, storage, sample, duckdb, ("classifications",))


@dg.asset(**_COMMON, description=(
    "Raw Talk comments (raw.talk_comments): the subject each comment is about, a pseudonymised commenter, the "
    "body with @mentions masked (hashtags kept). Append-only, deduplicated by comment_id."))
def talk_comments(context: AssetExecutionContext, zooniverse: ZooniverseResource, storage: StorageResource,
                  sample: SampleResource, duckdb: DuckDBResource) -> dg.MaterializeResult:
    return _pull(context, zooniverse, storage, sample, duckdb, ("talk_comments",))


@dg.asset(**_COMMON, description=(
    "Raw Talk tags (raw.talk_tags): hashtags volunteers put on subjects, with a pseudonymised tagger. "
    "Append-only, deduplicated by tag id."))
def talk_tags(context: AssetExecutionContext, zooniverse: ZooniverseResource, storage: StorageResource,
              sample: SampleResource, duckdb: DuckDBResource) -> dg.MaterializeResult:
    return _pull(context, zooniverse, storage, sample, duckdb, ("talk_tags",))


# ------------------------------------------------------------------------------------------------------------------
# checks
# ------------------------------------------------------------------------------------------------------------------

QUARANTINE_WARN_FRACTION = 0.01


@dg.asset_check(asset=zooniverse_classifications, description=(
    "The latest classifications ingest quarantined at most 1% of the rows it read (WARN above: look at "
    "raw.quarantine for the reasons)."))
def classifications_quarantine_rate(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        raw_tables.ensure_raw_schema(con)
        row = con.execute(
            """SELECT rows_seen, rows_quarantined, ingest_id FROM raw.ingest_log
               WHERE table_name = 'classifications' ORDER BY finished_at DESC LIMIT 1""").fetchone()
    if row is None:
        return dg.AssetCheckResult(passed=False, description="no classifications ingest recorded")
    seen, bad, ingest_id = row
    fraction = (bad / seen) if seen else 0.0
    return dg.AssetCheckResult(
        passed=fraction <= QUARANTINE_WARN_FRACTION, severity=dg.AssetCheckSeverity.WARN,
        metadata={"rows_seen": int(seen), "rows_quarantined": int(bad), "quarantined_fraction": round(fraction, 6),
                  "ingest_id": ingest_id})


@dg.asset_check(asset=zooniverse_classifications, description=(
    "Every stored page has at least one subject, every clicked subject is on its page, and no classification_id "
    "is stored twice."))
def classifications_pages_consistent(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        raw_tables.ensure_raw_schema(con)
        empty, off_page, twice, rows, not16 = con.execute(
            """SELECT count(*) FILTER (len(page_subject_ids) = 0 OR page_subject_ids IS NULL),
                      count(*) FILTER (NOT list_has_all(page_subject_ids, selected_subject_ids)),
                      count(*) - count(DISTINCT classification_id), count(*),
                      count(*) FILTER (len(page_subject_ids) <> 16)
               FROM raw.classifications""").fetchone()
    return dg.AssetCheckResult(
        passed=(empty == 0 and off_page == 0 and twice == 0),
        metadata={"rows": int(rows), "empty_pages": int(empty), "clicks_off_page": int(off_page),
                  "duplicate_ids": int(twice), "pages_not_16": int(not16)})


# ------------------------------------------------------------------------------------------------------------------
# job and schedule
# ------------------------------------------------------------------------------------------------------------------

#: The zooniverse group and everything downstream of it, except the partitioned image / score / model groups
#: (a re-pull never changes images, and a job cannot run partitioned and unpartitioned assets without a key).
REFRESH_SELECTION = (dg.AssetSelection.groups(GROUP).downstream()
                     - dg.AssetSelection.groups("images", "scores", "model"))

zooniverse_refresh_job = dg.define_asset_job(
    name="zooniverse_refresh",
    selection=REFRESH_SELECTION,
    description="Re-pull volunteer data (group zooniverse) and recompute what depends on it (consensus, plots).",
    tags={"ww/trigger": "zooniverse_pull"},
)

zooniverse_pull_schedule = dg.ScheduleDefinition(
    name="zooniverse_pull",
    job=zooniverse_refresh_job,
    cron_schedule=os.environ.get("WW_ZOONIVERSE_PULL_CRON", DEFAULT_PULL_CRON),
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=("Re-pull volunteer data every 6 hours by default (WW_ZOONIVERSE_PULL_CRON). Stopped by default: "
                 "start it in the UI or with `dagster schedule start zooniverse_pull`."),
)

defs = dg.Definitions(
    assets=[zooniverse_subjects, zooniverse_classifications, talk_comments, talk_tags],
    asset_checks=[classifications_quarantine_rate, classifications_pages_consistent],
    jobs=[zooniverse_refresh_job],
    schedules=[zooniverse_pull_schedule],
    resources={"zooniverse": zooniverse_resource_from_env()},
)
