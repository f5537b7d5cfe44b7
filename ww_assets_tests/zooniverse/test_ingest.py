"""Raw-table ingest: pseudonyms, parsing, quarantine, dedup on re-reads, Talk archives, people's data."""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
import tarfile

import duckdb
import pytest

from ww_assets.zooniverse import formats, pseudonym
from ww_assets.zooniverse.errors import ExportFileError, PseudonymKeyMissing
from ww_assets.zooniverse.export_folder import ExportFolderSource, find_export_file
from ww_assets.zooniverse.ingest import bookkeeping
from ww_assets.zooniverse.ingest.bookkeeping import previous_ingest
from ww_assets.zooniverse.ingest.classifications import ingest_classifications_csv
from ww_assets.zooniverse.ingest.csv_reader import CSV_MAX_LINE_BYTES
from ww_assets.zooniverse.ingest.kinds import INGESTERS
from ww_assets.zooniverse.ingest.subjects import ingest_subjects_csv
from ww_assets.zooniverse.ingest.talk import ingest_talk_comments, ingest_talk_tags
from ww_assets_tests.support.loopback_zooniverse import write_export_folder

KEY = "unit-test-key"


def all_text_in_duckdb(con) -> str:
    """Every value of every table (all schemas) as one string, for searching."""
    parts = []
    for schema, table in con.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE NOT internal").fetchall():
        for row in con.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall():
            parts.append(repr(row))
    return "\n".join(parts)


def ingest_all(con, truth, key=KEY, keep_metadata=False) -> dict:
    out = {}
    for kind, path in truth.files.items():
        extra = {"keep_metadata": keep_metadata} if kind == "classifications" else {}
        out[kind] = INGESTERS[kind](con, path, pseudonym_key=key, **extra)
    return out


# --------------------------------------------------------------------------------------------------------------
# pseudonyms
# --------------------------------------------------------------------------------------------------------------

def test_sql_pseudonym_matches_python_twin():
    rows = [("1900037", "Zz_Volunteer_1_Private"), ("", "not-logged-in-0a1b2c3d"), (None, "not-logged-in-ffff"),
            (" 42 ", "x"), ("7", None), ("", "Ünïcødé-nämé"), ("", ""), ("12ab", "y"), ("0012", "z")]
    con = duckdb.connect()
    con.execute("CREATE TABLE t (user_id VARCHAR, user_name VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?, ?)", rows)
    ident = pseudonym.sql_identity("user_id", "user_name")
    sql = (f"SELECT user_id, user_name, CASE WHEN user_id IS NULL OR trim(user_id) = '' OR "
           f"try_cast(trim(user_id) AS BIGINT)::VARCHAR = trim(user_id) THEN "
           f"{pseudonym.sql_volunteer_id('$key', ident)} END FROM t")
    for user_id, user_name, sql_value in con.execute(sql, {"key": KEY}).fetchall():
        assert sql_value == pseudonym.pseudonymise(KEY, user_id, user_name), (user_id, user_name)
    # logged-in ids link across sources (Talk uses the id alone), anonymous names stay stable, keys matter
    assert pseudonym.pseudonymise(KEY, "1900037", "a") == pseudonym.pseudonymise(KEY, 1900037)
    assert pseudonym.pseudonymise(KEY, "", "not-logged-in-0a") == pseudonym.pseudonymise(KEY, None, "not-logged-in-0a")
    assert pseudonym.pseudonymise(KEY, "5") != pseudonym.pseudonymise("other-key", "5")
    assert pseudonym.volunteer_pseudonym(KEY, "u:5").startswith("v_") and len(pseudonym.pseudonymise(KEY, 5)) == 18


def test_pseudonym_key_required_for_real_data():
    with pytest.raises(PseudonymKeyMissing, match="WW_PSEUDONYM_KEY"):
        pseudonym.pseudonym_key("live", env={})
    with pytest.raises(PseudonymKeyMissing, match="export_folder"):
        pseudonym.pseudonym_key("export_folder", env={})
    assert pseudonym.pseudonym_key("sample", env={}) == pseudonym.SAMPLE_PSEUDONYM_KEY
    assert pseudonym.pseudonym_key("live", env={"WW_PSEUDONYM_KEY": "s3cret"}) == "s3cret"


def test_mention_masking_python_and_sql_agree():
    texts = ["Look @Zz_Volunteer_3_Private #merger", "mail me: someone@example.org", "no mention", None,
             "@a.b-c_d, @x"]
    con = duckdb.connect()
    for text in texts:
        got = con.execute(f"SELECT {pseudonym.sql_mask_mentions('$t')}", {"t": text}).fetchone()[0]
        assert got == pseudonym.mask_mentions(text)
    assert "Zz_Volunteer" not in pseudonym.mask_mentions(texts[0]) and "#merger" in pseudonym.mask_mentions(texts[0])


