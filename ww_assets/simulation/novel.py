"""Oddities the embedded sample does *not* contain, injected into its normal galaxies, each paired with its twin.

A detector tuned to the sample's own list of classes (mergers, rings, lenses, ...) learns those and nothing else.
This module makes a different test: take normal galaxies, add one kind of departure from a smooth galaxy that the
simulation never draws, and keep the untouched image beside it. A score that responds to *any* such departure
ranks the changed image above its twin; ``paired_auroc`` is the share of pairs where it does.

Kinds (``NOVEL_KINDS``), all in flux space before the Lupton mapping, centred on the galaxy unless said:

- ``colour_knot``: a compact knot (PSF-sized) of a colour unlike the galaxy's, inside its half-light radius;
- ``off_centre_core``: a second, compact red core 3-6 px from the centre (a nuclear pair);
- ``jet``: a thin straight feature from the centre, 10-20 px long, blue;
- ``plume``: a faint diffuse fan on one side (tidal debris), 15-25 px;
- ``dust_patch``: a patch where the galaxy's light is absorbed (negative residual), redder;
- ``ghost_ring``: a faint, large, sharp-edged ring (an optical ghost), grey;
- ``cosmic_ray``: a short, very sharp streak in one band only;
- ``sky_gradient``: a smooth background gradient across the cutout.

Numbers (amplitudes, sizes) are in ``_AMPLITUDE`` and the code, chosen so that most injections are visible to a
person looking at the Lupton image next to its twin, and none of them dominates the image.
"""

from __future__ import annotations

import numpy as np

__all__ = ["NOVEL_KINDS", "inject", "make_pairs"]

NOVEL_KINDS = ("colour_knot", "off_centre_core", "jet", "plume", "dust_patch", "ghost_ring", "cosmic_ray",
               "sky_gradient")


def _grid(n: int = 96):
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    c = (n - 1) / 2.0
    return x - c, y - c


def _gauss(dx, dy, sx, sy=None, theta=0.0):
    sy = sx if sy is None else sy
    ct, st = np.cos(theta), np.sin(theta)
    u, v = ct * dx + st * dy, -st * dx + ct * dy
    return np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))


def _galaxy_scale(img: np.ndarray) -> tuple[float, float]:
    """(peak i-band flux near the centre, a half-light-ish radius in px) of a flux image (3, H, W), g r i."""
    dx, dy = _grid(img.shape[-1])
    r = np.hypot(dx, dy)
    central = img[2] * (r < 12)
    peak = float(central.max())
    total = float(np.clip(central, 0, None).sum())
    radius = float(np.sqrt(max(total, 1e-9) / (np.pi * max(peak, 1e-9)))) if peak > 0 else 3.0
    return peak, float(np.clip(radius, 1.5, 10.0))


def _colour(rng, kind: str) -> np.ndarray:
    """Relative g, r, i weights of an injected feature."""
    if kind == "blue":
        return np.array([1.0, 0.6, 0.35]) * rng.uniform(0.9, 1.1, 3)
    if kind == "red":
        return np.array([0.25, 0.6, 1.0]) * rng.uniform(0.9, 1.1, 3)
    if kind == "green":
        return np.array([0.45, 1.0, 0.4]) * rng.uniform(0.9, 1.1, 3)
    return np.ones(3)


