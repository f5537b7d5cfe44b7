"""Lupton RGB: how raw g, r, i fluxes become the images the model sees (Storey-Fisher et al. 2021).

``astropy.visualization.make_lupton_rgb(i, r, g, Q=15, stretch=0.5, minimum=0)``: red = i, green = r, blue = g,
uint8, channels first. The parameters are defined here once; ``ww_assets.model.observation`` models the same
mapping in torch (the pixel-noise model) and imports them from here. astropy is imported only when converting.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["IMAGE_SIZE", "BANDS", "LUPTON_Q", "LUPTON_STRETCH", "LUPTON_MINIMUM", "lupton_rgb"]

IMAGE_SIZE = 96



BANDS = ("g", "r", "i")



LUPTON_Q = 15.0



LUPTON_STRETCH = 0.5



LUPTON_MINIMUM = 0.0



def lupton_rgb(bands: np.ndarray, band_order: str = "gri", chunk: int = 512) -> np.ndarray:
    """Raw fluxes -> Lupton RGB ``uint8``, channels first, as in MODEL.md.

    ``bands``: (3, H, W) or (N, 3, H, W) float, its channels in ``band_order`` (default g, r, i). Calls
    ``astropy.visualization.make_lupton_rgb(i, r, g, Q=15, stretch=0.5, minimum=0)``. The mapping is per pixel
    (a fixed minimum of 0, no data-dependent interval), so N images are converted in one call by stacking them
    into one tall image; the result is identical to converting them one by one.
    """
    from astropy.visualization import make_lupton_rgb

    bands = np.asarray(bands)
    single = bands.ndim == 3
    if single:
        bands = bands[None]
    if bands.ndim != 4 or bands.shape[1] != 3:
        raise ValueError(f"expected (N, 3, H, W) or (3, H, W) band fluxes, got shape {bands.shape}")
    order = band_order.lower()
    if sorted(order) != sorted(BANDS):
        raise ValueError(f"band_order must be a permutation of 'gri', got {band_order!r}")
    gi, ri, ii = (order.index(b) for b in BANDS)
    n, _, h, w = bands.shape
    out = np.empty((n, 3, h, w), dtype=np.uint8)
    for start in range(0, n, chunk):
        block = bands[start:start + chunk]
        m = block.shape[0]
        g, r, i = (np.asarray(block[:, k], dtype=np.float64).reshape(m * h, w) for k in (gi, ri, ii))
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
            rgb = make_lupton_rgb(i, r, g, Q=LUPTON_Q, stretch=LUPTON_STRETCH, minimum=LUPTON_MINIMUM)
        out[start:start + m] = rgb.reshape(m, h, w, 3).transpose(0, 3, 1, 2)
    return out[0] if single else out

