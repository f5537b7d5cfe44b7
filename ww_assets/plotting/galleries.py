"""Grids of cutouts as volunteers saw them: the comparison's four galleries, "more like this", a batch preview.

Kept apart from the statistical figures because it is the one figure the image side draws too (a batch's
preview), and because it has an orientation rule of its own: cutouts are stored in FITS row order (row 0 =
south), so they are drawn with ``origin="lower"`` to put north up.

Every cell carries a scale bar in arcsec (HSC's 0.168"/px unless told otherwise) and its caption (the callers
give the id, RA/Dec and the numbers: ``report.caption``); the title says how many images are shown, and of how
many when the set was cut.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ww_assets.plotting.sky import HSC_PIXEL_SCALE_ARCSEC
from ww_assets.plotting.style import new_figure, save_figure, wrap

__all__ = ["gallery"]

CELL_W, CELL_H = 1.75, 2.25  # inches per cutout: the image plus up to five caption lines above it


def _scale_bar(ax, size_px: int, pixel_scale: float, arcsec: float) -> None:
    """A white bar of ``arcsec`` in the lower left, labelled, outlined in black so it reads on any image."""
    import matplotlib.patheffects as pe

    length = arcsec / pixel_scale
    x0, y0 = 0.06 * size_px, 0.07 * size_px
    outline = [pe.withStroke(linewidth=2.2, foreground="black")]
    ax.plot([x0, x0 + length], [y0, y0], color="white", lw=1.6, solid_capstyle="butt", path_effects=outline,
            gid="scale-bar")
    ax.text(x0 + length / 2, y0 + 0.035 * size_px, f'{arcsec:g}"', color="white", fontsize=6, ha="center",
            va="bottom", path_effects=outline)


def gallery(
    images: np.ndarray,
    captions: Sequence[str],
    path: str | Path,
    *,
    title: str,
    ncols: int = 8,
    empty_note: str = "no images in this set",
    n_total: int | None = None,
    pixel_scale: float | None = HSC_PIXEL_SCALE_ARCSEC,
    scale_bar_arcsec: float = 5.0,
) -> Path:
    """A grid of cutouts, each with a caption above and a ``scale_bar_arcsec`` scale bar (none when
    ``pixel_scale`` is None); the title gets "(n shown)" or "(n of n_total shown)".

    ``images``: uint8 (N, 3, H, W) channels first or (N, H, W, 3), rows in FITS order (row 0 = south), as
    ``cutouts.npy`` stores them; drawn with origin "lower" so north is up, as volunteers saw them.
    """
    images = np.asarray(images)
    n = len(images)
    if n and images.shape[1] == 3 and images.shape[-1] != 3:
        images = images.transpose(0, 2, 3, 1)
    ncols = max(1, min(ncols, n)) if n else 1
    nrows = max(1, int(np.ceil(n / ncols)))
    width = max(CELL_W * ncols + 0.2, 3.6)  # a lone image still leaves room for a wrapped title
    fig = new_figure(width, CELL_H * nrows + 0.5)
    counted = f"{n} of {n_total:,} shown" if n_total is not None and n_total > n else f"{n} shown"
    if n == 0:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, empty_note, ha="center", va="center", fontsize=12)
        ax.set_axis_off()
    else:
        axes = fig.subplots(nrows, ncols, squeeze=False)
        for i, ax in enumerate(axes.ravel()):
            ax.set_axis_off()
            if i < n:
                ax.imshow(images[i], origin="lower", interpolation="nearest")
                ax.set_title(captions[i], fontsize=6.2, linespacing=1.15)
                if pixel_scale:
                    _scale_bar(ax, images.shape[2], pixel_scale, scale_bar_arcsec)
        if pixel_scale:
            counted += (f"; north up, east left; bar {scale_bar_arcsec:g}\", "
                        f"{images.shape[2] * pixel_scale:.1f}\" across")
    fig.suptitle(wrap(f"{title} ({counted})", width, 11), fontsize=11)
    return save_figure(fig, path)
