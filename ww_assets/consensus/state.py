"""Build bookkeeping: which raw ingests each consensus table has absorbed, the build log, and ``BuildResult``.

Why: a re-pull must cost in proportion to what it brings, not to the whole project. Each consensus table records in
``consensus.state`` which raw ingests (``ingest_id``) it has absorbed; a re-pull adds rows with new ingest ids, and
only the images they touch are recomputed (how, for each table: ``volunteer``, ``talk``, ``subjects``). Anything
unexpected (a table or state missing, an absorbed ingest no longer in the raw table, another code or DuckDB
version) makes ``full_rebuild_reason`` name a reason, and the table is rebuilt in full, which is always correct.
Every build, including one that finds nothing new, is a row of ``consensus.builds``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import duckdb

from ww_assets.consensus.counting import current_rules
from ww_assets.consensus.schema import ensure_consensus_schema
from ww_assets.duckdb_sql import insertion_order, transaction

__all__ = [
    "CONSENSUS_VERSION",
    "BuildPlan",
    "BuildResult",
    "StageTimer",
    "full_rebuild_reason",
    "ingest_ids",
    "log_build",
    "log_unchanged",
    "next_build_id",
    "plan_build",
    "read_state",
    "run_build",
    "temp_ingest_ids",
    "version_marker",
    "write_state",
]

#: Bump when a table's definition changes: the next build of every consensus table is then a full rebuild.
CONSENSUS_VERSION = "1"


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


class StageTimer:
    """Wall-clock seconds per stage (``times``) and process CPU seconds (``cpu``, all DuckDB threads).

    Call it with a stage's name when the stage ends; a name called twice adds up (partitions of one build).
    """

    def __init__(self):
        self.t, self.c = time.perf_counter(), time.process_time()
        self.times: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def __call__(self, name: str) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        self.times[name] = round(self.times.get(name, 0.0) + now - self.t, 3)
        self.cpu[name] = round(self.cpu.get(name, 0.0) + cpu - self.c, 3)
        self.t, self.c = now, cpu


def read_state(con, table: str, source: str) -> list[str]:
    """The markers ``table`` recorded for ``source`` (``raw.<table>``: absorbed ingest ids; 'version', 'salt')."""
    return [r[0] for r in con.execute(
        "SELECT marker FROM consensus.state WHERE table_name = ? AND source = ? ORDER BY marker",
        [table, source]).fetchall()]


def write_state(con, table: str, source: str, markers, replace: bool = True) -> None:
    """Record ``markers`` for (``table``, ``source``), replacing what was there unless ``replace`` is false."""
    if replace:
        con.execute("DELETE FROM consensus.state WHERE table_name = ? AND source = ?", [table, source])
    markers = list(markers)
    if markers:
        con.executemany(
            "INSERT INTO consensus.state VALUES (?, ?, ?, now()::TIMESTAMP)",
            [[table, source, str(m)] for m in markers])


def ingest_ids(con, raw_table: str) -> set[str]:
    """The ingest ids present in ``raw.<raw_table>``."""
    return {r[0] for r in con.execute(
        f"SELECT DISTINCT ingest_id FROM raw.{raw_table} WHERE ingest_id IS NOT NULL").fetchall()}


def temp_ingest_ids(con, name: str, ids) -> None:
    """Temp table ``name`` (ingest_id VARCHAR) holding ``ids``: the new ingests an incremental build reads."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} (ingest_id VARCHAR)")
    ids = list(ids)
    if ids:
        con.executemany(f"INSERT INTO {name} VALUES (?)", [[i] for i in ids])


def next_build_id(con) -> int:
    return int(con.execute("SELECT coalesce(max(build_id), 0) + 1 FROM consensus.builds").fetchone()[0])


def log_build(con, result: BuildResult) -> None:
    """Append ``result`` to ``consensus.builds``."""
    con.execute(
        "INSERT INTO consensus.builds VALUES (?, ?, ?, ?, ?, ?, ?, ?, now()::TIMESTAMP)",
        [result.build_id, result.table, result.mode, result.reason, result.rows_total, result.rows_changed,
         result.new_input_rows, result.seconds])


