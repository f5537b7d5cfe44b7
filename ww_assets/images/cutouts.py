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
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from ww_assets.images.lupton import BANDS, IMAGE_SIZE, lupton_rgb


CUTOUTS_FILE = "cutouts.npy"
CATALOG_FILE = "catalog.parquet"
QUARANTINE_FILE = "quarantine.parquet"

CATALOG_COLUMNS = ["image_id", "batch", "row", "source_path", "ra", "dec"]
QUARANTINE_COLUMNS = ["image_id", "source_path", "reason"]

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.fz")
ARRAY_SUFFIXES = (".npy",)
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
THUMBNAIL_SUFFIXES = (".png", ".jpg", ".jpeg")

_BAND_RE = re.compile(r"^(?:hsc[-_]?)?([grizy])2?$", re.IGNORECASE)
_PER_BAND_NAME_RE = re.compile(r"^(?P<id>.+?)[_-](?P<band>(?:hsc[-_]?)?[grizy]2?)$", re.IGNORECASE)
_ARRAY_BANDS_RE = re.compile(r"(?:^|[_-])bands[_-]?(?P<bands>[grizy]{3})(?:$|[_-])", re.IGNORECASE)
_ID_COLUMNS = ("image_id", "object_id", "objid", "image_identifier", "id")


class ImagingError(ValueError):
    """A batch folder (not one image in it) cannot be read: it is missing, empty of images, or inconsistent."""


def normalise_band(name: object) -> str | None:
    """``'HSC-G'``, ``'hsc_r2'``, ``'i'`` -> ``'g'``, ``'r'``, ``'i'``; anything else -> None."""
    if name is None:
        return None
    match = _BAND_RE.match(str(name).strip())
    return match.group(1).lower() if match else None


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in FITS_SUFFIXES + ARRAY_SUFFIXES + HDF5_SUFFIXES + THUMBNAIL_SUFFIXES + (".csv",):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def _stem(path: Path) -> str:
    return path.name[: len(path.name) - len(_suffix(path))]


def _id_sort_key(image_id: str) -> tuple:
    # HSC object ids are integers; sort them as numbers, anything else as text, numbers first.
    return (0, int(image_id), "") if image_id.isdigit() else (1, 0, image_id)


# --------------------------------------------------------------------------------------------------------------
# Lupton RGB
# --------------------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------------------
# The result of reading one batch
# --------------------------------------------------------------------------------------------------------------

@dataclass
class CutoutBatch:
    """Images of one batch ready to score, their catalog rows, and what was quarantined (with reasons)."""

    batch: str
    images: np.ndarray                      # uint8 (N, 3, size, size), Lupton RGB, channels first
    catalog: pd.DataFrame                   # CATALOG_COLUMNS; row i describes images[i]
    quarantine: pd.DataFrame                # QUARANTINE_COLUMNS
    ignored_files: list[str] = field(default_factory=list)  # files in the folder that are not cutouts

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def reason_counts(self) -> dict[str, int]:
        """How many images were quarantined per kind of reason (the text before the first ':')."""
        if self.quarantine.empty:
            return {}
        kinds = self.quarantine["reason"].str.split(":", n=1).str[0]
        return {str(k): int(v) for k, v in kinds.value_counts().sort_index().items()}


