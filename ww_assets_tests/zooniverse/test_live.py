"""The live source against the loopback Zooniverse, with the REAL panoptes-client: pulls, re-pulls and faults."""

from __future__ import annotations

import gzip
import time

import duckdb
import pytest

from ww_assets.zooniverse.errors import (
    CredentialsMissing,
    ExportFailed,
    ExportNotReady,
    TransientError,
    ZooniverseError,
)
from ww_assets.zooniverse.ingest.kinds import INGESTERS
from ww_assets.zooniverse.live import LiveSettings, LiveSource
from ww_assets_tests.support.loopback_zooniverse import LoopbackZooniverse, write_export_folder  # fixtures: conftest

KEY = "live-test-key"
KINDS = ("classifications", "subjects", "workflows", "talk_comments", "talk_tags")


def settings(server: LoopbackZooniverse, **overrides) -> LiveSettings:
    values = dict(project=server.slug, talk_endpoint=server.talk_endpoint, wait_timeout_s=3.0, http_timeout_s=2.0,
                  attempts=4, backoff_s=0.02, talk_poll_s=0.02)
    values.update(overrides)
    return LiveSettings(**values)


def pull(server, downloads, con=None, kinds=KINDS, **overrides):
    con = con or duckdb.connect()
    reports, fetched = {}, {}
    with LiveSource(settings(server, **overrides), downloads) as source:
        for kind in kinds:
            fetched[kind] = source.fetch(kind)
            reports[kind] = INGESTERS[kind](con, fetched[kind].path, pseudonym_key=KEY)
    return con, reports, fetched


def test_real_client_pulls_all_four_sources(loopback_zooniverse, tmp_path):
    server = loopback_zooniverse
    con, reports, fetched = pull(server, tmp_path / "downloads")
    truth = server.truth
    assert reports["classifications"].rows_new == len(truth.classification_ids)
    assert reports["talk_comments"].rows_new == len(truth.comment_ids)
    assert reports["talk_tags"].rows_new == len(truth.tag_ids)
    assert reports["subjects"].rows_new > 0 and reports["workflows"].rows_new == 2
    # what went over the wire: the client's login, project lookup by slug, export describe, Talk's //data_requests
    paths = [(m, p) for m, p, _ in server.requests]
    assert ("POST", "/users/sign_in") in paths and ("POST", "/oauth/token") in paths
    assert ("GET", "/api/projects") in paths and ("GET", "/api/projects/16616/classifications_export") in paths
    assert ("POST", "/talk//data_requests") in paths and ("GET", "/talk//data_requests") in paths
    for kind, f in fetched.items():
        assert f.path.parent == tmp_path / "downloads" / kind and f.path.stat().st_size > 0
    assert not list((tmp_path / "downloads").rglob(".*tmp-*")), "no partial downloads left behind"


def test_generates_new_exports_when_the_ready_ones_are_old(loopback_zooniverse, tmp_path):
    server = loopback_zooniverse
    server.age_exports(hours=30)
    _, reports, fetched = pull(server, tmp_path / "d", kinds=("classifications",))
    assert server.count("POST", r"/api/projects/16616/classifications_export$") == 1
    assert not fetched["classifications"].fallback and reports["classifications"].rows_new == 60


