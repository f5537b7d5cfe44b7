"""Ingest of the subjects and workflows exports into ``raw.subjects`` and ``raw.workflows``.

The subjects export has one row per subject x subject set x workflow link, so ``subject_id`` repeats; the natural
key is the link. W&W writes the survey identity of each image (object id, ra, dec, file name) into the subject
metadata, sometimes behind a '#' or '!' prefix that hides it from volunteers: every spelling seen is tried
(``formats.SUBJECT_*_KEYS``). Workflows are stored per version (``version.minor_version``, kept as text the way
the classifications export writes it: 160.310 is not 160.31). Neither export carries volunteer data.
"""

from __future__ import annotations

from pathlib import Path

from ww_assets.zooniverse import formats
from ww_assets.zooniverse.ingest.bookkeeping import IngestReport
from ww_assets.zooniverse.ingest.csv_reader import csv_source
from ww_assets.zooniverse.ingest.sql import PANOPTES_FIRST_TIMES, column, is_int_or_empty, lit, to_bigint
from ww_assets.zooniverse.ingest.staged import ingest_staged_csv

__all__ = ["ingest_subjects_csv", "ingest_workflows_csv"]

_SUBJECT_META_KEYS = (formats.SUBJECT_OBJECT_ID_KEYS, formats.SUBJECT_RA_KEYS, formats.SUBJECT_DEC_KEYS,
                      formats.SUBJECT_IMAGE_KEYS)

_SUBJECT_COLUMNS = ["subject_id", "subject_set_id", "workflow_id", "project_id", "object_id", "ra", "dec",
                    "image_ref", "metadata", "locations", "classifications_count", "retired_at", "retirement_reason",
                    "created_at", "updated_at"]
_WORKFLOW_COLUMNS = ["workflow_id", "version", "minor_version", "workflow_version", "display_name", "active",
                     "classifications_count", "pairwise", "grouped", "prioritized", "primary_language", "first_task",
                     "tutorial_subject_id", "retired_set_member_subjects_count", "tasks", "retirement", "strings"]


def _subject_meta_sql(metadata_sql: str) -> tuple[str, list[str]]:
    """One JSON parse of a subject's metadata for all its identity keys: (SQL of the value list ``m``, and per
    key group the SQL of its first value present, over ``m``)."""
    paths, firsts = [], []
    for keys in _SUBJECT_META_KEYS:
        firsts.append("coalesce(" + ", ".join(f"m[{len(paths) + 1 + i}]" for i in range(len(keys))) + ")")
        paths += [lit('$."' + k + '"') for k in keys]
    return f"try(json_extract_string({metadata_sql}, [{', '.join(paths)}]))", firsts


def _subjects_stage(path: Path, header: list[str]) -> str:
    """The stage query of a subjects export (SQL reads as the raw.subjects columns, ``_reason``, ``_nkey``)."""
    c = lambda name: column(header, name)  # noqa: E731
    times = PANOPTES_FIRST_TIMES
    meta_values, (oid, ra, dec, img) = _subject_meta_sql(c('metadata'))
    return f"""
    SELECT
        {to_bigint('subject_id')} AS subject_id, {to_bigint('subject_set_id')} AS subject_set_id,
        {to_bigint('workflow_id')} AS workflow_id, {to_bigint('project_id')} AS project_id,
        {oid} AS object_id, try_cast({ra} AS DOUBLE) AS ra, try_cast({dec} AS DOUBLE) AS dec,
        coalesce({img}, locations->>'$."0"') AS image_ref,
        metadata, locations,
        {to_bigint('classifications_count')} AS classifications_count,
        try_strptime(nullif(trim(retired_at), ''), {times}) AS retired_at,
        nullif(trim(retirement_reason), '') AS retirement_reason,
        try_strptime(nullif(trim(created_at), ''), {times}) AS created_at,
        try_strptime(nullif(trim(updated_at), ''), {times}) AS updated_at,
        CASE
            WHEN nullif(trim(subject_id_txt), '') IS NULL THEN 'subject_id is empty'
            WHEN NOT {is_int_or_empty('subject_id_txt')} THEN 'subject_id is not an integer'
            WHEN nullif(trim(subject_set_id), '') IS NULL THEN 'subject_set_id is empty'
            WHEN NOT {is_int_or_empty('subject_set_id')} THEN 'subject_set_id is not an integer'
            WHEN NOT {is_int_or_empty('workflow_id')} THEN 'workflow_id is not an integer'
            WHEN raw_metadata IS NOT NULL AND metadata IS NULL THEN 'metadata is not valid JSON'
            WHEN raw_locations IS NOT NULL AND locations IS NULL THEN 'locations is not valid JSON'
            WHEN nullif(trim(retired_at), '') IS NOT NULL AND try_strptime(trim(retired_at), {times}) IS NULL
                THEN 'retired_at is not a timestamp'
        END AS _reason,
        CASE WHEN {is_int_or_empty('subject_id_txt')} THEN {to_bigint('subject_id_txt')}::VARCHAR END AS _nkey
    FROM (
        SELECT {c('subject_id')} AS subject_id, {c('subject_id')} AS subject_id_txt,
               {c('subject_set_id')} AS subject_set_id, {c('workflow_id')} AS workflow_id,
               {c('project_id')} AS project_id,
               -- try_cast gives NULL for text that is not JSON; the identity keys come from one more parse
               try_cast({c('metadata')} AS JSON) AS metadata, {c('metadata')} AS raw_metadata,
               {meta_values} AS m,
               try_cast({c('locations')} AS JSON) AS locations,
               {c('locations')} AS raw_locations,
               {c('classifications_count')} AS classifications_count, {c('retired_at')} AS retired_at,
               {c('retirement_reason')} AS retirement_reason, {c('created_at')} AS created_at,
               {c('updated_at')} AS updated_at
        FROM {csv_source(path, header)})
    """


