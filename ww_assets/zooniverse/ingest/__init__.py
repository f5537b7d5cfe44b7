"""DuckDB ingest of Zooniverse exports into the raw tables (schema ``raw``).

Every table is append-only and deduplicated by its natural key, so re-reading an export that overlaps what is
already stored adds exactly the rows that are new:

==========================  ==========================================  ========================================
table                       natural key                                 source
==========================  ==========================================  ========================================
raw.classifications         classification_id                           classifications CSV
raw.subjects                (subject_id, subject_set_id, workflow_id)   subjects CSV (one row per set x workflow)
raw.workflows               (workflow_id, version, minor_version)       workflows CSV
raw.talk_comments           comment_id                                  Talk comments JSON (or its .tar.gz)
raw.talk_tags               tag_id                                      Talk tags JSON (or its .tar.gz)
raw.quarantine              (table_name, record_key)                    rows that could not be read, with why
raw.ingest_log              ingest_id                                   one row per file ingested
==========================  ==========================================  ========================================

People's data: volunteer names and IP addresses never leave the file reader. ``user_ip`` is never read at all;
``user_name`` and the Talk ``*_user_id`` columns only feed the keyed pseudonym (``ww_assets.zooniverse.pseudonym``)
computed in SQL; Talk logins are dropped and @mentions in Talk text are masked. A quarantined row is recorded by
file, line, natural key (read from the broken row whenever it can be: the first CSV field of a line cut short) and
reason, never by its content.

The quarantine is idempotent: ``record_key`` is a keyed SHA-256 of the record's text plus its occurrence among
identical records of the file, and a row is written only when its key is new (``bookkeeping.QuarantineBatch``).
Reading a file again, a copy under another name, or a later export repeating the earlier bad rows adds nothing,
so ``SELECT reason, count(*) FROM raw.quarantine GROUP BY 1`` counts each bad row once. An ingest report still
counts the file's bad rows (``rows_quarantined``) and says how many were new (``rows_quarantined_new``). A warehouse
from before the column is upgraded by ``schema.ensure_raw_schema`` (column added, re-read copies folded).

``source_line`` is the line of the record in the file counting the header as line 1; a file with broken quoting
or stray carriage returns is read line by line from a cleaned copy so that no line is lost and lines stay right
(``csv_reader``); for JSON sources it is the element's position in the top-level array (1-based).

Modules (import from them; this file imports nothing):

* ``schema``: the raw tables' DDL and ``ensure_raw_schema``.
* ``kinds``: ``INGESTERS``, export kind -> ingest function.
* ``classifications``: ``ingest_classifications_csv``, the one-pass ingest of the big export (why one pass: there).
* ``subjects``: ``ingest_subjects_csv`` and ``ingest_workflows_csv``.
* ``talk``: ``ingest_talk_comments`` and ``ingest_talk_tags``.
* ``staged``: the staged ingest the small tables share (stage, append the new, quarantine the bad).
* ``bookkeeping``: ``IngestReport``, the ingest log, quarantine of rejected lines, ``previous_ingest``.
* ``csv_reader``: DuckDB's CSV reader set up for exports, rejected lines (with the id read from them), each
  record's source line, and the line-by-line copy read when quoting is broken.
* ``sql``: the SQL text helpers (literals, integer checks, JSON fields, timestamp formats).
"""
