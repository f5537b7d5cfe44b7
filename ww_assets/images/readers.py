"""Readers for each cutout format a batch folder may hold: per-band and multi-band FITS, npy / HDF5 arrays,
PNG / JPG thumbnails, and the catalog CSVs that give arrays their identifiers and every image its position.

Each reader hands what it read to a ``BatchCollector`` (``ww_assets.images.batch``) and quarantines, with the
reason, what it cannot use; the formats themselves are described in ``ww_assets.images.cutouts``. FITS files and
thumbnails are read in runs of ``READ_RUN`` objects (``read_objects``), which may run in worker processes.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from ww_assets.images.batch import BatchCollector, ImagingError
from ww_assets.images.lupton import BANDS

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.fz")



ARRAY_SUFFIXES = (".npy",)



HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")



THUMBNAIL_SUFFIXES = (".png", ".jpg", ".jpeg")



_BAND_RE = re.compile(r"^(?:hsc[-_]?)?([grizy])2?$", re.IGNORECASE)



PER_BAND_NAME_RE = re.compile(r"^(?P<id>.+?)[_-](?P<band>(?:hsc[-_]?)?[grizy]2?)$", re.IGNORECASE)



_ARRAY_BANDS_RE = re.compile(r"(?:^|[_-])bands[_-]?(?P<bands>[grizy]{3})(?:$|[_-])", re.IGNORECASE)



_ID_COLUMNS = ("image_id", "object_id", "objid", "image_identifier", "id")



def normalise_band(name: object) -> str | None:
    """``'HSC-G'``, ``'hsc_r2'``, ``'i'`` -> ``'g'``, ``'r'``, ``'i'``; anything else -> None."""
    if name is None:
        return None
    match = _BAND_RE.match(str(name).strip())
    return match.group(1).lower() if match else None



def file_suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in FITS_SUFFIXES + ARRAY_SUFFIXES + HDF5_SUFFIXES + THUMBNAIL_SUFFIXES + (".csv",):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()



def file_stem(path: Path) -> str:
    return path.name[: len(path.name) - len(file_suffix(path))]



def id_sort_key(image_id: str) -> tuple:
    # HSC object ids are integers; sort them as numbers, anything else as text, numbers first.
    return (0, int(image_id), "") if image_id.isdigit() else (1, 0, image_id)



def _id_column(frame: pd.DataFrame) -> str | None:
    lower = {c.lower().strip(): c for c in frame.columns}
    for name in _ID_COLUMNS:
        if name in lower:
            return lower[name]
    return None



def read_catalog_csv(path: Path) -> pd.DataFrame:
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



def catalog_positions(catalogs: Iterable[pd.DataFrame]) -> dict[str, tuple[float, float]]:
    positions: dict[str, tuple[float, float]] = {}
    for frame in catalogs:
        sub = frame.dropna(subset=["ra", "dec"])
        for image_id, ra, dec in zip(sub["image_id"], sub["ra"], sub["dec"]):
            positions.setdefault(str(image_id), (float(ra), float(dec)))
    return positions



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
            except Exception:  # noqa: BLE001 - not a number, or an unparsable card (VerifyError): no position
                pass
    try:
        wcs_like = str(header.get("CTYPE1", "")).upper().startswith("RA") and "NAXIS1" in header
    except Exception:  # noqa: BLE001 - an unparsable CTYPE1 card
        wcs_like = False
    if wcs_like:
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
                          out: BatchCollector, pending: list) -> None:
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
            # header cards are parsed when read: a broken FILTER card fails here, not in the caller
            header_band = _header_band(header)
        except Exception as exc:  # noqa: BLE001 - any failure to read is a per-image quarantine
            out.quarantine(image_id, path, f"unreadable file: {type(exc).__name__}: {exc}")
            return
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



def _read_multiband_fits(path: Path, size: int, out: BatchCollector, pending: list) -> None:
    """One object in one FITS file: a (bands, H, W) cube or one image extension per band."""
    from astropy.io import fits

    image_id = file_stem(path)
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



def _array_ids(path: Path, n: int, catalogs: dict[str, pd.DataFrame], n_arrays: int) -> list[str]:
    stem = file_stem(path)
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
               out: BatchCollector, chunk: int = 2048) -> None:
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



def read_npy(path: Path, size: int, catalogs: dict[str, pd.DataFrame], n_arrays: int, out: BatchCollector) -> None:
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
        match = _ARRAY_BANDS_RE.search(file_stem(path))
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



def read_hdf5(path: Path, size: int, catalogs: dict[str, pd.DataFrame], n_arrays: int, out: BatchCollector) -> None:
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
            # the size is in the header: check it before decoding (a small file may declare a huge image)
            if im.size != (size, size):
                return None, f"wrong size: {im.size[0]}x{im.size[1]} px, expected {size}x{size}"
            im.load()
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001
        return None, f"unreadable file: {type(exc).__name__}: {exc}"
    # Image files store the top (north) row first; FITS arrays, and so every other cutout here, the bottom row
    # first (astropy writes thumbnails with origin="lower"). Flip so a thumbnail and its FITS give one array.
    return np.ascontiguousarray(rgb[::-1].transpose(2, 0, 1)), None



def list_batch_files(folder: str | Path) -> list[Path]:
    """The files of a batch folder that this module reads (hidden files and sub-folders are skipped)."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith((".", "_")))



READ_RUN = 256          # objects per unit of work when reading FITS / thumbnails (and per progress call)



class ReadEvents:
    """What reading a run of objects produced, in order: quarantines, raw bands, RGB thumbnails (picklable)."""

    def __init__(self) -> None:
        self.items: list[tuple] = []

    def quarantine(self, image_id, source, reason: str) -> None:
        self.items.append(("q", image_id, str(source), reason))

    def append(self, entry: tuple) -> None:          # a per-band / multi-band object: (id, source, bands, radec)
        self.items.append(("bands", *entry))



def read_objects(items: list[tuple], size: int) -> list[tuple]:
    """Read a run of FITS objects and thumbnails; runs in a worker process for large batches."""
    events = ReadEvents()
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

