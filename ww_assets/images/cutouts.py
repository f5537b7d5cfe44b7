"""Reading galaxy cutouts into the arrays the model scores, and quarantining the ones that cannot be used.

One *batch* is one folder of cutouts. It may hold any mix of:

* **per-band FITS**, one file per band: ``<object_id>_<band>.fits`` (``.fit``, ``.fits.gz`` too), where the band
  is ``g``/``r``/``i`` or an HSC filter name (``HSC-G``, ``HSC-R2``, ...). A ``BAND`` or ``FILTER`` header, when
  present, must agree with the file name.
* **multi-band FITS**, one file per object: ``<object_id>.fits`` holding a cube (3 x H x W, band names in the
  header as ``BANDS = 'g,r,i'`` or ``BAND1..3`` / ``FILTER1..3``) or one image extension per band (band named by
  ``BAND``, ``FILTER`` or ``EXTNAME``).
* **arrays**: ``.npy`` or HDF5 (``.h5``/``.hdf5``). Float arrays are raw fluxes, shape (N, 3, H, W), band order
  in the name (``bands_gri.npy``) or, in HDF5, one (N, H, W) dataset per band (``g``, ``r``, ``i``) or an
  ``images`` dataset with a ``bands`` attribute. ``uint8`` arrays are RGB images already (N, 3, H, W or
  N, H, W, 3). Identifiers come from a CSV beside the array (``<stem>.csv`` or ``catalog.csv`` with an
  ``object_id`` or ``image_id`` column, one row per image, same order) or, in HDF5, an ``object_id`` dataset.
* **thumbnails**: ``<object_id>.png`` / ``.jpg`` — the RGB images volunteers saw; no Lupton (they are RGB
  already), but flipped top-to-bottom into the FITS row order (image files store the top row first).
* ``catalog.csv`` (``object_id, ra, dec``): sky positions for any of the above.

Raw bands become RGB exactly as in the reference (Storey-Fisher et al. 2021):
``astropy.visualization.make_lupton_rgb(i, r, g, Q=15, stretch=0.5, minimum=0)`` — red = i, green = r,
blue = g — as ``uint8``, channels first.

An image with a missing band, the wrong size, NaN/inf pixels, a duplicate identifier, or an unreadable file is
*quarantined* with its reason (one row in ``quarantine``); the rest of the batch goes on. A whole file that cannot
be used (an array without identifiers, say) quarantines every image it would have given, under one reason.

This module imports neither Dagster nor torch; Lupton RGB is ``ww_assets.images.lupton``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ww_assets.images.batch import QUARANTINE_COLUMNS, BatchCollector, CutoutBatch, ImagingError
from ww_assets.images.lupton import BANDS, IMAGE_SIZE
from ww_assets.storage import CATALOG_FILE, CUTOUTS_FILE, IMAGE_QUARANTINE_FILE
from ww_assets.images.readers import (
    ARRAY_SUFFIXES,
    FITS_SUFFIXES,
    HDF5_SUFFIXES,
    PER_BAND_NAME_RE,
    READ_RUN,
    THUMBNAIL_SUFFIXES,
    catalog_positions,
    file_stem,
    file_suffix,
    id_sort_key,
    list_batch_files,
    normalise_band,
    read_catalog_csv,
    read_hdf5,
    read_npy,
    read_objects,
)










# --------------------------------------------------------------------------------------------------------------
# A whole batch folder
# --------------------------------------------------------------------------------------------------------------


def read_cutout_folder(folder: str | Path, batch: str | None = None, size: int = IMAGE_SIZE,
                       progress=None, workers: int | None = None) -> CutoutBatch:
    """Read every cutout in ``folder`` (formats in the module docstring) into one :class:`CutoutBatch`.

    Images come out in a fixed order: array files first (their own order, files by name), then FITS objects and
    thumbnails by identifier. ``progress(done, total)`` is called now and then while FITS files are read.
    ``workers``: processes reading FITS files and thumbnails (default: 1 below 2,000 objects, else up to 8); the
    result does not depend on it. Raises :class:`ImagingError` when the folder is missing or an array has no
    usable identifiers.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImagingError(f"cutout folder {folder} does not exist")
    batch = batch or folder.name
    files = list_batch_files(folder)
    csvs = {file_stem(p): p for p in files if file_suffix(p) == ".csv"}
    catalogs = {stem: read_catalog_csv(p) for stem, p in csvs.items()}
    out = BatchCollector(size, catalog_positions(catalogs.values()))
    ignored: list[str] = []

    arrays = [p for p in files if file_suffix(p) in ARRAY_SUFFIXES + HDF5_SUFFIXES]
    for path in arrays:
        if file_suffix(path) in ARRAY_SUFFIXES:
            read_npy(path, size, catalogs, len(arrays), out)
        else:
            read_hdf5(path, size, catalogs, len(arrays), out)

    per_band: dict[str, dict[str, list[Path]]] = {}
    singles: list[tuple[str, Path, str]] = []      # (image_id, path, kind)
    for path in files:
        suffix = file_suffix(path)
        if suffix in FITS_SUFFIXES:
            match = PER_BAND_NAME_RE.match(file_stem(path))
            band = normalise_band(match.group("band")) if match else None
            if match and band in BANDS:
                per_band.setdefault(match.group("id"), {}).setdefault(band, []).append(path)
            elif match and band:
                ignored.append(str(path))      # z or y band: not used by the g, r, i model
            else:
                singles.append((file_stem(path), path, "fits"))
        elif suffix in THUMBNAIL_SUFFIXES:
            singles.append((file_stem(path), path, "thumbnail"))
        elif suffix not in ARRAY_SUFFIXES + HDF5_SUFFIXES + (".csv",):
            ignored.append(str(path))

    items = [(image_id, "bands", bands) for image_id, bands in per_band.items()]
    items += [(image_id, kind, path) for image_id, path, kind in singles]
    items.sort(key=lambda item: (id_sort_key(item[0]), item[1]))
    total = len(items)
    step = READ_RUN
    runs = [items[i:i + step] for i in range(0, total, step)]
    if workers is None:
        workers = 1 if total < 2000 else min(8, os.cpu_count() or 1)
    pending: list = []            # float bands waiting for one vectorised Lupton call
    thumbs: list = []

    def flush() -> None:
        # keep first-come order between FITS and thumbnails: flush whichever pends before switching kinds
        if pending:
            out.add_bands([p[0] for p in pending], [p[1] for p in pending], np.stack([p[2] for p in pending]),
                          "gri", [p[3] for p in pending])
            pending.clear()
        if thumbs:
            out.add_rgb([t[0] for t in thumbs], [t[1] for t in thumbs], np.stack([t[2] for t in thumbs]))
            thumbs.clear()

    pool = None
    if workers > 1 and len(runs) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
        results = pool.map(read_objects, runs, [size] * len(runs))
    else:
        results = (read_objects(run, size) for run in runs)
    try:
        done = 0
        for run, events in zip(runs, results):
            for kind, image_id, source, *rest in events:
                if kind == "q":
                    out.quarantine(image_id, source, rest[0])
                elif kind == "bands":
                    if thumbs:
                        flush()
                    pending.append((image_id, source, rest[0], rest[1]))
                else:
                    if pending:
                        flush()
                    thumbs.append((image_id, source, rest[0]))
                if len(pending) >= 1024 or len(thumbs) >= 4096:
                    flush()
            done += len(run)
            if progress is not None:
                progress(done, total)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    flush()
    result = out.result(batch)
    result.ignored_files = ignored
    return result