class _Collector:
    """Gathers images from many sources, keeps the first of duplicated identifiers, records quarantine."""

    def __init__(self, size: int, positions: dict[str, tuple[float, float]]):
        self.size = size
        self.positions = positions
        self.seen: dict[str, str] = {}
        self.rgb_blocks: list[np.ndarray] = []
        self.rows: list[dict] = []
        self.quarantined: list[dict] = []

    def quarantine(self, image_id: str | None, source: Path | str, reason: str) -> None:
        self.quarantined.append({"image_id": image_id, "source_path": str(source), "reason": reason})

    def _claim(self, image_id: str, source: str) -> bool:
        if image_id in self.seen:
            self.quarantine(image_id, source, f"duplicate image_id: also read from {self.seen[image_id]}")
            return False
        self.seen[image_id] = source
        return True

    def _position(self, image_id: str, ra: float | None, dec: float | None) -> tuple[float, float]:
        if image_id in self.positions:
            return self.positions[image_id]
        return (np.nan if ra is None else float(ra), np.nan if dec is None else float(dec))

    def add_rgb(self, ids: list[str], sources: list[str], rgb: np.ndarray,
                radec: list[tuple[float | None, float | None]] | None = None) -> None:
        """Add uint8 (M, 3, H, W) images; duplicates of earlier identifiers are quarantined, not added."""
        keep = [k for k, (image_id, src) in enumerate(zip(ids, sources)) if self._claim(image_id, src)]
        if not keep:
            return
        self.rgb_blocks.append(rgb[keep] if len(keep) != len(ids) else rgb)
        for k in keep:
            ra, dec = radec[k] if radec is not None else (None, None)
            ra, dec = self._position(ids[k], ra, dec)
            self.rows.append({"image_id": ids[k], "source_path": sources[k], "ra": ra, "dec": dec})

    def add_bands(self, ids: list[str], sources: list[str], bands: np.ndarray, band_order: str,
                  radec: list[tuple[float | None, float | None]] | None = None) -> None:
        """Add float (M, 3, H, W) fluxes after checking size and finiteness; converts to Lupton RGB."""
        if bands.shape[0] == 0:
            return
        if bands.shape[-2:] != (self.size, self.size):
            for image_id, src in zip(ids, sources):
                self.quarantine(image_id, src, f"wrong size: {bands.shape[-2]}x{bands.shape[-1]} px, "
                                               f"expected {self.size}x{self.size}")
            return
        finite = np.isfinite(bands).all(axis=(2, 3))            # (M, 3)
        good = finite.all(axis=1)
        for k in np.flatnonzero(~good):
            bad = [band_order[c] for c in range(3) if not finite[k, c]]
            count = int((~np.isfinite(bands[k])).sum())
            self.quarantine(ids[k], sources[k], f"non-finite pixels: {count} NaN/inf px in band(s) {','.join(bad)}")
        if not good.any():
            return
        idx = np.flatnonzero(good)
        rgb = lupton_rgb(bands[idx] if len(idx) != len(ids) else bands, band_order)
        self.add_rgb([ids[k] for k in idx], [sources[k] for k in idx], rgb,
                     [radec[k] for k in idx] if radec is not None else None)

    def result(self, batch: str) -> CutoutBatch:
        if self.rgb_blocks:
            images = np.ascontiguousarray(np.concatenate(self.rgb_blocks, axis=0))
        else:
            images = np.zeros((0, 3, self.size, self.size), dtype=np.uint8)
        catalog = pd.DataFrame(self.rows, columns=["image_id", "source_path", "ra", "dec"])
        catalog.insert(1, "batch", batch)
        catalog.insert(2, "row", np.arange(len(catalog), dtype=np.int64))
        catalog = catalog[CATALOG_COLUMNS].astype({"image_id": str, "batch": str, "source_path": str,
                                                   "ra": "float64", "dec": "float64"})
        quarantine = pd.DataFrame(self.quarantined, columns=QUARANTINE_COLUMNS)
        quarantine = quarantine.astype({"image_id": "string", "source_path": str, "reason": str})
        return CutoutBatch(batch=batch, images=images, catalog=catalog.reset_index(drop=True),
                           quarantine=quarantine.reset_index(drop=True))


# --------------------------------------------------------------------------------------------------------------
# Catalogs
# --------------------------------------------------------------------------------------------------------------

def _id_column(frame: pd.DataFrame) -> str | None:
    lower = {c.lower().strip(): c for c in frame.columns}
    for name in _ID_COLUMNS:
        if name in lower:
            return lower[name]
    return None


