"""The observation model: how a noise-free Lupton RGB image becomes the uint8 image a survey pipeline writes.

Why the model needs one. A cutout is ``x = floor(255 * lupton(f + n)) / 255``: the galaxy's flux ``f`` (g, r, i),
plus sky noise ``n`` (Gaussian, per band, mildly correlated between neighbouring pixels), through the Lupton asinh
mapping (``make_lupton_rgb(i, r, g, Q=15, stretch=0.5, minimum=0)``), which zeroes every pixel whose mean flux is
negative and each channel that is. On HSC-like cutouts the noise carries about three times as much variance as the
galaxies do (most pixels are sky). A generator trained to imitate ``x`` therefore learns to draw noise, and a
reconstruction ``G(E(x))`` then carries noise of its own, uncorrelated with the image's: the residual doubles the
noise and buries everything else. This is why longer training made the original model *worse*.

So the generator draws the noise-free image (``c``, signed, on the Lupton scale; its flux is ``lupton_to_flux(c)``)
and the critic sees ``observe_flux`` of it: the same noise process applied to it (AmbientGAN, Bora et al. 2018). What the model predicts for an image is then the *expected*
observation ``E[x | c]`` (the sky is not 0 but the mean of clipped noise), with a per-pixel variance
``Var[x | c]``; residuals and their noise-normalised maps are taken against those.

``expected_and_variance_flux`` integrates the exact per-pixel distribution (a Gauss-Legendre rule over the noise of the
intensity, closed-form censored normal moments per channel, the uint8 floor included): checked against the real
astropy pipeline by Monte Carlo to 0.5% in variance; training uses it (and its gradient).
``fast_expected_and_variance_flux`` interpolates the same integral tabulated per image on a ladder of grey
intensities (about 20x faster; mean error 0.004 in [0, 1] units), used when scoring.

Noise levels ``sigma`` are per image and band, in flux units (the sky's standard deviation): measured on the flux
images when they exist (``ww_assets.images.sky``), or estimated from the uint8 image (``estimate_sigma``).
Plain PyTorch: no Dagster, no astropy (this runs on a GPU machine with torch alone).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ww_assets.images.lupton import LUPTON_Q, LUPTON_STRETCH

__all__ = ["lupton", "clean_to_flux", "lupton_to_flux", "observe_flux",
           "expected_and_variance_flux", "fast_expected_and_variance_flux",
           "noise_variance", "noise_kernel", "estimate_sigma", "UINT8_STEP"]

#: astropy's AsinhMapping: fac(I) = asinh(I * SOFTEN) * SLOPE / I, here in [0, 1] units (astropy scales by 255)
SOFTEN = LUPTON_Q / LUPTON_STRETCH
SLOPE = 0.1 / math.asinh(0.1 * LUPTON_Q)
UINT8_STEP = 1.0 / 255.0
#: channel order of every tensor here, as in the images: R = i, G = r, B = g (flux tensors too)


def _fac(intensity: torch.Tensor) -> torch.Tensor:
    safe = intensity.clamp_min(1e-12)
    return torch.where(intensity > 0, torch.asinh(safe * SOFTEN) * SLOPE / safe, torch.zeros_like(intensity))


def lupton(flux: torch.Tensor) -> torch.Tensor:
    """Flux (N, 3, H, W), channels i, r, g -> Lupton RGB in [0, 1] (float; no uint8 floor). Matches astropy's
    ``make_lupton_rgb`` (per channel clip at 0; a pixel whose brightest channel passes 1 is scaled down whole)."""
    intensity = flux.mean(1, keepdim=True)
    y = (flux * _fac(intensity)).clamp_min(0)
    top = y.amax(1, keepdim=True)
    return torch.where(top > 1, y / top.clamp_min(1e-12), y)


def clean_to_flux(c: torch.Tensor) -> torch.Tensor:
    """The flux of a noise-free Lupton image ``c`` (the inverse of ``lupton`` below saturation)."""
    intensity = torch.sinh(c.mean(1, keepdim=True) / SLOPE) / SOFTEN
    return c / _fac(intensity).clamp_min(1e-12)


def noise_kernel(rho1: float) -> torch.Tensor:
    """A 3 x 3 cross kernel giving unit-variance noise with lag-1 correlation ``rho1`` (0 <= rho1 < 0.5)."""
    if not 0 <= rho1 < 0.5:
        raise ValueError(f"lag-1 noise correlation must be in [0, 0.5), got {rho1}")
    a = 0.0 if rho1 == 0 else (1 - math.sqrt(1 - 4 * rho1 * rho1)) / (4 * rho1)
    k = torch.tensor([[0, a, 0], [a, 1, a], [0, a, 0]], dtype=torch.float32)
    return k / math.sqrt(1 + 4 * a * a)


def lupton_to_flux(c: torch.Tensor) -> torch.Tensor:
    """Flux from a signed noise-free Lupton image ``c`` (the ``flux`` output of the generator): the exact inverse of
    ``lupton`` where the image is positive and below saturation, extended smoothly to signed values (an even
    softening factor), so that a sky of exactly zero flux is c = 0 with a live gradient. The generator learns ``c``
    on the image's own scale (its gradient is the image's, about one-to-one), not per-channel fluxes that Lupton's
    colour-preserving mapping couples through their mean. Bounded (|c| <= 1.2, beyond any unsaturated value) so that
    a wild output cannot overflow the exponential."""
    bounded = c.clamp(-1.2, 1.2)
    intensity = torch.sinh(bounded.mean(1, keepdim=True) / SLOPE) / SOFTEN
    a = intensity.abs().clamp_min(1e-12)
    fac = torch.where(intensity.abs() > 1e-6, torch.asinh(a * SOFTEN) * SLOPE / a,
                      torch.full_like(intensity, SOFTEN * SLOPE))
    return bounded / fac


def observe_flux(flux: torch.Tensor, sigma: torch.Tensor, rho1: float = 0.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """One random observation of noise-free ``flux`` (N, 3, H, W; channels i, r, g): flux noise ``sigma`` (N, 3)
    per band (correlated between neighbours by ``rho1``), the Lupton mapping, and the uint8 floor (gradients pass
    straight through the floor)."""
    n, ch, h, w = flux.shape
    white = torch.randn((n * ch, 1, h + 2, w + 2), generator=generator, device=flux.device, dtype=flux.dtype)
    kernel = noise_kernel(rho1).to(device=flux.device, dtype=flux.dtype).view(1, 1, 3, 3)
    noise = torch.nn.functional.conv2d(white, kernel).view(n, ch, h, w) * sigma[:, :, None, None]
    y = lupton(flux + noise)
    return y + (torch.floor(y * 255) / 255 - y).detach()


def _phi(x):
    return torch.exp(-0.5 * x * x) * (1.0 / math.sqrt(2 * math.pi))


def _Phi(x):
    return 0.5 * (1 + torch.erf(x * (1.0 / math.sqrt(2))))


_LEGENDRE: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}


def _legendre(k: int, device, dtype):
    if k not in _LEGENDRE:
        x, w = np.polynomial.legendre.leggauss(k)
        _LEGENDRE[k] = (torch.tensor(x), torch.tensor(w))
    x, w = _LEGENDRE[k]
    return x.to(device, dtype), w.to(device, dtype)


def expected_and_variance_flux(flux: torch.Tensor, sigma: torch.Tensor, nodes: int = 12,
                               upper: float = 5.0) -> tuple[torch.Tensor, torch.Tensor]:
    """E[x | flux] and Var[x | flux] per pixel and channel for noise-free ``flux`` and flux noise ``sigma``.

    Conditional on the noise ``eta`` of the intensity (the mean of the three bands), each channel's noisy flux is
    normal, so its clipped moments are closed-form; ``eta`` is integrated by a ``nodes``-point Gauss-Legendre rule
    over the part of [-upper, upper] standard deviations where the intensity stays positive (astropy zeroes the
    rest). Includes the uint8 floor. Neighbour correlation does not change a pixel's own moments.
    """
    c = flux
    intensity = flux.mean(1, keepdim=True)
    s2 = sigma.to(c.dtype) ** 2
    var_i = s2.sum(1) / 9.0
    sd_i = var_i.sqrt()[:, None, None, None]
    beta = ((s2 / 3.0) / var_i[:, None])[:, :, None, None]
    sd_c = (s2 - (s2 / 3.0) ** 2 / var_i[:, None]).clamp_min(1e-20).sqrt()[:, :, None, None]
    t0 = torch.clamp(-intensity / sd_i, min=-upper, max=upper)  # (a negative intensity: only its upper tail shows)
    half = (upper - t0) / 2
    xs, ws = _legendre(nodes, c.device, c.dtype)
    d = UINT8_STEP
    m1 = torch.zeros_like(c)
    m2 = torch.zeros_like(c)
    for xj, wj in zip(xs, ws):
        t = t0 + half * (1 + xj)
        weight = wj * half * _phi(t)
        fa = _fac(intensity + sd_i * t)
        mu = flux + beta * (sd_i * t)
        thr = d / fa.clamp_min(1e-12)             # floor(255 fa X) > 0  <=>  X > d / fa
        a = (mu - thr) / sd_c
        pa, da = _Phi(a), _phi(a)
        ex = mu * pa + sd_c * da                  # E[X 1(X > thr)]
        ex2 = (mu * mu + sd_c * sd_c) * pa + (mu + thr) * sd_c * da
        m1 = m1 + weight * (fa * ex - 0.5 * d * pa)
        m2 = m2 + weight * (fa * fa * ex2 - d * fa * ex + (d * d / 3.0) * pa)
    return m1, (m2 - m1 * m1).clamp_min(0)


#: grey intensities below zero in the ladder (flux units; the sky's intensity noise is about 0.03): a negative
#: noise-free intensity is still observed as clipped noise, a little fainter, and the gradient must see that
_NEGATIVE_LADDER = (-0.4, -0.25, -0.16, -0.1, -0.06, -0.04, -0.025, -0.015, -0.008, -0.003)


def _grey_ladder(n: int, device, dtype) -> torch.Tensor:
    top = math.sinh(1.0 / SLOPE) / SOFTEN            # the intensity at which a grey pixel reaches 1
    rungs = [torch.tensor(_NEGATIVE_LADDER, dtype=torch.float64), torch.zeros(1, dtype=torch.float64),
             torch.logspace(-4, math.log10(top), n - 1, dtype=torch.float64)]
    return torch.cat(rungs).to(device, dtype)


def fast_expected_and_variance_flux(flux: torch.Tensor, sigma: torch.Tensor,
                                    steps: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """``expected_and_variance_flux`` by interpolation: per image, the exact integral at ``steps`` grey
    intensities; each pixel takes the bias E - lupton(flux) and the variance of the grey pixel of its intensity.
    Signed fluxes are fine: a pixel below zero intensity takes the sky's values.

    For inference (scoring, figures). Not for training: a generator trained through this interpolation's gradient
    stalls before it has learned even the mean image (measured; the exact integral's gradient trains it in a
    hundred steps), so training uses ``expected_and_variance_flux``."""
    c = lupton(flux)
    n, ch, h, w = c.shape
    ladder = _grey_ladder(steps, c.device, c.dtype)
    steps = len(ladder)
    grey_flux = ladder.view(1, 1, 1, steps).expand(n, ch, 1, steps).contiguous()
    grey = lupton(grey_flux)
    e_grey, v_grey = expected_and_variance_flux(grey_flux, sigma)
    bias_tab, var_tab = (e_grey - grey)[:, :, 0], v_grey[:, :, 0]          # (N, 3, steps)
    intensity = flux.mean(1, keepdim=True).clamp(float(ladder[0]), float(ladder[-1]))
    hi = torch.bucketize(intensity, ladder).clamp(1, steps - 1)
    lo_v, hi_v = ladder[hi - 1], ladder[hi]
    frac = ((intensity - lo_v) / (hi_v - lo_v)).clamp(0, 1).flatten(1)      # (N, H*W)
    hi = hi.flatten(1)

    def lerp(tab):
        a = torch.gather(tab, 2, (hi - 1).unsqueeze(1).expand(n, ch, -1))
        b = torch.gather(tab, 2, hi.unsqueeze(1).expand(n, ch, -1))
        return (a + (b - a) * frac.unsqueeze(1)).view(n, ch, h, w)

    return c + lerp(bias_tab), lerp(var_tab)


def _blur(x: torch.Tensor, px: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W), edges replicated."""
    n, ch, h, w = x.shape
    radius = max(1, int(math.ceil(3 * px)))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k1 = torch.exp(-0.5 * (t / px) ** 2)
    k1 = k1 / k1.sum()
    pad = torch.nn.functional.pad(x.reshape(n * ch, 1, h, w), (radius,) * 4, mode="replicate")
    out = torch.nn.functional.conv2d(torch.nn.functional.conv2d(pad, k1.view(1, 1, 1, -1)), k1.view(1, 1, -1, 1))
    return out.view(n, ch, h, w)


