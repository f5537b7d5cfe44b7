"""Scoring image batches through Dagster: scores, latents, release formats, quarantine, re-runs, normalisation."""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import torch

from ww_assets.defs.analysis.detection import detection_quality
from ww_assets.defs.images.assets import cutouts
from ww_assets.defs.images.partitions import image_batches
from ww_assets.defs.resources import ImageSourceResource, SampleResource, StorageResource
from ww_assets.defs.scores.assets import AnomalyScoreConfig, anomaly_scores_normalised, score_batch
from ww_assets.images import cutouts as imaging
from ww_assets.images.lupton import IMAGE_SIZE, lupton_rgb
from ww_assets.images.sources import ImageSourceError
from ww_assets.model.checkpoints import save_wgan
from ww_assets.model.networks import WGAN, WGANConfig
from ww_assets.scores import release
from ww_assets.scores.batches import score_cutouts
from ww_assets.storage import (LATENTS_FILE, RELEASE_SCORES_FILE, SCORE_CONFIG_FILE, SCORE_HISTOGRAM_FILE,
                               SCORES_FILE, StorageLayout)

S = IMAGE_SIZE


def galaxies(n: int, seed: int) -> np.ndarray:
    """(n, 3, S, S) float32 g, r, i fluxes: an elliptical blob with random position, size and colour on noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:S, :S].astype(np.float32)
    out = rng.normal(0, 0.03, (n, 3, S, S)).astype(np.float32)
    for k in range(n):
        x0, y0 = rng.uniform(40, 56, 2)
        sx, sy = rng.uniform(3, 9, 2)
        blob = np.exp(-((xx - x0) ** 2 / (2 * sx**2) + (yy - y0) ** 2 / (2 * sy**2)))
        out[k] += blob * rng.uniform(0.5, 3.0, 3)[:, None, None].astype(np.float32)
    return out


def write_batch(folder, ids, bands) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "bands_gri.npy", bands)
    pd.DataFrame({"object_id": ids, "ra": 150.0, "dec": 2.0}).to_csv(folder / "catalog.csv", index=False)


@pytest.fixture
def model_dir(storage_root):
    """A fixed random model (no training: seconds, not minutes). At PyTorch's default init the reconstruction is
    almost the same grey image whatever the input, which makes the image score blind to where pixels are; with
    every weight x3 the latents and reconstructions follow the input, as a trained model's do."""
    torch.manual_seed(0)
    model = WGAN(WGANConfig.preset("ci")).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return save_wgan(model, StorageLayout(storage_root).model_dir, card={"note": "test model, random weights x3"})


@pytest.fixture
def source(tmp_path):
    """Two batches of synthetic cutouts; b1 has one NaN image and one thumbnail of the wrong size."""
    root = tmp_path / "cutouts"
    bands = galaxies(12, 1)
    bands[3, 1, 10, 10] = np.nan
    write_batch(root / "b1", [f"{100 + k}" for k in range(12)], bands)
    from PIL import Image

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(root / "b1" / "999.png")
    write_batch(root / "b2", [f"{200 + k}" for k in range(6)], galaxies(6, 2))
    return root


def resources(storage_root, source, release_dir=None):
    return {"storage": StorageResource(root=str(storage_root)), "sample": SampleResource(size="tiny"),
            "images": ImageSourceResource(source=str(source), release=str(release_dir) if release_dir else None)}


def run(assets, instance, res, batch, config=None):
    run_config = {"ops": {"score_batch": {"config": config}}} if config else None
    return dg.materialize(assets, partition_key=batch, instance=instance, resources=res, run_config=run_config)


