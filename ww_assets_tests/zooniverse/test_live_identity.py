"""What a live pull downloads and which project it talks to (issue #18): downloads keyed by content, not by
``updated_at``; the project checked; retention of the raw downloads."""

from __future__ import annotations

import contextlib
import os

import duckdb
import pytest

from ww_assets.settings import SettingError
from ww_assets.zooniverse.download import prune_downloads
from ww_assets.zooniverse.errors import ZooniverseError
from ww_assets.zooniverse.live import LiveSettings, LiveSource
from ww_assets.zooniverse.pull import pull
from ww_assets_tests.support.loopback_zooniverse import (
    FOREIGN_PROJECT_ID,
    FOREIGN_PROJECT_SLUG,
    LoopbackZooniverse,
    write_export_folder,
)

KEY = "live-identity-key"


def settings(server: LoopbackZooniverse, **overrides) -> LiveSettings:
    values = dict(project=server.slug, talk_endpoint=server.talk_endpoint, wait_timeout_s=3.0, http_timeout_s=2.0,
                  attempts=3, backoff_s=0.02, talk_poll_s=0.02)
    values.update(overrides)
    return LiveSettings(**values)


def pull_once(server, downloads, con, kinds, **overrides):
    """One pull as the assets do it (``pull.pull``: an export file already ingested is not read again)."""
    @contextlib.contextmanager
    def connect():
        yield con

    with LiveSource(settings(server, **overrides), downloads) as source:
        return {p.report.table: p for p in pull(source, kinds, connect, pseudonym_key=KEY)}


# --------------------------------------------------------------------------------------------------------------
# a server that regenerates in place, without bumping updated_at
# --------------------------------------------------------------------------------------------------------------

def test_regenerated_export_with_the_same_id_and_updated_at_is_downloaded_again(loopback_zooniverse, tmp_path):
    server = loopback_zooniverse
    server.faults.regenerate_in_place = True
    server.age_exports(hours=30)                       # 'auto' asks for a new export on each pull
    con = duckdb.connect()
    first = pull_once(server, tmp_path / "d", con, ("classifications",))["classifications"]
    media = dict(server.media["classifications"][0])
    assert first.report.rows_new == 60

    larger = write_export_folder(tmp_path / "larger", n_pages=210)
    server.exports_folder = larger.folder             # what the next generation will hold
    second = pull_once(server, tmp_path / "d", con, ("classifications",))["classifications"]
    again = server.media["classifications"][0]
    # the fault is real: same export id and timestamps, new content ...
    assert (again["id"], again["updated_at"], again["created_at"]) == (media["id"], media["updated_at"],
                                                                      media["created_at"])
    assert server.count("POST", r"classifications_export$") == 2
    # ... and the new rows landed (before: "already downloaded", 0 of 150)
    assert second.reread and second.report.rows_new == 150 and second.table_rows == 210
    assert second.fetched.path != first.fetched.path and first.fetched.path.exists()


def test_regenerated_talk_request_with_the_same_id_is_downloaded_again(loopback_zooniverse, tmp_path):
    server = loopback_zooniverse
    server.faults.regenerate_in_place = True
    con = duckdb.connect()
    first = pull_once(server, tmp_path / "d", con, ("talk_comments",))["talk_comments"]
    request = dict(server.talk_requests["comments"][0])
    larger = write_export_folder(tmp_path / "larger", n_pages=90)
    server.exports_folder = larger.folder
    second = pull_once(server, tmp_path / "d", con, ("talk_comments",), generate="always")["talk_comments"]
    again = server.talk_requests["comments"][0]
    assert (again["id"], again["updated_at"]) == (request["id"], request["updated_at"])
    assert len(server.talk_requests["comments"]) == 1
    new = set(larger.comment_ids) - set(server.truth.comment_ids)
    assert second.reread and second.report.rows_new == len(new) == 15
    assert second.fetched.path != first.fetched.path


def test_an_unchanged_export_keeps_the_earlier_file_and_is_not_read_again(loopback_zooniverse, tmp_path):
    server = loopback_zooniverse
    con = duckdb.connect()
    first = pull_once(server, tmp_path / "d", con, ("workflows",), generate="never")["workflows"]
    stamp = first.fetched.path.stat().st_mtime_ns
    second = pull_once(server, tmp_path / "d", con, ("workflows",), generate="never")["workflows"]
    assert second.fetched.path == first.fetched.path and second.fetched.path.stat().st_mtime_ns == stamp
    assert not second.reread and second.report.rows_seen == 0
    assert any("same content as the earlier download" in n for n in second.fetched.notes)
    assert server.count("GET", r"^/media/") == 2        # no ETag from this server: the body is read to tell
    assert [p.name for p in (tmp_path / "d" / "workflows").iterdir()] == [first.fetched.path.name]


