"""The counting rules: which classifications the consensus counts (workflow, minimum workflow version)."""

from __future__ import annotations

import pytest

from ww_assets.consensus.build import build_all
from ww_assets.consensus.counting import CountingRules
from ww_assets.settings import SettingError


@pytest.fixture
def con(raw_con):
    """The consensus tests' hand-made warehouse (conftest.raw_con)."""
    return raw_con


def _add(con, rows, ingest="i1"):
    con.executemany(
        """INSERT INTO raw.classifications (classification_id, volunteer_id, is_anonymous, workflow_id,
                                            workflow_version, created_at, page_subject_ids, selected_subject_ids,
                                            ingest_id)
           VALUES (?, ?, false, ?, ?, TIMESTAMP '2022-01-01', ?, ?, ?)""",
        [[cid, vol, wf, ver, page, sel, ingest] for cid, vol, wf, ver, page, sel in rows])


def _vc(con) -> dict:
    return {r[0]: r[1:] for r in con.execute(
        "SELECT subject_id, shown, selected FROM consensus.volunteer_consensus").fetchall()}


ROWS = [
    # id, volunteer, workflow, version, page, clicks
    (1, "a", 1, "3.9", [10, 11], [10]),
    (2, "b", 1, "3.10", [10, 11], [11]),     # 3.10 is later than 3.9
    (3, "c", 1, "4.1", [10, 12], [10]),
    (4, "d", 2, "5.0", [10, 12], [12]),      # another workflow
    (5, "e", 1, None, [10], [10]),           # no readable version
]


def test_default_counts_everything_and_rules_select_rows(con, monkeypatch):
    _add(con, ROWS)
    build_all(con)
    assert _vc(con)[10] == (5, 3)
    assert con.execute("SELECT count(*) FROM consensus.image_exposures").fetchone()[0] == 9

    monkeypatch.setenv("WW_CONSENSUS_WORKFLOW_ID", "1")
    res = build_all(con)
    assert res["volunteer_consensus"].mode == "full" and "counting rules" in res["volunteer_consensus"].reason
    assert _vc(con)[10] == (4, 3) and 12 in _vc(con) and _vc(con)[12] == (1, 0)
    assert con.execute("SELECT count(*) FROM consensus.image_exposures").fetchone()[0] == 7

    monkeypatch.setenv("WW_CONSENSUS_MIN_WORKFLOW_VERSION", "3.10")
    build_all(con)
    assert _vc(con)[10] == (2, 1)               # b (3.10) and c (4.1); not a (3.9), d (workflow 2), e (no version)
    assert _vc(con)[11] == (1, 1)
    # raw keeps every row: taking the rules away counts them all again
    assert con.execute("SELECT count(*) FROM raw.classifications").fetchone()[0] == 5
    monkeypatch.delenv("WW_CONSENSUS_WORKFLOW_ID")
    monkeypatch.delenv("WW_CONSENSUS_MIN_WORKFLOW_VERSION")
    build_all(con)
    assert _vc(con)[10] == (5, 3)


def test_incremental_build_applies_the_rules_to_new_rows(con, monkeypatch):
    monkeypatch.setenv("WW_CONSENSUS_MIN_WORKFLOW_VERSION", "4")
    _add(con, ROWS)
    build_all(con)
    assert _vc(con)[10] == (2, 1)                # c (4.1) and d (5.0)
    _add(con, [(6, "f", 1, "3.99", [10], [10]), (7, "g", 1, "12.0", [10, 13], [13])], ingest="i2")
    res = build_all(con)
    assert res["volunteer_consensus"].mode == "incremental"
    incremental = _vc(con)
    assert incremental[10] == (3, 1) and incremental[13] == (1, 1)   # g counts (12 > 4), f does not (3.99 < 4)
    build_all(con, full=True)
    assert _vc(con) == incremental


def test_rules_text_and_bad_values():
    assert CountingRules().where_sql() == "TRUE" and CountingRules().describe() == "every classification"
    rules = CountingRules(workflow_id=7, min_workflow_version="160.317")
    assert rules.describe() == "workflow 7, workflow version >= 160.317"
    assert rules.marker() == "workflow=7;min_version=160.317;gold_standard=include;expert=include"
    with pytest.raises(SettingError, match="WW_CONSENSUS_MIN_WORKFLOW_VERSION"):
        CountingRules(min_workflow_version="v2").where_sql()
    with pytest.raises(SettingError, match="WW_CONSENSUS_WORKFLOW_ID"):
        CountingRules.from_settings({"WW_CONSENSUS_WORKFLOW_ID": "abc"})


def test_gold_standard_and_expert_rows_can_be_left_out_or_kept_alone(con, monkeypatch):
    _add(con, ROWS)
    # a: gold standard, c: expert; e's export had no such columns (NULL: not flagged)
    con.execute("UPDATE raw.classifications SET gold_standard = (volunteer_id = 'a'), expert = (volunteer_id = 'c') "
                "WHERE volunteer_id <> 'e'")
    build_all(con)
    assert _vc(con)[10] == (5, 3)
    monkeypatch.setenv("WW_CONSENSUS_GOLD_STANDARD", "exclude")
    build_all(con)
    assert _vc(con)[10] == (4, 2)                        # a gone
    monkeypatch.setenv("WW_CONSENSUS_EXPERT", "only")
    res = build_all(con)
    assert _vc(con)[10] == (1, 1) and res["volunteer_consensus"].mode == "full"     # c alone
    monkeypatch.setenv("WW_CONSENSUS_GOLD_STANDARD", "only")
    monkeypatch.setenv("WW_CONSENSUS_EXPERT", "include")
    build_all(con)
    assert _vc(con)[10] == (1, 1) and _vc(con)[11] == (1, 0)   # a alone
    assert CountingRules(gold_standard="exclude", expert="only").describe() == "no gold-standard rows, only expert rows"
    with pytest.raises(SettingError, match="WW_CONSENSUS_EXPERT"):
        CountingRules.from_settings({"WW_CONSENSUS_EXPERT": "some"})
