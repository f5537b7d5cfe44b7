"""The zooniverse group: raw volunteer data in the warehouse, from the sample, an export folder or a live project.

Each asset pulls its export kinds through the ``zooniverse`` resource's source and ingests them
(``ww_assets.zooniverse.pull``). Each asset writes all or nothing: ingest writes each file in one transaction, and
an asset that reads more than one file (``zooniverse_subjects``: subjects and workflows) fetches and checks every
one of them before it writes the first. Names and IPs are replaced by keyed pseudonyms before anything is stored.
After a successful live pull, older downloads are deleted as ``WW_DOWNLOADS_KEEP`` says (never the file just
ingested nor one not yet ingested; logged as counts).
"""

import dagster as dg

from ww_assets import settings
from ww_assets.defs.pools import DUCKDB_POOL
from ww_assets.defs.resources import SampleResource, StorageResource, WarehouseResource, ZooniverseResource
from ww_assets.zooniverse.download import check_download
from ww_assets.zooniverse.export_folder import FetchedExport
from ww_assets.zooniverse.ingest.bookkeeping import previous_ingest
from ww_assets.zooniverse.pull import pull


class _Fetched:
    """A source whose files were all fetched (and checked) before the first write: hands them to ``pull``."""

    def __init__(self, fetched: dict[str, FetchedExport]):
        self._fetched = fetched

    def fetch(self, kind: str) -> FetchedExport:
        return self._fetched[kind]


def fetch_all(source, kinds: tuple[str, ...], log) -> _Fetched:
    """Fetch every kind and check each file is what its kind should be (ExportFileError naming the file), so that
    a missing or broken second file fails the asset before the first is ingested."""
    fetched = {}
    for kind in kinds:
        log(f"fetching the {kind} export (every file is fetched and checked before the first is ingested)")
        fetched[kind] = source.fetch(kind)
        check_download(fetched[kind].path, kind)
    return _Fetched(fetched)


def pull_kinds(context: dg.AssetExecutionContext, zooniverse: ZooniverseResource, storage: StorageResource,
               sample: SampleResource, duckdb: WarehouseResource, kinds: tuple[str, ...]) -> dg.MaterializeResult:
    layout = storage.layout
    layout.ensure_writable()
    try:
        key = zooniverse.pseudonym_key()
    except Exception as exc:  # PseudonymKeyMissing: a Failure, so the UI shows the instructions
        raise dg.Failure(str(exc)) from exc
    source = zooniverse.open_source(layout, sample)
    prune = getattr(source, "prune_downloads", None)          # live sources only: their downloads folder
    try:
        keep = settings.get("WW_DOWNLOADS_KEEP") if prune else None   # checked before anything is written
        # one file: its ingest is one transaction; more: all fetched and checked before the first write
        files = fetch_all(source, kinds, context.log.info) if len(kinds) > 1 else source
        pulled = pull(files, kinds, duckdb.get_connection, pseudonym_key=key,
                      keep_classification_metadata=zooniverse.keep_classification_metadata, task=zooniverse.task,
                      reread_unchanged=zooniverse.reread_unchanged, log=context.log.info)
        retention = {}
        if prune is not None:
            with duckdb.get_connection() as con:
                retention = prune(kinds, keep=keep, protect={item.fetched.path for item in pulled},
                                  ingested=lambda kind, path: previous_ingest(con, kind, path) is not None)
            context.log.info(f"downloads retention (WW_DOWNLOADS_KEEP={'all' if keep is None else keep}): "
                             f"{sum(d for d, _ in retention.values())} earlier downloads deleted, "
                             f"{sum(k for _, k in retention.values())} kept")
    finally:
        source.close()
    metadata: dict = {"dagster/row_count": dg.MetadataValue.int(pulled[0].table_rows)}
    for n, item in enumerate(pulled):
        prefix = "" if n == 0 else f"{item.report.table}_"
        metadata.update({prefix + k: v for k, v in item.metadata().items()})
        if n == 0 and item.report.quarantine_reasons:
            metadata["quarantine_reasons"] = dg.MetadataValue.json(item.report.quarantine_reasons)
    if retention:
        metadata["downloads_deleted"] = sum(deleted for deleted, _ in retention.values())
        metadata["downloads_kept"] = sum(kept for _, kept in retention.values())
    return dg.MaterializeResult(metadata=metadata)


def raw_table_asset(name: str, kinds: tuple[str, ...], description: str) -> dg.AssetsDefinition:
    """An asset that pulls these export kinds into their raw tables (the four differ only in what they pull)."""

    @dg.asset(name=name, kinds={"duckdb"}, pool=DUCKDB_POOL, description=description)
    def _pull(context: dg.AssetExecutionContext, zooniverse: ZooniverseResource, storage: StorageResource,
              sample: SampleResource, duckdb: WarehouseResource) -> dg.MaterializeResult:
        return pull_kinds(context, zooniverse, storage, sample, duckdb, kinds)

    return _pull


zooniverse_subjects = raw_table_asset("zooniverse_subjects", ("subjects", "workflows"), (
    "Raw Zooniverse subjects (raw.subjects, one row per subject x subject set x workflow, with the image's survey "
    "identity object_id / ra / dec read from the subject metadata), plus the workflows export (raw.workflows). "
    "Append-only, deduplicated by natural key."))

zooniverse_classifications = raw_table_asset("zooniverse_classifications", ("classifications",), (
    "Raw volunteer classifications (raw.classifications): one row per 16-image page shown, with the page's "
    "subject ids and the ones clicked. Volunteer names and IPs are replaced by keyed pseudonyms at ingest; bad "
    "rows go to raw.quarantine with file, line and reason. Append-only, deduplicated by classification_id."))

talk_comments = raw_table_asset("talk_comments", ("talk_comments",), (
    "Raw Talk comments (raw.talk_comments): the subject each comment is about, a pseudonymised commenter, the "
    "body with @mentions masked (hashtags kept). Append-only, deduplicated by comment_id."))

talk_tags = raw_table_asset("talk_tags", ("talk_tags",), (
    "Raw Talk tags (raw.talk_tags): hashtags volunteers put on subjects, with a pseudonymised tagger. "
    "Append-only, deduplicated by tag id."))