def test_repull_of_a_larger_overlapping_export_adds_exactly_the_new_rows(loopback_zooniverse, tmp_path):
    server = loopback_zooniverse
    con, first, _ = pull(server, tmp_path / "d")
    larger = write_export_folder(tmp_path / "larger", n_pages=90)
    server.serve_exports(larger.folder)
    server.faults.talk_refuse_repeat = False
    con, second, _ = pull(server, tmp_path / "d", con=con)
    old, new = set(server.truth.classification_ids), set(larger.classification_ids)
    assert second["classifications"].rows_new == len(new - old) == 30
    assert second["classifications"].rows_duplicate == len(old)
    added = {r[0] for r in con.execute("SELECT classification_id FROM raw.classifications WHERE ingest_id = ?",
                                       [second["classifications"].ingest_id]).fetchall()}
    assert added == new - old
    assert con.execute("SELECT count(*), count(DISTINCT classification_id) FROM raw.classifications"
                       ).fetchone() == (90, 90)
    assert second["talk_comments"].rows_new == len(set(larger.comment_ids) - set(server.truth.comment_ids)) > 0
    added_comments = {r[0] for r in con.execute("SELECT comment_id FROM raw.talk_comments WHERE ingest_id = ?",
                                                [second["talk_comments"].ingest_id]).fetchall()}
    assert added_comments == set(larger.comment_ids) - set(server.truth.comment_ids)
    assert second["talk_tags"].rows_new == len(set(larger.tag_ids) - set(server.truth.tag_ids))
    assert second["subjects"].rows_new == 0


# --------------------------------------------------------------------------------------------------------------
# faults
# --------------------------------------------------------------------------------------------------------------

def test_5xx_bursts_are_retried_everywhere(loopback_zooniverse, tmp_path):
    server = loopback_zooniverse
    server.age_exports(hours=30)
    server.fail_next(2, 503, r"^/users/sign_in$")                 # login
    server.fail_next(2, 502, r"classifications_export$")          # describe (GET) and generate (POST)
    server.fail_next(2, 500, r"^/talk/data_requests$")            # Talk
    server.fail_next(1, 504, r"^/media/")                         # the download itself
    _, reports, _ = pull(server, tmp_path / "d", kinds=("classifications", "talk_comments"))
    assert reports["classifications"].rows_new == 60 and reports["talk_comments"].rows_new == 30
    assert sum(1 for *_, status in server.requests if status >= 500) == 7


def test_persistent_5xx_fails_naming_the_call(loopback_zooniverse, tmp_path):
    server = loopback_zooniverse
    server.fail_next(50, 503, r"subjects_export$")
    with pytest.raises(TransientError, match=r"describe the subjects export: still failing after 4 tries.*HTTP 503"):
        pull(server, tmp_path / "d", kinds=("subjects",))
    assert server.count("GET", r"subjects_export$") == 4, "the HTTP and call-level retries do not multiply"


def test_retry_after_is_honoured(loopback_zooniverse, tmp_path):
    server = loopback_zooniverse
    server.fail_next(1, 429, r"^/api/projects$", retry_after=2)
    t0 = time.monotonic()
    _, reports, _ = pull(server, tmp_path / "d", kinds=("workflows",), backoff_s=0.0)   # no backoff of our own
    assert time.monotonic() - t0 >= 2.0 and reports["workflows"].rows_new == 2          # a plain pull: < 1 s
    assert [s for m, p, s in server.requests if p == "/api/projects"] == [429, 200]


def test_stuck_export_falls_back_to_the_newest_ready_one(loopback_zooniverse, tmp_path):
    server = loopback_zooniverse
    server.age_exports(hours=30)
    server.faults.stuck_exports.add("classifications")
    t0 = time.monotonic()
    _, reports, fetched = pull(server, tmp_path / "d", kinds=("classifications",), wait_timeout_s=2.0)
    assert time.monotonic() - t0 < 15
    f = fetched["classifications"]
    assert f.fallback and "stayed 'creating'" in f.notes[0] and "newest ready export" in f.notes[0]
    assert f.as_metadata()["used_fallback_export"] is True
    assert reports["classifications"].rows_new == 60


def test_stuck_export_with_nothing_to_fall_back_on_says_why(loopback_zooniverse, tmp_path):
    server = loopback_zooniverse
    server.media["subjects"] = []                                  # no export was ever made
    server.faults.stuck_exports.add("subjects")
    with pytest.raises(ExportNotReady, match=r"stayed 'creating' for 1 s.*one export per resource per 24 h"):
        pull(server, tmp_path / "d", kinds=("subjects",), wait_timeout_s=1.0)


