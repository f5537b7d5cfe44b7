"""Volunteer and Talk consensus (the ``ww_assets.consensus`` modules and their assets).

The central test recomputes shown / selected (and pages, Talk counts, hashtags) for every image of the embedded
sample with a plain-Python reading of the export files (csv + json, no DuckDB) and requires the DuckDB tables to
match exactly (the Wilson interval: astropy's). Others: incremental == full rebuild, edge cases on hand-made raw rows, hashtag normalisation, the
hash-collision fallback, and the Dagster assets with their checks.
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from pathlib import Path

import duckdb
import numpy as np
import pytest
from astropy.stats import binom_conf_interval

from ww_assets.consensus import checks, partitions, subjects, volunteer_keys
from ww_assets.consensus.build import build_all
from ww_assets.consensus.exposures import build_image_exposures
from ww_assets.consensus.state import read_state
from ww_assets.consensus.talk import (
    build_talk_consensus,
    normalise_tag,
    normalise_tag_sql,
)
from ww_assets.consensus.volunteer import (
    REASON_NO_PAGE,
    REASON_NOT_ON_PAGE,
    build_volunteer_consensus,
)
from ww_assets.consensus.wilson import wilson_sql
from ww_assets.simulation.scale_exports import CLASSIFICATIONS_CSV, generate_export
from ww_assets.zooniverse.ingest.classifications import ingest_classifications_csv
from ww_assets.zooniverse.ingest.subjects import ingest_subjects_csv
from ww_assets.zooniverse.ingest.talk import ingest_talk_comments, ingest_talk_tags

KEY = "test-consensus-key"


# ----------------------------------------------------------------------------------------------------------------
# an independent reading of the export files: csv + json modules only
# ----------------------------------------------------------------------------------------------------------------

def _identity(row: dict) -> str | None:
    uid = (row.get("user_id") or "").strip()
    if uid:
        return "u:" + str(int(float(uid)))
    name = (row.get("user_name") or "").strip()
    return "a:" + name if name else None


# The same hashtag rule as the module docstring, written independently with Python's re.
_HASHTAG = re.compile(r"(?:^|[^\w&/#])#([^\W][\w.\-]*)", re.UNICODE)


def reference_consensus(folder: Path, skip_classifications: set[int] = frozenset()) -> dict:
    """Per image: shown/selected volunteer sets, pages, first/last created_at; Talk: comments, commenters, tags.

    Tags are normalised with ``normalise_tag``, the Python rule that ``test_tag_normalisation_sql_matches_python``
    pins to known values.
    """
    cls = next(folder.glob("*classifications*.csv"))
    shown, selected, pages = defaultdict(set), defaultdict(set), defaultdict(int)
    first, last = {}, {}
    invalid = []
    with cls.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            cid = int(row["classification_id"])
            if cid in skip_classifications:
                continue
            who = _identity(row)
            data = json.loads(row["subject_data"])
            group = next(iter(data.values())).get("#group_subject_ids")
            page = [int(x) for x in group.split("-")] if group else [int(x) for x in row["subject_ids"].split(";")]
            clicks = [int(v["subject"]) for task in json.loads(row["annotations"]) if task.get("task") == "T0"
                      for v in (task.get("value") or [])]
            when = row["created_at"]
            for s in set(page):
                shown[s].add(who)
                pages[s] += 1
                first[s] = min(first.get(s, when), when)
                last[s] = max(last.get(s, when), when)
            for s in clicks:
                if s in page:
                    selected[s].add(who)
                else:
                    invalid.append((cid, s))
    talk = {"comments": defaultdict(int), "commenters": defaultdict(set), "tags": defaultdict(lambda: defaultdict(set))}
    com = next(folder.glob("*comments*.json"), None)
    if com:
        for c in json.loads(com.read_text(encoding="utf-8")):
            if c.get("comment_focus_type") != "Subject" or c.get("comment_focus_id") is None:
                continue
            s, who = int(c["comment_focus_id"]), "u:" + str(int(c["comment_user_id"]))
            talk["comments"][s] += 1
            talk["commenters"][s].add(who)
            for m in _HASHTAG.findall(c.get("comment_body") or ""):
                tag = normalise_tag(m)
                if tag:
                    talk["tags"][s][tag].add(who)
    tags = next(folder.glob("*tags*.json"), None)
    if tags:
        for t in json.loads(tags.read_text(encoding="utf-8")):
            if t.get("taggable_type") == "Subject" and t.get("taggable_id") is not None and t.get("user_id"):
                tag = normalise_tag(t["name"])
                if tag:
                    talk["tags"][int(t["taggable_id"])][tag].add("u:" + str(int(t["user_id"])))
    return {"shown": shown, "selected": selected, "pages": pages, "first": first, "last": last,
            "invalid": invalid, "talk": talk}


def _ingest_folder(con, folder: Path, key: str = KEY) -> None:
    ingest_subjects_csv(con, next(folder.glob("*subjects*.csv")), pseudonym_key=key)
    ingest_classifications_csv(con, next(folder.glob("*classifications*.csv")), pseudonym_key=key)
    for pattern, fn in (("*comments*.json", ingest_talk_comments), ("*tags*.json", ingest_talk_tags)):
        f = next(folder.glob(pattern), None)
        if f:
            fn(con, f, pseudonym_key=key)


def _quarantined_at_ingest(con) -> set[int]:
    return {int(r[0]) for r in con.execute(
        "SELECT natural_key FROM raw.quarantine WHERE table_name = 'classifications' AND natural_key IS NOT NULL"
    ).fetchall()}


def _assert_matches_reference(con, ref: dict) -> None:
    got = {r[0]: r[1:] for r in con.execute(
        "SELECT subject_id, shown, selected, pages, strftime(first_seen, '%Y-%m-%d %H:%M:%S UTC'), "
        "strftime(last_seen, '%Y-%m-%d %H:%M:%S UTC') FROM consensus.volunteer_consensus").fetchall()}
    want = {s: (len(ref["shown"][s]), len(ref["selected"].get(s, ())), ref["pages"][s], ref["first"][s],
                ref["last"][s]) for s in ref["shown"]}
    assert set(got) == set(want)
    bad = {s: (got[s], want[s]) for s in want if got[s] != want[s]}
    assert not bad, f"{len(bad)} images differ, e.g. {list(bad.items())[:5]}"
    # fraction and the Wilson interval agree with selected / shown and astropy's Wilson 95% interval
    shown, sel, frac, lo, hi = np.array(con.execute(
        "SELECT shown, selected, fraction, ci_low, ci_high FROM consensus.volunteer_consensus").fetchall()).T
    assert frac == pytest.approx(sel / shown, abs=1e-12)
    want_lo, want_hi = binom_conf_interval(sel, shown, confidence_level=0.95, interval="wilson")
    assert lo == pytest.approx(want_lo, abs=1e-12) and hi == pytest.approx(want_hi, abs=1e-12)
    # Talk
    talk = ref["talk"]
    got_t = {r[0]: r[1:] for r in con.execute(
        "SELECT subject_id, comments, commenters, hashtags, top_tag, top_tag_share, taggers "
        "FROM consensus.talk_consensus").fetchall()}
    subjects = set(talk["comments"]) | set(talk["tags"])
    assert set(got_t) == subjects
    for s in subjects:
        counts = {tag: len(who) for tag, who in talk["tags"].get(s, {}).items()}
        comments, commenters, hashtags, top_tag, share, taggers = got_t[s]
        assert (comments, commenters) == (talk["comments"].get(s, 0), len(talk["commenters"].get(s, ())))
        assert dict(hashtags) == counts, s
        if counts:
            best = min(counts, key=lambda t: (-counts[t], t))
            everyone = set().union(*talk["tags"][s].values())
            assert (top_tag, taggers) == (best, len(everyone))
            assert share == pytest.approx(counts[best] / len(everyone))
        else:
            assert top_tag is None and taggers == 0


def _snapshot(con) -> dict:
    # top_seen_*, top_selected_* are bookkeeping relative to the top-volunteer ranking of the last full build
    skip = {"volunteer_consensus": " EXCLUDE (build_id, top_seen_a, top_seen_b, top_selected_a, top_selected_b)",
            "talk_consensus": " EXCLUDE (build_id)", "subject_consensus": ""}
    out = {t: con.execute(f"SELECT *{x} FROM consensus.{t} ORDER BY subject_id").fetchall() for t, x in skip.items()}
    out["quarantine"] = con.execute(
        "SELECT classification_id, subject_id, reason FROM consensus.quarantine ORDER BY ALL").fetchall()
    return out


# ----------------------------------------------------------------------------------------------------------------
# the embedded sample against the plain-Python reading
# ----------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sample_warehouse(tiny_sample, tmp_path_factory):
    db = tmp_path_factory.mktemp("cons") / "warehouse.duckdb"
    con = duckdb.connect(str(db))
    _ingest_folder(con, tiny_sample / "exports")
    results = build_all(con)
    yield con, results, tiny_sample / "exports"
    con.close()


def test_sample_matches_plain_python_reading(sample_warehouse):
    con, results, exports = sample_warehouse
    assert results["volunteer_consensus"].mode == "full"
    ref = reference_consensus(exports, skip_classifications=_quarantined_at_ingest(con))
    assert ref["shown"], "the sample has no classifications"
    # the sample has repeat submissions: deduplication must matter for the test to mean something
    assert sum(ref["pages"].values()) > sum(len(v) for v in ref["shown"].values())
    _assert_matches_reference(con, ref)


def test_sample_subject_consensus_and_checks(sample_warehouse):
    con, _, exports = sample_warehouse
    subjects = {}
    with next(exports.glob("*subjects*.csv")).open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            meta = json.loads(row["metadata"])
            subjects[int(row["subject_id"])] = (str(meta["object_id"]), float(meta["ra"]), float(meta["dec"]))
    rows = {r[0]: r[1:] for r in con.execute(
        "SELECT subject_id, image_id, ra, dec, shown FROM consensus.subject_consensus").fetchall()}
    assert set(rows) == set(subjects)
    for s, (oid, ra, dec) in subjects.items():
        assert rows[s][:3] == (oid, pytest.approx(ra), pytest.approx(dec))
    vc = dict(con.execute("SELECT subject_id, shown FROM consensus.volunteer_consensus").fetchall())
    assert all(rows[s][3] == vc.get(s, 0) for s in rows)
    for table in ("volunteer_consensus", "subject_consensus"):
        assert checks.check_counts(con, table) == {**checks.check_counts(con, table), "selected_out_of_range": 0,
                                              "fraction_out_of_range": 0, "interval_invalid": 0}
        assert checks.duplicate_keys(con, table)[0] == 0
        assert checks.orphan_rows(con, table)[0] == 0
    assert checks.orphan_rows(con, "talk_consensus")[0] == 0
    summary = checks.fraction_summary(con)
    assert summary["images_shown"] == len(vc) and 0 <= summary["fraction_mean"] <= 1


def test_rerun_without_new_data_is_unchanged(sample_warehouse):
    con, _, _ = sample_warehouse
    before = _snapshot(con)
    again = build_all(con)
    assert {k: r.mode for k, r in again.items() if k != "image_exposures"} == {
        "volunteer_consensus": "unchanged", "talk_consensus": "unchanged", "subject_consensus": "unchanged"}
    assert _snapshot(con) == before
    n_exp = con.execute("SELECT count(*) FROM consensus.image_exposures").fetchone()[0]
    assert n_exp == con.execute("SELECT sum(len(page_subject_ids)) FROM raw.classifications").fetchone()[0]


# ----------------------------------------------------------------------------------------------------------------
# incremental == full, on a generated export split in two pulls
# ----------------------------------------------------------------------------------------------------------------

def test_incremental_update_equals_full_rebuild(tmp_path):
    total, first = 6000, 5500
    generate_export(tmp_path / "a", total, images=32000, seed=7, stop=first)
    generate_export(tmp_path / "b", total, images=32000, seed=7, start=first, with_subjects=False)
    generate_export(tmp_path / "all", total, images=32000, seed=7)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    _ingest_folder(con, tmp_path / "a")
    build_all(con)
    ingest_classifications_csv(con, tmp_path / "b" / CLASSIFICATIONS_CSV, pseudonym_key=KEY)
    res = build_all(con)
    assert res["volunteer_consensus"].mode == "incremental"
    assert res["volunteer_consensus"].new_input_rows > 0
    assert 0 < res["volunteer_consensus"].rows_changed < res["volunteer_consensus"].rows_total
    assert res["talk_consensus"].mode == "unchanged"
    assert res["subject_consensus"].mode == "unchanged"     # a view: current without any work
    incremental = _snapshot(con)
    build_all(con, full=True)
    assert _snapshot(con) == incremental
    # a full build in several partitions (as for large exports) gives the same tables, bookkeeping included
    one = con.execute("SELECT * EXCLUDE (build_id) FROM consensus.volunteer_consensus ORDER BY subject_id").fetchall()
    subjects.SUBJECTS_PER_PARTITION, before = 3000, subjects.SUBJECTS_PER_PARTITION
    try:
        res = build_all(con, full=True, partition_exposures=20_000)
    finally:
        subjects.SUBJECTS_PER_PARTITION = before
    assert con.execute(
        "SELECT * EXCLUDE (build_id) FROM consensus.volunteer_consensus ORDER BY subject_id").fetchall() == one
    assert _snapshot(con) == incremental
    # and both match the plain-Python reading of the whole export
    ref = reference_consensus(tmp_path / "all", skip_classifications=_quarantined_at_ingest(con))
    ref["talk"] = reference_consensus(tmp_path / "a")["talk"]   # Talk came with the first pull only
    _assert_matches_reference(con, ref)
    # a click on a subject that was not on the page: that click is quarantined here (its page still counts);
    # ingest only drops rows it cannot read at all
    invalid = reference_consensus(tmp_path / "all")["invalid"]
    assert invalid, "the generated export should contain invalid clicks"
    at_ingest = _quarantined_at_ingest(con)
    here = {(c, s) for c, s, _ in incremental["quarantine"]}
    assert {(c, s) for c, s in invalid if c not in at_ingest} <= here
    assert not {c for c, _ in invalid} & at_ingest


# ----------------------------------------------------------------------------------------------------------------
# hand-made raw rows: the rules one by one
# ----------------------------------------------------------------------------------------------------------------

def _add_pages(con, rows, ingest="i1"):
    con.executemany(
        """INSERT INTO raw.classifications (classification_id, volunteer_id, is_anonymous, created_at,
                                            page_subject_ids, selected_subject_ids, ingest_id)
           VALUES (?, ?, ?, ?, ?, ?, ?)""",
        [[cid, vol, vol.startswith("anon"), f"2022-01-{day:02d}", page, sel, ingest]
         for cid, vol, day, page, sel in rows])


def _vc(con) -> dict:
    return {r[0]: r[1:] for r in con.execute(
        "SELECT subject_id, shown, selected, pages FROM consensus.volunteer_consensus").fetchall()}


@pytest.mark.parametrize("top_volunteers", [0, 2, 256])
def test_repeats_never_count_twice_and_invalid_clicks_are_quarantined(raw_con, monkeypatch, top_volunteers):
    # top volunteers are checked through bits in the image rows, the others through their earlier pages
    monkeypatch.setattr(volunteer_keys, "TOP_VOLUNTEERS", top_volunteers)
    con = raw_con
    _add_pages(con, [
        (1, "v_a", 1, [10, 11, 12], [10]),
        (2, "v_a", 2, [10, 11, 12], [10, 11]),     # the same page re-submitted, clicks re-drawn
        (3, "v_a", 3, [12, 13, 10], [10]),         # image 10 again on another page, clicked again
        (4, "anon_b", 4, [10, 13, 14], [13, 99]),  # 99 was not on the page
        (5, "v_c", 5, [], [11]),                   # no page list at all
    ])
    build_all(con)
    vc = _vc(con)
    assert vc[10] == (2, 1, 4)   # v_a and anon_b saw it; only v_a clicked it; four pages showed it
    assert vc[11] == (1, 1, 2)
    assert vc[12] == (1, 0, 3)
    assert vc[13] == (2, 1, 2)
    assert 99 not in vc
    q = sorted(con.execute("SELECT classification_id, subject_id, reason FROM consensus.quarantine").fetchall())
    assert q == [(4, 99, REASON_NOT_ON_PAGE), (5, 11, REASON_NO_PAGE)]
    counts = checks.quarantine_counts(con)
    assert counts[f"click: {REASON_NOT_ON_PAGE}"] == 1 and counts[f"click: {REASON_NO_PAGE}"] == 1
    # a later pull in which v_a meets image 10 yet again and anon_b clicks 10 for the first time
    _add_pages(con, [(6, "v_a", 6, [10, 15], [10]), (7, "anon_b", 7, [10, 16], [10]),
                     (8, "v_d", 8, [16, 17], [99])], ingest="i2")
    res = build_all(con)
    assert res["volunteer_consensus"].mode == "incremental"
    vc = _vc(con)
    assert vc[10] == (2, 2, 6)
    assert vc[16] == (2, 0, 2)
    incremental = _snapshot(con)
    build_all(con, full=True)
    assert _snapshot(con) == incremental


def test_wilson_sql_known_values_and_astropy():
    con = duckdb.connect()
    frac, lo, hi = wilson_sql("k", "n")

    def sql(k: int, n: int) -> tuple:
        return con.execute(f"SELECT {frac}, {lo}, {hi} FROM (SELECT {k} AS k, {n} AS n)").fetchone()

    assert sql(5, 10)[1:] == pytest.approx((0.236593, 0.763407), abs=1e-6)
    assert sql(0, 20)[1] == 0.0 and sql(0, 20)[2] == pytest.approx(0.161125, abs=1e-6)
    assert sql(0, 0) == (None, 0.0, 1.0)      # no trials: no fraction, the whole unit interval
    for k, n in ((7, 9), (0, 1), (1, 1), (3, 40), (40, 40), (1, 1000)):
        want = binom_conf_interval(k, n, confidence_level=0.95, interval="wilson")
        assert sql(k, n) == pytest.approx((k / n, *want), abs=1e-12)


@pytest.mark.parametrize("text,tag", [
    ("#Merger.", "merger"), ("ring!", "ring"), ("  #LENS?! ", "lens"), ("green-pea", "green-pea"),
    ("ArTiFaCt,", "artifact"), ("#123", None), ("Ëdge", "ëdge"), ("tidal...", "tidal"), ("#", None),
    ("merger🙂", "merger"),
])
def test_tag_normalisation_sql_matches_python(text, tag):
    assert normalise_tag(text) == tag
    con = duckdb.connect()
    assert con.execute(f"SELECT {normalise_tag_sql('x')} FROM (SELECT ?::VARCHAR AS x)", [text]).fetchone()[0] == tag


def test_hashtags_from_text_and_tag_records(raw_con):
    con = raw_con
    con.execute("""INSERT INTO raw.talk_comments (comment_id, focus_subject_id, commenter_id, comment_body, created_at,
                                                  ingest_id) VALUES
        (1, 10, 'v_a', 'Nice #Merger. and #ring! see http://x.org/#anchor &#39;', '2022-01-05', 't1'),
        (2, 10, 'v_b', '#merger #merger (#Tidal)', '2022-01-06', 't1'),
        (3, NULL, 'v_b', '#help', '2022-01-06', 't1'),
        (4, 11, 'v_a', 'no tags here', '2022-01-07', 't1')""")
    con.execute("""INSERT INTO raw.talk_tags (tag_id, name, tagger_id, comment_id, taggable_id, taggable_type,
                                              ingest_id) VALUES
        (1, 'merger', 'v_a', 1, 10, 'Subject', 't2'), (2, 'lens', 'v_c', 9, 12, 'Subject', 't2'),
        (3, 'ring', 'v_a', 5, 77, 'Discussion', 't2')""")
    build_all(con)
    rows = {r[0]: r[1:] for r in con.execute(
        "SELECT subject_id, comments, commenters, hashtags, top_tag, top_tag_share FROM consensus.talk_consensus"
    ).fetchall()}
    assert rows[10] == (2, 2, {"merger": 2, "ring": 1, "tidal": 1}, "merger", 1.0)
    assert rows[11] == (1, 1, {}, None, None)
    assert rows[12] == (0, 0, {"lens": 1}, "lens", 1.0)
    assert set(rows) == {10, 11, 12}
    # a new comment later: only that image is recomputed
    con.execute("""INSERT INTO raw.talk_comments (comment_id, focus_subject_id, commenter_id, comment_body,
                   created_at, ingest_id) VALUES (5, 11, 'v_c', '#Lens', '2022-02-01', 't3')""")
    res = build_talk_consensus(con)
    assert (res.mode, res.rows_changed) == ("incremental", 1)
    assert con.execute("SELECT hashtags FROM consensus.talk_consensus WHERE subject_id = 11").fetchone()[0] == {
        "lens": 1}


def test_volunteer_key_collision_falls_back_to_a_new_salt(raw_con, monkeypatch):
    con = raw_con
    _add_pages(con, [(1, "v_a", 1, [10, 11], [10]), (2, "v_b", 2, [10, 11], [11]), (3, "v_c", 3, [10], [])])
    original = volunteer_keys.vkey_sql
    monkeypatch.setattr(volunteer_keys, "vkey_sql", lambda col, salt: "42::UBIGINT" if salt == 0 else original(col, salt))
    res = build_volunteer_consensus(con)
    assert "collision" in res.reason
    assert _vc(con)[10] == (3, 1, 3) and _vc(con)[11] == (2, 1, 2)
    assert read_state(con, "volunteer_consensus", "salt") == ["1"]


def test_subjects_arriving_after_their_classifications(raw_con):
    con = raw_con
    _add_pages(con, [(1, "v_a", 1, [10, 25], [25]), (2, "v_b", 2, [25, 26], [])])
    build_all(con)
    assert checks.orphan_rows(con, "volunteer_consensus") == (2, [25, 26])
    con.execute("""INSERT INTO raw.subjects (subject_id, subject_set_id, object_id, ra, dec, image_ref, updated_at,
                                             ingest_id, ingested_at)
                   VALUES (25, 1, 'obj25', 1.5, 2.5, '25.png', TIMESTAMP '2022-02-01', 's2', now()),
                          (10, 2, 'obj10-new', 9.0, 9.0, '10b.png', TIMESTAMP '2022-03-01', 's2', now())""")
    res = build_all(con)
    assert res["subject_consensus"].mode == "incremental"
    rows = {r[0]: r[1:] for r in con.execute(
        "SELECT subject_id, image_id, shown, selected FROM consensus.subject_consensus").fetchall()}
    assert rows[25] == ("obj25", 2, 1)
    assert rows[10] == ("obj10-new", 1, 0)     # the most recently updated link gives the identity
    incremental = _snapshot(con)
    build_all(con, full=True)
    assert _snapshot(con) == incremental
    # an older link of 25: still the newest link wins, also when the multi-link subjects are split in partitions
    con.execute("""INSERT INTO raw.subjects (subject_id, subject_set_id, object_id, ra, dec, image_ref, updated_at,
                                             ingest_id, ingested_at)
                   VALUES (25, 3, 'obj25-old', 0.0, 0.0, 'old.png', TIMESTAMP '2021-01-01', 's3', now())""")
    subjects.SUBJECTS_PER_PARTITION, before = 1, subjects.SUBJECTS_PER_PARTITION
    try:
        build_all(con, full=True)
    finally:
        subjects.SUBJECTS_PER_PARTITION = before
    identity = dict(con.execute("SELECT subject_id, image_id FROM consensus.subject_identity").fetchall())
    assert identity == {**{s: f"obj{s}" for s in range(11, 20)}, 10: "obj10-new", 25: "obj25"}


def test_raw_tables_rebuilt_forces_full_rebuild(raw_con):
    con = raw_con
    _add_pages(con, [(1, "v_a", 1, [10, 11], [10])])
    build_all(con)
    con.execute("DELETE FROM raw.classifications")
    _add_pages(con, [(2, "v_b", 2, [12], [12])], ingest="i9")
    res = build_volunteer_consensus(con)
    assert res.mode == "full" and "lost" in res.reason
    assert _vc(con) == {12: (1, 1, 1)}


def test_partition_size_follows_the_memory_limit():
    con = duckdb.connect()
    con.execute("SET memory_limit = '20GB'")
    assert partitions.partition_exposures_for(con) == partitions.DEFAULT_PARTITION_EXPOSURES
    con.execute("SET memory_limit = '1GB'")
    assert partitions.memory_limit_bytes(con) == pytest.approx(1e9, rel=0.01)
    assert partitions.partition_exposures_for(con) == pytest.approx(1e9 / partitions.BYTES_PER_PARTITION_EXPOSURE, rel=0.01)
    con.execute("SET memory_limit = '10MB'")
    assert partitions.partition_exposures_for(con) == 1_000_000


def test_exposure_count_follows_ingests(raw_con):
    con = raw_con
    assert build_image_exposures(con).rows_total == 0
    _add_pages(con, [(1, "a", 1, [10, 11, 12, 13], [11]), (2, "b", 2, [10, 14], [])])
    first = build_image_exposures(con)
    total = lambda: con.execute("SELECT count(*) FROM consensus.image_exposures").fetchone()[0]
    assert first.rows_total == total() == 6
    # a new ingest adds its pages; a deleted one (raw tables rebuilt) drops out
    con.execute("""INSERT INTO raw.classifications (classification_id, volunteer_id, page_subject_ids,
                   selected_subject_ids, ingest_id) VALUES (1, 'v_x', [1, 2, 3], [], 'ing_extra')""")
    assert build_image_exposures(con).rows_total == total() == first.rows_total + 3
    con.execute("DELETE FROM raw.classifications WHERE ingest_id = 'ing_extra'")
    assert build_image_exposures(con).rows_total == total() == first.rows_total
