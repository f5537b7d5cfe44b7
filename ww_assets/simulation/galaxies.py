"""HSC-like galaxy cutouts drawn with GalSim, with injected oddities and artifacts.

One object = three 96 x 96 float32 images (g, r, i) in HSC coadd flux units (``mag = 27 - 2.5 log10(flux)``) at
0.168"/px. Every object is drawn from its own random streams (numpy ``Generator`` and GalSim ``BaseDeviate``)
derived from the master seed and the object's index, so a cutout does not depend on which process drew it or on
what was drawn before it.

The central galaxy has ``20 < i < 20.5`` (the reference W&W selection) and is a bulge (de Vaucouleurs / Sersic)
plus an exponential disk, each with its own colour (red bulge, bluer disk), random inclination and position angle.
Each field also holds a few faint neighbours and sometimes a star. The PSF is Kolmogorov, FWHM ~0.6" in i and a
little broader in r and g, varying per object. Sky noise is Gaussian, mildly correlated (as in a resampled coadd),
with a per-pixel sigma close to HSC Wide full depth.

Labels (``LABELS``): ``normal``; astrophysical oddities ``merger`` (two galaxies with tidal tails or shells),
``ring`` (knotty blue ring around a bulge), ``lens`` (blue arc around a red elliptical), ``compact_starforming``
(very compact, very blue or "green pea" coloured), ``edge_on`` (thin disk with a dust lane), ``irregular``
(lopsided, blue, with star-forming knots from GalSim's RandomKnots); artifacts ``satellite_trail`` (a straight
streak in one band), ``star_spike`` (saturated star with diffraction spikes and a bleed trail), ``bad_column``
(hot or dead column in one band), ``edge_cut`` (part of the cutout beyond the survey edge: exactly zero, no noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import galsim
import numpy as np

BANDS = ("g", "r", "i")
NPIX = 96
PIXSCALE = 0.168  # arcsec / pixel
MAGZERO = 27.0
HALF_ARCSEC = NPIX * PIXSCALE / 2.0

#: per-pixel sky sigma (flux units, ZP 27) of HSC Wide full-depth coadds, roughly: g 26.6, r 26.2, i 26.2 5-sigma
#: point-source depths with their seeing give 0.04-0.07 per pixel.
SKY_SIGMA = {"g": 0.045, "r": 0.055, "i": 0.062}

ASTRO_LABELS = ("merger", "ring", "lens", "compact_starforming", "edge_on", "irregular")
ARTIFACT_LABELS = ("satellite_trail", "star_spike", "bad_column", "edge_cut")
LABELS = ("normal",) + ASTRO_LABELS + ARTIFACT_LABELS

#: fraction of all images carrying each non-normal label (4.0% astrophysical oddities, 2.0% artifacts)
DEFAULT_RATES = {
    "merger": 0.010,
    "ring": 0.006,
    "lens": 0.005,
    "compact_starforming": 0.007,
    "edge_on": 0.007,
    "irregular": 0.005,
    "satellite_trail": 0.006,
    "star_spike": 0.006,
    "bad_column": 0.004,
    "edge_cut": 0.004,
}

_GSPARAMS = galsim.GSParams(folding_threshold=5e-3, maxk_threshold=2e-3, maximum_fft_size=4096)


def mag_to_flux(mag: float) -> float:
    return 10.0 ** (-0.4 * (mag - MAGZERO))


def colour_fluxes(i_mag: float, g_r: float, r_i: float) -> np.ndarray:
    """(g, r, i) fluxes of a source with i magnitude ``i_mag`` and colours g-r, r-i."""
    r = i_mag + r_i
    g = r + g_r
    return np.array([mag_to_flux(g), mag_to_flux(r), mag_to_flux(i_mag)])


@dataclass
class Scene:
    """Band-independent profiles (unit flux) with their (g, r, i) fluxes; drawn per band with that band's PSF."""

    components: list = field(default_factory=list)  # (galsim.GSObject with flux 1, np.ndarray fluxes (3,))

    def add(self, profile: galsim.GSObject, fluxes) -> None:
        self.components.append((profile, np.asarray(fluxes, dtype=float)))


