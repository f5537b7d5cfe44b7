"""Volunteer and Talk consensus as DuckDB SQL over the raw Zooniverse tables (schema ``raw``).

Definitions (also in the README):

- An **exposure** is one image on one 16-image page shown to one volunteer: one element of
  ``raw.classifications.page_subject_ids``. ``consensus.image_exposures`` is a view with one row per exposure.
- A **volunteer** is the pseudonymised ``volunteer_id``: the keyed pseudonym of the user id for logged-in
  volunteers, of the ``not-logged-in-...`` name for anonymous ones.
- For each image (subject): **shown** = distinct volunteers who had it on a page; **selected** = distinct
  volunteers who clicked it on a page where it was shown; **fraction** = selected / shown, with a Wilson score
  95% interval (``ci_low``, ``ci_high``). Repeat submissions by the same volunteer (the same page re-submitted, or
  the image met again on another page) never count twice. **pages** counts the pages that showed the image,
  repeats included; ``first_seen`` / ``last_seen`` are the earliest / latest such page.
- A click on an image that was not on that page is **invalid**: it is written to ``consensus.quarantine`` with its
  reason and not counted. (So is a click on a page with no subject list.)
- Talk (``talk_consensus``): per image, **comments** = comments focused on it, **commenters** = distinct
  volunteers who wrote them. **Hashtags** come from the comment text (``#word`` at the start of the text or after a
  space or punctuation other than ``&``, ``/``, ``#``) and from Talk's tag records (``raw.talk_tags``,
  ``taggable_type = 'Subject'``), normalised (NFC, lower case, leading ``#`` and trailing punctuation/symbols
  removed; a tag must contain a letter). A tag counts **distinct volunteers** who used it on the image (the same
  rule as clicks: saying ``#merger`` twice, or in a comment and its tag record, counts once). ``hashtags`` maps tag
  -> volunteers; ``top_tag`` is the tag most volunteers used (ties: alphabetical), ``top_tag_share`` its volunteers
  / ``taggers`` (distinct volunteers who used any tag on the image).
- ``subject_consensus``: one row per subject in ``raw.subjects`` (its survey identity: ``image_id`` = HSC object
  id, ``ra``, ``dec``, ``image_ref``; from the most recently updated subject-set link), left-joined with both; a
  subject never shown has ``shown = 0`` and a NULL fraction. Consensus rows whose subject is missing from
  ``raw.subjects`` are reported by an asset check.

Storage choices: ``image_exposures`` is a **view**, not a table. A 10-million-page export is 160 million
exposures; materialising them would copy ``raw.classifications`` 16-fold (gigabytes, and more time than the whole
consensus computation) for a table nobody reads whole; the consensus tables aggregate straight from the page lists.
``subject_consensus`` is also a view: ``consensus.subject_identity`` (stored, one row per subject) joined with the
two stored consensus tables. A re-pull changes ~20% of the images' counts; rewriting those rows a second time would
double the cost of an update, while the join costs about a second per full read (the analysis reads it once).

How it is computed (exact, bounded memory): every (image, volunteer) pair is aggregated once (``GROUP BY`` on the
image id and a 64-bit hash of the volunteer id, checked to be collision-free over all volunteers: on a collision a
new salt is drawn and the tables are rebuilt), then the pairs per image. Large exports are split into partitions
by ``subject_id % K`` so each ``GROUP BY`` fits in memory.

Incremental updates: each consensus table records in ``consensus.state`` which raw ingests (``ingest_id``) it has
absorbed. A re-pull adds rows with new ingest ids; then only images on new pages (or with new Talk activity, or
new subject rows) are updated: their rows are deleted and re-inserted. The volunteer counts are additive and stay
exact: a new (image, volunteer) pair adds to ``shown`` (``selected``) only if that volunteer had not seen
(clicked) that image before. For the 256 most active volunteers (a third of all pages) the answer is a bit in the
image's row (``top_seen_*``, ``top_selected_*``); for everyone else it is looked up in their earlier pages.
Talk rows of changed images are recomputed from all their comments. Anything unexpected (a table or state
missing, an absorbed ingest no longer in the raw table, another code or DuckDB version) falls back to a full
rebuild, which is always correct.

No Dagster here: ``ww_assets.defs.consensus`` calls these functions.
"""

from __future__ import annotations

import dataclasses
import math
import time

import duckdb

from ww_assets.duckdb_sql import insertion_order, transaction
from ww_assets.zooniverse.ingest import ensure_raw_schema

SCHEMA = "consensus"
#: Two-sided 95% standard normal quantile, for the Wilson interval.
Z_95 = 1.959963984540054
#: Bump when a table's definition changes: the next build of every consensus table is then a full rebuild.
CONSENSUS_VERSION = "1"
#: Most exposures per partition of a full volunteer-consensus build. Each partition re-reads the page lists, so
#: fewer partitions are faster while each GROUP BY still fits in DuckDB's memory; smaller when the memory limit is
#: (``partition_exposures_for``). At 10M pages (160M exposures), 3.5 GB: 2 partitions 22.6 s, 4 partitions 27.6 s.
DEFAULT_PARTITION_EXPOSURES = 80_000_000
#: Memory one exposure needs in a partition's aggregations (bytes), for sizing partitions to the memory limit.
BYTES_PER_PARTITION_EXPOSURE = 40
#: The most active volunteers whose pages per image are tracked as bits (two UHUGEINT columns), so an incremental
#: update need not re-read their (long) histories. 256 = 2 x 128 bits.
TOP_VOLUNTEERS = 256
#: Subjects with several raw.subjects links (sets x workflows) per partition of a full subject-identity build.
SUBJECTS_PER_PARTITION = 3_000_000

TABLES = ("image_exposures", "volunteer_consensus", "talk_consensus", "subject_consensus")

#: Why a click was not counted (consensus.quarantine.reason).
REASON_NOT_ON_PAGE = "clicked subject not on the page shown"
REASON_NO_PAGE = "click on a page with no subject list"

