"""The Dagster layer of the zooniverse group: in-process materialisations, metadata, people's data, schedule."""

from __future__ import annotations

import csv
import json
import logging
import os

import dagster as dg
import duckdb
import pytest

from ww_assets.defs.resources import SampleResource, StorageResource, WarehouseResource, ZooniverseResource
from ww_assets.defs.zooniverse.assets import (talk_comments, talk_tags, zooniverse_classifications,
                                              zooniverse_subjects)
from ww_assets.defs.zooniverse.checks import classifications_pages_consistent, classifications_quarantine_rate
from ww_assets_tests.support.loopback_zooniverse import (  # noqa: F401 - fixtures
    loopback_exports,
    loopback_zooniverse,
    write_export_folder,
)

ASSETS = [zooniverse_subjects, zooniverse_classifications, talk_comments, talk_tags]
CHECKS = [classifications_quarantine_rate, classifications_pages_consistent]


def resources(storage_root, zooniverse):
    return {"zooniverse": zooniverse, "storage": StorageResource(root=str(storage_root)),
            "sample": SampleResource(size="tiny"),
            "duckdb": WarehouseResource(database=str(storage_root / "warehouse.duckdb"))}


def live_resource(server) -> ZooniverseResource:
    return ZooniverseResource(source="live", project=server.slug, talk_endpoint=server.talk_endpoint,
                              wait_timeout_s=3.0, http_timeout_s=2.0, backoff_s=0.02, talk_poll_s=0.02)


def materialization_metadata(result, key: str) -> dict:
    events = result.asset_materializations_for_node(key)
    assert events, key
    return {k: v.value for k, v in events[-1].metadata.items()}


def test_live_materialisation_pulls_everything_and_leaks_nothing(loopback_zooniverse, storage_root, tmp_path,
                                                                  caplog, capfd):
    server = loopback_zooniverse
    server.fail_next(1, 503, r"classifications_export$")        # a fault on the way, logged as a retry
    caplog.set_level(logging.DEBUG, logger="urllib3")           # the HTTP layer retries a 5xx (DEBUG lines)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(ASSETS + CHECKS, resources=resources(storage_root, live_resource(server)),
                            instance=instance)
    assert result.success
    meta = materialization_metadata(result, "zooniverse_classifications")
    assert (meta["rows_seen"], meta["rows_new"], meta["rows_duplicate"], meta["rows_quarantined"]) == (60, 60, 0, 0)
    assert meta["newest_created_at"].startswith("2022-11-01") and meta["source"] == "live"
    assert meta["dagster/row_count"] == 60
    subjects_meta = materialization_metadata(result, "zooniverse_subjects")
    assert subjects_meta["workflows_rows_new"] == 2 and subjects_meta["rows_new"] > 0
    assert materialization_metadata(result, "talk_comments")["rows_new"] == len(server.truth.comment_ids)
    assert materialization_metadata(result, "talk_tags")["rows_new"] == len(server.truth.tag_ids)
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert all(checks.values()) and len(checks) == 2

    # People's data and the password: nowhere in DuckDB, the run's event log (incl. metadata) or the logs.
    needles = server.truth.volunteer_names + server.truth.volunteer_ips + [server.password, "ZzBrowserSecret"]
    con = duckdb.connect(str(storage_root / "warehouse.duckdb"))
    tables = con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
    assert {("raw", t) for t in ("classifications", "subjects", "talk_comments", "talk_tags", "quarantine")} <= \
        set(tables)
    text = "\n".join(repr(row) for s, t in tables for row in con.execute(f'SELECT * FROM "{s}"."{t}"').fetchall())
    con.close()
    event_log = "\n".join(dg.serialize_value(entry) for entry in instance.all_logs(result.run_id))
    assert "raw.classifications: 60 rows seen" in event_log            # the log is really there
    retries = [r.getMessage() for r in caplog.records if r.name.startswith("urllib3") and "Retry" in r.getMessage()]
    assert any("classifications_export" in m for m in retries), retries     # and so is the retry
    out, err = capfd.readouterr()
    for where, blob in [("duckdb", text), ("event log", event_log), ("python logs", caplog.text),
                        ("stdout/stderr", out + err)]:
        leaked = [n for n in needles if n in blob]
        assert not leaked, f"{where} contains {leaked}"
    assert not [n for n in needles if n.encode() in (storage_root / "warehouse.duckdb").read_bytes()]

    # A second pull of a larger, overlapping export adds exactly what is new.
    larger = write_export_folder(tmp_path / "larger", n_pages=85)
    server.serve_exports(larger.folder)
    server.faults.talk_refuse_repeat = False
    again = dg.materialize([zooniverse_classifications],
                           resources=resources(storage_root, live_resource(server)), instance=instance)
    meta2 = materialization_metadata(again, "zooniverse_classifications")
    assert (meta2["rows_new"], meta2["rows_duplicate"], meta2["table_rows"]) == (25, 60, 85)