# --------------------------------------------------------------------------------------------------------------
# building blocks


def _bulge_disk(rng: np.random.Generator, i_mag: float, *, early: bool | None = None, min_q: float = 0.3):
    """A bulge + disk galaxy centred at the origin. Returns (list of (profile, fluxes)), info dict."""
    if early is None:
        early = rng.random() < 0.4
    if early:
        bt = rng.uniform(0.55, 0.95)
        hlr_b = float(np.clip(rng.lognormal(math.log(0.75), 0.35), 0.25, 2.5))
        hlr_d = float(np.clip(hlr_b * rng.uniform(1.3, 2.5), 0.4, 4.0))
        n_b = float(rng.choice([3.0, 3.5, 4.0]))
    else:
        bt = rng.uniform(0.0, 0.35)
        hlr_d = float(np.clip(rng.lognormal(math.log(0.95), 0.35), 0.35, 3.5))
        hlr_b = float(np.clip(hlr_d * rng.uniform(0.2, 0.45), 0.12, 1.2))
        n_b = float(rng.choice([2.0, 2.5, 3.0, 4.0]))
    gr_b, ri_b = rng.normal(1.38, 0.10), rng.normal(0.50, 0.05)
    gr_d, ri_d = rng.normal(0.72, 0.14), rng.normal(0.30, 0.06)
    if early:  # early-type disks are redder too
        gr_d, ri_d = gr_d + 0.3, ri_d + 0.1
    total = mag_to_flux(i_mag)
    f_b = colour_fluxes(MAGZERO, gr_b, ri_b)
    f_b = f_b / f_b[2] * total * bt
    f_d = colour_fluxes(MAGZERO, gr_d, ri_d)
    f_d = f_d / f_d[2] * total * (1 - bt)

    beta = rng.uniform(0, math.pi) * galsim.radians
    cosi = rng.uniform(0.0, 1.0)
    q_d = max(min_q, math.sqrt(cosi**2 * (1 - 0.15**2) + 0.15**2))
    q_b = rng.uniform(0.65, 1.0)
    comps = []
    if bt > 0.005:
        bulge = galsim.Sersic(n=n_b, half_light_radius=hlr_b, gsparams=_GSPARAMS).shear(q=q_b, beta=beta)
        comps.append((bulge, f_b))
    disk = galsim.Exponential(half_light_radius=hlr_d, gsparams=_GSPARAMS).shear(q=q_d, beta=beta)
    comps.append((disk, f_d))
    flux = f_b + f_d
    info = {
        "half_light_arcsec": bt * hlr_b + (1 - bt) * hlr_d,
        "bulge_fraction": bt,
        "axis_ratio": q_d,
        "early_type": bool(early),
    }
    return comps, flux, info


def _knots_along(points_xy, sigma: float, fluxes: np.ndarray, weights, shear_g=0.0, angles=None):
    """Gaussian knots at the given (x, y) positions (arcsec), sharing the total ``fluxes`` by ``weights``."""
    weights = np.asarray(weights, dtype=float)
    weights = weights / weights.sum()
    knots = []
    for k, ((x, y), w) in enumerate(zip(points_xy, weights)):
        g = galsim.Gaussian(sigma=sigma, gsparams=_GSPARAMS)
        if shear_g and angles is not None:
            g = g.shear(g=shear_g, beta=float(angles[k]) * galsim.radians)
        knots.append(g.shift(float(x), float(y)) * float(w))
    return galsim.Add(knots, gsparams=_GSPARAMS), np.asarray(fluxes, dtype=float)


def _rotate(x, y, theta):
    c, s = math.cos(theta), math.sin(theta)
    return x * c - y * s, x * s + y * c


# --------------------------------------------------------------------------------------------------------------
# the central object, per label


