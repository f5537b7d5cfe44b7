"""The generator, critic and encoder of MODEL.md: shapes, ranges, config, input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ww_assets.model.networks import (
    PRESETS,
    WGAN,
    ImageDataError,
    WGANConfig,
    check_images,
    resolve_device,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.mark.parametrize("preset", ["ci", "cpu", "reference"])
def test_shapes_and_ranges(preset):
    torch.manual_seed(0)
    cfg = WGANConfig.preset(preset)
    model = WGAN(cfg).eval()
    z = model.sample_latent(2)
    assert z.shape == (2, 128) and z.min() >= -1 and z.max() <= 1
    with torch.no_grad():
        g = model.generator(z)
        assert g.shape == (2, 3, 96, 96)
        x = model.rgb(g)                      # the image: the sigmoid output itself, or a flux output's Lupton RGB
        assert x.min() >= 0 and x.max() <= 1
        if cfg.output == "sigmoid":
            assert torch.equal(x, g)
        feats = model.critic.features(x)
        assert feats.shape == (2, cfg.feature_dim)
        assert model.critic(x).shape == (2,)
        e = model.encoder(x)
        assert e.shape == (2, 128) and e.abs().max() <= 1  # tanh
        assert model.reconstruct(x).shape == x.shape
        mean, var = model.expected(g, torch.full((2, 3), 0.05))
        assert mean.shape == x.shape and (var is None) == (cfg.observation == "none")


def test_reference_architecture_matches_model_md():
    cfg = WGANConfig()
    assert (cfg.image_size, cfg.latent_dim, cfg.kernel_size, cfg.widths) == (96, 128, 5, (64, 128, 256, 512))
    assert (cfg.gp_weight, cfg.critic_steps, cfg.batch_size, cfg.lr, cfg.betas) == (10.0, 5, 32, 1e-4, (0.5, 0.9))
    assert cfg.generator_iterations == 10_000 and cfg.kappa == 1.0 and cfg.generator_noise == 0.1
    model = WGAN(cfg)
    g = model.generator
    assert g.fc.out_features == 512 * 6 * 6
    assert [m.out_channels for m in (g.up1, g.up2, g.up3, g.up4)] == [256, 128, 64, 3]
    assert all(m.kernel_size == (5, 5) and m.stride == (2, 2) for m in (g.up1, g.up2, g.up3, g.up4))
    assert [c.out_channels for c in model.critic.convs.values()] == [64, 128, 256, 512]
    assert model.critic.fc.in_features == 6 * 6 * 512 == cfg.feature_dim
    assert model.encoder.fc.out_features == 128
    # no normalisation layers anywhere
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.LayerNorm, torch.nn.InstanceNorm2d))
                   for m in model.modules())
    # every spatial step: 6 -> 12 -> 24 -> 48 -> 96 and back
    h = torch.zeros(1, 512, 6, 6)
    for up, side in zip((g.up1, g.up2, g.up3, g.up4), (12, 24, 48, 96)):
        h = up(h)
        assert h.shape[-1] == side


def test_generator_noise_only_while_training():
    torch.manual_seed(1)
    model = WGAN(WGANConfig.preset("ci"))
    z = model.sample_latent(3)
    model.eval()
    with torch.no_grad():
        a, b = model.generator(z), model.generator(z)
    assert torch.equal(a, b)
    model.train()
    with torch.no_grad():
        c = model.generator(z)
    assert not torch.equal(a, c)


def test_channels_last_gives_the_same_features():
    torch.manual_seed(2)
    model = WGAN(WGANConfig.preset("ci")).eval()
    x = torch.rand(3, 3, 96, 96)
    with torch.no_grad():
        ref = model.critic.features(x)
        cl = model.to(memory_format=torch.channels_last)
        out = cl.critic.features(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_config_round_trip_and_validation():
    cfg = WGANConfig.preset("cpu", seed=7)
    assert WGANConfig.from_dict(cfg.to_dict()) == cfg
    assert set(PRESETS) >= {"reference", "cpu", "ci"}
    assert PRESETS["cpu"].latent_dim == 128
    with pytest.raises(ValueError, match="unknown WGANConfig fields"):
        WGANConfig.from_dict({"latent_dims": 64})
    with pytest.raises(ValueError, match="multiple of 16"):
        WGANConfig(image_size=100)
    with pytest.raises(ValueError, match="precision"):
        WGANConfig(precision="fp16")
    with pytest.raises(ValueError, match="unknown preset"):
        WGANConfig.preset("huge")


def test_image_size_is_configurable():
    cfg = WGANConfig.preset("ci", image_size=64)
    model = WGAN(cfg).eval()
    with torch.no_grad():
        assert model.generator(model.sample_latent(1)).shape == (1, 3, 64, 64)


@pytest.mark.parametrize(
    "array, pattern",
    [
        (np.zeros((2, 96, 96, 3), np.uint8), r"channels last"),
        (np.zeros((2, 4, 96, 96), np.uint8), r"4 channels"),
        (np.zeros((2, 3, 64, 64), np.uint8), r"64 x 64 px"),
        (np.zeros((3, 96, 96), np.uint8), r"expected an array of shape"),
        (np.zeros((0, 3, 96, 96), np.uint8), r"no images"),
        (np.zeros((2, 3, 96, 96), np.int32), r"dtype int32"),
        (np.full((2, 3, 96, 96), 2.0, np.float32), r"must be in \[0, 1\]"),
    ],
)
def test_check_images_names_the_source_and_the_problem(array, pattern):
    with pytest.raises(ImageDataError, match=pattern) as err:
        check_images(array, source="batch_007/cutouts.npy")
    assert "batch_007/cutouts.npy" in str(err.value)


def test_check_images_finds_nan():
    x = np.random.default_rng(0).random((5, 3, 96, 96)).astype(np.float32)
    x[3, 1, 10, 10] = np.nan
    with pytest.raises(ImageDataError, match=r"x\.npy: 1 image\(s\) contain NaN.*index 3"):
        check_images(x, source="x.npy")
    check_images(torch.from_numpy(np.nan_to_num(x)), source="ok")  # float in [0, 1] passes
    check_images(np.zeros((1, 3, 96, 96), np.uint8))


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device(None).type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        assert resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            resolve_device("cuda")
