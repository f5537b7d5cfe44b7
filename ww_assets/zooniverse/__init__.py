"""Zooniverse side of the pipeline: what the project's volunteers produced, fetched and stored as raw tables.

Plain modules; nothing here imports Dagster (the Dagster layer is ``ww_assets.defs.zooniverse``). Import from the
modules (this file imports nothing):

* ``formats``: the export files' columns, timestamp formats and file-name patterns (the one place they are named).
* ``export_folder``: ``FetchedExport`` and the source of hand-downloaded exports (and of the embedded sample).
* ``live``: ``LiveSettings`` and ``LiveSource``, the live project through panoptes-client.
* ``connection``: Panoptes endpoint and credentials (one order), and the client with time-outs and retries.
* ``retries``: the retry policy of every HTTP call, and the wrapper for failures HTTP retries cannot see.
* ``download``: streaming a presigned export URL to disk, checked.
* ``talk``: Talk's archive format and panoptes-client's Talk client quirks.
* ``upload``: subjects of the next volunteer round into a subject set (``upload_manifest``).
* ``pseudonym``: keyed volunteer pseudonyms and @mention masking (Python and SQL twins).
* ``ingest``: the DuckDB ingest into schema ``raw`` (a package; its docstring maps its modules).
* ``errors``: the exceptions, each message naming what failed and where.
"""