def _central(label: str, rng: np.random.Generator, i_mag: float, scene: Scene,
             gs_rng: galsim.BaseDeviate) -> dict:
    info: dict = {}
    if label in ("normal",) + ARTIFACT_LABELS:
        comps, flux, info = _bulge_disk(rng, i_mag)
        for p, f in comps:
            scene.add(p, f)
    elif label == "merger":
        # primary + secondary (flux ratio 1:1 to 1:4), separated by 1-3", tidal tails and/or shells
        ratio = rng.uniform(0.25, 1.0)
        tot = mag_to_flux(i_mag)
        m1 = MAGZERO - 2.5 * math.log10(tot * 0.85 / (1 + ratio))
        m2 = MAGZERO - 2.5 * math.log10(tot * 0.85 * ratio / (1 + ratio))
        sep = rng.uniform(1.4, 3.4)
        theta = rng.uniform(0, 2 * math.pi)
        dx, dy = 0.5 * sep * math.cos(theta), 0.5 * sep * math.sin(theta)
        c1, f1, info = _bulge_disk(rng, m1)
        c2, f2, _ = _bulge_disk(rng, m2)
        for p, f in c1:
            scene.add(p.shift(-dx * ratio, -dy * ratio), f)
        for p, f in c2:
            scene.add(p.shift(dx, dy), f)
        tail_flux = colour_fluxes(i_mag, rng.normal(0.9, 0.1), rng.normal(0.35, 0.05))
        tail_flux = tail_flux / tail_flux[2] * tot * rng.uniform(0.22, 0.35)
        kind = rng.choice(["tails", "shells", "both"], p=[0.55, 0.2, 0.25])
        if kind in ("tails", "both"):
            for sign, (cx, cy) in ((1, (-dx * ratio, -dy * ratio)), (-1, (dx, dy))):
                t = np.linspace(0.0, 1.0, 30)
                r = 0.6 + t * rng.uniform(3.5, 6.0)
                ang = theta + sign * math.pi / 2 + sign * t * rng.uniform(1.2, 2.4)
                pts = np.c_[cx + r * np.cos(ang), cy + r * np.sin(ang)]
                prof, f = _knots_along(pts, rng.uniform(0.25, 0.4), tail_flux / 2, np.exp(-1.5 * t))
                scene.add(prof, f)
        if kind in ("shells", "both"):
            for radius in rng.uniform(1.8, 4.5, size=int(rng.integers(2, 4))):
                a0 = rng.uniform(0, 2 * math.pi)
                a = a0 + np.linspace(-1.0, 1.0, 16)
                pts = np.c_[-dx * ratio + radius * np.cos(a), -dy * ratio + radius * np.sin(a)]
                prof, f = _knots_along(pts, 0.3, tail_flux * 0.25, np.ones(len(a)), 0.4, a + math.pi / 2)
                scene.add(prof, f)
        info["companion_sep_arcsec"] = sep
        info["half_light_arcsec"] = info["half_light_arcsec"] + sep / 2
    elif label == "ring":
        tot = mag_to_flux(i_mag)
        frac_ring = rng.uniform(0.35, 0.6)
        m_core = MAGZERO - 2.5 * math.log10(tot * (1 - frac_ring))
        c, f, info = _bulge_disk(rng, m_core, early=True)
        for p, fl in c:
            scene.add(p.dilate(0.8), fl)
        radius = rng.uniform(1.6, 3.2)
        q = rng.uniform(0.55, 1.0)
        pa = rng.uniform(0, math.pi)
        a = np.linspace(0, 2 * math.pi, 36, endpoint=False)
        x, y = radius * np.cos(a), radius * q * np.sin(a)
        x, y = _rotate(x, y, pa)
        off = rng.uniform(-0.4, 0.4, size=2)  # collisional rings are off-centre
        ring_flux = colour_fluxes(i_mag, rng.normal(0.45, 0.1), rng.normal(0.15, 0.05))
        ring_flux = ring_flux / ring_flux[2] * tot * frac_ring
        w = 1.0 + 0.6 * rng.random(len(a))
        prof, fl = _knots_along(np.c_[x + off[0], y + off[1]], rng.uniform(0.22, 0.32), ring_flux, w)
        scene.add(prof, fl)
        info["ring_radius_arcsec"] = radius
        info["half_light_arcsec"] = 0.5 * (info["half_light_arcsec"] + radius)
    elif label == "lens":
        tot = mag_to_flux(i_mag)
        hlr = float(np.clip(rng.lognormal(math.log(1.0), 0.25), 0.5, 2.0))
        fl = colour_fluxes(i_mag, rng.normal(1.55, 0.08), rng.normal(0.55, 0.04))
        fl = fl / fl[2] * tot * 0.93
        lens = galsim.DeVaucouleurs(half_light_radius=hlr, gsparams=_GSPARAMS)
        scene.add(lens.shear(q=rng.uniform(0.7, 1.0), beta=rng.uniform(0, math.pi) * galsim.radians), fl)
        theta_e = rng.uniform(1.3, 2.6)
        a0 = rng.uniform(0, 2 * math.pi)
        span = rng.uniform(0.8, 2.2)
        a = a0 + np.linspace(-span / 2, span / 2, 20)
        arc_flux = colour_fluxes(i_mag, rng.normal(0.10, 0.1), rng.normal(0.05, 0.08))
        arc_flux = arc_flux / arc_flux[1] * tot * rng.uniform(0.15, 0.3)  # arc: 15-30% of the lens's i flux, in r
        prof, f = _knots_along(np.c_[theta_e * np.cos(a), theta_e * np.sin(a)], 0.14, arc_flux,
                               np.exp(-((np.linspace(-1, 1, 20)) ** 2)), 0.55, a + math.pi / 2)
        scene.add(prof, f)
        if rng.random() < 0.6:  # counter-image
            ca = a0 + math.pi + rng.normal(0, 0.2)
            scene.add(galsim.Gaussian(sigma=0.12, gsparams=_GSPARAMS).shift(
                0.7 * theta_e * math.cos(ca), 0.7 * theta_e * math.sin(ca)), arc_flux * 0.2)
        info = {"half_light_arcsec": hlr, "einstein_radius_arcsec": theta_e}
    elif label == "compact_starforming":
        hlr = rng.uniform(0.12, 0.3)
        if rng.random() < 0.5:  # "green pea": [OIII] in r makes r bright against g and i
            g_r, r_i = rng.normal(0.35, 0.1), rng.normal(-0.75, 0.12)
        else:  # very blue
            g_r, r_i = rng.normal(-0.15, 0.08), rng.normal(-0.05, 0.08)
        prof = galsim.Sersic(n=1.0, half_light_radius=hlr, gsparams=_GSPARAMS).shear(
            q=rng.uniform(0.6, 1.0), beta=rng.uniform(0, math.pi) * galsim.radians)
        scene.add(prof, colour_fluxes(i_mag, g_r, r_i))
        info = {"half_light_arcsec": hlr}
    elif label == "edge_on":
        tot = mag_to_flux(i_mag)
        hlr = rng.uniform(1.1, 2.0)
        q = rng.uniform(0.07, 0.13)
        beta = rng.uniform(0, math.pi) * galsim.radians
        f_d = colour_fluxes(MAGZERO, rng.normal(0.95, 0.1), rng.normal(0.38, 0.05))
        f_d = f_d / f_d[2] * tot * 0.85
        f_b = colour_fluxes(MAGZERO, 1.4, 0.5)
        f_b = f_b / f_b[2] * tot * 0.15
        disk = galsim.Exponential(half_light_radius=hlr, gsparams=_GSPARAMS).shear(q=q, beta=beta)
        bulge = galsim.Sersic(n=2.0, half_light_radius=0.4 * hlr, gsparams=_GSPARAMS).shear(q=0.6, beta=beta)
        scene.add(disk, f_d)
        scene.add(bulge, f_b)
        # dust lane: a thinner, negative disk, deeper in the blue
        lane = galsim.Exponential(half_light_radius=hlr * 0.9, gsparams=_GSPARAMS).shear(q=q / 3.0, beta=beta)
        depth = np.array([0.30, 0.24, 0.18])
        scene.add(lane, -(f_d * depth))
        info = {"half_light_arcsec": hlr, "axis_ratio": q}
    elif label == "irregular":
        tot = mag_to_flux(i_mag)
        hlr = rng.uniform(0.9, 2.0)
        f_diff = colour_fluxes(i_mag, rng.normal(0.45, 0.1), rng.normal(0.2, 0.05))
        f_diff = f_diff / f_diff[2] * tot * 0.4
        scene.add(galsim.Exponential(half_light_radius=hlr, gsparams=_GSPARAMS).shear(
            q=rng.uniform(0.4, 0.9), beta=rng.uniform(0, math.pi) * galsim.radians).shift(
            *rng.normal(0, 0.3, 2)), f_diff)
        # star-forming knots: GalSim's RandomKnots (random points drawn from its own stream), blurred a little,
        # off-centre so the galaxy looks lopsided
        f_k = colour_fluxes(i_mag, rng.normal(0.0, 0.1), rng.normal(-0.05, 0.06))
        f_k = f_k / f_k[2] * tot * 0.6
        knots = galsim.RandomKnots(int(rng.integers(5, 12)), half_light_radius=hlr, flux=1.0, rng=gs_rng,
                                   gsparams=_GSPARAMS)
        blur = galsim.Gaussian(sigma=float(rng.uniform(0.08, 0.18)), gsparams=_GSPARAMS)
        scene.add(galsim.Convolve(knots, blur, gsparams=_GSPARAMS).shift(*rng.normal(0, 0.6, 2)), f_k)
        info = {"half_light_arcsec": hlr}
    else:  # pragma: no cover - guarded by callers
        raise ValueError(f"label must be one of {LABELS}, got {label!r}")
    return info