# --------------------------------------------------------------------------------------------------------------
# ingest
# --------------------------------------------------------------------------------------------------------------

def test_ingest_parses_every_source(tmp_path):
    truth = write_export_folder(tmp_path / "exports", n_pages=80)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    reports = ingest_all(con, truth, keep_metadata=True)
    c = reports["classifications"]
    assert (c.rows_seen, c.rows_new, c.rows_duplicate, c.rows_quarantined) == (80, 80, 0, 0)
    assert sorted(r[0] for r in con.execute("SELECT classification_id FROM raw.classifications").fetchall()) == \
        truth.classification_ids
    pages = con.execute("""SELECT count(*) FILTER (len(page_subject_ids) = 16),
                                  count(*) FILTER (list_has_all(page_subject_ids, selected_subject_ids)),
                                  count(*) FILTER (is_anonymous), count(DISTINCT volunteer_id),
                                  count(*) FILTER (source_line IS NULL)
                           FROM raw.classifications""").fetchone()
    assert pages[0] == pages[1] == 80 and pages[2] > 0 and pages[3] > 3 and pages[4] == 0
    # workflow_version kept as text, and 160.310 is not 160.31
    assert {r[0] for r in con.execute("SELECT DISTINCT workflow_version FROM raw.classifications").fetchall()} == \
        {"160.317", "160.310"}
    # metadata is allow-listed: no user agent, no session hash
    meta = con.execute("SELECT metadata FROM raw.classifications LIMIT 1").fetchone()[0]
    assert "started_at" in meta and "user_agent" not in meta and "session" not in meta
    # line numbers: the first data row is line 2
    first = con.execute("SELECT source_line FROM raw.classifications WHERE classification_id = ?",
                        [truth.classification_ids[0]]).fetchone()[0]
    assert first == 2
    subj = con.execute("SELECT count(*), count(object_id), count(ra), count(*) FILTER (workflow_id IS NULL) "
                       "FROM raw.subjects").fetchone()
    assert subj[0] == reports["subjects"].rows_new and subj[1] == subj[0] == subj[2] and subj[3] > 0
    assert con.execute("SELECT count(*) FROM raw.workflows").fetchone()[0] == 2
    comments = con.execute("SELECT count(*), count(focus_subject_id), count(commenter_id), "
                           "count(*) FILTER (comment_body LIKE '%@[volunteer]%') FROM raw.talk_comments").fetchone()
    assert comments[0] == len(truth.comment_ids) == comments[1] == comments[2] == comments[3]
    tags = con.execute("SELECT count(*), count(tagger_id), count(DISTINCT name) FROM raw.talk_tags").fetchone()
    assert tags[0] == len(truth.tag_ids) and tags[1] == tags[0] and tags[2] > 1
    # one person, one pseudonym, across classifications and Talk
    linked = con.execute("""SELECT count(*) FROM (SELECT DISTINCT commenter_id FROM raw.talk_comments)
                            WHERE commenter_id IN (SELECT volunteer_id FROM raw.classifications)""").fetchone()[0]
    assert linked > 0
    log = con.execute("SELECT count(*), sum(rows_new) FROM raw.ingest_log").fetchone()
    assert log[0] == 5


def test_no_volunteer_name_or_ip_reaches_duckdb(tmp_path):
    truth = write_export_folder(tmp_path / "exports", n_pages=80, bad_rows=True)
    db = tmp_path / "w.duckdb"
    con = duckdb.connect(str(db))
    ingest_all(con, truth, keep_metadata=True)
    text = all_text_in_duckdb(con)
    needles = truth.volunteer_names + truth.volunteer_ips + ["ZzBrowserSecret"]
    assert not [n for n in needles if n in text]
    con.execute("CHECKPOINT")
    con.close()
    blob = db.read_bytes()
    assert not [n for n in needles if n.encode() in blob], "a raw name or IP was written to the database file"


def test_metadata_is_left_out_by_default_and_an_unchanged_file_is_recognised(tmp_path):
    truth = write_export_folder(tmp_path / "exports", n_pages=10)
    con = duckdb.connect()
    report = ingest_classifications_csv(con, truth.files["classifications"], pseudonym_key=KEY)
    assert con.execute("SELECT count(metadata) FROM raw.classifications").fetchone()[0] == 0
    assert previous_ingest(con, "classifications", truth.files["classifications"]) == report.ingest_id
    assert previous_ingest(con, "subjects", truth.files["classifications"]) is None
    with open(truth.files["classifications"], "a", encoding="utf-8") as fh:
        fh.write("\n")
    assert previous_ingest(con, "classifications", truth.files["classifications"]) is None