def read_batch_folders(root: str | Path, size: int = IMAGE_SIZE) -> tuple[np.ndarray, pd.DataFrame, dict]:
    """Every batch folder under ``root`` (e.g. a simulated sample's ``cutouts/``), in name order, read with
    ``read_cutout_folder``: (images, their catalogs concatenated with a ``folder`` column, {batch: quarantine
    reason counts} for the batches that quarantined anything)."""
    images, catalogs, quarantined = [], [], {}
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        batch = read_cutout_folder(folder, folder.name, size)
        images.append(batch.images)
        catalogs.append(batch.catalog.assign(folder=str(folder)))
        if len(batch.quarantine):
            quarantined[folder.name] = batch.reason_counts()
    return np.concatenate(images), pd.concat(catalogs, ignore_index=True), quarantined


def empty_batch(batch: str, size: int = IMAGE_SIZE) -> CutoutBatch:
    """A batch with no images (e.g. a published-release batch: scores only), with correctly typed empty tables."""
    return BatchCollector(size, {}).result(batch)


# --------------------------------------------------------------------------------------------------------------
# On disk: images/<batch>/
# --------------------------------------------------------------------------------------------------------------

def write_cutout_batch(result: CutoutBatch, folder: str | Path) -> None:
    """Write cutouts.npy, catalog.parquet and quarantine.parquet into ``folder`` (an ``atomic_dir`` target)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / CUTOUTS_FILE, np.ascontiguousarray(result.images, dtype=np.uint8), allow_pickle=False)
    result.catalog.to_parquet(folder / CATALOG_FILE, index=False)
    result.quarantine.to_parquet(folder / IMAGE_QUARANTINE_FILE, index=False)


def load_cutouts(folder: str | Path, mmap: bool = True) -> tuple[np.ndarray, pd.DataFrame]:
    """``cutouts.npy`` (memory-mapped by default) and ``catalog.parquet`` of one written batch, checked to agree."""
    folder = Path(folder)
    npy, cat = folder / CUTOUTS_FILE, folder / CATALOG_FILE
    for path in (npy, cat):
        if not path.exists():
            raise ImagingError(f"{path} is missing: materialise `cutouts` for this batch first")
    images = np.load(npy, mmap_mode="r" if mmap else None, allow_pickle=False)
    catalog = pd.read_parquet(cat)
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8:
        raise ImagingError(f"{npy}: expected uint8 (N, 3, H, W), got {images.dtype} {images.shape}")
    if len(catalog) != images.shape[0]:
        raise ImagingError(f"{npy} has {images.shape[0]} images but {cat} has {len(catalog)} rows")
    if len(catalog) and not np.array_equal(catalog["row"].to_numpy(), np.arange(len(catalog))):
        raise ImagingError(f"{cat}: column 'row' is not 0..N-1 in order")
    return images, catalog


def load_quarantine(folder: str | Path) -> pd.DataFrame:
    path = Path(folder) / IMAGE_QUARANTINE_FILE
    return pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=QUARANTINE_COLUMNS)