def _neighbours(rng: np.random.Generator, scene: Scene, avoid_centre: float = 1.5) -> int:
    """A few faint galaxies and sometimes a star in the field."""
    n = int(rng.poisson(1.6))
    for _ in range(n):
        while True:
            x, y = rng.uniform(-HALF_ARCSEC * 1.05, HALF_ARCSEC * 1.05, 2)
            if math.hypot(x, y) > avoid_centre:
                break
        mag = rng.uniform(21.5, 25.0)
        hlr = float(np.clip(rng.lognormal(math.log(0.45), 0.35), 0.15, 1.5))
        prof = galsim.Exponential(half_light_radius=hlr, gsparams=_GSPARAMS).shear(
            q=rng.uniform(0.3, 1.0), beta=rng.uniform(0, math.pi) * galsim.radians).shift(x, y)
        scene.add(prof, colour_fluxes(mag, rng.normal(0.9, 0.35), rng.normal(0.4, 0.15)))
    if rng.random() < 0.3:
        n += 1
        x, y = rng.uniform(-HALF_ARCSEC, HALF_ARCSEC, 2)
        if math.hypot(x, y) < avoid_centre:
            x += 2 * avoid_centre
        mag = rng.uniform(18.5, 23.5)
        scene.add(galsim.DeltaFunction(gsparams=_GSPARAMS).shift(x, y),
                  colour_fluxes(mag, rng.normal(0.9, 0.4), rng.normal(0.35, 0.2)))
    return n


