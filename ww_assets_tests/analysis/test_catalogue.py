"""The catalogue (FITS + Parquet) and the loader: built on the analysis test world (known positions, consensus and
twins), read back with astropy and pandas, cross-matched on the sky, and loaded through Dagster's IO manager."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ww_assets.analysis.catalogue import CATALOGUE_COLUMNS, build_catalogue, write_catalogue
from ww_assets.storage import StorageLayout, write_parquet
from ww_assets_tests.defs.test_analysis_assets import build_world


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    import dagster as dg

    from ww_assets.defs.analysis.catalogue import catalogue
    from ww_assets.defs.analysis.comparison import consensus_vs_score
    from ww_assets.defs.analysis.latent_map import latent_umap
    from ww_assets.defs.analysis.similarity import similar_images
    from ww_assets.defs.resources import StorageResource

    root = tmp_path_factory.mktemp("catalogue") / "data"
    root.mkdir()
    info = build_world(root)
    res = dg.materialize(
        [latent_umap, similar_images, consensus_vs_score, catalogue],
        resources={"storage": StorageResource(root=str(root))},
        run_config={"ops": {"latent_umap": {"config": {"n_epochs": 50}},
                            "consensus_vs_score": {"config": {"n_boot": 200}}}},
        raise_on_error=True)
    return root, info, res


def _positions(root) -> pd.DataFrame:
    layout = StorageLayout(root)
    return pd.concat([pd.read_parquet(layout.catalog_file(b)) for b in ("b0", "b1")]).set_index("image_id")


def test_fits_and_parquet_read_back_with_units_positions_and_provenance(built):
    import astropy.units as u
    from astropy.table import Table

    root, info, _ = built
    layout = StorageLayout(root)
    fits_t = Table.read(layout.analysis_file("catalogue_fits"))
    parq_t = Table.read(layout.analysis_file("catalogue"))          # null strings would raise TypeError here
    frame = pd.read_parquet(layout.analysis_file("catalogue"))
    n = len(info["ids"])
    assert len(fits_t) == len(parq_t) == len(frame) == n
    assert list(frame.columns) == list(CATALOGUE_COLUMNS) == fits_t.colnames == parq_t.colnames
    assert set(frame["object_id"]) == set(info["ids"]) and frame["object_id"].is_unique
    for t in (fits_t, parq_t):
        assert t["ra"].unit == u.deg and t["dec"].unit == u.deg
        assert t["ra"].dtype.kind == t["dec"].dtype.kind == "f" and t["ra"].dtype.itemsize == 8   # float64
    # provenance in the header (and in the Parquet's astropy metadata)
    for meta in (fits_t.meta, parq_t.meta):
        assert meta["RADESYS"] == "ICRS"
        assert "anomaly = 0.7 * image + 0.3 * feature" in meta["SCOREFRM"]
        assert meta["MODELFP"] == "analysis-test-world"
    assert parq_t["fraction_ci_low"].description.startswith("Wilson")
    # positions are the batch catalogs' float64 values, bit for bit (no text round trip, no float32)
    pos = _positions(root).loc[frame["object_id"]]
    np.testing.assert_array_equal(frame["ra"].to_numpy(), pos["ra"].to_numpy())
    np.testing.assert_array_equal(np.asarray(fits_t["dec"]), pos["dec"].to_numpy())
    assert (frame["position_source"] == "catalog").all()


def test_catalogue_matches_itself_on_the_sky(built):
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from astropy.table import Table

    root, _, _ = built
    t = Table.read(StorageLayout(root).analysis_file("catalogue_fits"))
    c = SkyCoord(ra=t["ra"], dec=t["dec"], frame="icrs")
    idx, sep, _ = c.match_to_catalog_sky(c, nthneighbor=1)
    assert (idx == np.arange(len(t))).all()
    assert (sep.to(u.arcsec).value == 0).all()
    # the second-nearest is another image: positions are distinct, so the match above means something
    _, sep2, _ = c.match_to_catalog_sky(c, nthneighbor=2)
    assert (sep2.to(u.arcsec).value > 0).all()


def test_consensus_talk_and_neighbours_agree_with_their_sources(built):
    from astropy.table import Table

    root, info, _ = built
    layout = StorageLayout(root)
    frame = pd.read_parquet(layout.analysis_file("catalogue")).set_index("object_id")
    table = pd.read_parquet(layout.analysis_file("image_table")).set_index("image_id").loc[frame.index]
    np.testing.assert_array_equal(frame["shown"], table["shown"])
    np.testing.assert_allclose(frame["fraction"], table["fraction"])
    np.testing.assert_allclose(frame["fraction_ci_low"], table["ci_low"])
    shown = frame["shown"] > 0
    assert (frame.loc[shown, "fraction_ci_low"] <= frame.loc[shown, "fraction"]).all()
    assert (frame.loc[shown, "fraction"] <= frame.loc[shown, "fraction_ci_high"]).all()
    subject = pd.Series(info["is_subject"], index=info["ids"]).loc[frame.index]
    assert frame["subject_id"].notna().to_numpy().tolist() == subject.to_numpy().tolist()
    assert frame["subject_id"].dtype == "Int64"
    fits_t = Table.read(layout.analysis_file("catalogue_fits"))
    assert int(fits_t["subject_id"].mask.sum()) == int((~subject).sum())          # masked in FITS, not 0
    # Talk: tags where the world put them, "" (never null) elsewhere
    assert (frame["top_tag"] == "").sum() > 0 and frame["top_tag"].notna().all()
    assert set(frame["top_tag"]) - {""} <= {"merger", "ring", "artifact", "spiral"}
    # ranks 1..n, in order of the scores
    for col in ("image_score", "feature_score", "anomaly_score"):
        r = frame.sort_values(f"{col}_rank")
        assert list(r[f"{col}_rank"]) == list(range(1, len(frame) + 1))
        assert r[col].is_monotonic_decreasing
    # the planted twins are each other's nearest neighbours in latent space
    ids = info["ids"]
    assert frame.loc[ids[4], "nearest_id"] in {ids[5], ids[6]}
    assert set(frame.loc[ids[4], "neighbour_ids"].split(",")[:2]) == {ids[5], ids[6]}
    assert frame["neighbour_ids"].str.count(",").eq(9).all()                     # k = 10 ids
    assert np.isfinite(frame[["umap_x", "umap_y", "predicted_interest"]].to_numpy()).all()


def test_metadata_row_count_schema_and_formula(built):
    _, info, res = built
    (mat,) = [e for e in res.get_asset_materialization_events() if e.asset_key.path == ["catalogue"]]
    md = mat.event_specific_data.materialization.metadata
    assert md["dagster/row_count"].value == len(info["ids"])
    schema = md["dagster/column_schema"].schema
    types = {c.name: c.type for c in schema.columns}
    assert list(types) == list(CATALOGUE_COLUMNS)
    assert types["ra"] == "float" and types["subject_id"] == "int" and types["top_tag"] == "string"
    assert "0.7 * image + 0.3 * feature" in md["score_formula"].value
    assert md["path"].value.endswith("catalogue.parquet") and md["fits"].value.endswith("catalogue.fits")


def test_positions_fall_back_to_the_subject_and_say_so(tmp_path):
    """An image whose batch has no catalog (a release batch) takes the subject's position; one with neither is
    NaN with position_source 'none', not dropped."""
    layout = StorageLayout(tmp_path)
    write_parquet(pd.DataFrame({
        "image_id": ["1", "2", "3"], "batch": ["b0", "release-x", "release-x"],
        "image_score": [1.0, 2.0, 3.0], "feature_score": [1.0, 2.0, 3.0], "anomaly_score": [1.0, 2.0, 3.0],
        "subject_id": [999999.0, 20.0, np.nan], "shown": [5, 5, 0], "selected": [1, 2, 0], "top_tag": ["ring", None, None],
    }), layout.analysis_file("image_table"))
    write_parquet(pd.DataFrame({"image_id": ["1"], "ra": [150.123456789012], "dec": [2.25]}),
                  layout.catalog_file("b0"))
    # subject metadata is text in raw.subjects; an unreadable position counts as none
    subjects = pd.DataFrame({"image_id": ["1", "2", "3"], "ra": ["0.0", "33.000000001", "n/a"],
                             "dec": ["0.0", "-4.5", "1.0"]})
    cat = build_catalogue(layout, subject_positions=subjects)
    f = cat.frame.set_index("object_id")
    assert f.loc["1", "ra"] == 150.123456789012 and f.loc["1", "position_source"] == "catalog"
    assert f.loc["2", "ra"] == 33.000000001 and f.loc["2", "position_source"] == "subject"
    assert np.isnan(f.loc["3", "ra"]) and f.loc["3", "position_source"] == "none"
    assert list(f["top_tag"]) == ["", "", "ring"]                      # rank order: 3, 2, 1
    assert any("no sky position" in n for n in cat.notes)
    assert any("no " in n and "score_config.json" in n for n in cat.notes)   # no score record: said, not hidden
    parquet_path, fits_path = write_catalogue(cat, layout)
    from astropy.table import Table

    assert len(Table.read(fits_path)) == len(Table.read(parquet_path)) == 3
    t = Table.read(fits_path)
    assert list(t["subject_id"].mask) == [True, False, False]                 # rank order: 3, 2, 1
    assert list(t["subject_id"].filled(-1)) == [-1, 20, 999999]              # astropy's default TNULL is 999999
    from astropy.io import fits

    header = fits.getheader(fits_path, "CATALOGUE")
    assert header["TNULL6"] == -1 and header["TTYPE6"] == "subject_id"
    assert all(len(header[f"TCOMM{i}"]) == len(d) for i, (_k, _u, d) in enumerate(CATALOGUE_COLUMNS.values(), 1))


def test_a_missing_image_table_names_the_asset(tmp_path):
    with pytest.raises(FileNotFoundError, match="consensus_vs_score"):
        build_catalogue(StorageLayout(tmp_path))


# --- the loader --------------------------------------------------------------------------------------------


def test_load_by_name_and_root_or_environment(built, monkeypatch):
    import ww_assets

    root, info, _ = built
    cat = ww_assets.load("catalogue", root)
    assert len(cat) == len(info["ids"]) and "ra" in cat.columns
    monkeypatch.setenv("WW_DATA_ROOT", str(root))
    pd.testing.assert_frame_equal(ww_assets.load("catalogue"), cat)
    assert len(ww_assets.load("image_table")) == len(cat)
    assert list(ww_assets.load("consensus_vs_score")["score"]) == ["image_score", "feature_score", "anomaly_score"]
    assert set(ww_assets.load("latent_umap")["image_id"]) == set(info["ids"])
    assert set(ww_assets.load("anomaly_scores", batch="b1")["batch"]) == {"b1"}
    assert len(ww_assets.load("anomaly_scores")) == len(info["ids"])
    assert ww_assets.load("latent_vectors", batch="b0").shape == (150, 128)
    assert len(ww_assets.load("subject_consensus")) == int(info["is_subject"].sum())
    assert ww_assets.load("interest_model")["fitted"] is True
    with pytest.raises(FileNotFoundError, match="next_volunteer_round"):
        ww_assets.load("next_round_picks")
    with pytest.raises(KeyError, match="known"):
        ww_assets.load("catalog")


def test_defs_load_asset_value_reads_the_catalogue(built, monkeypatch):
    """Through the code location's own IO manager, with the storage root from WW_DATA_ROOT."""
    import dagster as dg

    root, info, _ = built
    monkeypatch.setenv("WW_DATA_ROOT", str(root))
    from ww_assets.definitions import _definitions

    defs = _definitions()                          # built now, so its storage resource reads this WW_DATA_ROOT
    cat = defs.load_asset_value(["catalogue"])
    pd.testing.assert_frame_equal(cat, pd.read_parquet(StorageLayout(root).analysis_file("catalogue")))
    assert len(defs.load_asset_value("consensus_vs_score")) == 3
    from ww_assets.defs.images.partitions import image_batches

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(image_batches.name, ["b0", "b1"])
    scores = defs.load_asset_value("anomaly_scores", partition_key="b0", instance=instance)
    assert len(scores) == 150 and set(scores["batch"]) == {"b0"}
    from ww_assets.defs.loading import StorageIOManager

    assert isinstance(defs.resources["io_manager"], StorageIOManager)


def test_io_manager_accepts_nothing_but_none(tmp_path):
    import dagster as dg

    from ww_assets.defs.loading import StorageIOManager
    from ww_assets.defs.resources import StorageResource

    io = StorageIOManager(storage=StorageResource(root=str(tmp_path)))
    io.handle_output(dg.build_output_context(asset_key=dg.AssetKey("catalogue")), None)
    with pytest.raises(TypeError, match="catalogue: returned a DataFrame"):
        io.handle_output(dg.build_output_context(asset_key=dg.AssetKey("catalogue")), pd.DataFrame())
    with pytest.raises(FileNotFoundError, match="materialise the 'catalogue' asset"):
        io.load_input(dg.build_input_context(asset_key=dg.AssetKey("catalogue")))
