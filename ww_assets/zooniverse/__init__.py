"""Zooniverse side of the pipeline: export formats, sources (embedded sample, hand-downloaded export folder,
live project through panoptes-client), pseudonyms, and the DuckDB ingest of raw tables.

Plain modules; nothing here imports Dagster (the Dagster layer is ``ww_assets.defs.zooniverse``).
"""

from ww_assets.zooniverse.ingest import (  # noqa: F401
    INGESTERS,
    IngestReport,
    ensure_raw_schema,
    ingest_classifications_csv,
    ingest_subjects_csv,
    ingest_talk_comments,
    ingest_talk_tags,
    ingest_workflows_csv,
)