def ingest_subjects_csv(con, path, *, pseudonym_key: str | None = None,
                        source_label: str | None = None) -> IngestReport:
    """Append the new (subject, set, workflow) links of a subjects export to ``raw.subjects``.

    ``object_id``, ``ra``, ``dec`` and ``image_ref`` are read from the subject metadata. Subjects carry no
    volunteer data, so ``pseudonym_key`` is accepted for a uniform signature and not used.
    """
    return ingest_staged_csv(con, path, table="subjects", required=formats.SUBJECT_REQUIRED,
                             stage_of=_subjects_stage, columns=_SUBJECT_COLUMNS,
                             key=["subject_id", "subject_set_id", "workflow_id"], created_col="created_at",
                             source_label=source_label)


def _workflows_stage(path: Path, header: list[str]) -> str:
    """The stage query of a workflows export."""
    c = lambda name: column(header, name)  # noqa: E731

    def json_or_null(name: str) -> str:
        return f"CASE WHEN json_valid({c(name)}) THEN {c(name)}::JSON END"

    return f"""
    SELECT
        {to_bigint(c('workflow_id'))} AS workflow_id,
        try_cast(nullif(trim({c('version')}), '') AS INTEGER) AS version,
        coalesce(try_cast(nullif(trim({c('minor_version')}), '') AS INTEGER), 0) AS minor_version,
        trim({c('version')}) || '.' || coalesce(nullif(trim({c('minor_version')}), ''), '0') AS workflow_version,
        {c('display_name')} AS display_name,
        try_cast({c('active')} AS BOOLEAN) AS active,
        {to_bigint(c('classifications_count'))} AS classifications_count,
        try_cast({c('pairwise')} AS BOOLEAN) AS pairwise,
        try_cast({c('grouped')} AS BOOLEAN) AS grouped,
        try_cast({c('prioritized')} AS BOOLEAN) AS prioritized,
        {c('primary_language')} AS primary_language,
        {c('first_task')} AS first_task,
        {to_bigint(c('tutorial_subject_id'))} AS tutorial_subject_id,
        {to_bigint(c('retired_set_member_subjects_count'))} AS retired_set_member_subjects_count,
        {json_or_null('tasks')} AS tasks, {json_or_null('retirement')} AS retirement,
        {json_or_null('strings')} AS strings,
        CASE
            WHEN nullif(trim({c('workflow_id')}), '') IS NULL THEN 'workflow_id is empty'
            WHEN NOT {is_int_or_empty(c('workflow_id'))} THEN 'workflow_id is not an integer'
            WHEN NOT {is_int_or_empty(c('version'))} OR nullif(trim({c('version')}), '') IS NULL
                THEN 'version is not an integer'
            WHEN NOT {is_int_or_empty(c('minor_version'))} THEN 'minor_version is not an integer'
            WHEN {c('tasks')} IS NOT NULL AND NOT coalesce(json_valid({c('tasks')}), false)
                THEN 'tasks is not valid JSON'
        END AS _reason,
        CASE WHEN {is_int_or_empty(c('workflow_id'))} THEN {to_bigint(c('workflow_id'))}::VARCHAR END AS _nkey
    FROM {csv_source(path, header)}
    """


def ingest_workflows_csv(con, path, *, pseudonym_key: str | None = None,
                         source_label: str | None = None) -> IngestReport:
    """Append the new workflow versions of a workflows export to ``raw.workflows`` (``pseudonym_key`` unused)."""
    return ingest_staged_csv(con, path, table="workflows", required=formats.WORKFLOW_REQUIRED,
                             stage_of=_workflows_stage, columns=_WORKFLOW_COLUMNS,
                             key=["workflow_id", "version", "minor_version"], created_col=None,
                             source_label=source_label)