def inject(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A copy of the flux image ``img`` (3, H, W; g, r, i) with one oddity of ``kind`` added."""
    if kind not in NOVEL_KINDS:
        raise ValueError(f"kind must be one of {NOVEL_KINDS}, got {kind!r}")
    out = np.array(img, dtype=np.float64, copy=True)
    dx, dy = _grid(img.shape[-1])
    peak, radius = _galaxy_scale(img)
    angle = rng.uniform(0, 2 * np.pi)
    if kind == "colour_knot":
        d = rng.uniform(0.3, 1.0) * radius
        prof = _gauss(dx - d * np.cos(angle), dy - d * np.sin(angle), 1.6)
        out += prof * _colour(rng, rng.choice(["blue", "green"]))[:, None, None] * peak * rng.uniform(0.35, 0.6)
    elif kind == "off_centre_core":
        d = rng.uniform(3, 6)
        prof = _gauss(dx - d * np.cos(angle), dy - d * np.sin(angle), 1.4)
        out += prof * _colour(rng, "red")[:, None, None] * peak * rng.uniform(0.4, 0.7)
    elif kind == "jet":
        length = rng.uniform(10, 20)
        u = np.cos(angle) * dx + np.sin(angle) * dy
        v = -np.sin(angle) * dx + np.cos(angle) * dy
        prof = np.exp(-0.5 * (v / 1.0) ** 2) * ((u > 2) & (u < length)) * np.exp(-u / length)
        out += prof * _colour(rng, "blue")[:, None, None] * peak * rng.uniform(0.15, 0.3)
    elif kind == "plume":
        d = rng.uniform(8, 14)
        prof = _gauss(dx - d * np.cos(angle), dy - d * np.sin(angle), rng.uniform(5, 8), rng.uniform(2.5, 4), angle)
        out += prof * _colour(rng, "grey")[:, None, None] * peak * rng.uniform(0.06, 0.12)
    elif kind == "dust_patch":
        d = rng.uniform(0.0, 0.6) * radius
        prof = _gauss(dx - d * np.cos(angle), dy - d * np.sin(angle), max(1.8, 0.5 * radius), 1.5, angle)
        absorb = np.array([0.7, 0.55, 0.4])[:, None, None] * rng.uniform(0.6, 0.9)
        out -= np.clip(img, 0, None) * prof * absorb
    elif kind == "ghost_ring":
        r0 = rng.uniform(18, 30)
        cx, cy = rng.uniform(-15, 15, 2)
        r = np.hypot(dx - cx, dy - cy)
        prof = ((r > r0 - 2.5) & (r < r0 + 2.5)).astype(float)
        out += prof * np.ones(3)[:, None, None] * rng.uniform(0.05, 0.09)
    elif kind == "cosmic_ray":
        band = int(rng.integers(0, 3))
        x0, y0 = rng.uniform(-30, 30, 2)
        length = rng.uniform(4, 9)
        t = np.linspace(0, length, 40)
        xs, ys = x0 + t * np.cos(angle), y0 + t * np.sin(angle)
        hit = np.zeros(img.shape[-2:])
        for x, y in zip(xs, ys):
            ix, iy = int(round(x + (img.shape[-1] - 1) / 2)), int(round(y + (img.shape[-2] - 1) / 2))
            if 0 <= ix < img.shape[-1] and 0 <= iy < img.shape[-2]:
                hit[iy, ix] = 1.0
        out[band] += hit * rng.uniform(2.0, 4.0)
    elif kind == "sky_gradient":
        ramp = (np.cos(angle) * dx + np.sin(angle) * dy) / (img.shape[-1] / 2)
        out += ramp[None] * np.array([0.04, 0.05, 0.06])[:, None, None] * rng.uniform(0.8, 1.3)
    return out.astype(np.float32)


def make_pairs(fluxes: np.ndarray, n_per_kind: int, seed: int = 0,
               kinds: tuple[str, ...] = NOVEL_KINDS) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """(twins, changed, kind of each pair, index into ``fluxes``) for ``n_per_kind`` pairs of each kind.

    ``fluxes``: normal galaxies (N, 3, H, W; g, r, i). Each pair uses a different galaxy where there are enough.
    """
    rng = np.random.default_rng(seed)
    total = n_per_kind * len(kinds)
    picks = rng.choice(len(fluxes), size=total, replace=total > len(fluxes))
    twins, changed, labels = [], [], []
    for k, idx in enumerate(picks):
        kind = kinds[k // n_per_kind]
        twins.append(np.asarray(fluxes[idx], dtype=np.float32))
        changed.append(inject(fluxes[idx], kind, rng))
        labels.append(kind)
    return np.stack(twins), np.stack(changed), labels, picks