# --------------------------------------------------------------------------------------------------------------
# artifacts (applied to pixel arrays: the instrument, not the sky)


def _line_profile(shape, x0, y0, theta, width_px):
    """Distance-weighted Gaussian profile of an infinite line through (x0, y0) at angle theta (pixels)."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    d = (xx - x0) * math.sin(theta) - (yy - y0) * math.cos(theta)
    return np.exp(-0.5 * (d / width_px) ** 2)


def _satellite_trail(img: np.ndarray, rng: np.random.Generator) -> None:
    band = int(rng.integers(0, 3))
    x0, y0 = rng.uniform(10, NPIX - 10, 2)
    theta = rng.uniform(0, math.pi)
    peak = rng.uniform(1.5, 8.0)
    prof = _line_profile(img.shape[1:], x0, y0, theta, rng.uniform(1.2, 2.0))
    img[band] += (peak * prof).astype(img.dtype)
    if rng.random() < 0.3:  # a second, fainter pass in another band (offset: exposures at other times)
        b2 = (band + 1 + int(rng.integers(0, 2))) % 3
        prof2 = _line_profile(img.shape[1:], x0 + rng.uniform(-20, 20), y0, theta, 1.5)
        img[b2] += (0.5 * peak * prof2).astype(img.dtype)


def _star_spike(img: np.ndarray, rng: np.random.Generator, psfs) -> None:
    # a bright star off-centre: saturated core (flat), diffraction spikes, bleed trail along the columns
    ang = rng.uniform(0, 2 * math.pi)
    r = rng.uniform(14, 40)
    x0, y0 = NPIX / 2 + r * math.cos(ang), NPIX / 2 + r * math.sin(ang)
    mag = rng.uniform(12.5, 15.0)
    colours = colour_fluxes(mag, rng.normal(0.6, 0.3), rng.normal(0.25, 0.1))
    sat = rng.uniform(600.0, 1500.0)
    yy, xx = np.mgrid[0:NPIX, 0:NPIX]
    rr = np.hypot(xx - x0, yy - y0) + 0.5
    spike_angle = rng.normal(0, 0.03)
    for b in range(3):
        star = psfs[b].withFlux(float(colours[b])).shift((x0 - NPIX / 2 + 0.5) * PIXSCALE,
                                                          (y0 - NPIX / 2 + 0.5) * PIXSCALE)
        stamp = star.drawImage(nx=NPIX, ny=NPIX, scale=PIXSCALE).array
        # broad halo (scattered light)
        halo = colours[b] * 2e-4 * rr ** -2.0
        spikes = np.zeros_like(stamp)
        for k in range(4):
            th = spike_angle + k * math.pi / 2
            d_perp = np.abs((xx - x0) * math.sin(th) - (yy - y0) * math.cos(th))
            along = (xx - x0) * math.cos(th) + (yy - y0) * math.sin(th)
            spikes += np.where(along > 0, np.exp(-0.5 * (d_perp / 0.8) ** 2) * colours[b] * 3e-3
                               * (np.clip(along, 0.0, None) + 2.0) ** -1.2, 0.0)
        total = stamp + halo + spikes
        # bleed along the readout columns
        bleed_len = rng.uniform(8, 25) * (1.0 + b * 0.1)
        in_bleed = (np.abs(xx - x0) < 1.2) & (np.abs(yy - y0) < bleed_len)
        total = np.where(in_bleed, np.maximum(total, sat * 0.9), total)
        img[b] += np.minimum(total, sat).astype(img.dtype)


def _bad_column(img: np.ndarray, rng: np.random.Generator) -> None:
    band = int(rng.integers(0, 3))
    col = int(rng.integers(5, NPIX - 5))
    width = int(rng.choice([1, 1, 2, 3]))
    start = int(rng.integers(0, NPIX // 2)) if rng.random() < 0.4 else 0
    if rng.random() < 0.6:  # hot column
        img[band, start:, col : col + width] = np.float32(rng.uniform(3.0, 40.0))
    else:  # dead column
        img[band, start:, col : col + width] = np.float32(0.0)


def _edge_cut(img: np.ndarray, rng: np.random.Generator) -> None:
    side = int(rng.integers(0, 4))
    depth = int(rng.integers(int(0.2 * NPIX), int(0.5 * NPIX)))
    if side == 0:
        img[:, :, :depth] = 0.0
    elif side == 1:
        img[:, :, NPIX - depth :] = 0.0
    elif side == 2:
        img[:, :depth, :] = 0.0
    else:
        img[:, NPIX - depth :, :] = 0.0


# --------------------------------------------------------------------------------------------------------------


def _correlated_noise(rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Gaussian noise with the mild pixel-to-pixel correlation of a resampled coadd, per-pixel std ``sigma``."""
    white = rng.standard_normal((NPIX + 2, NPIX + 2))
    a = 0.25  # neighbour weight of a 3x3 kernel
    sm = (white[1:-1, 1:-1] + a * (white[:-2, 1:-1] + white[2:, 1:-1] + white[1:-1, :-2] + white[1:-1, 2:]))
    return sm * (sigma / math.sqrt(1 + 4 * a * a))


