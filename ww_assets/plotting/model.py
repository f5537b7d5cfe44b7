"""Figures of the wGAN: its training curves, and rows of images (real, reconstructed, residual, generated).

The figures a person needs to judge a generative model at a glance: do the losses settle (not diverge), does the
gradient penalty stay small, does the encoder converge; does G(z) draw galaxies, does G(E(x)) look like x, and
where do they differ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ww_assets.plotting.style import new_figure, save_figure

__all__ = ["loss_curves", "image_rows"]


def _smooth(values: np.ndarray, n: int) -> np.ndarray:
    if len(values) < 2 * n or n < 2:
        return values
    return np.convolve(values, np.ones(n) / n, mode="valid")


def _curves(ax, history: dict, keys: tuple[tuple[str, str], ...], n_smooth: int) -> None:
    for key, label in keys:
        v = history.get(key)
        if v is not None and len(v):
            s = _smooth(np.asarray(v), n_smooth)
            ax.plot(np.arange(len(s)) + (len(v) - len(s)) // 2 + 1, s, label=label, lw=1.2)


def loss_curves(history: dict[str, np.ndarray], path: str | Path, title: str) -> Path:
    """Critic / generator losses and the gradient penalty per generator iteration, and the encoder's losses per
    encoder iteration (running means over 2% of the run)."""
    hybrid = any(len(history.get(k, [])) for k in ("autoencoder_loss", "reconstruction_loss"))
    fig = new_figure(14.5 if hybrid else 11, 3.8)
    axes = fig.subplots(1, 4 if hybrid else 3)
    n_gan = max(1, len(history.get("critic_loss", [])) // 50)
    _curves(axes[0], history, (("critic_loss", "critic loss D(fake) - D(real) + 10 GP"),
                               ("wasserstein", "Wasserstein estimate D(real) - D(fake)"),
                               ("generator_loss", "generator loss -D(G(z))")), n_gan)
    axes[0].set(xlabel="generator iteration", ylabel="loss (critic units)", title="WGAN-GP")
    _curves(axes[1], history, (("gradient_penalty", "gradient penalty"),), n_gan)
    if history.get("gradient_penalty") is not None and len(history["gradient_penalty"]):
        axes[1].set_yscale("log")
    axes[1].set(xlabel="generator iteration", ylabel="(||grad D|| - 1)^2", title="critic gradient penalty")
    _curves(axes[2], history, (("encoder_loss", "izi_f total"), ("image_loss", "image MSE(x, E[x | G(E(x))])"),
                               ("feature_loss", "feature MSE(f(x), f(G(E(x))))")),
            max(1, len(history.get("encoder_loss", [])) // 50))
    if history.get("encoder_loss") is not None and len(history["encoder_loss"]):
        axes[2].set_yscale("log")
    axes[2].set(xlabel="encoder iteration", ylabel="mean squared error (images in [0, 1])",
                title="encoder (izi_f, G and D frozen)")
    if hybrid:  # the autoencoder warm start, then the reconstruction term of the WGAN phase, end to end
        ae = np.asarray(history.get("autoencoder_loss", []), float)
        rec = np.asarray(history.get("reconstruction_loss", []), float)
        for values, start, label in ((ae, 0, "autoencoder warm start"), (rec, len(ae), "WGAN phase (x weight)")):
            if len(values):
                sm = _smooth(values, max(1, len(values) // 50))
                axes[3].plot(start + np.arange(len(sm)) + (len(values) - len(sm)) // 2 + 1, sm, lw=1.2, label=label)
        axes[3].set_yscale("log")
        axes[3].set(xlabel="iteration (warm start, then generator iterations)",
                    ylabel="MSE(x, E[x | G(E(x))]) (images in [0, 1])", title="reconstruction (G and E together)")
    for ax in axes:
        ax.title.set_fontsize(10)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)


def image_rows(rows: list[tuple[str, np.ndarray]], path: str | Path, title: str) -> Path:
    """Rows of images, one labelled row each: uint8 (n, 3, H, W) RGB, or float (n, H, W) maps (a residual in
    noise units, drawn on a diverging scale with a colour bar)."""
    n = max(len(r[1]) for r in rows)
    fig = new_figure(1.3 * n + 1.6, 1.4 * len(rows) + 0.7)
    axes = np.atleast_2d(fig.subplots(len(rows), n, squeeze=False))
    for r, (label, imgs) in enumerate(rows):
        mappable = None
        for c in range(n):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(imgs):
                ax.axis("off")
                continue
            img = np.asarray(imgs[c])
            if img.ndim == 3:
                ax.imshow(np.transpose(img, (1, 2, 0)), origin="lower", interpolation="nearest")
            else:
                mappable = ax.imshow(img, origin="lower", cmap="RdBu_r", vmin=-5, vmax=5, interpolation="nearest")
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
        if mappable is not None:
            fig.colorbar(mappable, ax=list(axes[r]), shrink=0.8, extend="both",
                         label="residual / noise sigma", pad=0.01)
    fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)