def test_scores_finite_deterministic_and_see_flips_and_shifts(model_dir):
    from ww_assets.model.checkpoints import load_wgan

    wgan = load_wgan(model_dir, device="cpu")
    images = lupton_rgb(galaxies(8, 5))
    score_cfg, device = AnomalyScoreConfig(device="cpu", batch_size=3).resolve()
    assert device.type == "cpu" and score_cfg.precision == "fp32"            # "auto" is fp32 off the GPU
    first = score_cutouts(wgan, images, score_cfg, device, chunk=5)
    again = score_cutouts(wgan, images.copy(), score_cfg, device, chunk=5)
    regrouped = score_cutouts(wgan, images, score_cfg, device, chunk=8)
    for a, b, c in zip(first[:4], again[:4], regrouped[:4]):
        assert np.isfinite(a).all()
        np.testing.assert_array_equal(a, b)                  # same model, same images, same batches: same bits
        np.testing.assert_allclose(a, c, rtol=1e-6)          # other batch sizes: other kernels, float rounding
    assert first[3].shape == (8, 128) and first[3].dtype == np.float32
    # a mirrored or shifted galaxy is another image: every score moves by far more than float rounding (the
    # difference between batchings above is ~1e-7 relative)
    flipped = score_cutouts(wgan, np.ascontiguousarray(images[:, :, :, ::-1]), score_cfg, device, chunk=5)
    shifted = score_cutouts(wgan, np.roll(images, (11, 11), axis=(2, 3)), score_cfg, device, chunk=5)
    for other in (flipped, shifted):
        change = np.abs(other[2] - first[2]) / np.abs(first[2])
        assert change.min() > 5e-6 and np.median(change) > 5e-5
        assert np.abs(other[3] - first[3]).max() > 1e-3


def test_partition_scores_release_formats_quarantine_and_rerun(storage_root, model_dir, source):
    layout = StorageLayout(storage_root)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(image_batches.name, ["b1", "b2"])
    res = resources(storage_root, source)
    result = run([cutouts, score_batch], instance, res, "b1", {"device": "cpu", "batch_size": 4, "log_every": 1,
                                                               "formula": "hsc"})
    assert result.success

    quarantine = imaging.load_quarantine(layout.images_dir("b1"))
    assert set(quarantine["image_id"]) == {"103", "999"}
    folder = layout.scores_dir("b1")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [SCORES_FILE, RELEASE_SCORES_FILE, LATENTS_FILE, SCORE_CONFIG_FILE, SCORE_HISTOGRAM_FILE])
    frame, latents, config = release.read_scores_folder(folder)
    expected = [f"{100 + k}" for k in range(12) if k != 3]
    assert list(frame["image_id"]) == expected                        # quarantined images absent, catalog order
    assert latents.shape == (11, 128) and latents.dtype == np.float32
    assert config["formula"] == "hsc" and config["lam"] == 0.3 and config["precision"] == "fp32"
    assert config["source"] == "model" and config["model_fingerprint"]
    # the release formats round-trip to exactly our table
    back = release.read_release_run(folder / RELEASE_SCORES_FILE, folder / LATENTS_FILE)
    assert list(back.image_ids) == expected
    for col in release.SCORE_COLUMNS:
        np.testing.assert_array_equal(getattr(back, col), frame[col].to_numpy())
    np.testing.assert_array_equal(back.latents, latents)
    # anomaly = 0.7 image + 0.3 feature (hsc)
    np.testing.assert_allclose(frame["anomaly_score"], 0.7 * frame["image_score"] + 0.3 * frame["feature_score"],
                               rtol=1e-5)

    mats = {e.asset_key.to_user_string(): e.materialization.metadata
            for e in result.get_asset_materialization_events()}
    assert mats["anomaly_scores"]["images_scored"].value == 11
    assert mats["anomaly_scores"]["images_quarantined"].value == 2
    assert "fp32" in mats["anomaly_scores"]["precision"].value
    assert mats["anomaly_scores"]["anomaly_score/n"].value == 11  # numbers as numbers: the UI charts them
    assert isinstance(mats["anomaly_scores"]["anomaly_score/p99"].value, float)
    assert "anomaly_score_histogram" in mats["anomaly_scores"]
    assert mats["cutouts"]["quarantine_reasons"].value == {"non-finite pixels": 1, "wrong size": 1}
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"cutouts_usable": False, "scores_complete": True}    # 2 of 13 quarantined > 5%

    # re-materialise after the source changed (fewer images, another formula): replaced whole, no leftovers
    write_batch(source / "b1", [f"{100 + k}" for k in range(5)], galaxies(5, 9))
    (source / "b1" / "999.png").unlink()
    result = run([cutouts, score_batch], instance, res, "b1",
                 {"device": "cpu", "formula": "fanogan", "kappa": 1.0})
    assert result.success
    frame2, latents2, config2 = release.read_scores_folder(folder)
    assert list(frame2["image_id"]) == [f"{100 + k}" for k in range(5)]
    assert frame2["image_id"].is_unique and latents2.shape == (5, 128)
    assert config2["formula"] == "fanogan"
    assert pd.read_csv(folder / RELEASE_SCORES_FILE).shape == (5, 4)
    assert imaging.load_quarantine(layout.images_dir("b1")).empty
    assert sorted(p.name for p in (storage_root / "scores").iterdir()) == ["b1"]      # no temp/old folders
    assert sorted(p.name for p in (storage_root / "images").iterdir()) == ["b1"]
    np.testing.assert_allclose(frame2["anomaly_score"], frame2["image_score"] + frame2["feature_score"], rtol=1e-5)