def render_object(label: str, rng: np.random.Generator, gs_seed: int) -> tuple[np.ndarray, dict]:
    """Draw one object: (3, 96, 96) float32 in g, r, i order, and its generating parameters."""
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, got {label!r}")
    i_mag = float(rng.uniform(20.0, 20.5))
    scene = Scene()
    gs_rng = galsim.BaseDeviate(gs_seed)  # GalSim's own stream (RandomKnots)
    info = _central(label, rng, i_mag, scene, gs_rng)
    # small random offset of the centre (sub-pixel and up to ~1 px)
    cx, cy = rng.uniform(-0.17, 0.17, 2)
    n_nb = _neighbours(rng, scene)

    fwhm_i = float(np.clip(rng.normal(0.60, 0.06), 0.45, 0.85))
    fwhms = (fwhm_i * rng.uniform(1.15, 1.35), fwhm_i * rng.uniform(1.05, 1.25), fwhm_i)
    psfs = []
    for f in fwhms:
        e = rng.normal(0, 0.02, 2)
        psfs.append(galsim.Kolmogorov(fwhm=float(f), gsparams=_GSPARAMS).shear(e1=float(e[0]), e2=float(e[1])))

    img = np.empty((3, NPIX, NPIX), dtype=np.float32)
    central_flux = np.zeros(3)
    for b in range(3):
        parts = [p * float(f[b]) for p, f in scene.components]
        gal = galsim.Convolve(galsim.Add(parts, gsparams=_GSPARAMS).shift(cx, cy), psfs[b], gsparams=_GSPARAMS)
        img[b] = gal.drawImage(nx=NPIX, ny=NPIX, scale=PIXSCALE, method="auto").array
    # total flux of the central object (before neighbours), for the truth table
    for p, f in scene.components[: _n_central(scene, n_nb)]:
        central_flux += f

    if label == "satellite_trail":
        _satellite_trail(img, rng)
    elif label == "star_spike":
        _star_spike(img, rng, psfs)
    for b, band in enumerate(BANDS):
        sigma = SKY_SIGMA[band] * rng.uniform(0.85, 1.2)
        img[b] += _correlated_noise(rng, sigma).astype(np.float32)
    if label == "bad_column":
        _bad_column(img, rng)
    elif label == "edge_cut":
        _edge_cut(img, rng)

    with np.errstate(divide="ignore", invalid="ignore"):
        mags = MAGZERO - 2.5 * np.log10(np.maximum(central_flux, 1e-9))
    info.update(
        {
            "i_mag": round(float(mags[2]), 4),
            "g_r": round(float(mags[0] - mags[1]), 4),
            "r_i": round(float(mags[1] - mags[2]), 4),
            "psf_fwhm_i_arcsec": round(fwhm_i, 4),
            "psf_fwhm_arcsec": [round(float(f), 4) for f in fwhms],
            "n_neighbours": n_nb,
        }
    )
    info["half_light_arcsec"] = round(float(info["half_light_arcsec"]), 4)
    return img, info


def _n_central(scene: Scene, n_neighbours: int) -> int:
    return len(scene.components) - n_neighbours
