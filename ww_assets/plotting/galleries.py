"""Grids of cutouts as volunteers saw them: the comparison's four galleries, "more like this", a batch preview.

Kept apart from the statistical figures because it is the one figure the image side draws too (a batch's
preview), and because it has an orientation rule of its own: cutouts are stored in FITS row order (row 0 =
south), so they are drawn with ``origin="lower"`` to put north up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ww_assets.plotting.style import new_figure, save_figure

__all__ = ["gallery"]


def gallery(
    images: np.ndarray,
    captions: Sequence[str],
    path: str | Path,
    *,
    title: str,
    ncols: int = 8,
    empty_note: str = "no images in this set",
) -> Path:
    """A grid of cutouts, each with a caption above.

    ``images``: uint8 (N, 3, H, W) channels first or (N, H, W, 3), rows in FITS order (row 0 = south), as
    ``cutouts.npy`` stores them; drawn with origin "lower" so north is up, as volunteers saw them.
    """
    images = np.asarray(images)
    n = len(images)
    if n and images.shape[1] == 3 and images.shape[-1] != 3:
        images = images.transpose(0, 2, 3, 1)
    ncols = max(1, min(ncols, n)) if n else 1
    nrows = max(1, int(np.ceil(n / ncols)))
    fig = new_figure(1.6 * ncols + 0.2, 2.0 * nrows + 0.6)
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
                ax.set_title(captions[i], fontsize=6.5)
    fig.suptitle(title)
    return save_figure(fig, path)
