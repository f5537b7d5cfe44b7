"""Random bad cutout files for the batch readers (issue #18): generated batch folders mixing good and broken FITS
(corrupt headers, truncated files, odd dtypes, wrong shapes, NaN/inf pixels), npy arrays and PNG thumbnails.

Each example writes one batch folder and reads it with ``read_cutout_folder``. The only exception allowed is the
documented ``ImagingError`` (a batch-level problem, e.g. an array whose catalog has the wrong number of rows), and
its message must name the file. Otherwise every object written either lands in the catalog or is quarantined with
a reason, and its quarantine row names a file of that object; the good objects always land.

Deterministic (``derandomize=True``, no example database); the totals tried are printed (``-s``).
"""

from __future__ import annotations

import io
import warnings
from collections import Counter

import numpy as np
import pandas as pd
from astropy.io import fits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ww_assets.images import cutouts
from ww_assets.images.batch import ImagingError

S = 16              # cutout size for the fuzz: small, so many files fit in the time
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

DTYPES = ["float32", "float64", ">f4", "int16", "int32", "uint8", "uint16", "int64", "int8", "uint32"]  # FITS can store
SHAPES = [(S, S), (S, S + 1), (1, S, S), (S,), (3, S, S), (S, S, 1), (0, S), (2, 2)]


def _plane(rng: np.random.Generator, dtype: str = "float32", shape=(S, S)) -> np.ndarray:
    data = rng.normal(0.0, 0.05, shape) + 0.5
    return data.astype(np.dtype(dtype)) if dtype not in ("bool",) else data > 0.5


def _fits_bytes(data, header: dict | None = None) -> bytes:
    hdu = fits.PrimaryHDU(data)
    for key, value in (header or {}).items():
        hdu.header[key] = value
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hdu.writeto(buf)
    return buf.getvalue()


@st.composite
def broken_bytes(draw, data: bytes) -> bytes:
    """Damage a file's bytes: truncate, overwrite some, or replace it whole."""
    how = draw(st.sampled_from(["truncate", "overwrite", "header_card", "garbage", "empty"]))
    if how == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "overwrite":
        at = draw(st.integers(0, len(data) - 1))
        junk = draw(st.binary(min_size=1, max_size=64))
        return data[:at] + junk + data[at + len(junk):]
    if how == "header_card":      # a FITS card rewritten: bad value, bad keyword, absurd axis length
        return draw(broken_card(data))
    if how == "garbage":
        return draw(st.binary(max_size=300))
    return b""


#: Header cards as a damaged or hand-edited file may hold them (astropy parses a card only when it is read).
BROKEN_CARDS = [b"FILTER  = 'g", b"FILTER  = g / x", b"BAND    = 'HSC-G   ", b"FILTER  = 1e999", b"RA      = 'abc",
                b"RA      = 1.0.0", b"DEC     = ()", b"CTYPE1  = 'RA---TAN", b"BANDS   = 'g,r,i", b"NAXIS1  = 1e3",
                b"BITPIX  = 13", b"NAXIS   = 7", b"NAXIS2  = 99999999", b"SIMPLE  = F", b"END"]


@st.composite
def broken_card(draw, data: bytes) -> bytes:
    """One header card of a FITS file replaced by a broken one (mandatory cards included)."""
    at = 80 * draw(st.sampled_from([5, 6, 7, 8, 5, 6, 7, 0, 1, 2, 3, 4]))   # mostly the optional cards
    return data[:at] + draw(st.sampled_from(BROKEN_CARDS)).ljust(80) + data[at + 80:]


@st.composite
def band_file(draw, rng, band: str) -> tuple[str, bytes]:
    """One band's FITS file: good, or broken one way."""
    kind = draw(st.sampled_from(["good", "good", "nan", "dtype", "shape", "bytes", "band_header", "radec",
                                 "card"]))
    header = {"FILTER": f"HSC-{band.upper()}"}
    data = _plane(rng)
    if kind == "nan":
        data[draw(st.integers(0, S - 1)), draw(st.integers(0, S - 1))] = draw(st.sampled_from([np.nan, np.inf,
                                                                                               -np.inf]))
    elif kind == "dtype":
        data = _plane(rng, draw(st.sampled_from(DTYPES)))
    elif kind == "shape":
        data = _plane(rng, shape=draw(st.sampled_from(SHAPES)))
    elif kind == "band_header":
        header["FILTER"] = draw(st.sampled_from(["g", "r", "i", "z", "HSC-Y", "", "12", "ggg"]))
    elif kind == "radec":
        header.update(RA=draw(st.sampled_from([1.5, "x", 1e300])), DEC=draw(st.sampled_from([2.0, "nan", -91.0])),
                      CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRVAL1="bad")
    raw = _fits_bytes(data, header)
    if kind == "bytes":
        raw = draw(broken_bytes(raw))
    elif kind == "card":
        raw = draw(broken_card(raw))
    return kind, raw