def estimate_sigma(x: torch.Tensor, mask_k: float = 3.0, dilate_px: int = 3) -> torch.Tensor:
    """Flux noise (N, 3) of observed Lupton images ``x`` (float in [0, 1]) when no flux image is at hand.

    In the sky (flux 0) the noise is zeroed wherever it is negative, so there is no negative side to read; but a
    pixel whose three channels are all positive is unclipped and can be mapped back to flux exactly, and for
    independent Gaussian bands the flux of such a pixel in band c is half-normal with scale sigma_c (conditioning
    on the other bands being positive does not change it). So: mask sources (the blurred intensity above its
    median by ``mask_k`` robust deviations, dilated), keep the all-positive sky pixels, invert them, and read each
    band's sigma off the median of the half-normal (0.6745 sigma). The uint8 floor is undone on average (+0.5/255).
    Measured on simulated cutouts against the known noise: see ``BENCHMARKS.md``.
    """
    n, ch, h, w = x.shape
    level = _blur(x.mean(1, keepdim=True), 2.0).flatten(1)
    med = level.median(1, keepdim=True).values
    mad = (level - med).abs().median(1, keepdim=True).values * 1.4826
    source = (level > med + mask_k * mad.clamp_min(UINT8_STEP)).view(n, 1, h, w).float()
    if dilate_px:
        source = torch.nn.functional.max_pool2d(source, 2 * dilate_px + 1, stride=1, padding=dilate_px)
    y = torch.where(x > 0, x + 0.5 * UINT8_STEP, torch.zeros_like(x))
    positive = (x > 0).all(1, keepdim=True) & (source < 0.5)
    flux = clean_to_flux(y)
    flux = torch.where(positive.expand_as(flux), flux, torch.full_like(flux, float("nan")))
    sigma = torch.nanmedian(flux.flatten(2), dim=2).values / 0.6744897501960817
    fallback = torch.nanmedian(sigma, dim=0, keepdim=True).values.expand_as(sigma)
    return torch.where(torch.isfinite(sigma), sigma, fallback).clamp_min(1e-4)