_DDL = {
    "state": """
        CREATE TABLE IF NOT EXISTS consensus.state (
            table_name VARCHAR,      -- the consensus table
            source VARCHAR,          -- raw.<table> (marker = an absorbed ingest_id), 'version', 'salt', ...
            marker VARCHAR,
            recorded_at TIMESTAMP)""",
    "builds": """
        CREATE TABLE IF NOT EXISTS consensus.builds (
            build_id BIGINT,
            table_name VARCHAR,
            mode VARCHAR,            -- full | incremental | unchanged
            reason VARCHAR,          -- why a full build was needed
            rows_total BIGINT,
            rows_changed BIGINT,     -- rows (images) deleted and re-inserted
            new_input_rows BIGINT,   -- raw rows absorbed by this build
            seconds DOUBLE,
            finished_at TIMESTAMP)""",
    "quarantine": """
        CREATE TABLE IF NOT EXISTS consensus.quarantine (
            classification_id BIGINT,
            subject_id BIGINT,       -- the subject clicked
            reason VARCHAR,
            ingest_id VARCHAR,       -- the raw ingest the classification came from
            detected_at TIMESTAMP)""",
    "volunteer_keys": """
        CREATE TABLE IF NOT EXISTS consensus.volunteer_keys (
            volunteer_id VARCHAR,    -- pseudonym (as in raw.classifications)
            vkey UBIGINT,            -- hash(volunteer_id[, salt]); unique over all volunteers
            top_rank SMALLINT)       -- 0..255 for the most active volunteers at the last full build, else NULL""",
    "volunteer_consensus": """
        CREATE TABLE IF NOT EXISTS consensus.volunteer_consensus (
            subject_id BIGINT,
            shown BIGINT,            -- distinct volunteers who had the image on a page
            selected BIGINT,         -- distinct volunteers who clicked it on a page where it was shown
            fraction DOUBLE,         -- selected / shown
            ci_low DOUBLE,           -- Wilson score 95% interval of fraction
            ci_high DOUBLE,
            pages BIGINT,            -- pages that showed it (repeat submissions included)
            first_seen TIMESTAMP,
            last_seen TIMESTAMP,
            build_id BIGINT,         -- the consensus build that last wrote the row
            -- bookkeeping for exact incremental updates: bit r of top_seen_a (r < 128) / top_seen_b (r - 128)
            -- is set when the volunteer with volunteer_keys.top_rank = r has had the image on a page;
            -- top_selected_a/b: has clicked it
            top_seen_a UHUGEINT,
            top_seen_b UHUGEINT,
            top_selected_a UHUGEINT,
            top_selected_b UHUGEINT)""",
    "talk_consensus": """
        CREATE TABLE IF NOT EXISTS consensus.talk_consensus (
            subject_id BIGINT,
            comments BIGINT,         -- Talk comments focused on the image
            commenters BIGINT,       -- distinct volunteers among their authors
            taggers BIGINT,          -- distinct volunteers who used any hashtag on the image
            hashtags MAP(VARCHAR, BIGINT),  -- normalised tag -> distinct volunteers who used it
            top_tag VARCHAR,         -- tag with most volunteers (ties: alphabetical)
            top_tag_share DOUBLE,    -- its volunteers / taggers
            first_comment_at TIMESTAMP,
            last_comment_at TIMESTAMP,
            build_id BIGINT)""",
    "subject_identity": """
        CREATE TABLE IF NOT EXISTS consensus.subject_identity (
            subject_id BIGINT,       -- one row per subject in raw.subjects
            image_id VARCHAR,        -- survey identity: the HSC object_id
            ra DOUBLE,
            dec DOUBLE,
            image_ref VARCHAR,
            build_id BIGINT)""",
}

_VC_COLS = (("shown", "0"), ("selected", "0"), ("fraction", None), ("ci_low", None), ("ci_high", None),
            ("pages", "0"), ("first_seen", None), ("last_seen", None))
_TC_COLS = (("comments", "0"), ("commenters", "0"), ("hashtags", "MAP {}::MAP(VARCHAR, BIGINT)"), ("top_tag", None),
            ("top_tag_share", None))

SUBJECT_CONSENSUS_VIEW = f"""
CREATE OR REPLACE VIEW consensus.subject_consensus AS
SELECT s.subject_id, s.image_id, s.ra, s.dec, s.image_ref,
       {", ".join(f"coalesce(v.{c}, {d}) AS {c}" if d else f"v.{c}" for c, d in _VC_COLS)},
       {", ".join(f"coalesce(t.{c}, {d}) AS {c}" if d else f"t.{c}" for c, d in _TC_COLS)}
FROM consensus.subject_identity s
LEFT JOIN consensus.volunteer_consensus v USING (subject_id)
LEFT JOIN consensus.talk_consensus t USING (subject_id)
"""

IMAGE_EXPOSURES_VIEW = """
CREATE OR REPLACE VIEW consensus.image_exposures AS
SELECT
    classification_id,
    volunteer_id,
    is_anonymous,
    workflow_id,
    workflow_version,
    created_at,
    unnest(page_subject_ids) AS subject_id,
    unnest(generate_series(1, len(page_subject_ids))) AS page_position,   -- 1..16, reading order of the page
    list_contains(selected_subject_ids, unnest(page_subject_ids)) AS selected,
    ingest_id
FROM raw.classifications
"""


@dataclasses.dataclass
class BuildResult:
    """What one build of one consensus table did."""

    table: str
    mode: str                    # full | incremental | unchanged
    rows_total: int
    rows_changed: int
    new_input_rows: int
    seconds: float
    reason: str = ""
    build_id: int = 0
    stages: dict = dataclasses.field(default_factory=dict)   # stage -> wall seconds
    stages_cpu: dict = dataclasses.field(default_factory=dict)  # stage -> CPU seconds (all threads)

    def as_metadata(self) -> dict:
        return {
            "build_mode": self.mode,
            "build_reason": self.reason,
            "rows": self.rows_total,
            "rows_recomputed": self.rows_changed,
            "new_input_rows": self.new_input_rows,
            "build_seconds": round(self.seconds, 3),
        }


# ---------------------------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------------------------

def ensure_consensus_schema(con) -> None:
    """Create schema ``consensus`` and its tables if missing (and the raw tables they read)."""
    ensure_raw_schema(con)
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    for ddl in _DDL.values():
        con.execute(ddl)
    kind = con.execute("SELECT table_type FROM information_schema.tables WHERE table_schema = 'consensus' "
                       "AND table_name = 'subject_consensus'").fetchone()
    if kind is None or kind[0] != "VIEW":
        if kind is not None:
            con.execute("DROP TABLE consensus.subject_consensus")
        con.execute(SUBJECT_CONSENSUS_VIEW)