def _read_catalog_csv(path: Path) -> pd.DataFrame:
    """A catalog CSV with an identifier column (and maybe ra/dec), identifiers kept as text."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    col = _id_column(frame)
    if col is None:
        raise ImagingError(f"{path}: no identifier column (expected one of {', '.join(_ID_COLUMNS)}); "
                           f"columns are {list(frame.columns)}")
    out = pd.DataFrame({"image_id": frame[col].str.strip()})
    lower = {c.lower().strip(): c for c in frame.columns}
    for name in ("ra", "dec"):
        out[name] = pd.to_numeric(frame[lower[name]], errors="coerce") if name in lower else np.nan
    return out


def _positions(catalogs: Iterable[pd.DataFrame]) -> dict[str, tuple[float, float]]:
    positions: dict[str, tuple[float, float]] = {}
    for frame in catalogs:
        sub = frame.dropna(subset=["ra", "dec"])
        for image_id, ra, dec in zip(sub["image_id"], sub["ra"], sub["dec"]):
            positions.setdefault(str(image_id), (float(ra), float(dec)))
    return positions


# --------------------------------------------------------------------------------------------------------------
# FITS
# --------------------------------------------------------------------------------------------------------------

def _header_band(header) -> str | None:
    for key in ("BAND", "FILTER", "FILTER01", "FILTNAME"):
        if key in header:
            band = normalise_band(header[key])
            if band:
                return band
    return None


def _header_radec(header) -> tuple[float | None, float | None]:
    for ra_key, dec_key in (("RA", "DEC"), ("RA_OBJ", "DEC_OBJ"), ("OBJ_RA", "OBJ_DEC")):
        if ra_key in header and dec_key in header:
            try:
                return float(header[ra_key]), float(header[dec_key])
            except (TypeError, ValueError):
                pass
    if str(header.get("CTYPE1", "")).upper().startswith("RA") and "NAXIS1" in header:
        try:
            from astropy.wcs import WCS, FITSFixedWarning

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FITSFixedWarning)
                wcs = WCS(header, naxis=2)
            ra, dec = wcs.all_pix2world([[(header["NAXIS1"] - 1) / 2, (header["NAXIS2"] - 1) / 2]], 0)[0]
            return float(ra), float(dec)
        except Exception:  # noqa: BLE001 - a broken WCS only costs us the position
            return None, None
    return None, None


def _native_float(data) -> np.ndarray:
    """FITS pixels as native-endian float32 (float64 when stored as 64-bit); exact for float32 files."""
    data = np.asarray(data)
    wide = data.dtype.itemsize > 4 or not np.issubdtype(data.dtype, np.floating)
    return data.astype(np.float64 if wide else np.float32)


def _read_fits_image(path: Path) -> tuple[np.ndarray, object]:
    """The first image HDU of a single-band FITS file as a float array, and its header."""
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdul:
        for hdu in hdul:
            if hdu.data is not None and getattr(hdu, "is_image", True) and np.ndim(hdu.data) >= 2:
                data = _native_float(hdu.data)
                header = hdu.header.copy()
                if hdul[0].header is not hdu.header:
                    for key in ("BAND", "FILTER", "RA", "DEC"):
                        if key not in header and key in hdul[0].header:
                            header[key] = hdul[0].header[key]
                return data, header
    raise ValueError("no image data in any HDU")


def _read_per_band_object(image_id: str, files: dict[str, list[Path]], size: int,
                          out: _Collector, pending: list) -> None:
    """Check and stack the g, r, i files of one object; quarantine it with a reason when that fails."""
    source = ";".join(str(p) for band in BANDS for p in files.get(band, []))
    missing = [b for b in BANDS if not files.get(b)]
    if missing:
        present = sorted(files)
        out.quarantine(image_id, source or str(next(iter(files.values()))[0]),
                       f"missing band: {','.join(missing)} (found {','.join(present) or 'none'})")
        return
    dup = [b for b in BANDS if len(files[b]) > 1]
    if dup:
        out.quarantine(image_id, source, f"duplicate band files: band(s) {','.join(dup)} given more than once")
        return
    planes, radec = [], (None, None)
    for band in BANDS:
        path = files[band][0]
        try:
            data, header = _read_fits_image(path)
        except Exception as exc:  # noqa: BLE001 - any failure to read is a per-image quarantine
            out.quarantine(image_id, path, f"unreadable file: {type(exc).__name__}: {exc}")
            return
        header_band = _header_band(header)
        if header_band is not None and header_band != band:
            out.quarantine(image_id, path, f"band mismatch: file name says {band}, header says {header_band}")
            return
        data = np.squeeze(data)
        if data.shape != (size, size):
            out.quarantine(image_id, path, f"wrong size: {'x'.join(map(str, data.shape))} px in band {band}, "
                                           f"expected {size}x{size}")
            return
        if radec == (None, None):
            radec = _header_radec(header)
        planes.append(data)
    pending.append((image_id, source, np.stack(planes), radec))


def _cube_band_names(header, n: int) -> list[str | None]:
    if "BANDS" in header:
        names = [normalise_band(x) for x in re.split(r"[,\s;]+", str(header["BANDS"]).strip()) if x]
        if len(names) == n:
            return names
    for prefix in ("BAND", "FILTER"):
        names = [normalise_band(header.get(f"{prefix}{k}")) for k in range(1, n + 1)]
        if all(names):
            return names
    return [None] * n


def _read_multiband_fits(path: Path, size: int, out: _Collector, pending: list) -> None:
    """One object in one FITS file: a (bands, H, W) cube or one image extension per band."""
    from astropy.io import fits

    image_id = _stem(path)
    try:
        with fits.open(path, memmap=False) as hdul:
            planes: dict[str, np.ndarray] = {}
            radec = _header_radec(hdul[0].header)
            images = [h for h in hdul if h.data is not None and np.ndim(h.data) >= 2]
            if not images:
                raise ValueError("no image data in any HDU")
            for hdu in images:
                data = _native_float(hdu.data)
                if data.ndim == 3:
                    names = _cube_band_names(hdu.header, data.shape[0])
                    if not all(names):
                        names = _cube_band_names(hdul[0].header, data.shape[0])
                    if not all(names):
                        out.quarantine(image_id, path, "no band names: a FITS cube needs BANDS='g,r,i' or "
                                                       "BAND1..BANDn in its header")
                        return
                    for name, plane in zip(names, data):
                        planes.setdefault(name, plane)
                elif data.ndim == 2:
                    band = _header_band(hdu.header) or normalise_band(hdu.header.get("EXTNAME"))
                    if band is None:
                        if len(images) == 1:
                            out.quarantine(image_id, path, "no band: a single-band FITS must be named "
                                                           "<object_id>_<band>.fits or carry BAND/FILTER")
                            return
                        continue
                    planes.setdefault(band, data)
                if radec == (None, None):
                    radec = _header_radec(hdu.header)
    except Exception as exc:  # noqa: BLE001
        out.quarantine(image_id, path, f"unreadable file: {type(exc).__name__}: {exc}")
        return
    missing = [b for b in BANDS if b not in planes]
    if missing:
        found = ",".join(sorted(planes)) or "none"
        out.quarantine(image_id, path, f"missing band: {','.join(missing)} (found {found})")
        return
    shapes = {b: planes[b].shape for b in BANDS}
    if any(s != (size, size) for s in shapes.values()):
        shape = next(s for s in shapes.values() if s != (size, size))
        out.quarantine(image_id, path, f"wrong size: {'x'.join(map(str, shape))} px, expected {size}x{size}")
        return
    pending.append((image_id, str(path), np.stack([planes[b] for b in BANDS]), radec))


# --------------------------------------------------------------------------------------------------------------
# Arrays (npy, HDF5) and thumbnails
# --------------------------------------------------------------------------------------------------------------

def _array_ids(path: Path, n: int, catalogs: dict[str, pd.DataFrame], n_arrays: int) -> list[str]:
    stem = _stem(path)
    for key in (stem, f"{stem}_catalog"):
        if key in catalogs:
            frame, name = catalogs[key], f"{key}.csv"
            break
    else:
        if "catalog" in catalogs and n_arrays == 1:
            frame, name = catalogs["catalog"], "catalog.csv"
        else:
            raise ImagingError(f"{path}: no identifiers: put {stem}.csv (object_id[, ra, dec]) beside it"
                               + ("" if n_arrays == 1 else "; catalog.csv is ambiguous with several arrays"))
    if len(frame) != n:
        raise ImagingError(f"{path} holds {n} images but {path.parent / name} has {len(frame)} rows")
    return [str(x) for x in frame["image_id"]]


def _add_array(path: Path, arr: np.ndarray, ids: list[str], band_order: str | None, size: int,
               out: _Collector, chunk: int = 2048) -> None:
    n = arr.shape[0]
    for start in range(0, n, chunk):
        block = np.asarray(arr[start:start + chunk])
        block_ids = ids[start:start + chunk]
        sources = [f"{path}[{k}]" for k in range(start, start + block.shape[0])]
        if block.dtype == np.uint8:
            if block.shape[-1] == 3 and block.shape[1] != 3:
                block = block.transpose(0, 3, 1, 2)
            if block.shape[1:] != (3, size, size):
                for image_id, src in zip(block_ids, sources):
                    out.quarantine(image_id, src, f"wrong size: {'x'.join(map(str, block.shape[1:]))}, "
                                                  f"expected 3x{size}x{size}")
                continue
            out.add_rgb(block_ids, sources, np.ascontiguousarray(block))
        else:
            out.add_bands(block_ids, sources, block, band_order or "gri")


def _read_npy(path: Path, size: int, catalogs: dict[str, pd.DataFrame], n_arrays: int, out: _Collector) -> None:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # noqa: BLE001
        out.quarantine(None, path, f"unreadable file: {type(exc).__name__}: {exc}")
        return
    if arr.ndim != 4:
        out.quarantine(None, path, f"unreadable file: expected a 4-d image array, got shape {arr.shape}")
        return
    band_order = None
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
            out.quarantine(None, path, f"unreadable file: unsupported dtype {arr.dtype}")
            return
        match = _ARRAY_BANDS_RE.search(_stem(path))
        if match is None or sorted(match.group("bands").lower()) != sorted(BANDS):
            out.quarantine(None, path, "no band order: name float arrays like bands_gri.npy "
                                       "(uint8 arrays are taken as RGB)")
            return
        band_order = match.group("bands").lower()
        if arr.shape[1] != 3:
            out.quarantine(None, path, f"unreadable file: expected (N, 3, H, W) bands, got {arr.shape}")
            return
    ids = _array_ids(path, arr.shape[0], catalogs, n_arrays)
    _add_array(path, arr, ids, band_order, size, out)


def _read_hdf5(path: Path, size: int, catalogs: dict[str, pd.DataFrame], n_arrays: int, out: _Collector) -> None:
    import h5py

    try:
        fh = h5py.File(path, "r")
    except Exception as exc:  # noqa: BLE001
        out.quarantine(None, path, f"unreadable file: {type(exc).__name__}: {exc}")
        return
    with fh:
        keys = {k.lower(): k for k in fh.keys()}
        ids = None
        for name in ("object_id", "image_id", "objid", "id"):
            if name in keys:
                raw = fh[keys[name]][()]
                ids = [x.decode() if isinstance(x, bytes) else str(x) for x in np.asarray(raw).ravel()]
                break
        radec = None
        if "ra" in keys and "dec" in keys:
            radec = list(zip(np.asarray(fh[keys["ra"]][()], dtype=float), np.asarray(fh[keys["dec"]][()], dtype=float)))
        band_keys = {normalise_band(k): k for k in fh.keys() if normalise_band(k)}
        if all(b in band_keys for b in BANDS):
            datasets = [fh[band_keys[b]] for b in BANDS]
            n = datasets[0].shape[0]
            if any(d.shape[0] != n for d in datasets):
                out.quarantine(None, path, "unreadable file: band datasets have different lengths")
                return
            arr = None
        else:
            name = next((keys[k] for k in ("images", "cutouts", "bands", "rgb") if k in keys), None)
            if name is None:
                out.quarantine(None, path, "unreadable file: no g/r/i datasets and no 'images' dataset")
                return
            arr = fh[name]
            n = arr.shape[0]
        if ids is None:
            ids = _array_ids(path, n, catalogs, n_arrays)
        elif len(ids) != n:
            raise ImagingError(f"{path}: {n} images but {len(ids)} identifiers in its object_id dataset")
        chunk = 2048
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            sources = [f"{path}[{k}]" for k in range(start, stop)]
            block_radec = radec[start:stop] if radec is not None else None
            if arr is None:
                block = np.stack([np.asarray(d[start:stop], dtype=np.float64) for d in datasets], axis=1)
                out.add_bands(ids[start:stop], sources, block, "gri", block_radec)
            elif arr.dtype == np.uint8:
                block = np.asarray(arr[start:stop])
                if block.shape[-1] == 3 and block.shape[1] != 3:
                    block = block.transpose(0, 3, 1, 2)
                if block.shape[1:] != (3, size, size):
                    for image_id, src in zip(ids[start:stop], sources):
                        out.quarantine(image_id, src, f"wrong size: {'x'.join(map(str, block.shape[1:]))}, "
                                                      f"expected 3x{size}x{size}")
                    continue
                out.add_rgb(ids[start:stop], sources, np.ascontiguousarray(block), block_radec)
            else:
                order = str(arr.attrs.get("bands", "")).replace(",", "").replace(" ", "").lower()
                if sorted(order) != sorted(BANDS):
                    out.quarantine(None, path, "no band order: a float 'images' dataset needs attrs['bands']='gri'")
                    return
                block = np.asarray(arr[start:stop], dtype=np.float64)
                out.add_bands(ids[start:stop], sources, block, order, block_radec)


def _read_thumbnail(path: Path, size: int) -> tuple[np.ndarray | None, str | None]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if im.size != (size, size):
                return None, f"wrong size: {im.size[0]}x{im.size[1]} px, expected {size}x{size}"
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001
        return None, f"unreadable file: {type(exc).__name__}: {exc}"
    # Image files store the top (north) row first; FITS arrays, and so every other cutout here, the bottom row
    # first (astropy writes thumbnails with origin="lower"). Flip so a thumbnail and its FITS give one array.
    return np.ascontiguousarray(rgb[::-1].transpose(2, 0, 1)), None


# --------------------------------------------------------------------------------------------------------------
# A whole batch folder
# --------------------------------------------------------------------------------------------------------------

def list_batch_files(folder: str | Path) -> list[Path]:
    """The files of a batch folder that this module reads (hidden files and sub-folders are skipped)."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith((".", "_")))


