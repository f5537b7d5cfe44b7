"""Random bad input for the raw-table ingest (issue #18): generated exports with malformed rows of every kind.

Each example writes one classifications export of a few dozen rows, most of them broken in some way (quoting,
types, huge fields, invalid UTF-8 and stray bytes, missing or extra columns, bad JSON in annotations, metadata and
subject_data, a line split in two), ingests it twice and checks that the ingest never raises, that every line
either lands or is quarantined with a reason on its own line (lines in = landed + quarantined, none twice, none
lost), that the good rows land on their lines, that a re-read adds nothing, and that no volunteer name is stored.
The Talk comments ingest gets the same treatment with generated JSON records.

Deterministic: ``derandomize=True`` (the same examples on every run, so CI is stable) and no example database.
The totals tried are printed (``-s`` shows them) and recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections import Counter

import duckdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ww_assets.zooniverse import formats
from ww_assets.zooniverse.ingest.classifications import ingest_classifications_csv
from ww_assets.zooniverse.ingest.csv_reader import CSV_MAX_LINE_BYTES
from ww_assets.zooniverse.ingest.talk import ingest_talk_comments

KEY = "fuzz-key"
NAME = "Zz_Fuzz_Name_"          # every volunteer name starts with it: none may reach the warehouse
IP = "203.0.113."

#: Bounded and repeatable: a few thousand rows in well under a minute on 2 cores.
FUZZ = settings(max_examples=30, deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

_COLS = list(formats.CLASSIFICATION_COLUMNS)
_IDX = {c: i for i, c in enumerate(_COLS)}


def _good_fields(cid: int, k: int) -> list[str]:
    page = [70_000_000 + 16 * k + j for j in range(16)]
    metadata = {"started_at": "2022-11-13T10:01:01.123Z", "user_language": "en", "session": "ab" * 16}
    annotations = [{"task": "T0", "value": [{"subject": page[k % 16]}]}]
    subject_data = {str(90_000 + k): {"retired": None, "#group_subject_ids": "-".join(map(str, page))}}
    return [str(cid), f"{NAME}{k}", str(1_900_000 + k % 7) if k % 3 else "", f"{IP}{k % 250}", "18541",
            "Weird & Wonderful", "160.317", f"2022-11-01 00:{k % 60:02d}:00 UTC", "", "",
            json.dumps(metadata), json.dumps(annotations), json.dumps(subject_data), ";".join(map(str, page))]


def _csv_line(fields: list[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(fields)
    return buf.getvalue().encode("utf-8")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6)

#: A row's fate: kept as generated, or broken one way (a few of them structured, the rest at the byte level).
MUTATIONS = ["good", "truncate", "drop_field", "extra_field", "quote", "wrong_type", "bad_json", "json_shape",
             "huge", "bytes", "encoding", "unicode", "split", "empty_id", "carriage_return", "blank_before"]


@st.composite
def mutated_row(draw, cid: int, k: int) -> tuple[str, bytes]:
    fields = _good_fields(cid, k)
    kind = draw(st.sampled_from(MUTATIONS))
    if kind == "wrong_type":
        col = draw(st.sampled_from(["classification_id", "user_id", "workflow_id", "created_at", "subject_ids",
                                    "workflow_version"]))
        fields[_IDX[col]] = draw(st.text(max_size=12) | st.sampled_from(["12.5", "1e3", "-", "0x1F", "NaN", "0012"]))
    elif kind == "bad_json":
        col = draw(st.sampled_from(["annotations", "metadata", "subject_data"]))
        text = fields[_IDX[col]]
        fields[_IDX[col]] = draw(st.sampled_from([text[: len(text) // 2], text + "}", "{", "[", "nul", "'x'"])
                                 | st.text(max_size=20))
    elif kind == "json_shape":
        col = draw(st.sampled_from(["annotations", "metadata", "subject_data"]))
        fields[_IDX[col]] = json.dumps(draw(json_values))
    elif kind == "huge":
        col = draw(st.sampled_from(["gold_standard", "annotations", "workflow_name"]))
        size = draw(st.sampled_from([10_000, 300_000, CSV_MAX_LINE_BYTES + 10]))
        fields[_IDX[col]] = f"<huge {size}>"       # put in after the CSV writer (it is slow on megabytes)
    elif kind == "unicode":
        col = draw(st.sampled_from(["workflow_name", "user_name", "gold_standard"]))
        prefix = NAME if col == "user_name" else "U"
        fields[_IDX[col]] = prefix + draw(st.text(max_size=10).filter(lambda t: "\n" not in t and "\r" not in t))
    elif kind == "empty_id":
        fields[0] = draw(st.sampled_from(["", " ", '""']))
    elif kind == "drop_field":
        del fields[draw(st.integers(1, len(fields) - 1))]
    elif kind == "extra_field":
        fields.insert(draw(st.integers(1, len(fields))), draw(st.text(max_size=5)))
    line = _csv_line(fields)
    if kind == "huge":
        line = line.replace(f"<huge {size}>".encode(), b"x" * size)
    body = line[:-1]
    if kind == "truncate":
        body = body[: draw(st.integers(len(fields[0]) + 1, max(len(fields[0]) + 1, len(body) - 1)))]
    elif kind == "quote":
        at = draw(st.integers(0, len(body)))
        body = body[:at] + b'"' + body[at:]
    elif kind == "bytes":
        at = draw(st.integers(1, len(body)))
        junk = draw(st.binary(min_size=1, max_size=4).filter(lambda b: b"\n" not in b))
        body = body[:at] + junk + body[at:]
    elif kind == "carriage_return":
        at = draw(st.integers(1, len(body)))
        body = body[:at] + draw(st.sampled_from([b"\r", b"\r\n\r", b"\r\r"])).replace(b"\n", b"") + body[at:]
        if draw(st.booleans()):
            body += b"\r"                                        # a CRLF line end in an LF file
    elif kind == "encoding":
        text = body.decode("utf-8").replace(f"{NAME}{k}", f"{NAME}{k}é")
        body = text.encode(draw(st.sampled_from(["latin-1", "cp1252"])))
    elif kind == "split":
        at = draw(st.integers(1, len(body) - 1))
        body = body[:at] + b"\n" + body[at:]
    elif kind == "blank_before":                             # a blank line, then the row unharmed
        body = b"\n" + body
    return kind, body + b"\n"


@st.composite
def export_file(draw) -> tuple[list[str], list[int], bytes]:
    """(each row's mutation, the lines of the rows left good, the file's bytes)."""
    n = draw(st.integers(1, 150))
    kinds, lines, good, at = [], [], [], 2
    for k in range(n):
        kind, line = draw(mutated_row(400_000_000 + 3 * k, k))
        kinds.append(kind)
        lines.append(line)
        if kind in ("good", "blank_before"):
            good.append(at + (kind == "blank_before"))
        at += line.count(b"\n")
    return kinds, good, _csv_line(_COLS) + b"".join(lines)


def _physical_lines(data: bytes) -> list[bytes]:
    """The data lines of a file as a reader numbers them (header = line 1), CRLF ends stripped."""
    return [ln[:-1] if ln.endswith(b"\r") else ln for ln in data.split(b"\n")[:-1]]


def test_classifications_ingest_survives_random_bad_rows(tmp_path):
    stats: Counter = Counter()

    @FUZZ
    @given(export_file(), st.booleans(), st.sampled_from([False, False, True]))
    def check(example, keep_metadata, gz):
        kinds, good, data = example
        stats["files"] += 1
        stats["gzip files"] += gz
        path = tmp_path / f"fuzz-{stats['files']}-classifications.csv"
        path.write_bytes(gzip.compress(data) if gz else data)
        lines = _physical_lines(data)
        blank = {n for n, ln in enumerate(lines, start=1) if n > 1 and ln == b""}   # no row, but keep their place
        data_lines = len(lines) - 1 - len(blank)
        stats["rows"] += data_lines
        con = duckdb.connect()
        report = ingest_classifications_csv(con, path, pseudonym_key=KEY, keep_metadata=keep_metadata)
        assert report.rows_seen == data_lines
        assert report.rows_new + report.rows_quarantined + report.rows_duplicate == data_lines
        assert report.rows_duplicate == 0                      # every generated id is distinct
        landed = con.execute("SELECT classification_id, source_line FROM raw.classifications").fetchall()
        bad = con.execute("SELECT source_line, reason, natural_key FROM raw.quarantine").fetchall()
        assert len(landed) == report.rows_new and len(bad) == report.rows_quarantined
        lines_used = [ln for _, ln in landed] + [ln for ln, _, _ in bad]
        assert len(set(lines_used)) == len(lines_used), "a line landed or was quarantined twice"
        if not (gz and blank):   # a gzip export is not counted: a blank line in it shifts later lines (documented)
            assert set(lines_used) == set(range(2, len(lines) + 1)) - blank, "a line was lost"
            for cid, line in landed:
                assert lines[line - 1].startswith(f"{cid},".encode()), (cid, line)
            assert set(good) <= {ln for _, ln in landed}, "a good row did not land"
        assert all(reason and reason.strip() for _, reason, _ in bad)
        text = repr(con.execute("SELECT * FROM raw.classifications").fetchall()) + repr(bad)
        assert NAME not in text and IP not in text
        stats["landed"] += len(landed)
        stats["quarantined"] += len(bad)
        stats.update(f"kind:{k}" for k in kinds)
        # a second read adds nothing, anywhere
        again = ingest_classifications_csv(con, path, pseudonym_key=KEY, keep_metadata=keep_metadata)
        assert (again.rows_new, again.rows_quarantined_new) == (0, 0)
        assert again.rows_quarantined == report.rows_quarantined
        assert con.execute("SELECT count(*) FROM raw.quarantine").fetchone()[0] == len(bad)
        con.close()
        path.unlink()

    check()
    print(f"\nclassifications fuzz: {stats['files']} files ({stats['gzip files']} gzip), {stats['rows']} rows tried, {stats['landed']} landed, "
          f"{stats['quarantined']} quarantined, 0 crashes, 0 lost; by kind: "
          + ", ".join(f"{k[5:]} {n}" for k, n in sorted(stats.items()) if k.startswith("kind:")))
    assert stats["rows"] == stats["landed"] + stats["quarantined"] and stats["rows"] > 1000


talk_values = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=10) | \
    st.lists(st.integers(), max_size=2) | st.just("2022-11-13T10:15:32.123Z") | st.just("12")


@st.composite
def talk_record(draw, k: int):
    good = {"comment_id": 1000 + k, "comment_body": f"hi @{NAME}{k}", "comment_focus_id": 5,
            "comment_focus_type": "Subject", "comment_user_id": 9, "comment_user_login": f"{NAME}{k}",
            "comment_created_at": "2022-11-13T10:15:32.123Z", "discussion_id": 3, "discussion_title": "t",
            "board_id": 1, "board_title": "Notes"}
    how = draw(st.sampled_from(["good", "field", "drop", "not_object"]))
    if how == "field":
        good[draw(st.sampled_from(sorted(good)))] = draw(talk_values)
    elif how == "drop":
        del good[draw(st.sampled_from(sorted(good)))]
    elif how == "not_object":
        return draw(talk_values)
    return good


def test_talk_ingest_survives_random_bad_records(tmp_path):
    stats: Counter = Counter()

    @settings(FUZZ, max_examples=20)
    @given(st.integers(1, 40).flatmap(lambda n: st.tuples(*[talk_record(k) for k in range(n)])))
    def check(records):
        stats["files"] += 1
        path = tmp_path / f"fuzz-{stats['files']}-comments.json"
        path.write_text(json.dumps(list(records)), encoding="utf-8")
        stats["records"] += len(records)
        con = duckdb.connect()
        report = ingest_talk_comments(con, path, pseudonym_key=KEY)
        assert report.rows_seen == len(records) == report.rows_new + report.rows_quarantined + report.rows_duplicate
        n_new, n_bad = (con.execute(f"SELECT count(*) FROM raw.{t}").fetchone()[0]
                        for t in ("talk_comments", "quarantine"))
        assert (n_new, n_bad) == (report.rows_new, report.rows_quarantined)
        ids = [r.get("comment_id") if isinstance(r, dict) else None for r in records]
        for line, key in con.execute("SELECT source_line, natural_key FROM raw.quarantine").fetchall():
            rec = records[line - 1]
            if key is not None:
                assert str(ids[line - 1]).strip() == key, (rec, key)
        assert NAME not in repr(con.execute("SELECT * FROM raw.talk_comments").fetchall())
        again = ingest_talk_comments(con, path, pseudonym_key=KEY)
        assert (again.rows_new, again.rows_quarantined_new) == (0, 0)
        stats["landed"] += n_new
        stats["quarantined"] += n_bad
        stats["duplicate"] += report.rows_duplicate
        con.close()

    check()
    print(f"\ntalk fuzz: {stats['files']} files, {stats['records']} records tried, {stats['landed']} landed, "
          f"{stats['quarantined']} quarantined, {stats['duplicate']} duplicates, 0 crashes, 0 lost")
    assert stats["records"] == stats["landed"] + stats["quarantined"] + stats["duplicate"]
