"""The zooniverse group: raw volunteer data in the warehouse, from the sample, an export folder or a live project.

Each asset pulls its export kinds through the ``zooniverse`` resource's source and ingests them
(``ww_assets.zooniverse.pull``). Ingest writes each file in one transaction: a failure leaves the raw tables as
they were. Names and IPs are replaced by keyed pseudonyms before anything is stored.
"""

import dagster as dg

from ww_assets.defs.pools import DUCKDB_POOL
from ww_assets.defs.resources import SampleResource, StorageResource, WarehouseResource, ZooniverseResource
from ww_assets.zooniverse.pull import pull


def pull_kinds(context: dg.AssetExecutionContext, zooniverse: ZooniverseResource, storage: StorageResource,
               sample: SampleResource, duckdb: WarehouseResource, kinds: tuple[str, ...]) -> dg.MaterializeResult:
    layout = storage.layout
    layout.ensure_writable()
    try:
        key = zooniverse.pseudonym_key()
    except Exception as exc:  # PseudonymKeyMissing: a Failure, so the UI shows the instructions
        raise dg.Failure(str(exc)) from exc
    source = zooniverse.open_source(layout, sample)
    try:
        pulled = pull(source, kinds, duckdb.get_connection, pseudonym_key=key,
                      keep_classification_metadata=zooniverse.keep_classification_metadata,
                      reread_unchanged=zooniverse.reread_unchanged, log=context.log.info)
    finally:
        source.close()
    metadata: dict = {"dagster/row_count": dg.MetadataValue.int(pulled[0].table_rows)}
    for n, item in enumerate(pulled):
        prefix = "" if n == 0 else f"{item.report.table}_"
        metadata.update({prefix + k: v for k, v in item.metadata().items()})
        if n == 0 and item.report.quarantine_reasons:
            metadata["quarantine_reasons"] = dg.MetadataValue.json(item.report.quarantine_reasons)
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
