"""The analysis group end to end on a constructed storage root whose answer is known.

The world: two score batches of latent vectors in three clusters (normal galaxies, striking oddities,
artifacts), machine scores that rate artifacts highest and oddities above normal, and volunteers who select
oddities often, artifacts rarely. The comparison must find exactly that, the plots must be written, the
similarity search must find planted near-duplicates, and the next round must draw only unseen images.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from ww_assets.consensus.schema import ensure_consensus_schema
from ww_assets.consensus.wilson import wilson_sql
from ww_assets.images.batch import BatchCollector
from ww_assets.images.cutouts import write_cutout_batch
from ww_assets.scores.normalise import collect_scores, normalise_scores
from ww_assets.scores.release import ScoreTable, write_scores_folder
from ww_assets.storage import StorageLayout, write_parquet

N_PER_BATCH = 150
BATCHES = ("b0", "b1")
#: what score_config.json says of the world's scores: one model, one formula (one score family)
SCORE_RECORD = {"source": "model", "model_fingerprint": "analysis-test-world", "formula": "hsc", "lam": 0.3,
                "refine_steps": 0}


def build_world(root: Path, seed: int = 7) -> dict:
    """Write scores, latents, cutouts, a warehouse with consensus tables, and truth.csv under ``root``, each with
    the writer the pipeline uses for it (the scores and images stages' folder writers, the normalisation, the
    warehouse's own schema and Wilson interval)."""
    rng = np.random.default_rng(seed)
    layout = StorageLayout(root)
    n = N_PER_BATCH * len(BATCHES)
    kind = rng.choice(["normal", "oddity", "artifact"], size=n, p=[0.78, 0.14, 0.08])
    label = np.where(kind == "oddity", rng.choice(["merger", "ring"], size=n),
                     np.where(kind == "artifact", "satellite_trail", "normal"))
    centres = {k: rng.normal(size=128) for k in ("normal", "oddity", "artifact")}
    z = np.stack([np.tanh(0.6 * centres[k] + rng.normal(scale=0.35, size=128)) for k in kind]).astype(np.float32)
    # Plant near-duplicates: image 5 and 6 are 4's twins (tiny offsets).
    z[5] = z[4] + 1e-4
    z[6] = z[4] - 2e-4
    sigma = rng.normal(size=n) + np.where(kind == "artifact", 3.0, np.where(kind == "oddity", 1.2, 0.0))
    anomaly = 100 + 10 * sigma
    image_score = 0.7 * anomaly + rng.normal(scale=3, size=n)
    feature_score = 0.3 * anomaly + rng.normal(scale=3, size=n)
    ids = np.array([str(10_000_000 + i) for i in range(n)])
    batch = np.repeat(BATCHES, N_PER_BATCH)
    for b in BATCHES:
        m = batch == b
        k = int(m.sum())
        write_scores_folder(layout.scores_dir(b), b,
                            ScoreTable(ids[m], image_score[m], feature_score[m], anomaly[m], z[m]), SCORE_RECORD)
        cut = rng.integers(0, 255, size=(k, 3, 96, 96), dtype=np.uint8)
        ra, dec = rng.uniform(0, 360, k), rng.uniform(-5, 5, k)
        images = BatchCollector(96, {})
        images.add_rgb(list(ids[m]), ["x"] * k, cut, radec=list(zip(ra, dec)))
        write_cutout_batch(images.result(b), layout.images_dir(b))
    frame, missing, dropped = collect_scores(layout, list(BATCHES))
    assert not missing and not dropped
    write_parquet(normalise_scores(frame), layout.normalised_scores_file)

    is_subject = rng.uniform(size=n) < 0.7
    is_subject[4] = True  # the "more like this" query below asks by its Zooniverse subject id
    sid = np.arange(n) + 500_000
    shown = rng.integers(15, 26, size=n)
    p = np.where(kind == "oddity", 0.45, np.where(kind == "artifact", 0.06, 0.04))
    selected = rng.binomial(shown, p)
    top_tag = np.where(kind == "oddity", label, np.where(kind == "artifact", "artifact", None))
    top_tag = np.where((kind == "normal") & (rng.uniform(size=n) < 0.1), "spiral", top_tag)
    tagged = top_tag != None  # noqa: E711  (an object array: element-wise)
    cons = pd.DataFrame({"subject_id": sid, "image_id": ids, "ra": 0.0, "dec": 0.0, "image_ref": "x",
                         "shown": shown, "selected": selected, "comments": tagged.astype(int), "commenters": 0,
                         "top_tag": top_tag, "top_tag_share": np.where(tagged, 1.0, np.nan)})[is_subject]
    fraction, ci_low, ci_high = wilson_sql("selected", "shown")
    con = duckdb.connect(str(layout.warehouse))
    try:
        ensure_consensus_schema(con)           # consensus.subject_consensus is the view over the three tables
        con.register("c", cons)
        con.execute("INSERT INTO consensus.subject_identity (subject_id, image_id, ra, dec, image_ref) "
                    "SELECT subject_id, image_id, ra, dec, image_ref FROM c")
        con.execute("INSERT INTO consensus.volunteer_consensus (subject_id, shown, selected, fraction, ci_low, "
                    f"ci_high, pages) SELECT subject_id, shown, selected, {fraction}, {ci_low}, {ci_high}, shown "
                    "FROM c")
        con.execute("INSERT INTO consensus.talk_consensus (subject_id, comments, commenters, top_tag, top_tag_share) "
                    "SELECT subject_id, comments, commenters, top_tag, top_tag_share FROM c WHERE comments > 0")
        con.execute("INSERT INTO raw.subjects (subject_id, object_id) SELECT subject_id, image_id FROM c")
    finally:
        con.close()
    layout.sample_dir.mkdir(parents=True)
    pd.DataFrame({"object_id": ids, "batch": batch, "label": label, "is_odd": kind == "oddity",
                  "is_artifact": kind == "artifact"}).to_csv(layout.truth_file, index=False)
    return {"ids": ids, "kind": kind, "is_subject": is_subject, "subject_ids": sid}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis") / "data"
    root.mkdir()
    info = build_world(root)
    return root, info


@pytest.fixture(scope="module")
def materialised(world):
    import dagster as dg

    from ww_assets.defs.analysis.comparison import consensus_vs_score
    from ww_assets.defs.analysis.latent_map import latent_umap
    from ww_assets.defs.analysis.next_round import next_volunteer_round
    from ww_assets.defs.analysis.plots import plots
    from ww_assets.defs.analysis.similarity import more_like_this, similar_images
    from ww_assets.defs.resources import StorageResource

    root, info = world
    res = dg.materialize(
        [latent_umap, similar_images, consensus_vs_score, plots, next_volunteer_round, more_like_this],
        resources={"storage": StorageResource(root=str(root))},
        run_config={"ops": {
            "latent_umap": {"config": {"n_epochs": 100}},
            "consensus_vs_score": {"config": {"n_boot": 300}},
            "next_volunteer_round": {"config": {"n_subjects": 20, "round_name": "test-round"}},
            "more_like_this": {"config": {"subject_id": int(info["subject_ids"][4]), "k": 5}},
        }},
        raise_on_error=True,
    )
    return root, info, res


def test_everything_materialises_and_checks_pass(materialised):
    root, info, res = materialised
    assert res.success
    checks = {e.check_name: e.passed for e in res.get_asset_check_evaluations()}
    assert checks == {"neighbours_complete": True, "comparison_table_complete": True,
                      "simulated_volunteers_recovered": True}


def test_umap_covers_every_image(materialised):
    root, info, _ = materialised
    u = pd.read_parquet(root / "analysis" / "latent_umap.parquet")
    assert len(u) == len(info["ids"]) and set(u["image_id"]) == set(info["ids"])
    assert np.isfinite(u[["umap_x", "umap_y"]].to_numpy()).all()
    # The three latent clusters stay apart on the map: each image's nearest map neighbour shares its kind.
    from sklearn.neighbors import NearestNeighbors

    kind = pd.Series(info["kind"], index=info["ids"]).loc[u["image_id"]].to_numpy()
    xy = u[["umap_x", "umap_y"]].to_numpy()
    nn = NearestNeighbors(n_neighbors=2).fit(xy).kneighbors(xy, return_distance=False)[:, 1]
    assert (kind[nn] == kind).mean() > 0.95


def test_similarity_puts_planted_twins_first(materialised):
    root, info, _ = materialised
    s = pd.read_parquet(root / "analysis" / "similar_images.parquet")
    ids = info["ids"]
    first_two = s[(s["image_id"] == ids[4]) & (s["rank"] <= 2)]["neighbour_id"].tolist()
    assert sorted(first_two) == sorted([ids[5], ids[6]])
    # "More like this" by Zooniverse subject id resolves to the image and returns the twins first.
    mlt = pd.read_parquet(root / "analysis" / "more_like_this" / f"{ids[4]}.parquet")
    assert mlt["image_id"].iloc[0] == ids[4] and mlt["rank"].iloc[0] == 0
    assert set(mlt["image_id"].iloc[1:3]) == {ids[5], ids[6]}
    assert (root / "plots" / "more_like_this" / f"{ids[4]}.png").stat().st_size > 5000


def test_comparison_recovers_the_constructed_truth(materialised):
    root, info, _ = materialised
    t = pd.read_parquet(root / "analysis" / "consensus_vs_score.parquet")
    from ww_assets.analysis.comparison import COMPARISON_COLUMNS

    assert list(t.columns) == COMPARISON_COLUMNS
    assert list(t["score"]) == ["image_score", "feature_score", "anomaly_score"]
    for _, r in t.iterrows():
        assert r["spearman_ci_low"] <= r["spearman_rho"] <= r["spearman_ci_high"]
        assert r["auroc_ci_low"] <= r["auroc"] <= r["auroc_ci_high"]
    bc = pd.read_parquet(root / "analysis" / "consensus_by_class.parquet")
    k = bc[bc["grouping"] == "kind"].set_index("class")
    assert k.loc["oddity", "fraction_ci_low"] > k.loc["normal", "fraction_ci_high"]
    assert k.loc["artifact", "score_sigma_ci_low"] > k.loc["oddity", "score_sigma_ci_high"]
    assert k.loc["artifact", "fraction_ci_high"] < k.loc["oddity", "fraction_ci_low"]
    model = json.loads((root / "analysis" / "interest_model.json").read_text())
    assert model["fitted"]
    cv = pd.DataFrame(model["summary"]).set_index("model")
    # The map separates oddities from artifacts, which the score alone cannot: position must help.
    assert cv.loc["logistic: scores + map position", "cv_auroc_mean"] > cv.loc["logistic: scores", "cv_auroc_mean"]


def test_plots_written_and_non_empty(materialised):
    root, _, res = materialised
    expected = {"umap_anomaly", "umap_volunteer_fraction", "umap_top_tag", "umap_injected_class", "interest_map",
                "score_distributions", "fraction_vs_anomaly", "roc_curves", "gallery_machine_top",
                "gallery_volunteer_top", "gallery_machine_only", "gallery_volunteer_only", "by_injected_class",
                "score_by_injected_kind"}
    from PIL import Image

    for name in expected:
        path = root / "plots" / f"{name}.png"
        assert path.stat().st_size > 10_000, name
        with Image.open(path) as im:
            assert im.size[0] > 400 and im.size[1] > 200
            assert np.asarray(im.convert("L")).std() > 5, f"{name} looks blank"
    mat = [e for e in res.get_asset_materialization_events() if e.asset_key.path == ["plots"]][0]
    md = mat.event_specific_data.materialization.metadata
    assert expected <= set(md) and md["roc_curves"].value.startswith("![roc_curves](data:image/webp;base64,")


def test_every_plot_of_the_analysis_world_keeps_the_habits(materialised):
    """Each figure the plots asset draws, re-drawn from the analysis files: no text outside the figure, a colour bar
    wherever a colour scale is used, a title that names a line only when one is drawn (the embedded sample's own
    plots: ops/test_sample_plots.py)."""
    from ww_assets.plotting.report import make_plots
    from ww_assets.plotting.style import capture_figures
    from ww_assets_tests.support.figures import habit_problems

    root, _, _ = materialised
    with capture_figures() as figs:
        paths = make_plots(StorageLayout(root))
    assert len(paths) >= 14 and set(paths.values()) <= set(figs)
    problems, scaled = habit_problems(paths, figs)
    assert problems == []
    assert {"umap_anomaly", "umap_volunteer_fraction", "interest_map"} <= scaled     # the check looked


def test_next_round_offers_only_unseen_images_as_a_valid_manifest(materialised):
    root, info, _ = materialised
    from ww_assets.analysis.next_round import validate_manifest

    manifest = root / "analysis" / "next_round" / "manifest.csv"
    assert validate_manifest(manifest) == []
    m = pd.read_csv(manifest, dtype={"object_id": str})
    assert len(m) == 20 and m["object_id"].is_unique
    seen = set(info["ids"][info["is_subject"]])
    assert not (set(m["object_id"]) & seen)
    assert (m["#selection"] == "explore").sum() == 2
    assert m.columns[0] == "image" and m["#round"].eq("test-round").all()


from ww_assets_tests.support.loopback_zooniverse import loopback_exports, loopback_zooniverse  # noqa: E402,F401  (fixtures)


def test_next_round_asset_uploads_when_configured(materialised, loopback_zooniverse):
    """The asset's live path: credentials from the environment, subject set created, subjects uploaded."""
    import dagster as dg

    from ww_assets.defs.analysis.next_round import next_volunteer_round
    from ww_assets.defs.resources import StorageResource

    root, info, _ = materialised
    server = loopback_zooniverse
    res = dg.materialize(
        [next_volunteer_round], resources={"storage": StorageResource(root=str(root))},
        run_config={"ops": {"next_volunteer_round": {"config": {
            "n_subjects": 5, "round_name": "live-test", "upload": True, "project_id": server.project_id,
            "subject_set_name": "W&W round 2"}}}})
    assert res.success
    md = res.get_asset_materialization_events()[0].event_specific_data.materialization.metadata
    assert md["subjects_created"].value == 5 and md["uploaded"].value is True
    (record,) = server.subject_sets.values()
    assert record["display_name"] == "W&W round 2" and len(record["links"]["subjects"]) == 5
    assert len(server.uploads) == 5
    seen = set(info["ids"][info["is_subject"]])
    assert not ({s["metadata"]["object_id"] for s in server.subjects.values()} & seen)
    # Credentials never reach the metadata.
    assert server.password not in repr(md)
