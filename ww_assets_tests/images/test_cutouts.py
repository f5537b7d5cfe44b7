"""Reading cutouts: every supported format, Lupton RGB as the reference makes it, and quarantine of bad images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.visualization import make_lupton_rgb

from ww_assets.images import cutouts as imaging
from ww_assets.images.lupton import IMAGE_SIZE, lupton_rgb
from ww_assets.scores.batches import iter_chunks
from ww_assets.storage import atomic_dir

S = IMAGE_SIZE


def _bands(seed: int, n: int | None = None) -> np.ndarray:
    """Positive-ish sky noise plus a blob, (3, S, S) or (n, 3, S, S) float32 in g, r, i order."""
    rng = np.random.default_rng(seed)
    shape = (3, S, S) if n is None else (n, 3, S, S)
    yy, xx = np.mgrid[:S, :S]
    blob = np.exp(-((xx - 48) ** 2 + (yy - 48) ** 2) / (2 * 6.0**2)).astype(np.float32)
    return (rng.normal(0.0, 0.05, shape) + blob * np.array([1.0, 2.0, 3.0])[:, None, None]).astype(np.float32)


def _reference_rgb(gri: np.ndarray) -> np.ndarray:
    """What MODEL.md prescribes, one image at a time: make_lupton_rgb(i, r, g, ...) -> channels first."""
    rgb = make_lupton_rgb(gri[2], gri[1], gri[0], Q=15, stretch=0.5, minimum=0)
    return rgb.transpose(2, 0, 1)


def _write_band(path, data, band=None, **header):
    hdu = fits.PrimaryHDU(data)
    if band is not None:
        hdu.header["FILTER"] = band
    for key, value in header.items():
        hdu.header[key] = value
    hdu.writeto(path)


def test_lupton_batch_equals_astropy_one_by_one():
    stack = _bands(1, n=5)
    out = lupton_rgb(stack)
    assert out.dtype == np.uint8 and out.shape == (5, 3, S, S)
    for k in range(5):
        np.testing.assert_array_equal(out[k], _reference_rgb(stack[k]))
    # band order is honoured: the same fluxes given as i, r, g give the same picture
    np.testing.assert_array_equal(lupton_rgb(stack[:, ::-1], band_order="irg"), out)
    # red is i: an image bright only in i is red
    only_i = np.zeros((3, S, S), np.float32)
    only_i[2] = 1.0
    red = lupton_rgb(only_i)
    assert red[0].min() > 0 and red[1].max() == 0 and red[2].max() == 0


def _fits_batch(tmp_path):
    """Three good objects as per-band FITS, and one of each way an object can be unusable."""
    folder = tmp_path / "b1"
    folder.mkdir()
    good = {}
    for k, oid in enumerate(["1003", "1001", "1002"]):
        good[oid] = _bands(10 + k)
        for b, band in enumerate("gri"):
            _write_band(folder / f"{oid}_{band}.fits", good[oid][b], f"HSC-{band.upper()}", RA=150.0 + k, DEC=2.0)
    bad = _bands(99)
    # missing i band
    for b, band in enumerate("gr"):
        _write_band(folder / f"2001_{band}.fits", bad[b], band)
    # NaN pixels in r
    nan = bad.copy()
    nan[1, 5, 5] = np.nan
    for b, band in enumerate("gri"):
        _write_band(folder / f"2002_{band}.fits", nan[b], band)
    # wrong size
    for band in "gri":
        _write_band(folder / f"2003_{band}.fits", np.zeros((64, 64), np.float32), band)
    # unreadable file
    for b, band in enumerate("gr"):
        _write_band(folder / f"2004_{band}.fits", bad[b], band)
    (folder / "2004_i.fits").write_bytes(b"this is not a FITS file at all" * 100)
    # header disagrees with the file name
    for b, band in enumerate("gri"):
        _write_band(folder / f"2005_{band}.fits", bad[b], "g" if band == "r" else band)
    (folder / "README.txt").write_text("notes")
    return folder, good


def test_per_band_fits_and_quarantine_reasons(tmp_path):
    folder, good = _fits_batch(tmp_path)
    result = imaging.read_cutout_folder(folder, "b1")
    assert list(result.catalog["image_id"]) == ["1001", "1002", "1003"]          # numeric order
    assert list(result.catalog["row"]) == [0, 1, 2]
    assert (result.catalog["batch"] == "b1").all()
    for row, oid in enumerate(["1001", "1002", "1003"]):
        np.testing.assert_array_equal(result.images[row], _reference_rgb(good[oid]))
    assert result.catalog.loc[0, "ra"] == pytest.approx(151.0)
    reasons = dict(zip(result.quarantine["image_id"], result.quarantine["reason"]))
    assert reasons["2001"].startswith("missing band: i")
    assert reasons["2002"].startswith("non-finite pixels") and "band(s) r" in reasons["2002"]
    assert reasons["2003"].startswith("wrong size: 64x64")
    assert reasons["2004"].startswith("unreadable file")
    assert reasons["2005"].startswith("band mismatch")
    assert set(reasons).isdisjoint(result.catalog["image_id"])
    assert result.reason_counts() == {"band mismatch": 1, "missing band": 1, "non-finite pixels": 1,
                                      "unreadable file": 1, "wrong size": 1}
    assert [p.endswith("README.txt") for p in result.ignored_files] == [True]


def test_worker_processes_give_the_same_batch(tmp_path, monkeypatch):
    folder, _ = _fits_batch(tmp_path)
    serial = imaging.read_cutout_folder(folder, "b1")
    monkeypatch.setattr(imaging, "READ_RUN", 2)                 # 8 objects -> 4 runs over 2 processes
    calls = []
    parallel = imaging.read_cutout_folder(folder, "b1", workers=2, progress=lambda d, t: calls.append((d, t)))
    np.testing.assert_array_equal(parallel.images, serial.images)
    pd.testing.assert_frame_equal(parallel.catalog, serial.catalog)
    pd.testing.assert_frame_equal(parallel.quarantine, serial.quarantine)
    assert calls[-1] == (8, 8) and len(calls) == 4


def test_fits_cube_and_multi_extension(tmp_path):
    folder = tmp_path / "cubes"
    folder.mkdir()
    a, b = _bands(1), _bands(2)
    cube = fits.PrimaryHDU(a[::-1].copy())               # planes stored i, r, g
    cube.header["BANDS"] = "HSC-I,HSC-R,HSC-G"
    cube.writeto(folder / "5001.fits")
    hdus = [fits.PrimaryHDU()]
    for k, band in enumerate("gri"):
        hdus.append(fits.ImageHDU(b[k], name=band.upper()))
    fits.HDUList(hdus).writeto(folder / "5002.fits")
    fits.PrimaryHDU(a).writeto(folder / "5003.fits")     # a cube without band names
    result = imaging.read_cutout_folder(folder)
    assert list(result.catalog["image_id"]) == ["5001", "5002"]
    np.testing.assert_array_equal(result.images[0], _reference_rgb(a))
    np.testing.assert_array_equal(result.images[1], _reference_rgb(b))
    assert result.quarantine["reason"].iloc[0].startswith("no band names")


def test_arrays_npy_and_hdf5(tmp_path):
    import h5py

    folder = tmp_path / "arrays"
    folder.mkdir()
    stack = _bands(3, n=6)
    stack[4, 0, 0, 0] = np.inf
    np.save(folder / "bands_gri.npy", stack)
    pd.DataFrame({"object_id": [f"30{k}" for k in range(6)], "ra": np.arange(6.0), "dec": 1.0}).to_csv(
        folder / "bands_gri.csv", index=False)
    rgb = np.random.default_rng(0).integers(0, 255, (2, S, S, 3), dtype=np.uint8)   # channels last
    np.save(folder / "thumbs.npy", rgb)
    pd.DataFrame({"image_id": ["401", "402"]}).to_csv(folder / "thumbs.csv", index=False)
    h5 = _bands(4, n=3)
    with h5py.File(folder / "more.h5", "w") as fh:
        for k, band in enumerate("gri"):
            fh[band] = h5[:, k]
        fh["object_id"] = np.array([501, 502, 503], dtype=np.int64)
    result = imaging.read_cutout_folder(folder)
    ids = list(result.catalog["image_id"])
    assert ids == ["300", "301", "302", "303", "305", "501", "502", "503", "401", "402"]  # files by name
    np.testing.assert_array_equal(result.images[:4], lupton_rgb(stack[:4]))
    np.testing.assert_array_equal(result.images[5:8], lupton_rgb(h5))
    np.testing.assert_array_equal(result.images[8:], rgb.transpose(0, 3, 1, 2))
    assert list(result.quarantine["image_id"]) == ["304"]
    assert result.catalog.set_index("image_id").loc["302", "ra"] == 2.0


def test_array_without_matching_catalog_is_an_error_naming_both(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    np.save(folder / "bands_gri.npy", _bands(5, n=4))
    pd.DataFrame({"object_id": ["1", "2", "3"]}).to_csv(folder / "catalog.csv", index=False)
    with pytest.raises(imaging.ImagingError, match=r"bands_gri\.npy holds 4 images but .*catalog\.csv has 3 rows"):
        imaging.read_cutout_folder(folder)
    with pytest.raises(imaging.ImagingError, match="does not exist"):
        imaging.read_cutout_folder(tmp_path / "nowhere")


def test_thumbnails_and_duplicates(tmp_path):
    from PIL import Image

    folder = tmp_path / "thumbs"
    folder.mkdir()
    rgb = np.random.default_rng(1).integers(0, 255, (S, S, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "7001.png")
    Image.fromarray(np.zeros((424, 424, 3), np.uint8)).save(folder / "7002.png")
    (folder / "7003.jpg").write_bytes(b"\xff\xd8 broken jpeg")
    a = _bands(7)
    for k, band in enumerate("gri"):                     # the same object as FITS and as a PNG
        _write_band(folder / f"7004_{band}.fits", a[k], band)
    Image.fromarray(rgb).save(folder / "7004.png")
    result = imaging.read_cutout_folder(folder)
    assert list(result.catalog["image_id"]) == ["7001", "7004"]
    np.testing.assert_array_equal(result.images[0], rgb[::-1].transpose(2, 0, 1))   # flipped into FITS row order
    np.testing.assert_array_equal(result.images[1], _reference_rgb(a))          # FITS read first for 7004
    reasons = dict(zip(result.quarantine["image_id"], result.quarantine["reason"]))
    assert reasons["7002"].startswith("wrong size: 424x424")
    assert reasons["7003"].startswith("unreadable file")
    assert reasons["7004"].startswith("duplicate image_id")


def test_write_load_round_trip_and_rewrite(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    np.save(folder / "bands_gri.npy", _bands(8, n=3))
    pd.DataFrame({"object_id": ["1", "2", "3"]}).to_csv(folder / "catalog.csv", index=False)
    result = imaging.read_cutout_folder(folder, "bx")
    out = tmp_path / "images" / "bx"
    with atomic_dir(out) as tmp:
        imaging.write_cutout_batch(result, tmp)
    images, catalog = imaging.load_cutouts(out)
    np.testing.assert_array_equal(images, result.images)
    pd.testing.assert_frame_equal(catalog, result.catalog)
    assert imaging.load_quarantine(out).empty
    # a second write replaces the folder whole
    smaller = imaging.CutoutBatch("bx", result.images[:1], result.catalog.iloc[:1], result.quarantine)
    with atomic_dir(out) as tmp:
        imaging.write_cutout_batch(smaller, tmp)
    images, catalog = imaging.load_cutouts(out)
    assert images.shape[0] == 1 and len(catalog) == 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["bx"]


def test_iter_chunks_in_order_and_errors_propagate():
    data = np.arange(10 * 3 * 2 * 2, dtype=np.uint8).reshape(10, 3, 2, 2)
    chunks = list(iter_chunks(data, 4))
    assert [s for s, _ in chunks] == [0, 4, 8]
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), data)

    class Broken:
        shape = (10, 3, 2, 2)

        def __getitem__(self, item):
            raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(iter_chunks(Broken(), 4))


def test_reads_the_embedded_sample(tiny_sample, tmp_path):
    batches = sorted(p for p in (tiny_sample / "cutouts").iterdir() if p.is_dir())
    assert batches
    result = imaging.read_cutout_folder(batches[0])
    assert len(result) > 0 and result.images.dtype == np.uint8
    assert result.catalog["image_id"].is_unique
    assert np.isfinite(result.catalog[["ra", "dec"]].to_numpy()).all()
    # the thumbnails volunteers saw are the same pictures as the cutouts read from FITS
    thumbs = tiny_sample / "thumbnails"
    compared = 0
    for row, image_id in enumerate(result.catalog["image_id"]):
        png = thumbs / f"{image_id}.png"
        if png.exists():
            from_png = imaging.read_cutout_folder(_single(png, tmp_path / "one")).images[0]
            np.testing.assert_array_equal(from_png, result.images[row])
            compared += 1
            if compared == 3:
                break
    assert compared > 0


def _single(png, folder):
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copy(png, folder / png.name)
    return folder


def test_a_broken_header_card_quarantines_its_image_and_the_batch_goes_on(tmp_path):
    """Found by the readers fuzz (issue #18): astropy parses a card only when it is read, so an unparsable FILTER
    card raised VerifyError out of the batch read; it is now one quarantined image naming its file. A broken RA card
    costs only the position."""
    folder = tmp_path / "cards"
    folder.mkdir()
    a = _bands(8)
    for oid in ("9001", "9002"):
        for k, band in enumerate("gri"):
            _write_band(folder / f"{oid}_{band}.fits", a[k], band, RA=1.5, DEC=2.5)

    def damage(path, key, card):
        raw = bytearray(path.read_bytes())
        at = raw.index(key.ljust(8).encode())
        raw[at:at + 80] = card.ljust(80).encode()
        path.write_bytes(bytes(raw))

    damage(folder / "9001_r.fits", "FILTER", "FILTER  = 'r")
    damage(folder / "9002_g.fits", "RA", "RA      = 1.0.0")
    result = imaging.read_cutout_folder(folder)
    assert list(result.catalog["image_id"]) == ["9002"]
    assert result.catalog.loc[0, "ra"] == 1.5          # the g card is broken: the position comes from the r file
    (row,) = result.quarantine.itertuples()
    assert row.image_id == "9001" and row.source_path.endswith("9001_r.fits")
    assert row.reason.startswith("unreadable file: VerifyError")
