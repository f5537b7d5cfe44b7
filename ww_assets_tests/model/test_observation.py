"""The observation model: Lupton mapping as astropy draws it, its signed inverse, and the expected observation
against a Monte-Carlo of the observation itself."""

from __future__ import annotations

import numpy as np
import torch

from ww_assets.images.lupton import LUPTON_Q, LUPTON_STRETCH
from ww_assets.model.observation import (
    expected_and_variance_flux,
    fast_expected_and_variance_flux,
    lupton,
    lupton_to_flux,
    observe_flux,
)


def test_lupton_matches_astropy():
    from astropy.visualization import make_lupton_rgb

    rng = np.random.default_rng(0)
    flux = rng.gamma(0.6, 0.4, (3, 16, 16)).astype(np.float32)       # channels i, r, g
    ours = lupton(torch.from_numpy(flux)[None])[0].numpy()
    theirs = make_lupton_rgb(flux[0], flux[1], flux[2], stretch=LUPTON_STRETCH, Q=LUPTON_Q, minimum=0).astype(float)
    np.testing.assert_allclose(ours * 255, np.transpose(theirs, (2, 0, 1)), atol=1.0)   # astropy rounds to uint8


def test_signed_inverse_round_trips_and_is_smooth_through_zero():
    c = torch.rand(4, 3, 8, 8) * 0.9
    torch.testing.assert_close(lupton(lupton_to_flux(c)), c, atol=1e-4, rtol=1e-4)
    signed = torch.linspace(-0.1, 0.1, 201).view(1, 1, 1, -1).expand(1, 3, 1, -1).clone().requires_grad_(True)
    flux = lupton_to_flux(signed)
    flux.sum().backward()
    assert torch.isfinite(flux).all() and (torch.diff(flux[0, 0, 0]) > 0).all()      # monotonic through zero
    assert (signed.grad > 0).all()                                                   # no dead zone at zero


def test_expected_observation_matches_monte_carlo():
    gen = torch.Generator().manual_seed(1)
    flux = torch.tensor([-0.05, 0.0, 0.03, 0.1, 0.5, 3.0]).view(1, 1, 1, 6).expand(1, 3, 1, 6).contiguous()
    sigma = torch.tensor([[0.05, 0.06, 0.07]])
    draws = torch.stack([observe_flux(flux, sigma, generator=gen) for _ in range(4000)])
    mean, var = expected_and_variance_flux(flux, sigma)
    torch.testing.assert_close(mean, draws.mean(0), atol=2e-3, rtol=0)
    # Measured: within 6% where the sky's variance matters (fluxes 0 to 0.5); about 20% high at a bright core (flux
    # 3), where the variance is a hundredth of the sky's, and 20% off at -1 sigma, where the observation is mostly
    # clipped to zero and the Monte-Carlo variance itself is noisy. The bound holds both with some room.
    mc = draws.var(0)
    torch.testing.assert_close(var[..., 1:5], mc[..., 1:5], atol=0, rtol=0.08)
    torch.testing.assert_close(var, mc, atol=0, rtol=0.3)
    fast_mean, fast_var = fast_expected_and_variance_flux(flux, sigma)
    torch.testing.assert_close(fast_mean, mean, atol=3e-3, rtol=0)
    torch.testing.assert_close(fast_var[..., 1:], var[..., 1:], atol=0, rtol=0.1)
    torch.testing.assert_close(fast_var, var, atol=0, rtol=0.3)
