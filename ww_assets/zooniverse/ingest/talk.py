"""Ingest of the Talk comments and tags exports into ``raw.talk_comments`` and ``raw.talk_tags``.

Talk serves each as a ``.tar.gz`` holding one JSON array (``ww_assets.zooniverse.talk.talk_json_file`` unpacks
it, or reads a plain JSON file as it is). Each element's ``source_line`` is its 1-based position in the array.
People's data: ``comment_user_id`` / ``user_id`` become the same keyed pseudonym as in classifications (so one
person links across them), the logins are never read, and @mentions in comment bodies and discussion titles are
masked.
"""

from __future__ import annotations

from typing import Callable

from ww_assets.duckdb_sql import insertion_order
from ww_assets.zooniverse.errors import ExportFileError
from ww_assets.zooniverse.ingest.bookkeeping import IngestReport, IngestRun
from ww_assets.zooniverse.ingest.schema import ensure_raw_schema
from ww_assets.zooniverse.ingest.sql import ISO_FIRST_TIMES, is_int_or_empty, json_field, lit, to_bigint
from ww_assets.zooniverse.ingest.staged import ingest_staged
from ww_assets.zooniverse.pseudonym import sql_identity, sql_mask_mentions, sql_volunteer_id
from ww_assets.zooniverse.talk import talk_json_file

__all__ = ["ingest_talk_comments", "ingest_talk_tags"]

_COMMENT_COLUMNS = ["comment_id", "discussion_id", "discussion_title", "board_id", "board_title",
                    "board_description", "focus_type", "focus_id", "focus_subject_id", "commenter_id",
                    "comment_body", "created_at"]
_TAG_COLUMNS = ["tag_id", "name", "section", "tagger_id", "comment_id", "taggable_id", "taggable_type",
                "project_id", "created_at"]


def _int(field: str) -> str:
    return to_bigint(json_field(field))


def _int_ok(field: str) -> str:
    return is_int_or_empty(json_field(field))


def _pseudonym(user_id_field: str) -> str:
    """SQL: the keyed pseudonym of a Talk user id (bound key ``$key``), NULL when missing or not an integer."""
    uid = f"nullif(trim({json_field(user_id_field)}), '')"
    return (f"CASE WHEN {_int_ok(user_id_field)} AND {uid} IS NOT NULL "
            f"THEN {sql_volunteer_id('$key', sql_identity(uid))} END")


#: A check: (SQL that is true when the record fails it, the quarantine reason).
Check = tuple[str, str]


def _first_failure(*checks: Check) -> str:
    """SQL: the reason of the first check the record fails, NULL when it passes them all."""
    return "CASE " + " ".join(f"WHEN {bad} THEN {lit(reason)}" for bad, reason in checks) + " END"


def _present(field: str) -> Check:
    return f"nullif(trim({json_field(field)}), '') IS NULL", f"{field} is missing"


def _integers(*fields: str) -> list[Check]:
    return [(f"NOT {_int_ok(field)}", f"{field} is not an integer") for field in fields]


def _keyed_object(id_field: str) -> list[Check]:
    """The checks of a record's natural key: a JSON object whose ``id_field`` is a present integer."""
    return [("json_type(json) <> 'OBJECT'", "not a JSON object"), _present(id_field), *_integers(id_field)]


def _natural_key(id_field: str) -> str:
    """SQL: the record's id as text whenever it reads as an integer, even when the record fails other checks."""
    return (f"CASE WHEN json_type(json) = 'OBJECT' AND {_int_ok(id_field)} THEN {_int(id_field)}::VARCHAR END "
            "AS _nkey, "
            # the quarantine identity of a bad record: keyed hash of its JSON text (the logins in it stay unmatched)
            "CASE WHEN _reason IS NOT NULL THEN sha256($key || chr(31) || json::VARCHAR) END AS _record_hash")