def test_export_folder_without_pseudonym_key_fails_clearly(storage_root, tmp_path, monkeypatch):
    truth = write_export_folder(tmp_path / "exports", n_pages=10)
    monkeypatch.delenv("WW_PSEUDONYM_KEY", raising=False)
    zooniverse = ZooniverseResource(source="export_folder", export_folder=str(truth.folder))
    result = dg.materialize([zooniverse_classifications], resources=resources(storage_root, zooniverse),
                            raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "WW_PSEUDONYM_KEY is not set" in failure.message
    assert not (storage_root / "warehouse.duckdb").exists() or duckdb.connect(
        str(storage_root / "warehouse.duckdb")).execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'raw' AND table_name = 'classifications'"
    ).fetchone()[0] == 0


def test_export_folder_source_with_key(storage_root, tmp_path, monkeypatch):
    truth = write_export_folder(tmp_path / "exports", n_pages=12, bad_rows=True)
    monkeypatch.setenv("WW_PSEUDONYM_KEY", "folder-key")
    zooniverse = ZooniverseResource(source="export_folder", export_folder=str(truth.folder))
    result = dg.materialize(ASSETS + CHECKS, resources=resources(storage_root, zooniverse), raise_on_error=False)
    assert result.success          # checks WARN but do not fail the run
    meta = materialization_metadata(result, "zooniverse_classifications")
    assert (meta["rows_new"], meta["rows_quarantined"]) == (12, 5) and meta["source"] == "export_folder"
    assert "quarantine_reasons" in meta
    rate = [e for e in result.get_asset_check_evaluations() if e.check_name == "classifications_quarantine_rate"][0]
    assert not rate.passed and rate.severity == dg.AssetCheckSeverity.WARN
    # the same, unchanged file is not read again on the next run
    again = dg.materialize([zooniverse_classifications], resources=resources(storage_root, zooniverse))
    meta2 = materialization_metadata(again, "zooniverse_classifications")
    assert (meta2["rows_seen"], meta2["table_rows"]) == (0, 12) and "already ingested" in meta2["source_notes"]


def test_sample_source_reads_the_embedded_sample(storage_root, monkeypatch):
    pytest.importorskip("ww_assets.simulation")
    monkeypatch.delenv("WW_PSEUDONYM_KEY", raising=False)      # the sample may use its documented key
    result = dg.materialize(ASSETS, resources=resources(storage_root, ZooniverseResource()))
    assert result.success
    meta = materialization_metadata(result, "zooniverse_classifications")
    assert meta["source"] == "sample" and meta["rows_new"] > 0 and meta["rows_quarantined"] == 0


def test_a_click_off_its_page_is_counted_not_failed(storage_root, tmp_path):
    """A click on a subject that is not on its page is kept at ingest (the rest of the page is good; the consensus
    build quarantines the click alone), so the page check counts it and passes. It used to fail the check."""
    truth = write_export_folder(tmp_path / "exports", n_pages=12)
    path = truth.files["classifications"]
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header, first = rows[0], rows[1]
    data, notes = header.index("subject_data"), header.index("annotations")
    page = {int(s) for v in json.loads(first[data]).values() for s in v["#group_subject_ids"].split("-")}
    off_page = next(s for s in truth.subject_ids if s not in page)
    annotations = json.loads(first[notes])
    annotations[0]["value"].append({"subject": off_page})
    first[notes] = json.dumps(annotations, separators=(",", ":"))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)

    zooniverse = ZooniverseResource(source="export_folder", export_folder=str(truth.folder))
    result = dg.materialize([zooniverse_classifications, classifications_pages_consistent],
                            resources=resources(storage_root, zooniverse))
    assert result.success
    meta = materialization_metadata(result, "zooniverse_classifications")
    assert (meta["rows_new"], meta["rows_quarantined"]) == (12, 0)            # the page is kept
    (check,) = result.get_asset_check_evaluations()
    counts = {k: v.value for k, v in check.metadata.items()}
    assert check.passed and counts["pages_with_clicks_off_page"] == 1
    assert (counts["rows"], counts["empty_pages"], counts["duplicate_ids"]) == (12, 0, 0)


ZOONIVERSE_VARIABLES = ("WW_ZOONIVERSE_SOURCE", "WW_ZOONIVERSE_PROJECT", "WW_ZOONIVERSE_EXPORT_FOLDER",
                        "WW_ZOONIVERSE_TALK_ENDPOINT")