def noise_variance(x: torch.Tensor, sigma: torch.Tensor, steps: int = 40, blur_px: float = 2.0,
                   sky_k: float = 2.0) -> torch.Tensor:
    """Var[x | signal] per pixel and channel for *observed* images ``x`` (float in [0, 1]), without any model.

    The signal is estimated from ``x`` itself: a Gaussian blur of ``blur_px`` (most of the noise goes, the PSF-scale
    structure stays), then, per image, the grey intensity whose expected observation matches it (the tabulated
    ``expected_and_variance``, inverted); the variance is the tabulated one at that intensity. This is the
    "image's own pixel-noise variance" of the structure-explained gate: it must not come from the model being
    judged, or a model could raise its own bar.
    """
    n, ch, h, w = x.shape
    level = _blur(x, blur_px).mean(1).flatten(1)                              # (N, H*W)
    ladder = _grey_ladder(steps, x.device, x.dtype)[len(_NEGATIVE_LADDER):]   # the signal is never negative
    steps = len(ladder)
    e_grey, v_grey = expected_and_variance_flux(ladder.view(1, 1, 1, steps).expand(n, ch, 1, steps).contiguous(),
                                                sigma)
    e_mean = e_grey[:, :, 0].mean(1)                                           # (N, steps), increasing
    e_mean = torch.cummax(e_mean, dim=1).values
    hi = torch.searchsorted(e_mean.contiguous(), level.contiguous()).clamp(1, steps - 1)
    lo_e, hi_e = torch.gather(e_mean, 1, hi - 1), torch.gather(e_mean, 1, hi)
    frac = ((level - lo_e) / (hi_e - lo_e).clamp_min(1e-12)).clamp(0, 1)
    # Sky: a pixel whose blurred level is within sky_k standard deviations of the blurred sky is taken as sky.
    # Otherwise the blurred noise itself would read as faint signal, and (the variance rising with the level near
    # zero) every sky pixel would count a little more noise than it has: a bias in the model's favour.
    sky_level = e_mean[:, :1]
    radius = max(1, int(math.ceil(3 * blur_px)))
    k1 = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype) / blur_px) ** 2)
    gain = float(((k1 / k1.sum()) ** 2).sum() ** 2)                            # white-noise variance of the blur
    sky_sd = (v_grey[:, :, 0, 0].mean(1, keepdim=True) * gain).sqrt()
    is_sky = level < sky_level + sky_k * sky_sd
    hi = torch.where(is_sky, torch.ones_like(hi), hi)
    frac = torch.where(is_sky, torch.zeros_like(frac), frac)
    v_tab = v_grey[:, :, 0]                                                    # (N, 3, steps)
    a = torch.gather(v_tab, 2, (hi - 1).unsqueeze(1).expand(n, ch, -1))
    b = torch.gather(v_tab, 2, hi.unsqueeze(1).expand(n, ch, -1))
    return (a + (b - a) * frac.unsqueeze(1)).view(n, ch, h, w)