def write_published_run(rel, rng, n: int = 9) -> pd.DataFrame:
    """One run of the published W&W release as it is distributed: wandw_run1.csv (its own column names) and
    wandw_run1.npy, written as the release has them (not with our writers)."""
    rel.mkdir()
    published = pd.DataFrame({"image_identifier": [f"3641144854027{k:04d}" for k in range(n)],
                              "image score": rng.gamma(2, 1, n), "feature score": rng.gamma(2, 1, n),
                              "anomaly score": rng.gamma(2, 1, n)})
    published.to_csv(rel / "wandw_run1.csv", index=False)
    np.save(rel / "wandw_run1.npy", rng.uniform(-1, 1, (n, 128)).astype(np.float32))
    return published


def test_release_batches_and_normalisation(storage_root, model_dir, source, tmp_path):
    rel = tmp_path / "release"
    rng = np.random.default_rng(3)
    n = 9
    published = write_published_run(rel, rng, n)
    layout = StorageLayout(storage_root)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(image_batches.name, ["b2", "release-wandw_run1"])
    res = resources(storage_root, source, rel)
    assert run([cutouts, score_batch], instance, res, "b2", {"device": "cpu"}).success
    result = run([cutouts, score_batch], instance, res, "release-wandw_run1")
    assert result.success
    assert len(imaging.load_cutouts(layout.images_dir("release-wandw_run1"))[1]) == 0   # no images in a release
    frame, latents, config = release.read_scores_folder(layout.scores_dir("release-wandw_run1"))
    assert config["source"] == "release"
    np.testing.assert_array_equal(frame["anomaly_score"], published["anomaly score"])
    np.testing.assert_array_equal(latents, np.load(rel / "wandw_run1.npy"))

    norm = dg.materialize([anomaly_scores_normalised], instance=instance, resources=res)
    assert norm.success
    out = pd.read_parquet(StorageLayout(storage_root).normalised_scores_file)
    assert len(out) == n + 6 and out.groupby("score_family").size().sort_values().tolist() == [6, n]
    for _, sub in out.groupby("score_family"):                          # each family normalised on its own
        assert abs(sub["anomaly_score_sigma"].mean()) < 1e-9
        assert sorted(sub["anomaly_rank"]) == list(range(1, len(sub) + 1))
    meta = norm.get_asset_materialization_events()[0].materialization.metadata
    assert meta["dagster/row_count"].value == n + 6 and len(meta["score_families"].value) == 2

    # a CSV whose rows do not match its npy fails the batch, naming both files
    np.save(rel / "wandw_run1.npy", rng.uniform(-1, 1, (n - 1, 128)).astype(np.float32))
    with pytest.raises(release.ReleaseError, match=r"wandw_run1\.csv has 9 rows but .*wandw_run1\.npy has 8"):
        run([score_batch], instance, res, "release-wandw_run1")


