"""Small model-side test worlds: toy galaxy images and a tiny, seconds-fast wGAN configuration."""

from __future__ import annotations

import numpy as np

from ww_assets.model.networks import WGANConfig

#: a few seconds of training on one CPU thread; its scores mean nothing
TINY = WGANConfig.preset("ci", generator_iterations=6, critic_steps=3, batch_size=8, lr=5e-4,
                         encoder_iterations=6, encoder_batch_size=8, encoder_lr=1e-3, seed=3)


def blobs(n: int, seed: int = 0) -> np.ndarray:
    """Toy 'galaxies': a coloured elliptical Gaussian on a dark noisy background, uint8 (n, 3, 96, 96)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:96, 0:96].astype(np.float32)
    out = np.empty((n, 3, 96, 96), np.uint8)
    for k in range(n):
        cx, cy = rng.normal(48, 3, 2)
        sx, sy = rng.uniform(4, 12, 2)
        blob = np.exp(-0.5 * (((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2))
        colour = rng.uniform(0.4, 1.0, 3)
        img = colour[:, None, None] * blob[None] + rng.normal(0.03, 0.02, (3, 96, 96))
        out[k] = np.clip(img * 255, 0, 255).astype(np.uint8)
    return out
