"""The Zooniverse export formats this pipeline reads (see shared ZOONIVERSE.md) and how to find them in a folder.

A project owner's Data Exports page gives: a classifications CSV, a subjects CSV, a workflows CSV, and from Talk
a comments and a tags archive (a ``.tar.gz`` holding one JSON array). These constants are the one place that
names their columns and fields: the ingest (``ww_assets.zooniverse.ingest``), the live source's download check
and the loopback test server import them; code that writes exports in this format should too.

Pitfalls the column lists do not show: ``workflow_version`` is "major.minor" text (3.10 is not 3.1); an anonymous
volunteer has an empty ``user_id`` (a reader that guesses types turns the column into floats); ``user_ip`` and
``user_name`` identify people and must not reach a derived table.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
from pathlib import Path

from ww_assets.zooniverse.errors import ExportFileError

__all__ = ["PANOPTES_KINDS", "TALK_KINDS", "ALL_KINDS", "CLASSIFICATION_COLUMNS", "CLASSIFICATION_REQUIRED",
           "SUBJECT_COLUMNS", "SUBJECT_REQUIRED", "WORKFLOW_COLUMNS", "WORKFLOW_REQUIRED", "REQUIRED_COLUMNS",
           "TALK_COMMENT_FIELDS", "TALK_TAG_FIELDS", "CLASSIFICATION_METADATA_KEEP", "SUBJECT_OBJECT_ID_KEYS",
           "SUBJECT_RA_KEYS", "SUBJECT_DEC_KEYS", "SUBJECT_IMAGE_KEYS", "PANOPTES_TIME_FORMATS", "ISO_TIME_FORMATS",
           "EXPORT_FILE_PATTERNS", "is_gzip", "read_csv_header", "check_columns"]

#: The export kinds, in the order a full pull fetches them.
PANOPTES_KINDS = ("classifications", "subjects", "workflows")
TALK_KINDS = ("talk_comments", "talk_tags")
ALL_KINDS = PANOPTES_KINDS + TALK_KINDS

CLASSIFICATION_COLUMNS = (
    "classification_id", "user_name", "user_id", "user_ip", "workflow_id", "workflow_name",
    "workflow_version", "created_at", "gold_standard", "expert", "metadata", "annotations",
    "subject_data", "subject_ids",
)
#: Without these a classification row means nothing; a file lacking one of them is refused as a whole.
CLASSIFICATION_REQUIRED = (
    "classification_id", "user_name", "user_id", "workflow_id", "created_at", "annotations", "subject_data",
)

SUBJECT_COLUMNS = (
    "subject_id", "project_id", "workflow_id", "subject_set_id", "metadata", "locations",
    "classifications_count", "retired_at", "retirement_reason", "created_at", "updated_at",
)
SUBJECT_REQUIRED = ("subject_id", "subject_set_id", "metadata")

WORKFLOW_COLUMNS = (
    "workflow_id", "display_name", "version", "active", "classifications_count", "pairwise", "grouped",
    "prioritized", "primary_language", "first_task", "tutorial_subject_id",
    "retired_set_member_subjects_count", "tasks", "retirement", "strings", "minor_version",
)
WORKFLOW_REQUIRED = ("workflow_id", "version")

#: The columns a CSV export of each Panoptes kind cannot do without.
REQUIRED_COLUMNS = {"classifications": CLASSIFICATION_REQUIRED, "subjects": SUBJECT_REQUIRED,
                    "workflows": WORKFLOW_REQUIRED}

TALK_COMMENT_FIELDS = (
    "board_id", "board_title", "board_description", "discussion_id", "discussion_title", "comment_id",
    "comment_body", "comment_focus_id", "comment_focus_type", "comment_user_id", "comment_user_login",
    "comment_created_at",
)
TALK_TAG_FIELDS = (
    "id", "name", "section", "created_at", "user_id", "comment_id", "taggable_id", "taggable_type",
    "project_id", "user_login",
)

#: Fields of a classification's ``metadata`` kept in ``raw.classifications.metadata``. Everything else (the
#: browser's user agent, the session hash, the viewport, ...) can single a person out and is dropped at ingest.
CLASSIFICATION_METADATA_KEEP = (
    "started_at", "finished_at", "live_project", "source", "user_language", "workflow_version",
    "subject_selection_state",
)

#: Subject metadata keys that carry the survey identity of an image (W&W hides some behind '#' or '!').
SUBJECT_OBJECT_ID_KEYS = ("object_id", "#object_id", "!object_id", "objid", "#objid", "image_id", "#image_id")
SUBJECT_RA_KEYS = ("ra", "#ra", "!ra", "RA")
SUBJECT_DEC_KEYS = ("dec", "#dec", "!dec", "DEC", "Dec")
SUBJECT_IMAGE_KEYS = ("image", "#image", "!image", "filename", "#filename", "Filename")

#: Timestamp formats seen in exports: Panoptes CSVs ("2015-09-10 10:01:58 UTC") and Talk JSON (ISO 8601).
PANOPTES_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S UTC", "%Y-%m-%d %H:%M:%S.%f UTC", "%Y-%m-%d %H:%M:%S")
ISO_TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S.%gZ", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%f%z",
                    "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S UTC")

# File-name patterns of hand-downloaded exports (case-insensitive, newest file wins when several match).
EXPORT_FILE_PATTERNS = {
    "classifications": ("*classifications*.csv", "*classifications*.csv.gz"),
    "subjects": ("*subjects*.csv", "*subjects*.csv.gz"),
    "workflows": ("*workflows*.csv", "*workflows*.csv.gz"),
    "talk_comments": ("*comments*.json", "*comments*.json.gz", "*comments*.tar.gz", "*comments*.tgz"),
    "talk_tags": ("*tags*.json", "*tags*.json.gz", "*tags*.tar.gz", "*tags*.tgz"),
}


def is_gzip(path: str | Path) -> bool:
    """True when the file starts with the gzip magic bytes (whatever its name says)."""
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def read_csv_header(path: str | Path) -> list[str]:
    """The column names of a CSV export (plain or gzip), without a UTF-8 byte-order mark."""
    path = Path(path)
    try:
        opener = gzip.open if is_gzip(path) else open
        with opener(path, "rb") as raw:
            first = raw.readline(1 << 20)
    except (OSError, EOFError) as exc:
        raise ExportFileError(f"cannot read the header of {path}: {exc}") from exc
    if not first.strip():
        raise ExportFileError(f"{path} is empty: no CSV header")
    if first.startswith(codecs.BOM_UTF8):
        first = first[len(codecs.BOM_UTF8):]
    text = first.decode("utf-8", errors="replace")
    return [name.strip() for name in next(csv.reader(io.StringIO(text)))]


def check_columns(path: str | Path, header: list[str], required: tuple[str, ...], kind: str) -> None:
    """Refuse a file whose header lacks a required column, naming the file, the kind and the columns."""
    missing = [c for c in required if c not in header]
    if missing:
        raise ExportFileError(
            f"{path} does not look like a Zooniverse {kind} export: missing column(s) {', '.join(missing)} "
            f"(found: {', '.join(header[:20])})"
        )
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise ExportFileError(f"{path}: column(s) {', '.join(dupes)} appear more than once in the header")