def zooniverse_resource_from_env() -> ZooniverseResource:
    """The ``zooniverse`` resource as the code location builds it from the environment."""
    from ww_assets.defs.resources import resources as project_resources

    return project_resources().resources["zooniverse"]


def test_resource_from_environment(monkeypatch):
    from ww_assets.defs.resources import resolved
    from ww_assets.settings import SettingError

    for name in ZOONIVERSE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert zooniverse_resource_from_env().resolved_source() == "sample"
    monkeypatch.setenv("WW_ZOONIVERSE_PROJECT", "someone/project")
    live = zooniverse_resource_from_env()
    assert (live.resolved_source(), resolved(live.project)) == ("live", "someone/project")
    assert isinstance(live.project, dg.EnvVar) and live.project.env_var_name == "WW_ZOONIVERSE_PROJECT"
    monkeypatch.delenv("WW_ZOONIVERSE_PROJECT")
    monkeypatch.setenv("WW_ZOONIVERSE_EXPORT_FOLDER", "/x")
    assert zooniverse_resource_from_env().resolved_source() == "export_folder"
    # a bad value does not stop the code location from loading; it stops what uses it, naming the variable
    monkeypatch.setenv("WW_ZOONIVERSE_SOURCE", "ftp")
    bad = zooniverse_resource_from_env()
    with pytest.raises(SettingError, match="WW_ZOONIVERSE_SOURCE='ftp'"):
        bad.resolved_source()


def test_schedule_is_stopped_and_job_covers_the_group_and_downstream():
    """The project's own graph (groups set by each defs folder's defs.yaml): the refresh job is the zooniverse
    group and everything downstream of it that is not partitioned, nor in the images / scores / model groups."""
    from ww_assets.definitions import defs

    schedule = defs.resolve_schedule_def("zooniverse_pull")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.cron_schedule == "0 */6 * * *" and schedule.job_name == "zooniverse_refresh"
    graph = defs.resolve_asset_graph()
    groups = {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()}
    zooniverse = {"zooniverse_subjects", "zooniverse_classifications", "talk_comments", "talk_tags"}
    assert {k for k, g in groups.items() if g == "zooniverse"} == zooniverse
    job = defs.resolve_job_def("zooniverse_refresh")
    keys = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert keys == zooniverse | {"image_exposures", "volunteer_consensus", "talk_consensus", "subject_consensus",
                                 "subject_reductions", "consensus_vs_score", "plots", "next_volunteer_round",
                                 "more_like_this", "catalogue", "latent_map_page"}
    assert not any(graph.get(dg.AssetKey(k)).partitions_def for k in keys)
    assert not {groups[k] for k in keys} & {"images", "scores", "model"}


# --------------------------------------------------------------------------------------------------------------
# all or nothing (issue #18): an asset that reads two files checks both before it writes the first
# --------------------------------------------------------------------------------------------------------------

def _raw_rows(storage_root, table: str) -> int:
    path = storage_root / "warehouse.duckdb"
    if not path.exists():
        return 0
    con = duckdb.connect(str(path))
    try:
        there = con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'raw' AND table_name = ?",
                            [table]).fetchone()[0]
        return con.execute(f"SELECT count(*) FROM raw.{table}").fetchone()[0] if there else 0
    finally:
        con.close()


@pytest.mark.parametrize("damage", ["missing", "wrong columns"])
def test_subjects_asset_writes_nothing_when_its_workflows_file_is_bad(storage_root, tmp_path, damage):
    truth = write_export_folder(tmp_path / "exports", n_pages=10)
    workflows = truth.files["workflows"]
    if damage == "missing":
        workflows.unlink()
    else:
        workflows.write_text("id,name\n1,x\n", encoding="utf-8")
    zooniverse = ZooniverseResource(source="export_folder", export_folder=str(truth.folder))
    result = dg.materialize([zooniverse_subjects], resources=resources(storage_root, zooniverse),
                            raise_on_error=False)
    assert not result.success
    message = result.get_step_failure_events()[0].step_failure_data.error.to_string()
    assert "workflows" in message and (damage == "missing" or workflows.name in message), message
    assert _raw_rows(storage_root, "subjects") == 0 and _raw_rows(storage_root, "ingest_log") == 0
    # and with both files good, both land
    write_export_folder(tmp_path / "exports", n_pages=10)
    ok = dg.materialize([zooniverse_subjects], resources=resources(storage_root, zooniverse))
    assert ok.success and _raw_rows(storage_root, "subjects") > 0 and _raw_rows(storage_root, "workflows") == 2


# --------------------------------------------------------------------------------------------------------------
# retention of raw downloads (WW_DOWNLOADS_KEEP)
# --------------------------------------------------------------------------------------------------------------