def _comments_stage(src: str) -> str:
    created = f"try_strptime({json_field('comment_created_at')}, {ISO_FIRST_TIMES})"
    return f"""
    SELECT
        {_int('comment_id')} AS comment_id,
        {_int('discussion_id')} AS discussion_id,
        {sql_mask_mentions(json_field('discussion_title'))} AS discussion_title,
        {_int('board_id')} AS board_id,
        {json_field('board_title')} AS board_title,
        {json_field('board_description')} AS board_description,
        {json_field('comment_focus_type')} AS focus_type,
        {_int('comment_focus_id')} AS focus_id,
        CASE WHEN {json_field('comment_focus_type')} = 'Subject' THEN {_int('comment_focus_id')} END
            AS focus_subject_id,
        {_pseudonym('comment_user_id')} AS commenter_id,
        {sql_mask_mentions(json_field('comment_body'))} AS comment_body,
        {created} AS created_at,
        {_first_failure(*_keyed_object('comment_id'), _present('comment_user_id'),
                        *_integers('comment_user_id', 'comment_focus_id', 'discussion_id'),
                        (f"{created} IS NULL", 'comment_created_at is missing or not a timestamp'))} AS _reason,
        {_natural_key('comment_id')}
    FROM {src}
    """


def _tags_stage(src: str) -> str:
    created = f"try_strptime({json_field('created_at')}, {ISO_FIRST_TIMES})"
    return f"""
    SELECT
        {_int('id')} AS tag_id,
        {json_field('name')} AS name,
        {json_field('section')} AS section,
        {_pseudonym('user_id')} AS tagger_id,
        {_int('comment_id')} AS comment_id,
        {_int('taggable_id')} AS taggable_id,
        {json_field('taggable_type')} AS taggable_type,
        {_int('project_id')} AS project_id,
        {created} AS created_at,
        {_first_failure(*_keyed_object('id'), _present('name'), *_integers('user_id', 'taggable_id', 'comment_id'),
                        (f"{json_field('created_at')} IS NOT NULL AND {created} IS NULL",
                         'created_at is not a timestamp'))} AS _reason,
        {_natural_key('id')}
    FROM {src}
    """


def _ingest_talk(con, path, *, table: str, what: str, stage_of: Callable[[str], str], columns: list[str],
                 key: str, pseudonym_key: str, source_label: str | None) -> IngestReport:
    if not pseudonym_key:
        raise ValueError("pseudonym_key is empty")
    ensure_raw_schema(con)
    with talk_json_file(path) as json_path, insertion_order(con, keep=True):
        src = f"read_json_objects({lit(str(json_path))}, format = 'array', maximum_object_size = 268435456)"
        try:
            con.execute(f"SELECT count(*) FROM {src}").fetchone()
        except Exception as exc:  # duckdb.Error subclasses; message names the problem
            raise ExportFileError(f"{json_path} is not a readable JSON array of Talk {what}: {exc}") from exc
        run = IngestRun(table=table, source_file=str(path), source_label=source_label)
        return ingest_staged(con, run, stage_sql=stage_of(src), columns=columns, key=[key],
                             created_col="created_at", params={"key": pseudonym_key},
                             line_of=lambda index_sql, _rejected: f"({index_sql} + 1)", rejected=[])


def ingest_talk_comments(con, path, *, pseudonym_key: str, source_label: str | None = None) -> IngestReport:
    """Append the new comments of a Talk comments export (JSON array, or its tar.gz) to ``raw.talk_comments``.

    ``comment_user_id`` becomes ``commenter_id``, ``comment_user_login`` is dropped, and @mentions in the body and
    discussion title are masked.
    """
    return _ingest_talk(con, path, table="talk_comments", what="comments", stage_of=_comments_stage,
                        columns=_COMMENT_COLUMNS, key="comment_id", pseudonym_key=pseudonym_key,
                        source_label=source_label)


def ingest_talk_tags(con, path, *, pseudonym_key: str, source_label: str | None = None) -> IngestReport:
    """Append the new tags of a Talk tags export (JSON array, or its tar.gz) to ``raw.talk_tags``."""
    return _ingest_talk(con, path, table="talk_tags", what="tags", stage_of=_tags_stage, columns=_TAG_COLUMNS,
                        key="tag_id", pseudonym_key=pseudonym_key, source_label=source_label)