def test_bad_rows_are_quarantined_with_reason_and_line_and_good_rows_land(tmp_path):
    truth = write_export_folder(tmp_path / "exports", n_pages=40, bad_rows=True)
    con = duckdb.connect()
    report = ingest_classifications_csv(con, truth.files["classifications"], pseudonym_key=KEY)
    assert report.rows_new == 40
    assert report.rows_quarantined == len(truth.bad_classification_lines) == 5
    assert report.rows_seen == 45
    got = {line: reason for line, reason in con.execute(
        "SELECT source_line, reason FROM raw.quarantine WHERE table_name = 'classifications'").fetchall()}
    assert set(got) == set(truth.bad_classification_lines)
    for line, why in truth.bad_classification_lines.items():
        assert got[line].startswith(why), (line, got[line], why)
    # a rejected (short) CSV line does not shift the lines of the rows after it, and lines are the file's lines
    with open(truth.files["classifications"], newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        next(reader)
        expected = {}
        for line, row in enumerate(reader, start=2):
            if row and row[0].isdigit() and int(row[0]) in set(truth.classification_ids):
                expected[int(row[0])] = line
    stored = dict(con.execute("SELECT classification_id, source_line FROM raw.classifications").fetchall())
    assert stored == expected
    # the truncated row's id is read from its first field
    assert con.execute("SELECT natural_key FROM raw.quarantine WHERE source_line = 46").fetchone()[0] == "500000009"
    # reading the same file again: nothing new, the same rows counted bad with the same reasons, none written twice
    again = ingest_classifications_csv(con, truth.files["classifications"], pseudonym_key=KEY)
    assert (again.rows_seen, again.rows_new, again.rows_duplicate, again.rows_quarantined) == (45, 0, 40, 5)
    assert again.rows_quarantined_new == 0 and again.quarantine_reasons == report.quarantine_reasons
    assert con.execute("SELECT count(*) FROM raw.quarantine").fetchone()[0] == 5


def _quarantine_rows(con) -> list[tuple]:
    return con.execute("SELECT table_name, source_line, natural_key, reason FROM raw.quarantine "
                       "ORDER BY table_name, source_line").fetchall()


def test_quarantine_is_idempotent_across_rereads_renames_and_larger_exports(tmp_path):
    """Issue #18: the same adversarial export read twice, under a second name, and inside a later, larger export
    adds no quarantine row; GROUP BY over raw.quarantine counts each bad row once."""
    truth = write_export_folder(tmp_path / "e", n_pages=40, bad_rows=True)
    con = duckdb.connect()
    first = ingest_all(con, truth)
    bad = _quarantine_rows(con)
    assert first["classifications"].rows_quarantined_new == first["classifications"].rows_quarantined == 5
    again = ingest_all(con, truth)
    assert _quarantine_rows(con) == bad
    assert all(r.rows_quarantined_new == 0 for r in again.values())
    assert again["classifications"].rows_quarantined == 5          # still counted as this file's bad rows
    renamed = tmp_path / "renamed-classifications.csv"
    shutil.copy(truth.files["classifications"], renamed)
    report = ingest_classifications_csv(con, renamed, pseudonym_key=KEY)
    assert (report.rows_quarantined, report.rows_quarantined_new) == (5, 0)
    # a later export repeating every earlier row (and its bad ones) plus two new rows, one of them bad
    lines = truth.files["classifications"].read_text(encoding="utf-8").splitlines(keepends=True)
    extra = lines[2].split(",", 1)[1]
    later = tmp_path / "later-classifications.csv"
    later.write_text("".join(lines + ["600000001," + extra, "600000002,cut,short\n"]), encoding="utf-8")
    report = ingest_classifications_csv(con, later, pseudonym_key=KEY)
    assert (report.rows_new, report.rows_quarantined, report.rows_quarantined_new) == (1, 6, 1)
    assert con.execute("SELECT count(*), count(DISTINCT record_key) FROM raw.quarantine").fetchone() == \
        (len(bad) + 1, len(bad) + 1)
    assert con.execute("SELECT natural_key FROM raw.quarantine WHERE natural_key = '600000002'").fetchone()


def test_identical_bad_lines_in_one_file_stay_two_rows(tmp_path):
    truth = write_export_folder(tmp_path / "e", n_pages=10)
    path = truth.files["classifications"]
    path.write_text(path.read_text(encoding="utf-8") + "77,short\n" * 2, encoding="utf-8")
    con = duckdb.connect()
    for _ in range(2):
        report = ingest_classifications_csv(con, path, pseudonym_key=KEY)
        assert report.rows_quarantined == 2
    assert con.execute("SELECT list(source_line ORDER BY source_line), list(DISTINCT natural_key) "
                       "FROM raw.quarantine").fetchone() == ([12, 13], ["77"])


def test_a_warehouse_from_before_record_key_is_upgraded(tmp_path):
    """Schema evolution: an old raw.quarantine (no record_key, one copy per re-read) gets the column, its copies
    folded into one, and a re-read of the same file fills the key instead of adding rows."""
    truth = write_export_folder(tmp_path / "e", n_pages=20, bad_rows=True)
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    ingest_classifications_csv(con, truth.files["classifications"], pseudonym_key=KEY)
    con.execute("ALTER TABLE raw.quarantine DROP COLUMN record_key")
    con.execute("INSERT INTO raw.quarantine SELECT * REPLACE ('ing_old' AS ingest_id) FROM raw.quarantine")
    assert con.execute("SELECT count(*) FROM raw.quarantine").fetchone()[0] == 10
    con.close()
    con = duckdb.connect(str(db))
    report = ingest_classifications_csv(con, truth.files["classifications"], pseudonym_key=KEY)
    assert (report.rows_quarantined, report.rows_quarantined_new) == (5, 0)
    assert con.execute("SELECT count(*), count(record_key) FROM raw.quarantine").fetchone() == (5, 5)


@pytest.mark.parametrize("broken", ['888,"Zz_Broken_Name,1,2\n',    # a quote never closed: swallows later lines
                                    '888,"Zz_Broken_Name\n'])       # closed on the next line: a two-line record
def test_broken_quoting_loses_no_line(tmp_path, broken):
    """A field opened by a quote that does not close on its line swallows the lines after it (DuckDB then loses
    lines and numbers records, not lines): the file is read again from a copy where each such line is one bad
    line. That line is quarantined with its id; every other row lands, on its own line."""
    truth = write_export_folder(tmp_path / "e", n_pages=12)
    path = truth.files["classifications"]
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines.insert(4, broken)                                        # line 5
    if broken.endswith('Name\n'):
        lines.insert(5, 'still in the name",1,2\n')               # line 6 closes the quote
    path.write_text("".join(lines), encoding="utf-8")
    con = duckdb.connect()
    report = ingest_classifications_csv(con, path, pseudonym_key=KEY)
    n_bad = len(lines) - 13
    assert (report.rows_seen, report.rows_new, report.rows_quarantined) == (len(lines) - 1, 12, n_bad)
    bad = con.execute("SELECT source_line, natural_key, reason FROM raw.quarantine ORDER BY 1").fetchall()
    assert [b[:2] for b in bad] == [(5, "888"), (6, None)][:n_bad]
    assert "broken quoting" in bad[0][2] and all(b[2].startswith("unreadable CSV line") for b in bad)
    stored = dict(con.execute("SELECT classification_id, source_line FROM raw.classifications").fetchall())
    assert sorted(stored) == truth.classification_ids
    assert all(lines[line - 1].startswith(f"{c},") for c, line in stored.items())
    assert "Zz_Broken_Name" not in all_text_in_duckdb(con)
    # and again: nothing new anywhere
    again = ingest_classifications_csv(con, path, pseudonym_key=KEY)
    assert (again.rows_new, again.rows_quarantined, again.rows_quarantined_new) == (0, n_bad, 0)


def test_a_blank_line_in_the_middle_keeps_later_lines_right(tmp_path):
    """DuckDB's reader skips a blank line without a word: the count of the file's lines finds it, and the lines
    after it stay right (a blank line is no row: not counted, not quarantined)."""
    truth = write_export_folder(tmp_path / "e", n_pages=8)
    path = truth.files["classifications"]
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines.insert(3, "\n")
    path.write_text("".join(lines) + "\n\n", encoding="utf-8")       # and blank lines at the end
    con = duckdb.connect()
    report = ingest_classifications_csv(con, path, pseudonym_key=KEY)
    assert (report.rows_seen, report.rows_new, report.rows_quarantined) == (8, 8, 0)
    stored = dict(con.execute("SELECT classification_id, source_line FROM raw.classifications").fetchall())
    assert all(lines[line - 1].startswith(f"{c},") for c, line in stored.items()) and 4 not in stored.values()


def test_carriage_returns_and_mixed_line_ends_are_read_through_a_copy(tmp_path):
    """A stray \\r inside a field (or CRLF lines in an LF file) makes DuckDB's reader give up on the file: the
    ingest reads a cleaned copy instead; the line with the \\r is quarantined, the rest lands on its lines."""
    truth = write_export_folder(tmp_path / "e", n_pages=10)
    path = truth.files["classifications"]
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[3] = lines[3].replace("\n", "\r\n")                   # a CRLF line
    cid = lines[5].split(",")[0]
    lines[5] = lines[5].replace(",", ",\r", 2).replace(",\r", ",", 1)   # a lone CR after the 2nd comma
    path.write_bytes("".join(lines).encode())
    con = duckdb.connect()
    report = ingest_classifications_csv(con, path, pseudonym_key=KEY)
    assert (report.rows_seen, report.rows_new, report.rows_quarantined) == (10, 9, 1)
    assert con.execute("SELECT source_line, natural_key, reason FROM raw.quarantine").fetchall() == \
        [(6, cid, "unreadable CSV line: a carriage return (\\r) inside the line")]
    stored = dict(con.execute("SELECT classification_id, source_line FROM raw.classifications").fetchall())
    assert all(lines[line - 1].startswith(f"{c},") for c, line in stored.items())
    assert not list(tmp_path.glob("**/ww-csv-*"))


def test_rejected_line_in_the_middle_keeps_later_lines_right(tmp_path):
    truth = write_export_folder(tmp_path / "exports", n_pages=30)
    path = truth.files["classifications"]
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines.insert(6, "999,only,three\n")              # becomes line 7: too few columns
    lines.insert(12, "1000," + ",".join("x" * 20) + "\n")  # line 13: too many columns
    path.write_text("".join(lines), encoding="utf-8")
    con = duckdb.connect()
    report = ingest_classifications_csv(con, path, pseudonym_key=KEY)
    assert (report.rows_seen, report.rows_new, report.rows_quarantined) == (32, 30, 2)
    stored = dict(con.execute("SELECT classification_id, source_line FROM raw.classifications").fetchall())
    for line_no, text in enumerate(lines, start=1):
        cid = text.split(",", 1)[0]
        if cid.isdigit() and int(cid) in stored:
            assert stored[int(cid)] == line_no, (cid, stored[int(cid)], line_no)
    assert sorted(r[0] for r in con.execute("SELECT source_line FROM raw.quarantine").fetchall()) == [7, 13]


def test_an_overlong_line_is_quarantined_and_the_rest_lands(tmp_path):
    """A record longer than the reader's line limit is one unreadable line, not a failed ingest."""
    truth = write_export_folder(tmp_path / "exports", n_pages=20)
    path = truth.files["classifications"]
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    huge = lines[3].rstrip("\n").split(",")
    huge[0] = "777777777"
    huge[8] = "x" * (CSV_MAX_LINE_BYTES + 10)        # gold_standard: a field nobody reads
    lines.insert(5, ",".join(huge) + "\n")                    # line 6
    path.write_text("".join(lines), encoding="utf-8")
    con = duckdb.connect()
    report = ingest_classifications_csv(con, path, pseudonym_key=KEY)
    assert (report.rows_seen, report.rows_new, report.rows_quarantined) == (21, 20, 1)
    (line, reason), = con.execute("SELECT source_line, reason FROM raw.quarantine").fetchall()
    assert line == 6 and reason.startswith("unreadable CSV line")
    stored = dict(con.execute("SELECT classification_id, source_line FROM raw.classifications").fetchall())
    assert 777777777 not in stored and sorted(stored.values()) == [n for n in range(2, 23) if n != 6]


def test_many_rejected_lines_still_give_right_lines(tmp_path):
    """More than 64 rejected lines take the ASOF-join path for line numbers."""
    truth = write_export_folder(tmp_path / "exports", n_pages=50)
    path = truth.files["classifications"]
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    out = [lines[0]]
    for k, line in enumerate(lines[1:]):
        out.append(line)
        out.append(f"{900 + k},short\n")
        if k % 3 == 0:
            out.append(f"{800 + k},short,too\n")
    path.write_text("".join(out), encoding="utf-8")
    con = duckdb.connect()
    report = ingest_classifications_csv(con, path, pseudonym_key=KEY)
    assert report.rows_new == 50 and report.rows_quarantined == len(out) - 51 > 64
    stored = dict(con.execute("SELECT classification_id, source_line FROM raw.classifications").fetchall())
    for line_no, text in enumerate(out, start=1):
        cid = text.split(",", 1)[0]
        if cid.isdigit() and int(cid) in stored:
            assert stored[int(cid)] == line_no


def test_missing_required_column_fails_naming_file_and_column(tmp_path):
    path = tmp_path / "weird-classifications.csv"
    path.write_text("classification_id,user_name,user_id,created_at\n1,a,,2020-01-01 00:00:00 UTC\n")
    with pytest.raises(ExportFileError, match=r"weird-classifications\.csv.*missing column\(s\) workflow_id"):
        ingest_classifications_csv(duckdb.connect(), path, pseudonym_key=KEY)


def test_rereading_a_larger_overlapping_export_adds_exactly_the_new_rows(tmp_path):
    small = write_export_folder(tmp_path / "small", n_pages=50)
    large = write_export_folder(tmp_path / "large", n_pages=75)
    con = duckdb.connect()
    first = ingest_all(con, small)
    second = ingest_all(con, large)
    for kind, key, old, new in [
        ("classifications", "classification_id", small.classification_ids, large.classification_ids),
        ("talk_comments", "comment_id", small.comment_ids, large.comment_ids),
        ("talk_tags", "tag_id", small.tag_ids, large.tag_ids),
    ]:
        assert second[kind].rows_new == len(set(new) - set(old)) > 0, kind
        assert second[kind].rows_duplicate == len(set(old)), kind
        table = INGESTERS[kind].__name__  # noqa: F841 - readability
        rows = [r[0] for r in con.execute(f"SELECT {key} FROM raw.{'classifications' if kind == 'classifications' else kind}").fetchall()]
        assert sorted(rows) == sorted(set(new)), kind
        added = {r[0] for r in con.execute(
            f"SELECT {key} FROM raw.{kind} WHERE ingest_id = ?", [second[kind].ingest_id]).fetchall()}
        assert added == set(new) - set(old), kind
    assert second["subjects"].rows_new == 0 and second["workflows"].rows_new == 0
    # and a third read of the same file adds nothing
    third = ingest_classifications_csv(con, large.files["classifications"], pseudonym_key=KEY)
    assert (third.rows_new, third.rows_duplicate) == (0, 75)
    assert first["classifications"].rows_new == 50


def test_older_rows_missing_from_the_table_are_still_added(tmp_path):
    """Rows below the largest stored id that are not stored (e.g. a workflow export first) are re-read by id."""
    full = write_export_folder(tmp_path / "full", n_pages=40)
    partial = tmp_path / "partial.csv"
    with open(full.files["classifications"], encoding="utf-8") as fh:
        lines = fh.readlines()
    partial.write_text("".join([lines[0]] + lines[1::2]), encoding="utf-8")   # header + every other row
    con = duckdb.connect()
    a = ingest_classifications_csv(con, partial, pseudonym_key=KEY)
    b = ingest_classifications_csv(con, full.files["classifications"], pseudonym_key=KEY)
    assert a.rows_new == 20 and b.rows_new == 20 and b.rows_duplicate == 20
    stored = dict(con.execute("SELECT classification_id, source_line FROM raw.classifications "
                              "WHERE ingest_id = ?", [b.ingest_id]).fetchall())
    for line_no, text in enumerate(lines, start=1):
        cid = text.split(",", 1)[0]
        if cid.isdigit() and int(cid) in stored:
            assert stored[int(cid)] == line_no
    assert con.execute("SELECT count(*), count(DISTINCT classification_id), count(volunteer_id) "
                       "FROM raw.classifications").fetchone() == (40, 40, 40)


def test_duplicate_rows_within_one_file_are_counted_once(tmp_path):
    truth = write_export_folder(tmp_path / "e", n_pages=20)
    path = truth.files["classifications"]
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines + lines[3:6]), encoding="utf-8")
    con = duckdb.connect()
    report = ingest_classifications_csv(con, path, pseudonym_key=KEY)
    assert (report.rows_seen, report.rows_new, report.rows_duplicate) == (23, 20, 3)
    assert con.execute("SELECT min(source_line) FILTER (classification_id = ?) FROM raw.classifications",
                       [int(lines[3].split(",")[0])]).fetchone()[0] == 4


