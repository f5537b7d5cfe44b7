"""Reading the latent vectors of every scored batch into one array, with where each row came from.

The scores group writes, per image batch, the published release's pair: ``latent_vectors.npy`` (N, D) and
``anomaly_scores.csv`` whose row k names the image of latent row k (file names: ``ww_assets.storage``). The map,
the neighbour search and "more like this" all need the latents of *all* batches at once, keyed by image id; this
module is that one reader, so that row order, dropped rows and the checks on the pair are decided in one place.

No Dagster here: a ``StorageLayout`` in, arrays and frames out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from ww_assets.storage import RELEASE_SCORES_FILE, StorageLayout

__all__ = ["LatentSet", "load_latents", "score_batches"]


@dataclass
class LatentSet:
    """Latent vectors of all batches, one row per image, with where each row came from."""

    index: pd.DataFrame  # image_id, batch, row (row within its batch's files)
    latents: np.ndarray  # (N, D) float32, same order as index
    dropped: pd.DataFrame  # image_id, batch, row, reason


def score_batches(layout: StorageLayout) -> list[str]:
    """Batches whose score folder holds latent vectors, sorted by name."""
    if not layout.scores_root.exists():
        return []
    return sorted(p.name for p in layout.scores_root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and layout.latents_file(p.name).exists())


def load_latents(layout: StorageLayout, batches: Sequence[str] | None = None) -> LatentSet:
    """Read ``latent_vectors.npy`` of each batch with the ids from the same folder's ``anomaly_scores.csv``.

    The two files share row order (the release format). A batch whose files disagree in length fails with both
    paths named. Rows with non-finite latents, and repeats of an image already read from an earlier batch, are
    dropped and listed in ``dropped`` with the reason.
    """
    batches = list(batches) if batches is not None else score_batches(layout)
    if not batches:
        raise FileNotFoundError(f"no latent vectors under {layout.scores_root} (run latent_vectors first)")
    parts, vecs, dropped = [], [], []
    dim = None
    for batch in batches:
        npy, csv = layout.latents_file(batch), layout.scores_dir(batch) / RELEASE_SCORES_FILE
        for p in (npy, csv):
            if not p.exists():
                raise FileNotFoundError(f"batch {batch!r}: missing {p}")
        z = np.load(npy, mmap_mode="r")
        ids = pd.read_csv(csv, usecols=["image_identifier"], dtype={"image_identifier": str})["image_identifier"]
        if z.ndim != 2 or z.shape[0] != len(ids):
            raise ValueError(f"batch {batch!r}: {npy} has shape {z.shape} but {csv} has {len(ids)} rows")
        if dim is None:
            dim = z.shape[1]
        elif z.shape[1] != dim:
            raise ValueError(f"batch {batch!r}: latent dimension {z.shape[1]} differs from earlier batches ({dim})")
        z = np.asarray(z, dtype=np.float32)
        frame = pd.DataFrame({"image_id": ids.to_numpy(dtype=str), "batch": batch,
                              "row": np.arange(len(ids), dtype=np.int64)})
        finite = np.isfinite(z).all(axis=1)
        if not finite.all():
            dropped.append(frame[~finite].assign(reason="non-finite latent vector"))
        parts.append(frame[finite])
        vecs.append(z[finite])
    index = pd.concat(parts, ignore_index=True)
    latents = np.concatenate(vecs, axis=0) if len(vecs) > 1 else np.ascontiguousarray(vecs[0])
    dup = index["image_id"].duplicated(keep="first").to_numpy()
    if dup.any():
        dropped.append(index[dup].assign(reason="image already read from an earlier batch"))
        index = index[~dup].reset_index(drop=True)
        latents = latents[~dup]
    dropped_frame = (pd.concat(dropped, ignore_index=True) if dropped
                     else pd.DataFrame({"image_id": pd.Series(dtype=str), "batch": pd.Series(dtype=str),
                                        "row": pd.Series(dtype=np.int64), "reason": pd.Series(dtype=str)}))
    return LatentSet(index=index, latents=latents, dropped=dropped_frame)