@dataclasses.dataclass
class BuildPlan:
    """What a build of ``table`` starts from: the raw ingests present, why it must be full, what is new."""

    table: str
    sources: dict[str, set[str]]     # raw table -> ingest ids present now
    reason: str | None               # why a full build (None: incremental is safe)
    new: dict[str, list[str]]        # raw table -> ingest ids not absorbed yet
    t0: float
    stages: StageTimer

    @property
    def unchanged(self) -> bool:
        """Nothing to do: no full build needed and no new ingest."""
        return self.reason is None and not any(self.new.values())


def plan_build(con, table: str, raw_tables: tuple[str, ...], *, full: bool) -> BuildPlan:
    """Start a build of ``table`` from ``raw.<raw_tables>``: full when ``full`` or ``full_rebuild_reason`` says so."""
    t0 = time.perf_counter()
    stages = StageTimer()
    ensure_consensus_schema(con)
    sources = {t: ingest_ids(con, t) for t in raw_tables}
    reason = "requested" if full else full_rebuild_reason(con, table, sources)
    new = {t: sorted(p - set(read_state(con, table, f"raw.{t}"))) for t, p in sources.items()}
    stages("state")
    return BuildPlan(table, sources, reason, new, t0, stages)


def log_unchanged(con, plan: BuildPlan, rows_table: str, reason: str) -> BuildResult:
    """Log and return the build that found nothing new (``rows_table``: the stored table to count)."""
    build_id = next_build_id(con)
    total = con.execute(f"SELECT count(*) FROM consensus.{rows_table}").fetchone()[0]
    res = BuildResult(plan.table, "unchanged", int(total), 0, 0, time.perf_counter() - plan.t0, reason,
                      build_id, plan.stages.times, plan.stages.cpu)
    log_build(con, res)
    return res


def run_build(con, plan: BuildPlan, stage: str, full: Callable[[int], tuple[int, int, int]],
              incremental: Callable[[int], tuple[int, int, int]]) -> BuildResult:
    """Run ``full`` or ``incremental`` (build id -> (rows, rows written, raw rows read)) in one transaction, then
    record the ingests absorbed and log the build (timed as ``stage``)."""
    with insertion_order(con, keep=False), transaction(con):
        build_id = next_build_id(con)
        mode, step = ("full", full) if plan.reason is not None else ("incremental", incremental)
        total, changed, n_in = step(build_id)
        plan.stages(stage)
        for raw_table, ids in plan.sources.items():
            write_state(con, plan.table, f"raw.{raw_table}", ids)
        write_state(con, plan.table, "version", [version_marker()])
        res = BuildResult(plan.table, mode, int(total), int(changed), int(n_in), time.perf_counter() - plan.t0,
                          plan.reason or "", build_id, plan.stages.times, plan.stages.cpu)
        log_build(con, res)
    return res


def version_marker() -> str:
    """The code, the DuckDB version and the counting rules a table was built with: a change of any of them forces
    a full rebuild."""
    return f"{CONSENSUS_VERSION}|duckdb {duckdb.__version__}|{current_rules().marker()}"


def full_rebuild_reason(con, table: str, sources: dict[str, set[str]]) -> str | None:
    """Why ``table`` needs a full rebuild (None: an incremental update is safe).

    ``sources``: raw table name -> the ingest ids present in it now.
    """
    if read_state(con, table, "version") != [version_marker()]:
        return "first build" if not read_state(con, table, "version") else "code, DuckDB version or counting rules changed"
    for raw_table, present in sources.items():
        absorbed = set(read_state(con, table, f"raw.{raw_table}"))
        gone = absorbed - present
        if gone:
            return f"raw.{raw_table} lost {len(gone)} ingest(s) absorbed before (raw tables rebuilt?)"
    return None
