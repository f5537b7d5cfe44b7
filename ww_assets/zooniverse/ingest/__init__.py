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
raw.quarantine              (log)                                       rows that could not be read, with why
raw.ingest_log              ingest_id                                   one row per file ingested
==========================  ==========================================  ========================================

People's data: volunteer names and IP addresses never leave the file reader. ``user_ip`` is never read at all;
``user_name`` and the Talk ``*_user_id`` columns only feed the keyed pseudonym (``ww_assets.zooniverse.pseudonym``)
computed in SQL; Talk logins are dropped and @mentions in Talk text are masked. A quarantined row is recorded by
file, line, parsed natural key and reason, never by its content.

``source_line`` is the line of the record in the file counting the header as line 1 (the physical line unless a
quoted field holds a newline, which Zooniverse exports do not do); for JSON sources it is the element's position
in the top-level array (1-based).

Modules (import from them; this file imports nothing):

* ``schema``: the raw tables' DDL and ``ensure_raw_schema``.
* ``kinds``: ``INGESTERS``, export kind -> ingest function.
* ``classifications``: ``ingest_classifications_csv``, the one-pass ingest of the big export (why one pass: there).
* ``subjects``: ``ingest_subjects_csv`` and ``ingest_workflows_csv``.
* ``talk``: ``ingest_talk_comments`` and ``ingest_talk_tags``.
* ``staged``: the staged ingest the small tables share (stage, append the new, quarantine the bad).
* ``bookkeeping``: ``IngestReport``, the ingest log, quarantine of rejected lines, ``previous_ingest``.
* ``csv_reader``: DuckDB's CSV reader set up for exports, rejected lines, and each record's source line.
* ``sql``: the SQL text helpers (literals, integer checks, JSON fields, timestamp formats).
"""