def test_release_batch_without_its_release_folder_fails_naming_the_setting(storage_root, model_dir, source,
                                                                           tmp_path):
    rel = tmp_path / "release"
    write_published_run(rel, np.random.default_rng(3))
    layout = StorageLayout(storage_root)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(image_batches.name, ["release-wandw_run1"])
    assert run([cutouts, score_batch], instance, resources(storage_root, source, rel), "release-wandw_run1").success
    loaded = (layout.scores_dir("release-wandw_run1") / RELEASE_SCORES_FILE).read_bytes()
    # the release folder is no longer configured: the batch fails, naming the setting, and keeps its scores
    with pytest.raises(ImageSourceError, match="images.release"):
        run([score_batch], instance, resources(storage_root, source), "release-wandw_run1")
    assert (layout.scores_dir("release-wandw_run1") / RELEASE_SCORES_FILE).read_bytes() == loaded


def test_detection_quality_reads_truth_only_for_the_sample(storage_root, model_dir, source, tmp_path):
    layout = StorageLayout(storage_root)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(image_batches.name, ["b2"])
    res = resources(storage_root, source)
    assert run([cutouts, score_batch], instance, res, "b2", {"device": "cpu"}).success
    assert dg.materialize([anomaly_scores_normalised], instance=instance, resources=res).success
    # real images: no truth, nothing evaluated
    result = dg.materialize([detection_quality], instance=instance, resources=res)
    assert "truth" in result.get_asset_materialization_events()[0].materialization.metadata
    # the sample: truth.csv in the sample folder is read (and only here)
    layout.sample_dir.mkdir(parents=True)
    pd.DataFrame({"object_id": [f"{200 + k}" for k in range(6)], "batch": "b2",
                  "label": ["normal"] * 3 + ["merger", "ring", "merger"], "is_odd": [0, 0, 0, 1, 1, 1],
                  "is_artifact": 0}).to_csv(layout.sample_dir / "truth.csv", index=False)
    res["images"] = ImageSourceResource(source="sample")
    result = dg.materialize([detection_quality], instance=instance, resources=res)
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert 0.0 <= meta["auroc_anomaly_score"].value <= 1.0 and meta["injected_images"].value == 3
    metrics = pd.read_parquet(layout.analysis_dir / "detection_quality.parquet")
    assert set(metrics["target"]) == {"all_injected", "astrophysical", "artifact", "merger", "ring"}
    assert (layout.plots_dir / "detection_quality.png").exists()


def test_score_config_is_validated(model_dir):
    with pytest.raises(ValueError, match="precision"):
        AnomalyScoreConfig(device="cpu", precision="fp16").resolve()
    with pytest.raises(ValueError, match="formula"):
        AnomalyScoreConfig(device="cpu", formula="l2").resolve()
    cfg, _ = AnomalyScoreConfig(device="cpu", refine_steps=10).resolve()
    assert "10 Adam steps" in cfg.describe()
    assert json.loads(json.dumps(cfg.to_dict()))["refine_steps"] == 10


def test_mostly_quarantined_batch_is_not_scored(storage_root, model_dir, source):
    """The blocking ``cutouts_usable`` check: a batch with more than half its images unusable stops at its cutouts
    (written, with the quarantine and the reason) and is not scored in the same run; a mildly bad one is scored."""
    bands = galaxies(6, 3)
    bands[:4, 0, 5, 5] = np.nan                                       # 4 of 6 images unusable
    write_batch(source / "bad", [f"{300 + k}" for k in range(6)], bands)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(image_batches.name, ["bad", "b2"])
    res = resources(storage_root, source)
    result = dg.materialize([cutouts, score_batch], partition_key="bad", instance=instance, resources=res,
                            raise_on_error=False)
    assert not result.success
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert "4 of 6 images" in check.description and "not scored" in check.description
    materialised = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialised == {"cutouts"}
    layout = StorageLayout(storage_root)
    assert len(imaging.load_quarantine(layout.images_dir("bad"))) == 4
    assert not layout.scores_dir("bad").exists()
    # the clean batch of the same source goes through, check and scores
    result = run([cutouts, score_batch], instance, res, "b2", {"device": "cpu", "formula": "hsc"})
    assert result.success and layout.scores_file("b2").exists()
