"""The published release formats (score CSV + (N, 128) latent npy): writing, reading, pairing, normalising."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ww_assets.scores import release
from ww_assets.storage import LATENTS_FILE, RELEASE_SCORES_FILE
from ww_assets.scores.normalise import normalise_scores
from ww_assets.scores.evaluation import detection_metrics
from ww_assets.storage import atomic_dir


def _table(n: int = 5, seed: int = 0) -> release.ScoreTable:
    rng = np.random.default_rng(seed)
    ids = [str(36411448540270968 + k) for k in range(n)]            # HSC-like 17-digit object ids
    image, feature = rng.gamma(2.0, 1.0, n) * 1e3, rng.gamma(2.0, 1.0, n) * 1e2
    return release.ScoreTable(ids, image, feature, 0.7 * image + 0.3 * feature,
                              rng.uniform(-1, 1, (n, release.LATENT_DIM)).astype(np.float32))


def test_scores_folder_round_trips_exactly(tmp_path):
    table = _table(7)
    out = tmp_path / "scores" / "b1"
    with atomic_dir(out) as tmp:
        release.write_scores_folder(tmp, "b1", table, {"formula": "hsc", "lam": 0.3})
    frame, latents, config = release.read_scores_folder(out)
    assert list(frame.columns) == release.SCORE_TABLE_COLUMNS
    assert list(frame["image_id"]) == list(table.image_ids) and (frame["batch"] == "b1").all()
    np.testing.assert_array_equal(latents, table.latents)
    assert latents.dtype == np.float32 and latents.shape == (7, 128)
    assert config["formula"] == "hsc" and config["n_images"] == 7
    # the release CSV: exact header, same row order as the npy, values exact, 17-digit ids kept as text
    csv = (out / RELEASE_SCORES_FILE).read_text().splitlines()
    assert csv[0] == "image_identifier,image_score,feature_score,anomaly_score"
    back = release.read_release_run(out / RELEASE_SCORES_FILE, out / LATENTS_FILE)
    assert list(back.image_ids) == list(table.image_ids)
    for col in release.SCORE_COLUMNS:
        np.testing.assert_array_equal(getattr(back, col), getattr(table, col))
    np.testing.assert_array_equal(back.latents, table.latents)


def test_published_headers_and_index_column_are_accepted(tmp_path):
    table = _table(3)
    frame = table.release_frame().rename(columns={"image_score": "image score", "feature_score": "feature score",
                                                  "anomaly_score": "anomaly score"})
    frame.to_csv(tmp_path / "run.csv", index=True)                 # a leading unnamed index column
    np.save(tmp_path / "run.npy", table.latents)
    back = release.read_release_run(tmp_path / "run.csv", tmp_path / "run.npy")
    np.testing.assert_array_equal(back.anomaly_score, table.anomaly_score)


def test_row_mismatch_names_both_files(tmp_path):
    table = _table(4)
    release.write_release_csv(tmp_path / "a.csv", table)
    np.save(tmp_path / "a.npy", table.latents[:3])
    with pytest.raises(release.ReleaseError, match=r"a\.csv has 4 rows but .*a\.npy has 3"):
        release.read_release_run(tmp_path / "a.csv", tmp_path / "a.npy")
    np.save(tmp_path / "a.npy", table.latents[:, :64])
    with pytest.raises(release.ReleaseError, match=r"\(N, 128\)"):
        release.read_release_run(tmp_path / "a.csv", tmp_path / "a.npy")
    pd.DataFrame({"image_identifier": ["1"], "image_score": ["x"], "feature_score": [1], "anomaly_score": [1]}
                 ).to_csv(tmp_path / "b.csv", index=False)
    np.save(tmp_path / "b.npy", table.latents[:1])
    with pytest.raises(release.ReleaseError, match="not numeric at line 2"):
        release.read_release_run(tmp_path / "b.csv", tmp_path / "b.npy")


def test_discover_release_runs_pairs_files(tmp_path):
    table = _table(2)
    for stem in ("hsc_full",):
        release.write_release_csv(tmp_path / f"{stem}.csv", table)
        np.save(tmp_path / f"{stem}.npy", table.latents)
    release.write_release_csv(tmp_path / "run3_anomaly_scores.csv", table)
    np.save(tmp_path / "run3_latent_vectors.npy", table.latents)
    release.write_release_csv(tmp_path / "lonely_scores.csv", table)          # its npy is still being copied
    sub = tmp_path / "2021-run"
    sub.mkdir()
    release.write_release_csv(sub / "scores.csv", table)
    np.save(sub / "latents.npy", table.latents)
    runs, orphans = release.discover_release_runs(tmp_path)
    assert [r.batch for r in runs] == ["release-2021-run", "release-hsc_full", "release-run3"]
    assert {r.batch: (r.csv.name, r.npy.name) for r in runs}["release-run3"] == (
        "run3_anomaly_scores.csv", "run3_latent_vectors.npy")
    assert [p.name for p in orphans] == ["lonely_scores.csv"]
    assert all(release.is_release_batch(r.batch) for r in runs)
    with pytest.raises(release.ReleaseError, match="does not exist"):
        release.discover_release_runs(tmp_path / "missing")


def test_normalise_scores_sigma_and_rank():
    frame = pd.DataFrame({"image_id": list("abcdef"), "batch": "b",
                          "image_score": [1.0, 2, 3, 4, 5, 6], "feature_score": [6.0, 5, 4, 3, 2, 1],
                          "anomaly_score": [1.0, 10, 3, 4, 5, 2],
                          "score_family": ["m1"] * 3 + ["m2"] * 3})
    out = normalise_scores(frame)
    for fam, sub in out.groupby("score_family"):
        raw = frame.loc[sub.index, "image_score"]
        np.testing.assert_allclose(sub["image_score_sigma"], (raw - raw.mean()) / raw.std(ddof=0))
        assert sorted(sub["anomaly_rank"]) == [1, 2, 3]
    assert out.set_index("image_id").loc["b", "anomaly_rank"] == 1
    assert out.set_index("image_id").loc["f", "anomaly_rank"] == 3     # 2 is lowest in family m2
    # a missing score (a published table may have one) stays missing and ranks last
    frame.loc[4, "anomaly_score"] = np.nan
    out = normalise_scores(frame).set_index("image_id")
    assert np.isnan(out.loc["e", "anomaly_score_sigma"]) and out.loc["e", "anomaly_rank"] == 3
    assert np.isfinite(out.loc[["d", "f"], "anomaly_score_sigma"]).all()


def test_detection_metrics_per_class():
    truth = pd.DataFrame({"object_id": [str(k) for k in range(10)],
                          "label": ["normal"] * 4 + ["merger", "merger", "ring", "ring", "satellite_trail",
                                                     "satellite_trail"],
                          "is_odd": [0, 0, 0, 0, 1, 1, 1, 1, 0, 0], "is_artifact": [False] * 8 + [True] * 2})
    scores = pd.DataFrame({"image_id": [str(k) for k in range(10)],
                           "image_score": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9.0],          # perfect
                           "feature_score": [9, 8, 7, 6, 5, 4, 3, 2, 1, 0.0],        # inverted
                           "anomaly_score": [0, 1, 2, 5, 4, 6, 1.5, 7.0, -1, -2]})
    m = detection_metrics(scores, truth).set_index(["target", "score"])
    assert m.loc[("all_injected", "image_score"), "auroc"] == 1.0
    assert m.loc[("all_injected", "feature_score"), "auroc"] == 0.0
    assert m.loc[("all_injected", "image_score"), "n_pos"] == 6
    assert m.loc[("merger", "image_score"), "n_pos"] == 2 and m.loc[("merger", "image_score"), "n_neg"] == 4
    assert m.loc[("artifact", "anomaly_score"), "auroc"] == 0.0           # artifacts scored below every normal
    # ring: scores 1.5 and 7 against normals 0,1,2,5 -> pairs won: 1.5 beats 0,1 (2 of 4); 7 beats all (4)
    assert m.loc[("ring", "anomaly_score"), "auroc"] == pytest.approx(6 / 8)
    assert m.loc[("astrophysical", "anomaly_score"), "n_pos"] == 4
