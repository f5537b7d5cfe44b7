"""The consensus stage: volunteer and Talk consensus as DuckDB SQL over the raw Zooniverse tables (schema ``raw``).

Plain Python, no Dagster (``ww_assets.defs.consensus`` calls these functions). Import from the modules; this
package exports nothing. Which module answers what:

- ``schema``: what tables and views schema ``consensus`` holds, their columns, and why two of them are views.
- ``exposures``: what an exposure is; ``build_image_exposures`` (the view and its row count).
- ``volunteer``: what shown / selected / fraction / pages mean, where volunteers are deduplicated (every (image,
  volunteer) pair counted once, repeats never twice), which clicks are invalid and quarantined, and how an
  incremental update stays exact; ``build_volunteer_consensus``.
- ``volunteer_keys``: what a volunteer is, the 64-bit keys and their collision check, the top-volunteer bit masks,
  and the DuckDB LEFT JOIN bug note.
- ``partitions``: how a full build is split to fit DuckDB's memory limit.
- ``wilson``: the Wilson score interval in SQL, and ``Z_95``.
- ``talk``: what comments, commenters and hashtags count, how tags are found and normalised;
  ``build_talk_consensus``.
- ``subjects``: a subject's survey identity (image_id, ra, dec) and ``subject_consensus``;
  ``build_subject_consensus``.
- ``state``: which ingests each table has absorbed, when a build is full instead of incremental, the build log,
  ``BuildResult``.
- ``checks``: invariants and summaries the asset checks and metadata report.
- ``build``: ``build_all``, every table in order.
"""
