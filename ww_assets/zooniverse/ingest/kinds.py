"""``INGESTERS``: the ingest function of each export kind, for callers that read whatever kind a source fetched.

Every ingest function has the signature ``(con, path, *, pseudonym_key, source_label=None) -> IngestReport``
(the classifications one takes ``task`` and ``keep_metadata`` as well); the kinds are ``formats.ALL_KINDS``.
"""

from __future__ import annotations

from typing import Callable

from ww_assets.zooniverse.ingest.bookkeeping import IngestReport
from ww_assets.zooniverse.ingest.classifications import ingest_classifications_csv
from ww_assets.zooniverse.ingest.subjects import ingest_subjects_csv, ingest_workflows_csv
from ww_assets.zooniverse.ingest.talk import ingest_talk_comments, ingest_talk_tags

__all__ = ["INGESTERS"]

INGESTERS: dict[str, Callable[..., IngestReport]] = {
    "classifications": ingest_classifications_csv,
    "subjects": ingest_subjects_csv,
    "workflows": ingest_workflows_csv,
    "talk_comments": ingest_talk_comments,
    "talk_tags": ingest_talk_tags,
}