def test_stuck_export_reuses_the_last_download_when_the_server_has_none(loopback_zooniverse, tmp_path):
    server = loopback_zooniverse
    pull(server, tmp_path / "d", kinds=("subjects",))
    server.media["subjects"] = []
    server.faults.stuck_exports.add("subjects")
    _, reports, fetched = pull(server, tmp_path / "d", kinds=("subjects",), wait_timeout_s=1.0)
    assert fetched["subjects"].fallback and "last download" in fetched["subjects"].notes[0]


def test_expired_presigned_url_is_described_again(loopback_zooniverse, tmp_path):
    server = loopback_zooniverse
    server.faults.expired_urls = 2
    _, reports, _ = pull(server, tmp_path / "d", kinds=("workflows", "talk_tags"))
    assert reports["workflows"].rows_new == 2 and reports["talk_tags"].rows_new == len(server.truth.tag_ids)
    assert server.count("GET", r"workflows_export$") >= 2          # described again for a fresh URL
    assert sum(1 for m, p, s in server.requests if p.startswith("/media/") and s == 403) == 2


def test_truncated_gzip_is_noticed_and_downloaded_again(loopback_zooniverse, tmp_path):
    server = loopback_zooniverse
    server.faults.truncated_gzip = 2
    _, reports, fetched = pull(server, tmp_path / "d", kinds=("classifications",))
    assert reports["classifications"].rows_new == 60
    assert server.count("GET", r"^/media/") == 3
    assert fetched["classifications"].path.read_bytes().endswith(b"\n")


def test_always_truncated_download_fails_saying_truncated(loopback_zooniverse, tmp_path):
    server = loopback_zooniverse
    server.faults.truncated_gzip = 100
    with pytest.raises(TransientError, match="truncated download"):
        pull(server, tmp_path / "d", kinds=("subjects",))
    assert not list((tmp_path / "d").rglob("*.csv")), "a failed download leaves no file"


def test_declared_charset_is_transcoded_and_missing_charset_means_utf8(loopback_zooniverse, tmp_path):
    from ww_assets.zooniverse.download import download

    server = loopback_zooniverse
    text = "workflow_id,version,display_name\n1,2,Étrange & Merveilleux\n"
    server._blobs["latin"] = (text.encode("latin-1"), "text/csv; charset=ISO-8859-1", None)
    server._blobs["plain"] = (gzip.compress(text.encode("utf-8")), "text/csv", "gzip")
    for name in ("latin", "plain"):
        dest = download(server._presign(f"/media/{name}/x.csv"), tmp_path / f"{name}.csv", kind="workflows",
                        timeout=2.0)
        assert dest.read_text(encoding="utf-8") == text


def test_slow_responses_time_out_and_are_retried(loopback_zooniverse, tmp_path):
    server = loopback_zooniverse
    server.slow_next(2, delay=1.5, path=r"tags_export$|^/talk/data_requests$")
    server.slow_next(1, delay=1.5, path=r"^/api/projects$")
    t0 = time.monotonic()
    _, reports, _ = pull(server, tmp_path / "d", kinds=("talk_tags",), http_timeout_s=0.5)
    assert reports["talk_tags"].rows_new == len(server.truth.tag_ids)
    assert time.monotonic() - t0 < 10
    assert all(f["count"] == 0 for f in server.faults.slow), "every slow response was met (and timed out)"
    assert server.count("GET", r"^/api/projects$") == 2               # the timed-out lookup was asked again


def test_talk_failed_request_is_reported(loopback_zooniverse, tmp_path):
    server = loopback_zooniverse
    server.faults.talk_failed.add("comments")
    with pytest.raises(ExportFailed, match="failed on the Talk server"):
        pull(server, tmp_path / "d", kinds=("talk_comments",))


