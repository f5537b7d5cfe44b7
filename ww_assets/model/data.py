"""The training images of the wGAN: the written cutouts of chosen image batches, memory-mapped and checked.

Training reads ``images/<batch>/cutouts.npy`` as written by the images stage (never the raw FITS), so the model
sees exactly what scoring will see. A file that cannot be used fails with its path named, before any training.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ww_assets.model.networks import ImageDataError, check_images
from ww_assets.storage import CUTOUTS_FILE, StorageLayout

__all__ = ["TrainingDataError", "available_batches", "load_training_images", "images_are_the_sample",
           "file_fingerprint", "spread_picks", "gather", "catalog_noise", "load_noise",
           "fill_missing_noise"]

#: the catalog's sky-noise columns in the images' channel order (red = i, green = r, blue = g)
NOISE_COLUMNS = ("sky_sigma_i", "sky_sigma_r", "sky_sigma_g")


def catalog_noise(catalog) -> np.ndarray:
    """(N, 3) float32 sky noise in channel order i, r, g from a batch catalog; NaN where it was not measured (an
    RGB-only thumbnail, or a catalog written before the noise was recorded)."""
    if not all(c in catalog.columns for c in NOISE_COLUMNS):
        return np.full((len(catalog), 3), np.nan, np.float32)
    return np.array(catalog[list(NOISE_COLUMNS)].to_numpy(dtype=np.float32), copy=True)  # writable


def load_noise(layout: StorageLayout, batches: list[str], arrays: list[np.ndarray]) -> list[np.ndarray]:
    """The sky noise of each training array (one per batch, as ``load_training_images`` returned them): from the
    catalogs, and estimated from the images themselves where the catalog has none."""
    import pandas as pd

    return [fill_missing_noise(catalog_noise(pd.read_parquet(layout.catalog_file(batch))), arr)
            for batch, arr in zip(batches, arrays)]


def fill_missing_noise(noise: np.ndarray, images: np.ndarray) -> np.ndarray:
    """``noise`` with every row that is not finite (a cutout with too little sky to measure from its bands, or an
    RGB-only one) estimated from the RGB image itself (``observation.estimate_sigma``)."""
    import torch

    from ww_assets.model.observation import estimate_sigma

    noise = np.array(noise, dtype=np.float32, copy=True)
    missing = np.flatnonzero(~np.isfinite(noise).all(1))
    for start in range(0, len(missing), 1024):
        rows = missing[start:start + 1024]
        x = torch.from_numpy(np.asarray(images[rows])).float() / 255
        noise[rows] = estimate_sigma(x).numpy()
    return noise


class TrainingDataError(ValueError):
    """No usable training images, or a cutouts file that cannot be used (names the file)."""


def available_batches(layout: StorageLayout) -> list[str]:
    """Batches whose cutouts have been written (``<root>/images/<batch>/cutouts.npy``), sorted."""
    root = layout.images_root
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / CUTOUTS_FILE).is_file())


def load_training_images(layout: StorageLayout, batches: list[str] | None = None, image_size: int = 96,
                         channels: int = 3) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Memory-mapped cutouts of the chosen batches (default: every written batch): (arrays, batch names, file
    paths). Checked: uint8 (N, 3, 96, 96); a bad file raises TrainingDataError naming it."""
    found = available_batches(layout)
    chosen = list(batches) if batches else found
    if not chosen:
        raise TrainingDataError(
            f"no training images: no {layout.images_root}/<batch>/{CUTOUTS_FILE}; materialise `cutouts` for at "
            "least one image batch first")
    missing = [b for b in chosen if b not in found]
    if missing:
        raise TrainingDataError(f"batches {missing} have no {CUTOUTS_FILE} under {layout.images_root} "
                                f"(available: {found}); materialise `cutouts` for them first")
    arrays, paths, used = [], [], []
    for batch in chosen:
        path = layout.cutouts_file(batch)
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise TrainingDataError(f"{path}: cannot be read as a numpy array ({exc})") from exc
        try:
            check_images(arr, image_size, channels, source=str(path))
        except ImageDataError as exc:
            raise TrainingDataError(str(exc)) from exc
        if arr.dtype != np.uint8:
            raise TrainingDataError(f"{path}: expected uint8 Lupton RGB (0-255), got {arr.dtype}")
        if len(arr):
            arrays.append(arr)
            paths.append(str(path))
            used.append(batch)
    if not arrays:
        raise TrainingDataError(f"the chosen batches {chosen} hold no images (all quarantined?)")
    return arrays, used, paths


def spread_picks(total: int, n: int) -> np.ndarray:
    """Up to ``n`` indices spread evenly over ``total`` images (for figures and checks)."""
    return np.linspace(0, total - 1, num=min(n, total)).astype(np.int64)


def gather(arrays: list[np.ndarray], picks: np.ndarray) -> np.ndarray:
    """The rows ``picks`` (indices into the concatenation of ``arrays``), without concatenating the arrays."""
    offsets = np.cumsum([0] + [len(a) for a in arrays])
    which = np.searchsorted(offsets, picks, side="right") - 1
    return np.stack([np.asarray(arrays[w][i - offsets[w]]) for w, i in zip(which, picks)])


def file_fingerprint(path: str) -> dict:
    """Path, size and (up to 1 GiB) SHA-256 of a training file, for the model card."""
    st = os.stat(path)
    out = {"path": path, "bytes": st.st_size}
    if st.st_size <= (1 << 30):
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        out["sha256"] = h.hexdigest()
    return out


def images_are_the_sample(layout: StorageLayout, batches: list[str]) -> bool:
    """True when every image of ``batches`` was read from the embedded sample (catalog ``source_path``)."""
    import pandas as pd

    sample = str(layout.sample_dir.resolve())
    if not batches:
        return False
    for batch in batches:
        path = layout.catalog_file(batch)
        if not path.is_file():
            return False
        try:
            sources = pd.read_parquet(path, columns=["source_path"])["source_path"].astype(str)
        except Exception:  # an unreadable or foreign catalog: not the sample
            return False
        if not sources.map(lambda p: str(Path(p).resolve()).startswith(sample + os.sep)).all():
            return False
    return True