def test_an_etag_lets_a_reused_export_skip_the_body_but_never_a_fresh_one(loopback_zooniverse, tmp_path):
    server = loopback_zooniverse
    server.faults.media_etags = True
    server.faults.regenerate_in_place = True
    con = duckdb.connect()
    first = pull_once(server, tmp_path / "d", con, ("subjects",), generate="never")["subjects"]
    same = pull_once(server, tmp_path / "d", con, ("subjects",), generate="never")["subjects"]
    assert same.fetched.path == first.fetched.path and not same.reread
    assert any("same ETag" in n for n in same.fetched.notes)
    # a fresh generation is read whatever the ETag says; here the content changed under the same export id
    server.exports_folder = write_export_folder(tmp_path / "more", n_pages=600).folder
    fresh = pull_once(server, tmp_path / "d", con, ("subjects",), generate="always")["subjects"]
    assert fresh.fetched.path != first.fetched.path and fresh.reread and fresh.report.rows_new > 0
    assert any("downloaded" in n for n in fresh.fetched.notes)


# --------------------------------------------------------------------------------------------------------------
# the project
# --------------------------------------------------------------------------------------------------------------

def test_a_slug_answered_with_another_project_is_refused(loopback_zooniverse, tmp_path):
    server = loopback_zooniverse
    server.faults.foreign_project_on_slug = True
    with pytest.raises(ZooniverseError) as info:
        pull_once(server, tmp_path / "d", duckdb.connect(), ("workflows",))
    message = str(info.value)
    assert "WW_ZOONIVERSE_PROJECT" in message and server.slug in message
    assert str(FOREIGN_PROJECT_ID) in message and FOREIGN_PROJECT_SLUG in message
    assert server.count("GET", r"_export$") == 0, "nothing was asked of the other project"
    assert not (tmp_path / "d" / "workflows").exists() or not list((tmp_path / "d" / "workflows").iterdir())


@pytest.mark.parametrize("bad", ["16616x", "-5", "0", "abc def", "owner/", ""])
def test_a_malformed_project_fails_at_once_naming_the_variable(loopback_zooniverse, bad):
    server = loopback_zooniverse
    with pytest.raises(SettingError, match=rf"WW_ZOONIVERSE_PROJECT={bad!r}"):
        settings(server, project=bad)
    assert server.requests == [], "no network call was made"


def test_a_project_id_that_does_not_exist_names_the_variable(loopback_zooniverse, tmp_path):
    server = loopback_zooniverse
    with pytest.raises(ZooniverseError, match=r"WW_ZOONIVERSE_PROJECT='424242': no such project"):
        pull_once(server, tmp_path / "d", duckdb.connect(), ("workflows",), project="424242")
    assert server.count("POST", r"^/users/sign_in$") == 1, "not retried: a missing project is not transient"


def test_the_right_project_by_id_or_slug_is_accepted(loopback_zooniverse, tmp_path):
    server = loopback_zooniverse
    for ref in (str(server.project_id), server.slug):
        with LiveSource(settings(server, project=ref), tmp_path / "d") as source:
            assert str(source.project().id) == str(server.project_id)


# --------------------------------------------------------------------------------------------------------------
# retention
# --------------------------------------------------------------------------------------------------------------

def _files(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):                                  # k = 0 is the oldest
        path = folder / f"project-1-talk_tags-{k}-n-{k:016x}.tar.gz"
        path.write_bytes(b"x" * (k + 1))
        os.utime(path, ns=(1_700_000_000_000_000_000 + k * 10**9,) * 2)
        paths.append(path)
    (folder / ".project-1-talk_tags-9.tar.gz.tmp-incoming").write_bytes(b"partial")
    return paths


def test_prune_keeps_the_newest_and_never_the_protected_or_the_unread(tmp_path):
    paths = _files(tmp_path / "talk_tags", 6)
    unread = {paths[1]}
    deleted, kept = prune_downloads(tmp_path / "talk_tags", keep=2, protect={paths[0]},
                                    ingested=lambda p: p not in unread)
    left = sorted(p.name for p in (tmp_path / "talk_tags").iterdir())
    assert (deleted, kept) == (2, 4)
    assert left == sorted([paths[0].name, paths[1].name, paths[4].name, paths[5].name,
                           ".project-1-talk_tags-9.tar.gz.tmp-incoming"])


@pytest.mark.parametrize("keep, left", [(0, {5}), (None, {0, 1, 2, 3, 4, 5}), (10, {0, 1, 2, 3, 4, 5}),
                                        (1, {5})])
def test_prune_zero_keeps_only_the_file_just_ingested_and_all_keeps_everything(tmp_path, keep, left):
    paths = _files(tmp_path / "k", 6)
    prune_downloads(tmp_path / "k", keep=keep, protect={paths[5]}, ingested=lambda p: True)
    assert {p for p in (tmp_path / "k").iterdir() if not p.name.startswith(".")} == {paths[i] for i in left}


def test_prune_of_a_missing_folder_does_nothing(tmp_path):
    assert prune_downloads(tmp_path / "none", keep=0, ingested=lambda p: True) == (0, 0)