def test_talk_failed_request_falls_back_to_an_older_finished_one(loopback_zooniverse, tmp_path):
    server = loopback_zooniverse
    server.faults.talk_failed.add("tags")
    server.add_finished_talk_request("tags", age_hours=48)
    _, reports, fetched = pull(server, tmp_path / "d", kinds=("talk_tags",))
    assert fetched["talk_tags"].fallback and "failed on the Talk server" in fetched["talk_tags"].notes[0]
    assert reports["talk_tags"].rows_new == len(server.truth.tag_ids)


def test_talk_refusing_a_second_request_uses_the_newest_finished(loopback_zooniverse, tmp_path):
    server = loopback_zooniverse
    pull(server, tmp_path / "d", kinds=("talk_comments",))
    _, reports, fetched = pull(server, tmp_path / "d2", kinds=("talk_comments",), generate="always")
    assert "refused" in fetched["talk_comments"].notes[0]
    assert reports["talk_comments"].rows_new == len(server.truth.comment_ids)


def test_missing_credentials_and_wrong_password(loopback_zooniverse, tmp_path, monkeypatch):
    server = loopback_zooniverse
    monkeypatch.delenv("PANOPTES_PASSWORD")
    with pytest.raises(CredentialsMissing, match="PANOPTES_USERNAME and PANOPTES_PASSWORD"):
        pull(server, tmp_path / "d", kinds=("workflows",))
    monkeypatch.setenv("PANOPTES_PASSWORD", "not-the-password-zz")
    with pytest.raises(ZooniverseError, match="log in to .*Invalid email or password") as info:
        pull(server, tmp_path / "d", kinds=("workflows",))
    assert "not-the-password-zz" not in str(info.value)


def test_client_credentials_work_too(loopback_zooniverse, tmp_path, monkeypatch):
    server = loopback_zooniverse
    monkeypatch.delenv("PANOPTES_USERNAME")
    monkeypatch.delenv("PANOPTES_PASSWORD")
    monkeypatch.setenv("PANOPTES_CLIENT_ID", server.client_id)
    monkeypatch.setenv("PANOPTES_CLIENT_SECRET", server.client_secret)
    _, reports, _ = pull(server, tmp_path / "d", kinds=("workflows",), project=str(server.project_id))
    assert reports["workflows"].rows_new == 2


# --------------------------------------------------------------------------------------------------------------
# uploads (used by the next-volunteer-round step): what Subject.save / add_location and SubjectSet.add send
# --------------------------------------------------------------------------------------------------------------

def test_real_client_creates_a_subject_set_and_uploads_subjects(loopback_zooniverse, tmp_path):
    from panoptes_client import Panoptes, Project, Subject, SubjectSet, Workflow

    server = loopback_zooniverse
    png = tmp_path / "36411448540000007.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    with Panoptes(endpoint=server.panoptes_endpoint, username=server.username, password=server.password):
        project = Project.find(server.project_id)
        subject_set = SubjectSet()
        subject_set.links.project = project
        subject_set.display_name = "next round 1"
        subject_set.save()
        subjects = []
        for k in range(3):
            subject = Subject()
            subject.links.project = project
            subject.add_location(str(png), manual_mimetype="image/png")
            subject.metadata.update({"object_id": f"3641144854000000{k}", "#rank": k})
            subject.save()
            subjects.append(subject)
        subject_set.add(subjects)
        Workflow(18541).add_subject_sets([subject_set])
    record = server.subject_sets[str(subject_set.id)]
    assert record["display_name"] == "next round 1"
    assert record["links"]["subjects"] == [str(s.id) for s in subjects]
    assert [u["subject_id"] for u in server.uploads] == [str(s.id) for s in subjects]
    assert {u["content_type"] for u in server.uploads} == {"image/png"}
    assert all(u["data"] == png.read_bytes() for u in server.uploads)
    assert server.subjects[str(subjects[1].id)]["metadata"] == {"object_id": "36411448540000001", "#rank": 1}
    assert str(subject_set.id) in server.workflow_links["18541"]