READ_RUN = 256          # objects per unit of work when reading FITS / thumbnails (and per progress call)


class _Events:
    """What reading a run of objects produced, in order: quarantines, raw bands, RGB thumbnails (picklable)."""

    def __init__(self) -> None:
        self.items: list[tuple] = []

    def quarantine(self, image_id, source, reason: str) -> None:
        self.items.append(("q", image_id, str(source), reason))

    def append(self, entry: tuple) -> None:          # a per-band / multi-band object: (id, source, bands, radec)
        self.items.append(("bands", *entry))


def _read_items(items: list[tuple], size: int) -> list[tuple]:
    """Read a run of FITS objects and thumbnails; runs in a worker process for large batches."""
    events = _Events()
    for image_id, kind, what in items:
        if kind == "bands":
            _read_per_band_object(image_id, what, size, events, events)
        elif kind == "fits":
            _read_multiband_fits(what, size, events, events)
        else:
            rgb, reason = _read_thumbnail(what, size)
            if reason:
                events.quarantine(image_id, what, reason)
            else:
                events.items.append(("rgb", image_id, str(what), rgb))
    return events.items


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
    csvs = {_stem(p): p for p in files if _suffix(p) == ".csv"}
    catalogs = {stem: _read_catalog_csv(p) for stem, p in csvs.items()}
    out = _Collector(size, _positions(catalogs.values()))
    ignored: list[str] = []

    arrays = [p for p in files if _suffix(p) in ARRAY_SUFFIXES + HDF5_SUFFIXES]
    for path in arrays:
        if _suffix(path) in ARRAY_SUFFIXES:
            _read_npy(path, size, catalogs, len(arrays), out)
        else:
            _read_hdf5(path, size, catalogs, len(arrays), out)

    per_band: dict[str, dict[str, list[Path]]] = {}
    singles: list[tuple[str, Path, str]] = []      # (image_id, path, kind)
    for path in files:
        suffix = _suffix(path)
        if suffix in FITS_SUFFIXES:
            match = _PER_BAND_NAME_RE.match(_stem(path))
            band = normalise_band(match.group("band")) if match else None
            if match and band in BANDS:
                per_band.setdefault(match.group("id"), {}).setdefault(band, []).append(path)
            elif match and band:
                ignored.append(str(path))      # z or y band: not used by the g, r, i model
            else:
                singles.append((_stem(path), path, "fits"))
        elif suffix in THUMBNAIL_SUFFIXES:
            singles.append((_stem(path), path, "thumbnail"))
        elif suffix not in ARRAY_SUFFIXES + HDF5_SUFFIXES + (".csv",):
            ignored.append(str(path))

    items = [(image_id, "bands", bands) for image_id, bands in per_band.items()]
    items += [(image_id, kind, path) for image_id, path, kind in singles]
    items.sort(key=lambda item: (_id_sort_key(item[0]), item[1]))
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
        results = pool.map(_read_items, runs, [size] * len(runs))
    else:
        results = (_read_items(run, size) for run in runs)
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


def empty_batch(batch: str, size: int = IMAGE_SIZE) -> CutoutBatch:
    """A batch with no images (e.g. a published-release batch: scores only), with correctly typed empty tables."""
    return _Collector(size, {}).result(batch)


# --------------------------------------------------------------------------------------------------------------
# On disk: images/<batch>/
# --------------------------------------------------------------------------------------------------------------

def write_cutout_batch(result: CutoutBatch, folder: str | Path) -> None:
    """Write cutouts.npy, catalog.parquet and quarantine.parquet into ``folder`` (an ``atomic_dir`` target)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / CUTOUTS_FILE, np.ascontiguousarray(result.images, dtype=np.uint8), allow_pickle=False)
    result.catalog.to_parquet(folder / CATALOG_FILE, index=False)
    result.quarantine.to_parquet(folder / QUARANTINE_FILE, index=False)


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
    path = Path(folder) / QUARANTINE_FILE
    return pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=QUARANTINE_COLUMNS)


# --------------------------------------------------------------------------------------------------------------
# Feeding cutouts to the scorer
# --------------------------------------------------------------------------------------------------------------


