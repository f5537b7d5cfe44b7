"""WGAN-GP + izi_f encoder training: determinism on CPU, losses that move the right way, bad input."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from ww_assets.model.networks import ImageDataError
from ww_assets.model.training import ImageSampler, TrainProgress, train, train_encoder, train_gan
from ww_assets_tests.support.models import TINY, blobs

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return blobs(48)


def test_a_few_steps_lower_the_critic_loss_deterministically(images):
    model_a, hist_a, _, _ = train_gan(images, TINY, device="cpu")
    model_b, hist_b, _, _ = train_gan(images, TINY, device="cpu")
    for key in ("critic_loss", "wasserstein", "gradient_penalty", "generator_loss"):
        assert np.array_equal(hist_a[key], hist_b[key]), key  # bit for bit
    for (name, a), (_, b) in zip(model_a.state_dict().items(), model_b.state_dict().items()):
        assert torch.equal(a, b), name
    crit = hist_a["critic_loss"]
    assert len(crit) == TINY.generator_iterations and np.all(np.isfinite(crit))
    assert crit[-1] < crit[0] - 1.0, crit  # the critic learns to tell real from fake
    assert hist_a["wasserstein"][-1] > hist_a["wasserstein"][0]
    # a different seed gives a different run
    _, hist_c, _, _ = train_gan(images, TINY.replace(seed=4), device="cpu")
    assert not np.array_equal(hist_a["critic_loss"], hist_c["critic_loss"])


def test_encoder_learns_with_g_and_d_frozen(images):
    model, _, _, _ = train_gan(images, TINY, device="cpu")
    untouched = copy.deepcopy(model)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("encoder.")}
    cfg = TINY.replace(encoder_iterations=12)
    model, hist, _, rate = train_encoder(images, model, cfg, device="cpu")
    after = {k: v for k, v in model.state_dict().items() if not k.startswith("encoder.")}
    assert all(torch.equal(before[k], after[k]) for k in before)  # G and D untouched
    assert all(p.requires_grad for p in model.parameters())  # frozen only while training
    loss = hist["encoder_loss"]
    np.testing.assert_allclose(loss, hist["image_loss"] + cfg.kappa * hist["feature_loss"], rtol=1e-5)
    # Learning, against a baseline on the same minibatches: the same encoder run at lr 0 (never updated). Minibatch
    # losses scatter by ~0.007 from step to step while 12 steps gain ~0.0016, so comparing the last steps' losses with
    # the first ones' is a coin flip (it also passes with an encoder that never learns); the paired gain has no
    # minibatch noise: 0 at the first step (same model, same batch), then positive at every step and growing.
    _, still, _, _ = train_encoder(images, untouched, cfg.replace(encoder_lr=0.0), device="cpu")
    gain = still["encoder_loss"] - loss
    assert gain[0] == 0 and (gain[1:] > 0).all() and gain[-1] > 2 * gain[1], gain
    assert rate > 0


def test_train_progress_and_card(images):
    seen: list[TrainProgress] = []
    result = train(images, TINY, device="cpu", progress=seen.append, progress_every_s=3600)
    phases = [(p.phase, p.step) for p in seen]
    # first and last step of each phase, nothing in between at this rate
    assert phases == [("wgan", 1), ("wgan", 6), ("encoder", 1), ("encoder", 6)]
    msg = seen[1].message()
    assert "wgan 6/6" in msg and "critic_loss" in msg and "images/s" in msg
    card = result.card()
    json.dumps(card)
    assert card["generator_iterations"] == 6 and card["encoder_iterations"] == 6
    assert card["n_training_images"] == len(images)
    assert card["device"].startswith("cpu") and card["precision"] == "fp32" and card["channels_last"] is False
    assert card["torch_version"] == torch.__version__
    assert set(card["final_losses"]) >= {"critic_loss", "generator_loss", "encoder_loss"}
    assert not result.wgan.training


def test_sampler_epochs_and_uncached_gather_match(images):
    parts = [images[:20], images[20:]]
    cached = ImageSampler(parts, torch.device("cpu"), seed=1)
    gathered = ImageSampler(parts, torch.device("cpu"), seed=1, cache_bytes=0)
    assert cached.cached is not None and gathered.cached is None
    seen = []
    for _ in range(6):  # 6 x 8 = one epoch of 48: every image exactly once
        a, b = cached.next(8), gathered.next(8)
        assert torch.equal(a, b)
        seen.append(a)
    epoch = torch.cat(seen)
    ref = torch.from_numpy(images).float() / 255
    idx = [int(torch.nonzero((ref == img).flatten(1).all(1))[0]) for img in epoch]
    assert sorted(idx) == list(range(48))


def test_bad_training_input_is_refused(images):
    with pytest.raises(ImageDataError, match=r"cutouts_a\.npy: expected shape \(N, 3, 96, 96\).*channels last"):
        train(images.transpose(0, 2, 3, 1), TINY, device="cpu", sources=["cutouts_a.npy"])
    floats = images.astype(np.float32) / 255
    with pytest.raises(ImageDataError, match="training expects uint8"):
        train(floats, TINY, device="cpu")
    with pytest.raises(ImageDataError, match="no training images"):
        ImageSampler([], torch.device("cpu"), seed=0)


def test_hybrid_warm_start_and_reconstruction_term(images):
    """The autoencoder warm start and the WGAN phase's reconstruction term train E with G (the encoder moves in
    the WGAN phase only when the term is on) and the warm start lowers the reconstruction loss against the same
    run at learning rate 0 (paired: same batches)."""
    noise = np.full((len(images), 3), 0.05, np.float32)
    flux = TINY.replace(upsample="resize", output="flux", observation="lupton_noise", generator_noise=0.0)
    cfg = flux.replace(autoencoder_iterations=10, reconstruction_weight=100.0)
    model, hist, _, _ = train_gan(images, cfg, device="cpu", noise=noise)
    assert len(hist["autoencoder_loss"]) == 10 and len(hist["reconstruction_loss"]) == cfg.generator_iterations
    _, still, _, _ = train_gan(images, cfg.replace(autoencoder_lr=0.0), device="cpu", noise=noise)
    gain = still["autoencoder_loss"] - hist["autoencoder_loss"]
    assert gain[0] == 0 and gain[-1] > 0, gain
    # without the term the WGAN phase leaves the encoder alone
    start = type(model)(flux)
    twin = copy.deepcopy(start)
    before = copy.deepcopy(start.encoder.state_dict())
    plain, _, _, _ = train_gan(images, flux, device="cpu", noise=noise, model=start)
    assert all(torch.equal(a, b) for a, b in zip(before.values(), plain.encoder.state_dict().values()))
    hybrid, _, _, _ = train_gan(images, flux.replace(reconstruction_weight=100.0), device="cpu", noise=noise,
                                model=twin)
    assert not all(torch.equal(a, b) for a, b in zip(before.values(), hybrid.encoder.state_dict().values()))
    with pytest.raises(ValueError, match="reconstruction_weight"):
        flux.replace(reconstruction_weight=-1.0)