@st.composite
def batch_folder(draw) -> dict:
    """{file name: bytes} of one batch, and what each object is."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    files: dict[str, bytes] = {}
    objects: dict[str, str] = {}          # image id -> how it was made ("good" when it must land)
    for k in range(draw(st.integers(1, 10))):
        oid = str(1000 + k)
        how = draw(st.sampled_from(["bands", "cube", "png", "bands_missing"]))
        if how in ("bands", "bands_missing"):
            kinds = []
            for band in "gri":
                if how == "bands_missing" and band == "i":
                    continue
                kind, raw = draw(band_file(rng, band))
                kinds.append(kind)
                files[f"{oid}_{band}.fits"] = raw
            objects[oid] = "good" if how == "bands" and all(k_ == "good" for k_ in kinds) else "bad"
        elif how == "cube":
            data = np.stack([_plane(rng) for _ in range(3)])
            header = draw(st.sampled_from([{"BANDS": "g,r,i"}, {"BANDS": "g,r"}, {"BANDS": "x,y,z"}, {}]))
            raw = _fits_bytes(data, header)
            broken = header != {"BANDS": "g,r,i"} or draw(st.booleans())
            if broken and header == {"BANDS": "g,r,i"}:
                raw = draw(broken_bytes(raw) | broken_card(raw))
            files[f"{oid}.fits"] = raw
            objects[oid] = "bad" if broken else "good"
        else:
            from PIL import Image

            mode = draw(st.sampled_from(["RGB", "RGB", "L", "RGBA", "P", "I;16", "1"]))
            side = draw(st.sampled_from([S, S, S + 3, 1]))
            im = Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).convert(mode)
            buf = io.BytesIO()
            im.save(buf, format="PNG")
            raw = buf.getvalue()
            broken = side != S or draw(st.booleans())
            if broken and side == S:
                raw = draw(broken_bytes(raw))
            files[f"{oid}.png"] = raw
            objects[oid] = "bad" if broken else "good"
    if draw(st.booleans()):                       # an array file with its catalog
        n = draw(st.integers(0, 4))
        dtype = draw(st.sampled_from(["float32", "float64", "uint8", "int16", "float16", "complex64", "bool",
                                      "object", "V8"]))
        shape = draw(st.sampled_from([(n, 3, S, S), (n, S, S, 3), (n, 3, S), (n, 2, S, S), (n, 3, S, S + 1)]))
        if dtype == "object":
            arr = np.empty(shape, dtype=object)
        elif dtype == "V8":
            arr = np.zeros(shape, dtype="V8")
        else:
            arr = (rng.normal(0.5, 0.05, shape) * (200 if dtype == "uint8" else 1)).astype(dtype)
        if dtype.startswith("float") and arr.size and draw(st.booleans()):
            arr.flat[0] = np.nan
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=True)
        raw = buf.getvalue()
        if draw(st.booleans()):
            raw = draw(broken_bytes(raw))
        files["bands_gri.npy"] = raw
        rows = n + draw(st.sampled_from([0, 0, 0, 1, -1]))
        files["bands_gri.csv"] = pd.DataFrame({"object_id": [f"50{j}" for j in range(max(rows, 0))]}).to_csv(
            index=False).encode()
        for j in range(n):
            objects[f"50{j}"] = "array"
    return {"files": files, "objects": objects}


def test_readers_survive_random_bad_files(tmp_path):
    stats: Counter = Counter()

    @FUZZ
    @given(batch_folder())
    def check(batch):
        stats["folders"] += 1
        folder = tmp_path / f"b{stats['folders']}"
        folder.mkdir()
        for name, raw in batch["files"].items():
            (folder / name).write_bytes(raw)
        stats["files"] += len(batch["files"])
        stats["objects"] += len(batch["objects"])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = cutouts.read_cutout_folder(folder, size=S)
        except ImagingError as exc:                 # documented: a whole array file unusable, named in the message
            assert "bands_gri" in str(exc), str(exc)
            stats["imaging_errors"] += 1
            return
        landed = set(result.catalog["image_id"])
        q = result.quarantine
        assert q["reason"].str.len().gt(0).all()
        assert set(result.images.shape[1:]) <= {3, S} and result.images.dtype == np.uint8
        assert len(result.catalog) == result.images.shape[0]
        for oid, how in batch["objects"].items():
            if how == "good":
                assert oid in landed, (oid, q.to_dict("records"))
            rows = q[q["image_id"].astype(object) == oid]
            if oid not in landed:
                # quarantined by id, or (a whole array file) under the file's name
                whole_file = q[q["image_id"].isna() & q["source_path"].str.contains("bands_gri", regex=False)]
                assert len(rows) or (how == "array" and len(whole_file)), (oid, q.to_dict("records"))
            for src in rows["source_path"]:
                assert str(folder) in src and (oid in src or "bands_gri" in src), src
        stats["landed"] += len(landed)
        stats["quarantined"] += len(q)
        stats.update("why:" + r.split(":", 1)[0] for r in q["reason"])

    check()
    print(f"\nreaders fuzz: {stats['folders']} folders, {stats['files']} files, {stats['objects']} objects tried, "
          f"{stats['landed']} landed, {stats['quarantined']} quarantine rows, {stats['imaging_errors']} documented "
          f"ImagingErrors, 0 unexpected exceptions; quarantined by reason: "
          + ", ".join(f"{k[4:]} {n}" for k, n in sorted(stats.items()) if k.startswith("why:")))
    assert stats["files"] > 200
