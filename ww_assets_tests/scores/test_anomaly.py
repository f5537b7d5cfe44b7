"""The score core: formulas checked against a direct computation, batching, refinement, input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ww_assets.model.networks import WGAN, ImageDataError, WGANConfig
from ww_assets.scores.anomaly import ScoreConfig, ScoreResult, reconstruct, score_images

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def model() -> WGAN:
    torch.manual_seed(5)
    return WGAN(WGANConfig.preset("ci")).eval()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (13, 3, 96, 96), dtype=np.uint8)


def _direct(model: WGAN, images: np.ndarray):
    """The residuals written out by hand, one image at a time, in float64."""
    out = []
    with torch.no_grad():
        for img in images:
            x = torch.from_numpy(img[None].astype(np.float32) / 255)
            z = model.encoder(x)
            rec = model.generator(z)
            dx = (x - rec).double().flatten()
            df = (model.critic.features(x) - model.critic.features(rec)).double().flatten()
            out.append((dx, df, z[0]))
    return out


def test_hsc_and_fanogan_formulas(model, images):
    direct = _direct(model, images)
    hsc = score_images(model, images, ScoreConfig(formula="hsc", lam=0.3, batch_size=4))
    fan = score_images(model, images, ScoreConfig(formula="fanogan", kappa=1.0, batch_size=4))
    img_l1 = np.array([d[0].abs().sum().item() for d in direct])
    feat_l1 = np.array([d[1].abs().sum().item() for d in direct])
    img_mse = np.array([d[0].pow(2).mean().item() for d in direct])
    feat_mse = np.array([d[1].pow(2).mean().item() for d in direct])
    np.testing.assert_allclose(hsc.image_score, img_l1, rtol=1e-4)
    np.testing.assert_allclose(hsc.feature_score, feat_l1, rtol=1e-4)
    np.testing.assert_allclose(hsc.anomaly_score, 0.7 * img_l1 + 0.3 * feat_l1, rtol=1e-4)
    np.testing.assert_allclose(fan.image_score, img_mse, rtol=1e-4)
    np.testing.assert_allclose(fan.feature_score, feat_mse, rtol=1e-4)
    np.testing.assert_allclose(fan.anomaly_score, img_mse + feat_mse, rtol=1e-4)
    np.testing.assert_allclose(hsc.latents, np.stack([d[2].numpy() for d in direct]), rtol=1e-5, atol=1e-6)
    for res in (hsc, fan):
        assert isinstance(res, ScoreResult) and len(res) == len(images)
        for arr in (res.image_score, res.feature_score, res.anomaly_score):
            assert arr.dtype == np.float64 and arr.shape == (len(images),)
        assert res.latents.dtype == np.float32 and res.latents.shape == (len(images), 128)
        assert res.device.startswith("cpu") and res.seconds > 0


def test_batching_and_input_kinds_do_not_change_scores(model, images):
    ref = score_images(model, images, ScoreConfig(batch_size=64))
    small = score_images(model, images, ScoreConfig(batch_size=3))
    np.testing.assert_allclose(small.anomaly_score, ref.anomaly_score, rtol=1e-5)
    tensor = score_images(model, torch.from_numpy(images), ScoreConfig(batch_size=64))
    np.testing.assert_array_equal(tensor.anomaly_score, ref.anomaly_score)
    floats = score_images(model, images.astype(np.float32) / 255, ScoreConfig(batch_size=64))
    np.testing.assert_allclose(floats.anomaly_score, ref.anomaly_score, rtol=1e-6)
    seen = []
    score_images(model, images, ScoreConfig(batch_size=5), progress=lambda done, total: seen.append((done, total)))
    assert seen == [(5, 13), (10, 13), (13, 13)]


def test_bf16_and_channels_last_stay_close(model, images):
    ref = score_images(model, images, ScoreConfig())
    fast = score_images(model, images, ScoreConfig(precision="bf16", channels_last=True))
    np.testing.assert_allclose(fast.anomaly_score, ref.anomaly_score, rtol=0.05)
    assert fast.anomaly_score.dtype == np.float64
    model.to(memory_format=torch.contiguous_format)


@pytest.mark.parametrize("formula, lowered", [("hsc", "anomaly_score"), ("local", "image_score")])
def test_refinement_lowers_each_misfit_and_is_per_image(model, images, formula, lowered):
    """Refinement lowers what it optimises: the anomaly score (published formulas) or the chi-square under the
    noise model ("local", its image score); each image on its own."""
    cfg = ScoreConfig(formula=formula, refine_steps=5, refine_lr=0.05, batch_size=13)
    single = score_images(model, images, ScoreConfig(formula=formula))
    refined = score_images(model, images, cfg)
    assert np.mean(getattr(refined, lowered) < getattr(single, lowered)) >= 0.8
    assert not np.allclose(refined.latents, single.latents)
    # Adam works element by element: refining in batches of 4 gives each image the same result as all at once
    split = score_images(model, images, cfg.__class__(**{**cfg.__dict__, "batch_size": 4}))
    np.testing.assert_allclose(split.anomaly_score, refined.anomaly_score, rtol=1e-4)
    # refinement gives the networks no gradients
    assert all(p.grad is None for p in model.parameters())


def test_config_validation_and_record():
    cfg = ScoreConfig(formula="fanogan", refine_steps=10)
    rec = cfg.to_dict()
    assert rec["formula"] == "fanogan" and rec["refine_steps"] == 10 and "10 Adam steps" in rec["description"]
    assert ScoreConfig.from_dict(rec) == cfg
    assert "0.7 * image + 0.3 * feature" in ScoreConfig(formula="hsc").describe()
    assert "matched-filter (sigma 1.5 px)" in ScoreConfig(formula="local").describe()
    for bad in ({"formula": "l2"}, {"lam": 1.5}, {"refine_steps": -1}, {"precision": "fp16"}, {"batch_size": 0},
                {"psf_px": 0}):
        with pytest.raises(ValueError, match="invalid ScoreConfig"):
            ScoreConfig(**bad)


def test_bad_images_name_the_source(model, images):
    with pytest.raises(ImageDataError, match=r"batch_003/cutouts\.npy: expected shape .*channels last"):
        score_images(model, images.transpose(0, 2, 3, 1), source="batch_003/cutouts.npy")
    with pytest.raises(ImageDataError, match="1 channels"):
        score_images(model, images[:, :1])
    nan = images.astype(np.float32) / 255
    nan[7, 2, 50, 50] = np.nan
    with pytest.raises(ImageDataError, match=r"NaN.*index 7"):
        score_images(model, nan)


def test_reconstruct_gives_uint8_images(model, images):
    rec = reconstruct(model, images[:3])
    assert rec.dtype == np.uint8 and rec.shape == (3, 3, 96, 96)