def wilson_interval(selected: int, shown: int, z: float = Z_95) -> tuple[float, float] | tuple[None, None]:
    """Wilson score interval of selected/shown (the Python twin of the SQL); (None, None) when shown is 0."""
    if shown <= 0:
        return None, None
    p = selected / shown
    z2 = z * z
    denom = 1.0 + z2 / shown
    centre = (p + z2 / (2 * shown)) / denom
    half = z * math.sqrt(p * (1 - p) / shown + z2 / (4 * shown * shown)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _wilson_sql(k: str, n: str) -> tuple[str, str, str]:
    """SQL for (fraction, ci_low, ci_high) of k successes in n trials (NULL when n = 0)."""
    z = repr(Z_95)
    p = f"({k}::DOUBLE / nullif({n}, 0))"
    z2n = f"({z} * {z} / nullif({n}, 0))"
    centre = f"(({p} + {z2n} / 2) / (1 + {z2n}))"
    half = f"({z} * sqrt(greatest({p} * (1 - {p}) / {n} + {z2n} / (4 * {n}), 0)) / (1 + {z2n}))"
    return p, f"greatest(0.0, {centre} - {half})", f"least(1.0, {centre} + {half})"


def normalise_tag(text: str | None) -> str | None:
    """Python twin of the SQL tag normalisation (NFC, lower case, strip '#' and trailing punctuation)."""
    import unicodedata

    if text is None:
        return None
    t = unicodedata.normalize("NFC", text).strip().lower().lstrip("#")
    while t and (unicodedata.category(t[-1])[0] in "PSZ"):
        t = t[:-1]
    if not any(unicodedata.category(ch).startswith("L") for ch in t):
        return None
    return t or None


def _norm_tag_sql(x: str) -> str:
    stripped = f"regexp_replace(regexp_replace(lower(trim(nfc_normalize({x}))), '^#+', ''), '[\\pP\\pS\\s]+$', '')"
    return f"CASE WHEN regexp_matches({stripped}, '\\pL') THEN {stripped} END"


#: Hashtags in comment text: '#' at the start or after a character that is not a letter, digit, '_', '&', '/', '#'.
HASHTAG_PATTERN = r"(?:^|[^\pL\pN_&/#])#([\pL\pN_][\pL\pN_.\-]*)"


def _lit(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


class _Stages:
    """Wall-clock seconds per stage (``times``) and process CPU seconds (``cpu``, all DuckDB threads)."""

    def __init__(self):
        self.t, self.c = time.perf_counter(), time.process_time()
        self.times: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def __call__(self, name: str) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        self.times[name] = round(self.times.get(name, 0.0) + now - self.t, 3)
        self.cpu[name] = round(self.cpu.get(name, 0.0) + cpu - self.c, 3)
        self.t, self.c = now, cpu


def _state(con, table: str, source: str) -> list[str]:
    return [r[0] for r in con.execute(
        "SELECT marker FROM consensus.state WHERE table_name = ? AND source = ? ORDER BY marker",
        [table, source]).fetchall()]


def _set_state(con, table: str, source: str, markers, replace: bool = True) -> None:
    if replace:
        con.execute("DELETE FROM consensus.state WHERE table_name = ? AND source = ?", [table, source])
    markers = list(markers)
    if markers:
        con.executemany(
            "INSERT INTO consensus.state VALUES (?, ?, ?, now()::TIMESTAMP)",
            [[table, source, str(m)] for m in markers])


def _ingest_ids(con, raw_table: str) -> set[str]:
    return {r[0] for r in con.execute(
        f"SELECT DISTINCT ingest_id FROM raw.{raw_table} WHERE ingest_id IS NOT NULL").fetchall()}


def _recreate(con, table: str) -> None:
    """Empty a table for a full build by recreating it (so a changed definition takes effect)."""
    con.execute(f"DROP TABLE IF EXISTS consensus.{table}")
    con.execute(_DDL[table])


def _next_build_id(con) -> int:
    return int(con.execute("SELECT coalesce(max(build_id), 0) + 1 FROM consensus.builds").fetchone()[0])


def _log_build(con, result: BuildResult) -> None:
    con.execute(
        "INSERT INTO consensus.builds VALUES (?, ?, ?, ?, ?, ?, ?, ?, now()::TIMESTAMP)",
        [result.build_id, result.table, result.mode, result.reason, result.rows_total, result.rows_changed,
         result.new_input_rows, result.seconds])


def _finish_build(con, table: str, absorbed: dict[str, set[str]], mode: str, total: int, changed: int, n_in: int,
                  t0: float, reason: str | None, build_id: int, stages: _Stages) -> BuildResult:
    """Record what a build absorbed (``absorbed``: state source -> ingest ids) and log it; returns its result."""
    for source, ingest_ids in absorbed.items():
        _set_state(con, table, source, ingest_ids)
    _set_state(con, table, "version", [_version_marker()])
    res = BuildResult(table, mode, int(total), int(changed), int(n_in), time.perf_counter() - t0, reason or "",
                      build_id, stages.times, stages.cpu)
    _log_build(con, res)
    return res


def _version_marker() -> str:
    return f"{CONSENSUS_VERSION}|duckdb {duckdb.__version__}"


def _full_reason(con, table: str, sources: dict[str, set[str]]) -> str | None:
    """Why ``table`` needs a full rebuild (None: an incremental update is safe)."""
    if _state(con, table, "version") != [_version_marker()]:
        return "first build" if not _state(con, table, "version") else "code or DuckDB version changed"
    for raw_table, present in sources.items():
        absorbed = set(_state(con, table, f"raw.{raw_table}"))
        gone = absorbed - present
        if gone:
            return f"raw.{raw_table} lost {len(gone)} ingest(s) absorbed before (raw tables rebuilt?)"
    return None


# ---------------------------------------------------------------------------------------------------------------
# image_exposures (view)
# ---------------------------------------------------------------------------------------------------------------

def build_image_exposures(con) -> BuildResult:
    """(Re)create the ``consensus.image_exposures`` view; its row count is the sum of page lengths.

    The count is kept per raw ingest in ``consensus.state`` (an ingest's rows never change once committed), so
    after a re-pull only the new ingests' pages are summed.
    """
    t0 = time.perf_counter()
    ensure_consensus_schema(con)
    con.execute(IMAGE_EXPOSURES_VIEW)
    table = "image_exposures"
    present = _ingest_ids(con, "classifications")
    known = {}
    if _state(con, table, "version") == [_version_marker()]:
        known = {i: int(n) for i, _, n in (m.rpartition("=") for m in _state(con, table, "exposures per ingest"))
                 if i in present}
    new_ids = sorted(present - set(known))
    if new_ids:
        known.update({i: int(n) for i, n in con.execute(
            "SELECT ingest_id, coalesce(sum(len(page_subject_ids)), 0) FROM raw.classifications "
            "WHERE ingest_id IN (SELECT unnest($ids)) GROUP BY 1", {"ids": new_ids}).fetchall()})
    _set_state(con, table, "exposures per ingest", [f"{i}={n}" for i, n in sorted(known.items())])
    _set_state(con, table, "version", [_version_marker()])
    n = sum(known.values())
    return BuildResult(table, "full", int(n), 0, 0, time.perf_counter() - t0,
                       reason=f"view; counted the pages of {len(new_ids)} new ingest(s)")


# ---------------------------------------------------------------------------------------------------------------
# volunteer_consensus
# ---------------------------------------------------------------------------------------------------------------

def _vkey_sql(col: str, salt: int) -> str:
    return f"hash({col})" if salt == 0 else f"hash({col}, {int(salt)}::BIGINT)"


def _refresh_volunteer_keys(con, salt: int, *, full: bool, new_filter: str | None) -> bool:
    """Keep consensus.volunteer_keys = every volunteer with hash key; True when the keys are collision-free."""
    vk = _vkey_sql("volunteer_id", salt)
    if full:
        con.execute("DELETE FROM consensus.volunteer_keys")
        con.execute(f"""
            INSERT INTO consensus.volunteer_keys
            SELECT volunteer_id, {vk},
                   CASE WHEN rn <= {TOP_VOLUNTEERS} THEN (rn - 1)::SMALLINT END
            FROM (SELECT volunteer_id, row_number() OVER (ORDER BY count(*) DESC, volunteer_id) AS rn
                  FROM raw.classifications WHERE volunteer_id IS NOT NULL GROUP BY volunteer_id)""")
        n, nk = con.execute(
            "SELECT count(*), count(DISTINCT vkey) FROM consensus.volunteer_keys").fetchone()
        return n == nk
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _cons_newvol AS
        SELECT volunteer_id, {vk} AS vkey FROM (
            SELECT DISTINCT volunteer_id FROM raw.classifications WHERE {new_filter} AND volunteer_id IS NOT NULL)
        WHERE volunteer_id NOT IN (SELECT volunteer_id FROM consensus.volunteer_keys)""")
    clash = con.execute("""
        SELECT (SELECT count(*) FROM _cons_newvol n JOIN consensus.volunteer_keys k USING (vkey))
             + (SELECT count(*) - count(DISTINCT vkey) FROM _cons_newvol)""").fetchone()[0]
    if clash:
        return False
    con.execute("INSERT INTO consensus.volunteer_keys SELECT volunteer_id, vkey, NULL FROM _cons_newvol")
    con.execute("DROP TABLE _cons_newvol")
    return True


# Joined with LEFT JOIN ... USING (volunteer_id). Not an inner join: DuckDB 2.0.0 fails with an internal error
# ("dict-surviving cache: global dictionary column ... changed identity") on an inner join of raw.classifications
# with this on volunteer_id followed by unnest of the page lists (seen at 10M pages, 2026-11-24), and so on a LEFT
# JOIN filtered to its matches (the optimizer makes it an inner join).
_TOP = "(SELECT volunteer_id, top_rank FROM consensus.volunteer_keys WHERE top_rank IS NOT NULL)"
_MASK_A = "CASE WHEN t.top_rank < 128 THEN 1::UHUGEINT << t.top_rank::UHUGEINT END"
_MASK_B = "CASE WHEN t.top_rank >= 128 THEN 1::UHUGEINT << (t.top_rank - 128)::UHUGEINT END"


def _popcount(mask: str) -> str:
    """SQL: set bits of a UHUGEINT (bit_count takes signed integers: count the two 64-bit halves)."""
    return (f"(bit_count(({mask} >> 64::UHUGEINT)::HUGEINT)::BIGINT "
            f"+ bit_count(({mask} & 18446744073709551615::UHUGEINT)::HUGEINT)::BIGINT)")


def _has_bit(mask_a: str, mask_b: str, rank: str) -> str:
    """SQL: bit ``rank`` of the 256-bit (mask_a, mask_b) is set (false for NULL masks)."""
    return (f"coalesce(CASE WHEN {rank} < 128 THEN (({mask_a} >> {rank}::UHUGEINT) & 1::UHUGEINT) = 1 "
            f"ELSE (({mask_b} >> ({rank} - 128)::UHUGEINT) & 1::UHUGEINT) = 1 END, false)")


def _click_pairs_sql(where: str, vk: str, part: str = "TRUE") -> str:
    """Distinct (image, volunteer, top rank) of the valid clicks (clicked subject on the page shown)."""
    return f"""
        SELECT DISTINCT s, vk, r
        FROM (SELECT unnest(list_filter(c.selected_subject_ids, lambda x: list_contains(c.page_subject_ids, x)))
                         AS s,
                     {vk} AS vk, t.top_rank AS r
              FROM raw.classifications c LEFT JOIN {_TOP} t USING (volunteer_id)
              WHERE {where} AND len(c.selected_subject_ids) > 0)
        WHERE {part}"""


def _masks_sql(rank: str) -> str:
    """SQL: the two 128-bit masks with bit ``rank`` set (NULL, NULL when rank is NULL)."""
    return (f"CASE WHEN {rank} < 128 THEN 1::UHUGEINT << {rank}::UHUGEINT END, "
            f"CASE WHEN {rank} >= 128 THEN 1::UHUGEINT << ({rank} - 128)::UHUGEINT END")


def _quarantine_clicks(con, where: str) -> None:
    con.execute(f"""
        INSERT INTO consensus.quarantine
        SELECT classification_id, s,
               CASE WHEN coalesce(len(page_subject_ids), 0) = 0 THEN {_lit(REASON_NO_PAGE)}
                    ELSE {_lit(REASON_NOT_ON_PAGE)} END,
               ingest_id, now()::TIMESTAMP
        FROM (SELECT classification_id, page_subject_ids, ingest_id,
                     unnest(list_filter(selected_subject_ids,
                                        lambda x: NOT coalesce(list_contains(page_subject_ids, x), false))) AS s
              FROM raw.classifications WHERE {where} AND len(selected_subject_ids) > 0)""")


def _vc_select(counts_sql: str, build_id: int) -> str:
    frac, lo, hi = _wilson_sql("selected", "shown")
    return f"""
        SELECT subject_id, shown, selected, {frac} AS fraction, {lo} AS ci_low, {hi} AS ci_high,
               pages, first_seen, last_seen, {int(build_id)} AS build_id, top_seen_a, top_seen_b,
               top_selected_a, top_selected_b
        FROM ({counts_sql})"""


def memory_limit_bytes(con) -> int | None:
    """DuckDB's ``memory_limit`` on ``con`` in bytes (None when it cannot be read)."""
    text = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    units = {"b": 1, "bytes": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
             "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
    try:
        number, unit = str(text).strip().split()
        return int(float(number) * units[unit.lower()])
    except (ValueError, KeyError):
        return None


def partition_exposures_for(con) -> int:
    """Exposures per partition of a full build on ``con``: DEFAULT_PARTITION_EXPOSURES, fewer under a small
    memory limit (at least 1M)."""
    limit = memory_limit_bytes(con)
    if limit is None:
        return DEFAULT_PARTITION_EXPOSURES
    return max(1_000_000, min(DEFAULT_PARTITION_EXPOSURES, limit // BYTES_PER_PARTITION_EXPOSURE))


def build_volunteer_consensus(con, *, full: bool = False, partition_exposures: int | None = None,
                              log=None) -> BuildResult:
    """Build or update ``consensus.volunteer_consensus`` (and ``consensus.quarantine``) from raw.classifications.

    Incremental unless ``full`` or a full rebuild is needed (see the module docstring). ``partition_exposures``
    bounds the exposures aggregated at once in a full build (default: ``partition_exposures_for(con)``, from the
    memory limit). ``log``: optional callable for progress.
    """
    t0 = time.perf_counter()
    stages = _Stages()
    table = "volunteer_consensus"
    ensure_consensus_schema(con)
    present = _ingest_ids(con, "classifications")
    reason = "requested" if full else _full_reason(con, table, {"classifications": present})
    salt_state = _state(con, table, "salt")
    salt = int(salt_state[0]) if salt_state and reason is None else 0
    absorbed = set(_state(con, table, "raw.classifications"))
    new_ids = sorted(present - absorbed)
    stages("state")
    if reason is None and not new_ids:
        build_id = _next_build_id(con)
        total = con.execute("SELECT count(*) FROM consensus.volunteer_consensus").fetchone()[0]
        res = BuildResult(table, "unchanged", int(total), 0, 0, time.perf_counter() - t0, "no new ingest",
                          build_id, stages.times, stages.cpu)
        _log_build(con, res)
        return res

    with insertion_order(con, keep=False):
        con.execute("DROP TABLE IF EXISTS temp._cons_new_ids")
        con.execute("CREATE TEMP TABLE _cons_new_ids (ingest_id VARCHAR)")
        if new_ids:
            con.executemany("INSERT INTO _cons_new_ids VALUES (?)", [[i] for i in new_ids])
        while True:
            try:
                with transaction(con):
                    build_id = _next_build_id(con)
                    if reason is not None:
                        res = _vc_full(con, build_id, salt, partition_exposures or partition_exposures_for(con),
                                       stages, log)
                    else:
                        res = _vc_incremental(con, build_id, salt, stages, log)
                    if res is None:       # hash collision among volunteer keys: new salt, full rebuild
                        raise _Collision()
                    res.reason = reason or ""
                    _set_state(con, table, "raw.classifications", present)
                    _set_state(con, table, "version", [_version_marker()])
                    _set_state(con, table, "salt", [salt])
                    res.seconds = time.perf_counter() - t0
                    res.stages, res.stages_cpu = stages.times, stages.cpu
                    _log_build(con, res)
                break
            except _Collision:
                salt += 1
                reason = f"volunteer key collision: rebuilt with salt {salt}"
        con.execute("DROP TABLE IF EXISTS temp._cons_new_ids")
    return res


class _Collision(Exception):
    pass


def _vc_full(con, build_id: int, salt: int, partition_exposures: int, stages: _Stages, log) -> BuildResult | None:
    vk = _vkey_sql("volunteer_id", salt)
    where = "volunteer_id IS NOT NULL"
    if not _refresh_volunteer_keys(con, salt, full=True, new_filter=None):
        return None
    stages("volunteer_keys")
    n_rows, n_exp = con.execute(
        "SELECT count(*), coalesce(sum(len(page_subject_ids)), 0) FROM raw.classifications").fetchone()
    k = max(1, math.ceil(n_exp / max(1, partition_exposures)))
    _recreate(con, "volunteer_consensus")
    _recreate(con, "quarantine")
    others = f"{where} AND volunteer_id NOT IN (SELECT volunteer_id FROM {_TOP})"
    for i in range(k):
        # partitions by subject_id % k: every image is in one partition, and each GROUP BY fits in memory
        part = "TRUE" if k == 1 else f"s % {k} = {i}"
        # 1. per image, one pass: pages, first and last page, and which of the top volunteers saw it (exact
        #    distinct counts for them, as bits)
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE _cons_img AS
            SELECT s, count(*) AS pages, count(*) FILTER (WHERE top_rank IS NULL) AS other_pages,
                   min(created_at) AS first_seen, max(created_at) AS last_seen,
                   coalesce(bit_or({_MASK_A.replace('t.', '')}), 0::UHUGEINT) AS top_seen_a,
                   coalesce(bit_or({_MASK_B.replace('t.', '')}), 0::UHUGEINT) AS top_seen_b
            FROM (SELECT unnest(c.page_subject_ids) AS s, c.created_at, t.top_rank
                  FROM raw.classifications c LEFT JOIN {_TOP} t USING (volunteer_id) WHERE c.{where})
            WHERE {part}
            GROUP BY s""")
        stages("pages")
        # 2. the other volunteers: exposures of an image to a volunteer beyond the first (repeats); every
        #    (image, volunteer) pair is aggregated once
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE _cons_rep AS
            SELECT s, sum(n - 1) AS repeats FROM (
                SELECT s, vk, count(*) AS n
                FROM (SELECT unnest(page_subject_ids) AS s, {vk} AS vk FROM raw.classifications WHERE {others})
                WHERE {part}
                GROUP BY s, vk HAVING count(*) > 1)
            GROUP BY s""")
        stages("repeats")
        # 3. valid clicks, one per (image, volunteer)
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE _cons_sel AS
            SELECT s, count(*) AS selected,
                   coalesce(bit_or(ma), 0::UHUGEINT) AS top_selected_a,
                   coalesce(bit_or(mb), 0::UHUGEINT) AS top_selected_b
            FROM (SELECT s, {_masks_sql('r').replace(' END, ', ' END AS ma, ')} AS mb
                  FROM ({_click_pairs_sql(where, vk, part)}))
            GROUP BY s""")
        stages("clicks")
        counts = f"""
            SELECT i.s AS subject_id,
                   {_popcount('i.top_seen_a')} + {_popcount('i.top_seen_b')} + i.other_pages
                       - coalesce(r.repeats, 0) AS shown,
                   coalesce(c.selected, 0) AS selected,
                   i.pages, i.first_seen, i.last_seen, i.top_seen_a, i.top_seen_b,
                   coalesce(c.top_selected_a, 0::UHUGEINT) AS top_selected_a,
                   coalesce(c.top_selected_b, 0::UHUGEINT) AS top_selected_b
            FROM _cons_img i LEFT JOIN _cons_rep r USING (s) LEFT JOIN _cons_sel c USING (s)"""
        con.execute(f"INSERT INTO consensus.volunteer_consensus {_vc_select(counts, build_id)}")
        stages("write")
        if log:
            log(f"volunteer_consensus: partition {i + 1}/{k} done")
    for t in ("_cons_img", "_cons_rep", "_cons_sel"):
        con.execute(f"DROP TABLE IF EXISTS temp.{t}")
    _quarantine_clicks(con, "TRUE")
    stages("quarantine")
    total = con.execute("SELECT count(*) FROM consensus.volunteer_consensus").fetchone()[0]
    return BuildResult("volunteer_consensus", "full", int(total), int(total), int(n_rows), 0.0, "", build_id)


def _vc_incremental(con, build_id: int, salt: int, stages: _Stages, log) -> BuildResult | None:
    """Add the new pages to the per-image counts, exactly (see the module docstring)."""
    vk = _vkey_sql("c.volunteer_id", salt)
    new = "ingest_id IN (SELECT ingest_id FROM _cons_new_ids)"
    if not _refresh_volunteer_keys(con, salt, full=False, new_filter=new):
        return None
    stages("volunteer_keys")
    n_new = con.execute(f"SELECT count(*) FROM raw.classifications WHERE {new}").fetchone()[0]
    # (image, volunteer) pairs of the new pages, with the volunteer's top rank (NULL for most volunteers); the
    # rank is fixed within a group, so its bit is set after grouping
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _cons_np AS
        SELECT s, vk, r, n, f, l, {_masks_sql('r').replace(' END, ', ' END AS ma, ')} AS mb
        FROM (SELECT s, vk, r, count(*) AS n, min(created_at) AS f, max(created_at) AS l
              FROM (SELECT unnest(c.page_subject_ids) AS s, {vk} AS vk, t.top_rank AS r, c.created_at
                    FROM raw.classifications c LEFT JOIN {_TOP} t USING (volunteer_id)
                    WHERE c.{new} AND c.volunteer_id IS NOT NULL)
              GROUP BY s, vk, r)""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _cons_nc AS
        SELECT *, {_masks_sql('r').replace(' END, ', ' END AS ma, ')} AS mb
        FROM ({_click_pairs_sql(new + ' AND volunteer_id IS NOT NULL', vk)})""")
    stages("new_pairs")
    # Had the volunteer already seen (clicked) the image? Top volunteers: a bit in the image's row. Everyone else:
    # their earlier pages (short histories), looked up for the pairs of the new pages only.
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _cons_batch_vol AS
        SELECT DISTINCT volunteer_id FROM raw.classifications WHERE {new} AND volunteer_id IS NOT NULL""")
    old_light = (f"NOT ({new}) AND volunteer_id IN (SELECT volunteer_id FROM _cons_batch_vol) "
                 f"AND volunteer_id NOT IN (SELECT volunteer_id FROM {_TOP})")
    # their earlier pages, read once (a scan of raw.classifications), then looked up for pages and clicks
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _cons_hist AS
        SELECT {vk} AS vk, c.page_subject_ids AS page,
               CASE WHEN len(c.selected_subject_ids) > 0
                    THEN list_filter(c.selected_subject_ids, lambda x: list_contains(c.page_subject_ids, x)) END AS sel
        FROM raw.classifications c WHERE {old_light}""")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _cons_seen AS
        SELECT DISTINCT o.s, o.vk FROM (SELECT unnest(page) AS s, vk FROM _cons_hist) o
        SEMI JOIN (SELECT s, vk FROM _cons_np WHERE r IS NULL) p ON o.s = p.s AND o.vk = p.vk""")
    stages("history_pages")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _cons_cseen AS
        SELECT DISTINCT o.s, o.vk FROM (SELECT unnest(sel) AS s, vk FROM _cons_hist WHERE len(sel) > 0) o
        SEMI JOIN (SELECT s, vk FROM _cons_nc WHERE r IS NULL) p ON o.s = p.s AND o.vk = p.vk""")
    stages("history_clicks")
    # New volunteers per image: the other volunteers' pairs not in their history, plus the top volunteers' bits
    # that the image's row did not have yet (popcount(new & ~old)). The current rows are joined once, in place.
    def added(old: str, new_: str) -> str:
        return _popcount(f"(coalesce({new_}, 0::UHUGEINT) & ~coalesce({old}, 0::UHUGEINT))")

    counts = f"""
        SELECT d.s AS subject_id,
               coalesce(o.shown, 0) + d.light + {added('o.top_seen_a', 'd.ma')} + {added('o.top_seen_b', 'd.mb')}
                   AS shown,
               coalesce(o.selected, 0) + coalesce(c.light, 0) + {added('o.top_selected_a', 'c.ma')}
                   + {added('o.top_selected_b', 'c.mb')} AS selected,
               coalesce(o.pages, 0) + d.pages AS pages,
               least(o.first_seen, d.first_seen) AS first_seen,
               greatest(o.last_seen, d.last_seen) AS last_seen,
               coalesce(o.top_seen_a, 0::UHUGEINT) | coalesce(d.ma, 0::UHUGEINT) AS top_seen_a,
               coalesce(o.top_seen_b, 0::UHUGEINT) | coalesce(d.mb, 0::UHUGEINT) AS top_seen_b,
               coalesce(o.top_selected_a, 0::UHUGEINT) | coalesce(c.ma, 0::UHUGEINT) AS top_selected_a,
               coalesce(o.top_selected_b, 0::UHUGEINT) | coalesce(c.mb, 0::UHUGEINT) AS top_selected_b
        FROM (SELECT p.s, count(*) FILTER (WHERE p.r IS NULL AND sn.s IS NULL) AS light,
                     sum(p.n)::BIGINT AS pages, min(p.f) AS first_seen, max(p.l) AS last_seen,
                     bit_or(p.ma) AS ma, bit_or(p.mb) AS mb
              FROM _cons_np p LEFT JOIN _cons_seen sn ON p.s = sn.s AND p.vk = sn.vk
              GROUP BY p.s) d
        LEFT JOIN (SELECT c.s, count(*) FILTER (WHERE c.r IS NULL AND sn.s IS NULL) AS light,
                          bit_or(c.ma) AS ma, bit_or(c.mb) AS mb
                   FROM _cons_nc c LEFT JOIN _cons_cseen sn ON c.s = sn.s AND c.vk = sn.vk
                   GROUP BY c.s) c ON c.s = d.s
        LEFT JOIN consensus.volunteer_consensus o ON o.subject_id = d.s"""
    con.execute(f"CREATE OR REPLACE TEMP TABLE _cons_vc AS {_vc_select(counts, build_id)}")
    stages("merge")
    changed = con.execute("SELECT count(*) FROM _cons_vc").fetchone()[0]
    con.execute("DELETE FROM consensus.volunteer_consensus WHERE subject_id IN (SELECT subject_id FROM _cons_vc)")
    con.execute("INSERT INTO consensus.volunteer_consensus SELECT * FROM _cons_vc")
    _quarantine_clicks(con, new)
    stages("write")
    for t in ("_cons_np", "_cons_nc", "_cons_hist", "_cons_seen", "_cons_cseen", "_cons_vc", "_cons_batch_vol"):
        con.execute(f"DROP TABLE IF EXISTS temp.{t}")
    total = con.execute("SELECT count(*) FROM consensus.volunteer_consensus").fetchone()[0]
    if log:
        log(f"volunteer_consensus: {n_new} new pages updated {changed} images")
    return BuildResult("volunteer_consensus", "incremental", int(total), int(changed), int(n_new), 0.0, "",
                       build_id)


# ---------------------------------------------------------------------------------------------------------------
# talk_consensus
# ---------------------------------------------------------------------------------------------------------------

def _talk_sql(subject_filter: str, build_id: int) -> str:
    """talk_consensus rows for the subjects matching ``subject_filter`` (an SQL condition on ``s``)."""
    norm_body = _norm_tag_sql("m")
    norm_name = _norm_tag_sql("name")
    return f"""
    WITH c AS (
        SELECT comment_id, focus_subject_id AS s, commenter_id, comment_body, created_at
        FROM raw.talk_comments WHERE focus_subject_id IS NOT NULL AND ({subject_filter.format(s='focus_subject_id')})
    ), comment_stats AS (
        SELECT s, count(*) AS comments, count(DISTINCT commenter_id) AS commenters,
               min(created_at) AS first_comment_at, max(created_at) AS last_comment_at
        FROM c GROUP BY s
    ), uses AS (
        SELECT s, commenter_id AS who, {norm_body} AS tag
        FROM (SELECT s, commenter_id, unnest(regexp_extract_all(comment_body, {_lit(HASHTAG_PATTERN)}, 1)) AS m
              FROM c WHERE comment_body LIKE '%#%')
        UNION ALL
        SELECT taggable_id AS s, tagger_id AS who, {norm_name} AS tag
        FROM raw.talk_tags
        WHERE taggable_type = 'Subject' AND taggable_id IS NOT NULL AND ({subject_filter.format(s='taggable_id')})
    ), per_tag AS (
        SELECT s, tag, count(DISTINCT who) AS n FROM uses WHERE tag IS NOT NULL AND who IS NOT NULL
        GROUP BY s, tag
    ), tag_stats AS (
        SELECT t.s, t.hashtags, t.top_tag, t.top_n, w.taggers
        FROM (SELECT s,
                     map_from_entries(list({{'k': tag, 'v': n}} ORDER BY n DESC, tag)) AS hashtags,
                     (list(tag ORDER BY n DESC, tag))[1] AS top_tag,
                     max(n) AS top_n
              FROM per_tag GROUP BY s) t
        JOIN (SELECT s, count(DISTINCT who) AS taggers FROM uses
              WHERE tag IS NOT NULL AND who IS NOT NULL GROUP BY s) w USING (s)
    )
    SELECT coalesce(cs.s, ts.s) AS subject_id,
           coalesce(cs.comments, 0) AS comments, coalesce(cs.commenters, 0) AS commenters,
           coalesce(ts.taggers, 0) AS taggers,
           coalesce(ts.hashtags, MAP {{}}::MAP(VARCHAR, BIGINT)) AS hashtags,
           ts.top_tag, ts.top_n::DOUBLE / nullif(ts.taggers, 0) AS top_tag_share,
           cs.first_comment_at, cs.last_comment_at, {int(build_id)} AS build_id
    FROM comment_stats cs FULL OUTER JOIN tag_stats ts ON cs.s = ts.s
    """


def build_talk_consensus(con, *, full: bool = False, log=None) -> BuildResult:
    """Build or update ``consensus.talk_consensus`` from raw.talk_comments and raw.talk_tags."""
    t0 = time.perf_counter()
    stages = _Stages()
    table = "talk_consensus"
    ensure_consensus_schema(con)
    sources = {"talk_comments": _ingest_ids(con, "talk_comments"), "talk_tags": _ingest_ids(con, "talk_tags")}
    reason = "requested" if full else _full_reason(con, table, sources)
    new = {t: sorted(p - set(_state(con, table, f"raw.{t}"))) for t, p in sources.items()}
    stages("state")
    if reason is None and not any(new.values()):
        build_id = _next_build_id(con)
        total = con.execute("SELECT count(*) FROM consensus.talk_consensus").fetchone()[0]
        res = BuildResult(table, "unchanged", int(total), 0, 0, time.perf_counter() - t0, "no new ingest",
                          build_id, stages.times, stages.cpu)
        _log_build(con, res)
        return res
    with insertion_order(con, keep=False), transaction(con):
        build_id = _next_build_id(con)
        if reason is not None:
            n_in = con.execute("SELECT (SELECT count(*) FROM raw.talk_comments) + "
                               "(SELECT count(*) FROM raw.talk_tags)").fetchone()[0]
            _recreate(con, "talk_consensus")
            con.execute(f"INSERT INTO consensus.talk_consensus {_talk_sql('TRUE', build_id)}")
            changed = total = con.execute("SELECT count(*) FROM consensus.talk_consensus").fetchone()[0]
            mode = "full"
        else:
            con.execute("CREATE OR REPLACE TEMP TABLE _cons_tc_ids (ingest_id VARCHAR)")
            ids = [i for v in new.values() for i in v]
            if ids:
                con.executemany("INSERT INTO _cons_tc_ids VALUES (?)", [[i] for i in ids])
            con.execute("""
                CREATE OR REPLACE TEMP TABLE _cons_tc_subjects AS
                SELECT DISTINCT s FROM (
                    SELECT focus_subject_id AS s FROM raw.talk_comments
                    WHERE ingest_id IN (SELECT ingest_id FROM _cons_tc_ids) AND focus_subject_id IS NOT NULL
                    UNION ALL
                    SELECT taggable_id FROM raw.talk_tags
                    WHERE ingest_id IN (SELECT ingest_id FROM _cons_tc_ids) AND taggable_type = 'Subject'
                      AND taggable_id IS NOT NULL)""")
            n_in = con.execute("""
                SELECT (SELECT count(*) FROM raw.talk_comments WHERE ingest_id IN (SELECT ingest_id FROM _cons_tc_ids))
                     + (SELECT count(*) FROM raw.talk_tags WHERE ingest_id IN (SELECT ingest_id FROM _cons_tc_ids))
            """).fetchone()[0]
            con.execute("DELETE FROM consensus.talk_consensus WHERE subject_id IN (SELECT s FROM _cons_tc_subjects)")
            con.execute(
                f"INSERT INTO consensus.talk_consensus "
                f"{_talk_sql('{s} IN (SELECT s FROM _cons_tc_subjects)', build_id)}")
            changed = con.execute("SELECT count(*) FROM _cons_tc_subjects").fetchone()[0]
            total = con.execute("SELECT count(*) FROM consensus.talk_consensus").fetchone()[0]
            con.execute("DROP TABLE IF EXISTS temp._cons_tc_ids")
            con.execute("DROP TABLE IF EXISTS temp._cons_tc_subjects")
            mode = "incremental"
        stages("talk")
        res = _finish_build(con, table, {f"raw.{t}": p for t, p in sources.items()}, mode, total, changed, n_in,
                            t0, reason, build_id, stages)
    if log:
        log(f"talk_consensus: {mode}, {changed} images recomputed")
    return res


# ---------------------------------------------------------------------------------------------------------------
# subject_consensus
# ---------------------------------------------------------------------------------------------------------------

_IDENT_SQL = """
    -- raw.subjects has one row per (subject, set, workflow) link; the identity comes from the most recently
    -- updated link (same second: the highest subject_set_id modulo 2^20)
    SELECT subject_id, ident.image_id, ident.ra, ident.dec, ident.image_ref FROM (
        SELECT subject_id,
               arg_max({{'image_id': object_id, 'ra': ra, 'dec': dec, 'image_ref': image_ref}},
                       epoch(coalesce(updated_at, TIMESTAMP '1970-01-01'))::BIGINT * 1048576
                       + coalesce(subject_set_id, 0) % 1048576) AS ident
        FROM raw.subjects WHERE subject_id IS NOT NULL AND ({where})
        GROUP BY subject_id)
"""
def build_subject_consensus(con, *, full: bool = False, log=None) -> BuildResult:
    """Build or update ``consensus.subject_consensus``: subjects joined with volunteer and Talk consensus.

    ``subject_consensus`` is a view joining ``consensus.subject_identity`` (one row per subject: the survey
    identity from raw.subjects, stored) with ``volunteer_consensus`` and ``talk_consensus``; so it is current as
    soon as those are, and a re-pull of classifications costs it nothing. Only the identity is built here: in
    full the first time, then only for subjects with new raw.subjects rows.
    """
    t0 = time.perf_counter()
    stages = _Stages()
    table = "subject_consensus"
    ensure_consensus_schema(con)
    present = _ingest_ids(con, "subjects")
    reason = "requested" if full else _full_reason(con, table, {"subjects": present})
    new_ids = sorted(present - set(_state(con, table, "raw.subjects")))
    stages("state")
    if reason is None and not new_ids:
        build_id = _next_build_id(con)
        total = con.execute("SELECT count(*) FROM consensus.subject_identity").fetchone()[0]
        res = BuildResult(table, "unchanged", int(total), 0, 0, time.perf_counter() - t0,
                          "no new subjects (a view: volunteer and Talk columns are always current)",
                          build_id, stages.times, stages.cpu)
        _log_build(con, res)
        return res
    with insertion_order(con, keep=False), transaction(con):
        build_id = _next_build_id(con)
        if reason is not None:
            _recreate(con, "subject_identity")
            n_links = con.execute("SELECT count(*) FROM raw.subjects").fetchone()[0]
            # a subject with one link (the usual case) is its own identity: copied without the arg_max, which is
            # kept for subjects linked to several sets or workflows
            con.execute("""CREATE OR REPLACE TEMP TABLE _sc_multi AS SELECT subject_id FROM raw.subjects
                           WHERE subject_id IS NOT NULL GROUP BY subject_id HAVING count(*) > 1""")
            con.execute(f"""INSERT INTO consensus.subject_identity
                            SELECT subject_id, object_id, ra, dec, image_ref, {build_id} FROM raw.subjects
                            WHERE subject_id IS NOT NULL AND subject_id NOT IN (SELECT subject_id FROM _sc_multi)""")
            n_multi = con.execute("SELECT count(*) FROM _sc_multi").fetchone()[0]
            k = max(1, math.ceil(n_multi / SUBJECTS_PER_PARTITION))
            for i in range(k if n_multi else 0):
                part = "subject_id IN (SELECT subject_id FROM _sc_multi)" + ("" if k == 1 else
                                                                               f" AND subject_id % {k} = {i}")
                con.execute(f"INSERT INTO consensus.subject_identity "
                            f"SELECT *, {build_id} FROM ({_IDENT_SQL.format(where=part)})")
            con.execute("DROP TABLE IF EXISTS temp._sc_multi")
            changed = total = con.execute("SELECT count(*) FROM consensus.subject_identity").fetchone()[0]
            mode, n_in = "full", n_links
        else:
            con.execute("CREATE OR REPLACE TEMP TABLE _sc_ids (ingest_id VARCHAR)")
            con.executemany("INSERT INTO _sc_ids VALUES (?)", [[i] for i in new_ids])
            con.execute("""CREATE OR REPLACE TEMP TABLE _sc_new AS SELECT DISTINCT subject_id FROM raw.subjects
                           WHERE ingest_id IN (SELECT ingest_id FROM _sc_ids) AND subject_id IS NOT NULL""")
            n_in = con.execute("SELECT count(*) FROM raw.subjects WHERE ingest_id IN (SELECT ingest_id FROM _sc_ids)"
                               ).fetchone()[0]
            changed = con.execute("SELECT count(*) FROM _sc_new").fetchone()[0]
            con.execute("DELETE FROM consensus.subject_identity WHERE subject_id IN (SELECT subject_id FROM _sc_new)")
            where = "subject_id IN (SELECT subject_id FROM _sc_new)"
            con.execute(f"INSERT INTO consensus.subject_identity "
                        f"SELECT *, {build_id} FROM ({_IDENT_SQL.format(where=where)})")
            total = con.execute("SELECT count(*) FROM consensus.subject_identity").fetchone()[0]
            con.execute("DROP TABLE IF EXISTS temp._sc_ids")
            con.execute("DROP TABLE IF EXISTS temp._sc_new")
            mode = "incremental"
        stages("subjects")
        res = _finish_build(con, table, {"raw.subjects": present}, mode, total, changed, n_in, t0, reason,
                            build_id, stages)
    if log:
        log(f"subject_consensus: {mode}, {changed} subject identities written")
    return res


def build_all(con, *, full: bool = False, log=None, **kwargs) -> dict[str, BuildResult]:
    """Every consensus table in dependency order (what the four assets do one by one)."""
    out = {"image_exposures": build_image_exposures(con)}
    out["volunteer_consensus"] = build_volunteer_consensus(con, full=full, log=log, **kwargs)
    out["talk_consensus"] = build_talk_consensus(con, full=full, log=log)
    out["subject_consensus"] = build_subject_consensus(con, full=full, log=log)
    return out


# ---------------------------------------------------------------------------------------------------------------
# checks and summaries (plain values; the Dagster layer turns them into asset checks and metadata)
# ---------------------------------------------------------------------------------------------------------------

def check_counts(con, table: str) -> dict:
    """Invariant violations of a table with shown/selected/fraction: each count must be 0."""
    return dict(zip(
        ("rows", "selected_out_of_range", "fraction_out_of_range", "interval_invalid"),
        (int(x) for x in con.execute(f"""
            SELECT count(*),
                   count(*) FILTER (WHERE NOT (selected >= 0 AND selected <= shown)),
                   count(*) FILTER (WHERE fraction IS NOT NULL AND NOT (fraction >= 0 AND fraction <= 1)
                                    OR (fraction IS NULL) <> (shown = 0)),
                   count(*) FILTER (WHERE shown > 0 AND NOT (ci_low <= fraction AND fraction <= ci_high
                                                             AND ci_low >= 0 AND ci_high <= 1))
            FROM consensus.{table}""").fetchone())))


def duplicate_keys(con, table: str, column: str = "subject_id") -> tuple[int, list]:
    """(number of key values that appear more than once, a few of them)."""
    rows = con.execute(f"""
        SELECT {column}, count(*) FROM consensus.{table} GROUP BY 1 HAVING count(*) > 1
        ORDER BY 2 DESC, 1 LIMIT 1000""").fetchall()
    return len(rows), [r[0] for r in rows[:10]]


def orphan_rows(con, table: str) -> tuple[int, list]:
    """Consensus rows whose subject_id has no row in raw.subjects: (count, up to 10 ids)."""
    rows = con.execute(f"""
        SELECT subject_id FROM consensus.{table}
        WHERE subject_id NOT IN (SELECT subject_id FROM raw.subjects WHERE subject_id IS NOT NULL)
        ORDER BY subject_id""").fetchall()
    return len(rows), [r[0] for r in rows[:10]]


def quarantine_counts(con) -> dict[str, int]:
    """Invalid clicks by reason (consensus.quarantine) and raw rows quarantined at ingest by table/reason."""
    out = {}
    for reason, n in con.execute(
            "SELECT reason, count(*) FROM consensus.quarantine GROUP BY 1 ORDER BY 2 DESC").fetchall():
        out[f"click: {reason}"] = int(n)
    for table, reason, n in con.execute(
            "SELECT table_name, reason, count(*) FROM raw.quarantine GROUP BY 1, 2 ORDER BY 3 DESC").fetchall():
        out[f"raw.{table}: {reason}"] = int(n)
    return out


def fraction_summary(con, table: str = "volunteer_consensus") -> dict:
    """Mean and quantiles of fraction over images shown at least once; images with fraction > 0.5."""
    row = con.execute(f"""
        SELECT count(*) FILTER (WHERE shown > 0), avg(fraction), quantile_cont(fraction, [0.1, 0.25, 0.5, 0.75, 0.9]),
               count(*) FILTER (WHERE fraction > 0.5), avg(shown), max(shown), sum(shown), sum(selected), sum(pages)
        FROM consensus.{table}""").fetchone()
    n, mean, q, over_half, mean_shown, max_shown, sum_shown, sum_sel, sum_pages = row
    q = q or [None] * 5
    return {
        "images_shown": int(n or 0),
        "fraction_mean": None if mean is None else round(float(mean), 5),
        "fraction_p10": q[0], "fraction_p25": q[1], "fraction_median": q[2], "fraction_p75": q[3],
        "fraction_p90": q[4],
        "images_fraction_over_half": int(over_half or 0),
        "volunteers_per_image_mean": None if mean_shown is None else round(float(mean_shown), 3),
        "volunteers_per_image_max": int(max_shown or 0),
        "volunteer_image_pairs": int(sum_shown or 0),
        "selections": int(sum_sel or 0),
        "exposures": int(sum_pages or 0),
    }