def test_gzip_csv_and_talk_tar_gz_are_read(tmp_path):
    truth = write_export_folder(tmp_path / "e", n_pages=30)
    gz = tmp_path / "weird-and-wonderful-classifications.csv"          # gzip bytes under a .csv name
    gz.write_bytes(gzip.compress(truth.files["classifications"].read_bytes()))
    archive = tmp_path / "project-16616-comments_2022-11-13.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(truth.files["talk_comments"], arcname="project-16616-comments_2022-11-13.json")
    con = duckdb.connect()
    assert ingest_classifications_csv(con, gz, pseudonym_key=KEY).rows_new == 30
    assert ingest_talk_comments(con, archive, pseudonym_key=KEY).rows_new == len(truth.comment_ids)
    assert not list(tmp_path.glob(".talk-*")), "the extracted JSON is removed"


def test_talk_bad_records_quarantined_and_broken_files_named(tmp_path):
    comments = [
        {"comment_id": 1, "comment_body": "ok #ring", "comment_focus_id": 5, "comment_focus_type": "Subject",
         "comment_user_id": 9, "comment_user_login": "Zz_Secret_Login", "comment_created_at": "2022-11-13T10:15:32.123Z",
         "discussion_id": 3, "discussion_title": "Subject 5", "board_id": 1, "board_title": "Notes"},
        {"comment_id": "x7", "comment_user_id": 9, "comment_created_at": "2022-11-13T10:15:32.123Z"},
        "not an object",
        {"comment_id": 2, "comment_user_id": 9, "comment_created_at": "yesterday"},
    ]
    path = tmp_path / "project-1-comments.json"
    path.write_text(json.dumps(comments))
    con = duckdb.connect()
    report = ingest_talk_comments(con, path, pseudonym_key=KEY)
    assert (report.rows_seen, report.rows_new, report.rows_quarantined) == (4, 1, 3)
    reasons = dict(con.execute("SELECT source_line, reason FROM raw.quarantine").fetchall())
    assert reasons == {2: "comment_id is not an integer", 3: "not a JSON object",
                       4: "comment_created_at is missing or not a timestamp"}
    assert "Zz_Secret_Login" not in all_text_in_duckdb(con)
    broken = tmp_path / "project-1-tags.json"
    broken.write_text('[{"id": 1, "name": "ring"}, {"id": 2')
    with pytest.raises(ExportFileError, match="project-1-tags.json"):
        ingest_talk_tags(con, broken, pseudonym_key=KEY)
    truncated = tmp_path / "project-1-tags.tar.gz"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b'[{"id": 1, "name": "ring"}]' * 200
        info = tarfile.TarInfo("tags.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ExportFileError, match="damaged or truncated"):
        ingest_talk_tags(con, truncated, pseudonym_key=KEY)


def test_export_folder_finds_the_newest_file_of_each_kind(tmp_path):
    truth = write_export_folder(tmp_path / "e", n_pages=10)
    source = ExportFolderSource(truth.folder)
    for kind in formats.ALL_KINDS:
        assert source.fetch(kind).path == truth.files[kind]
    (truth.folder / "project-16616-tags.json").unlink()
    with pytest.raises(ExportFileError, match="no talk tags export"):
        find_export_file(truth.folder, "talk_tags")
    shutil.rmtree(truth.folder)
    with pytest.raises(ExportFileError, match="does not exist"):
        source.fetch("classifications")


def test_failed_ingest_leaves_tables_untouched(tmp_path, monkeypatch):
    truth = write_export_folder(tmp_path / "e", n_pages=20)
    con = duckdb.connect()
    ingest_classifications_csv(con, truth.files["classifications"], pseudonym_key=KEY)
    before = con.execute("SELECT count(*) FROM raw.classifications").fetchone()[0]
    bigger = write_export_folder(tmp_path / "f", n_pages=30)

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(bookkeeping, "log_ingest", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        ingest_classifications_csv(con, bigger.files["classifications"], pseudonym_key=KEY)
    assert con.execute("SELECT count(*) FROM raw.classifications").fetchone()[0] == before
    assert con.execute("SELECT count(*) FROM raw.classifications WHERE ingest_id LIKE '%#%'").fetchone()[0] == 0


def test_tiny_sample_ingests_cleanly(tiny_sample):
    source = ExportFolderSource(tiny_sample / "exports", source="sample")
    con = duckdb.connect()
    for kind in formats.ALL_KINDS:
        report = INGESTERS[kind](con, source.fetch(kind).path, pseudonym_key=pseudonym.SAMPLE_PSEUDONYM_KEY)
        assert report.rows_new > 0 and report.rows_quarantined == 0, (kind, report)
    assert con.execute("SELECT count(*) FILTER (len(page_subject_ids) <> 16) FROM raw.classifications"
                       ).fetchone()[0] == 0
    assert con.execute("SELECT count(object_id) = count(*) FROM raw.subjects").fetchone()[0]
    # every subject a page shows is a known subject, and Talk comments point at subjects
    assert con.execute("""SELECT count(*) FROM (SELECT DISTINCT unnest(page_subject_ids) AS s FROM raw.classifications)
                          WHERE s NOT IN (SELECT subject_id FROM raw.subjects)""").fetchone()[0] == 0
    assert con.execute("SELECT count(focus_subject_id) > 0 FROM raw.talk_comments").fetchone()[0]


def test_subjects_bad_rows_repeats_and_lines(tmp_path):
    truth = write_export_folder(tmp_path / "e", n_pages=10)
    path = truth.files["subjects"]
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    good = len(lines) - 1
    meta = json.dumps({"#object_id": "999", "!ra": 10.5, "DEC": "-1.25", "Filename": "x.png"})
    extra = [
        f'77,1,2,3,"{meta.replace(chr(34), chr(34) * 2)}",,0,,,2022-10-01 12:00:00 UTC,\n',  # good: hidden keys
        "12ab,1,2,3,{},{},0,,,,\n",                                       # subject_id not an integer
        '78,1,2,3,"{not json",{},0,,,,\n',                                # metadata not JSON
        "79,1,2,3,{},{},0,yesterday,,,\n",                                # retired_at not a timestamp
        "80,1,2\n",                                                       # unreadable line
        lines[5],                                                         # the same link again: first line kept
    ]
    path.write_text("".join(lines + extra), encoding="utf-8")
    con = duckdb.connect()
    report = ingest_subjects_csv(con, path)
    assert (report.rows_seen, report.rows_new, report.rows_duplicate, report.rows_quarantined) == \
        (good + 6, good + 1, 1, 4)
    got = dict(con.execute("SELECT source_line, reason FROM raw.quarantine").fetchall())
    n = len(lines)
    assert got[n + 2] == "subject_id is not an integer"
    assert got[n + 3] == "metadata is not valid JSON"
    assert got[n + 4] == "retired_at is not a timestamp"
    assert got[n + 5].startswith("unreadable CSV line")
    assert con.execute("SELECT natural_key FROM raw.quarantine WHERE source_line = ?", [n + 3]).fetchone()[0] == "78"
    row = con.execute("SELECT object_id, ra, dec, image_ref, source_line, workflow_id FROM raw.subjects "
                      "WHERE subject_id = 77").fetchone()
    assert row == ("999", 10.5, -1.25, "x.png", n + 1, 2)
    sid, wf = lines[5].split(",")[0], lines[5].split(",")[2]
    assert con.execute("SELECT list(source_line) FROM raw.subjects WHERE subject_id = ? AND workflow_id = ?",
                       [int(sid), int(wf)]).fetchone()[0] == [6]
    # every stored row sits on its own line of the file
    for sid_, line in con.execute("SELECT subject_id, source_line FROM raw.subjects WHERE source_line <= ?",
                                  [n]).fetchall():
        assert lines[line - 1].startswith(f"{sid_},")
    # reading it again adds nothing and quarantines the same rows again
    again = ingest_subjects_csv(con, path)
    assert (again.rows_new, again.rows_duplicate, again.rows_quarantined) == (0, good + 2, 4)
    assert con.execute("SELECT count(*) FROM raw.subjects").fetchone()[0] == good + 1
    assert again.rows_quarantined_new == 0 and con.execute("SELECT count(*) FROM raw.quarantine").fetchone()[0] == 4
    # the unreadable line's subject id is read from its first field
    assert con.execute("SELECT natural_key FROM raw.quarantine WHERE source_line = ?", [n + 5]).fetchone()[0] == "80"


def _rewrite_classifications(path, change) -> list[str]:
    """Rewrite a classifications CSV through ``change(header, rows)``; returns the classification ids in order."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    header, body = change(header, body)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows([header, *body])
    return [r[header.index("classification_id")] for r in body]


def test_gold_standard_and_expert_flags_are_read(tmp_path):
    """The export's gold_standard / expert columns ('true' or empty) land as booleans; an export without them gives
    NULL (not known), so a later rule can tell 'not flagged' from 'no column'."""
    truth = write_export_folder(tmp_path / "flags", n_pages=12)
    path = truth.files["classifications"]

    def flag(header, body):
        g, e = header.index("gold_standard"), header.index("expert")
        for i, row in enumerate(body):
            row[g] = "true" if i in (0, 1) else ""
            row[e] = "TRUE" if i == 2 else ""
        return header, body

    ids = _rewrite_classifications(path, flag)
    con = duckdb.connect()
    assert ingest_classifications_csv(con, path, pseudonym_key=KEY).rows_new == 12
    got = {str(c): (g, e) for c, g, e in con.execute(
        "SELECT classification_id, gold_standard, expert FROM raw.classifications").fetchall()}
    assert [got[i] for i in ids[:4]] == [(True, False), (True, False), (False, True), (False, False)]
    assert sum(g for g, _ in got.values()) == 2 and sum(e for _, e in got.values()) == 1

    old = write_export_folder(tmp_path / "old", n_pages=5)

    def drop(header, body):
        keep = [i for i, h in enumerate(header) if h not in ("gold_standard", "expert")]
        return [header[i] for i in keep], [[r[i] for i in keep] for r in body]

    _rewrite_classifications(old.files["classifications"], drop)
    con2 = duckdb.connect()
    ingest_classifications_csv(con2, old.files["classifications"], pseudonym_key=KEY)
    assert con2.execute("SELECT count(*), count(gold_standard), count(expert) FROM raw.classifications"
                        ).fetchone() == (5, 0, 0)


def test_a_warehouse_from_before_the_flags_gets_the_columns(tmp_path):
    truth = write_export_folder(tmp_path / "x", n_pages=6)
    con = duckdb.connect()
    ingest_classifications_csv(con, truth.files["classifications"], pseudonym_key=KEY)
    con.execute("ALTER TABLE raw.classifications DROP COLUMN expert")
    con.execute("ALTER TABLE raw.classifications DROP COLUMN gold_standard")
    more = write_export_folder(tmp_path / "y", n_pages=9)
    report = ingest_classifications_csv(con, more.files["classifications"], pseudonym_key=KEY)
    assert report.rows_new == 3
    assert con.execute("SELECT count(*), count(gold_standard) FROM raw.classifications").fetchone() == (9, 3)