def _pull_tags_with_new_content(server, storage_root, tmp_path, n: int, instance):
    server.exports_folder = write_export_folder(tmp_path / f"served-{n}", n_pages=60 + 10 * n).folder
    live = ZooniverseResource(source="live", project=server.slug, talk_endpoint=server.talk_endpoint,
                              generate_exports="always", wait_timeout_s=3.0, http_timeout_s=2.0, backoff_s=0.02,
                              talk_poll_s=0.02)
    result = dg.materialize([talk_tags], resources=resources(storage_root, live), instance=instance)
    assert result.success
    meta = materialization_metadata(result, "talk_tags")
    meta["log"] = [e.user_message for e in instance.all_logs(result.run_id) if e.user_message]
    return meta


def test_retention_keeps_the_newest_two_and_never_the_unread(loopback_zooniverse, storage_root, tmp_path,
                                                             monkeypatch):
    server = loopback_zooniverse
    server.faults.regenerate_in_place = True            # every pull: a new Talk generation with new content
    monkeypatch.delenv("WW_DOWNLOADS_KEEP", raising=False)
    folder = storage_root / "downloads" / "talk_tags"
    folder.mkdir(parents=True)
    unread = folder / "project-16616-talk_tags-1-n-0000000000000000.tar.gz"   # never ingested: must stay
    unread.write_bytes(b"not read yet")
    os.utime(unread, (1_600_000_000, 1_600_000_000))
    instance = dg.DagsterInstance.ephemeral()
    metas = [_pull_tags_with_new_content(server, storage_root, tmp_path, n, instance) for n in range(4)]
    assert all(m["rows_new"] > 0 for m in metas[1:])                 # each pull really brought a new file
    names = {p.name for p in folder.iterdir()}
    newest = {m["export_file"].rsplit("/", 1)[-1] for m in metas[-2:]}
    assert names == newest | {unread.name}
    assert [m["downloads_deleted"] for m in metas] == [0, 0, 1, 1]
    lines = [line for m in metas for line in m["log"] if "downloads retention" in line]
    assert len(lines) == 4 and "1 earlier downloads deleted, 3 kept" in lines[-1], lines
    assert not [line for line in lines if ".tar.gz" in line or "project-" in line], "counts only"

    monkeypatch.setenv("WW_DOWNLOADS_KEEP", "0")
    last = _pull_tags_with_new_content(server, storage_root, tmp_path, 9, instance)
    assert {p.name for p in folder.iterdir()} == {last["export_file"].rsplit("/", 1)[-1], unread.name}
    monkeypatch.setenv("WW_DOWNLOADS_KEEP", "all")
    _pull_tags_with_new_content(server, storage_root, tmp_path, 10, instance)
    _pull_tags_with_new_content(server, storage_root, tmp_path, 11, instance)
    assert len([p for p in folder.iterdir()]) == 4


def test_a_bad_retention_setting_fails_before_anything_is_written(loopback_zooniverse, storage_root, monkeypatch):
    monkeypatch.setenv("WW_DOWNLOADS_KEEP", "-1")
    result = dg.materialize([talk_tags], resources=resources(storage_root, live_resource(loopback_zooniverse)),
                            raise_on_error=False)
    assert not result.success
    assert "WW_DOWNLOADS_KEEP='-1'" in result.get_step_failure_events()[0].step_failure_data.error.to_string()
    assert _raw_rows(storage_root, "talk_tags") == 0
    assert loopback_zooniverse.count("GET", r"data_requests$") == 0


def test_the_task_key_says_which_annotation_holds_the_clicks(storage_root, tmp_path, monkeypatch):
    """WW_ZOONIVERSE_TASK (default T0) reaches the ingest: the clicks are the values of that task's annotation."""
    truth = write_export_folder(tmp_path / "exports", n_pages=12)

    def clicks(task_env: str | None, root) -> int:
        if task_env is None:
            monkeypatch.delenv("WW_ZOONIVERSE_TASK", raising=False)
        else:
            monkeypatch.setenv("WW_ZOONIVERSE_TASK", task_env)
        monkeypatch.setenv("WW_ZOONIVERSE_EXPORT_FOLDER", str(truth.folder))
        zooniverse = zooniverse_resource_from_env()
        root.mkdir()
        result = dg.materialize([zooniverse_classifications], resources=resources(root, zooniverse))
        assert result.success
        with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
            return con.execute("SELECT coalesce(sum(len(selected_subject_ids)), 0) FROM raw.classifications"
                               ).fetchone()[0]

    assert clicks(None, tmp_path / "default") > 0
    assert clicks("T7", tmp_path / "other") == 0            # no annotation of task T7 in this export
