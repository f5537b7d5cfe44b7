"""Build the embedded sample: plan (labels, ids, subjects) -> cutouts (parallel per batch) -> volunteers -> manifest.

See the package docstring for the layout and formats.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import multiprocessing
import os
import time
from dataclasses import asdict, replace
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import numpy as np

from ww_assets.images.lupton import lupton_rgb
from ww_assets.storage import atomic_dir
from ww_assets.simulation import galaxies, volunteers
from ww_assets.simulation.sizes import SAMPLE_SIZES, SampleSize
from ww_assets.simulation.galaxies import ARTIFACT_LABELS, ASTRO_LABELS, BANDS, DEFAULT_RATES, LABELS, NPIX

#: bump when the bytes a given (size, seed) produces change; ensure_sample rebuilds on a mismatch
GENERATOR_VERSION = "1.0.0"

FILTERS = {"g": "HSC-G", "r": "HSC-R", "i": "HSC-I"}
CUTOUT_FORMATS = ("fits", "npy")

# HSC Wide fields the batches are spread over: (name, ra centre, dec centre, first tract number)
_FIELDS = [
    ("GAMA15H", 217.5, 0.5, 9376),
    ("GAMA09H", 140.0, 1.5, 9564),
    ("VVDS", 337.0, 0.8, 9716),
    ("WIDE12H", 180.0, -0.2, 9469),
    ("HECTOMAP", 242.0, 43.5, 15830 - 6350),  # tract number kept in the 17-digit 4xxx range
]


_OVERRIDES = ("n_images", "n_batches", "batch_size", "cutout_format", "thumbnails", "min_per_label",
              "subject_fraction", "exposures_min", "exposures_max", "workers")


# --------------------------------------------------------------------------------------------------------------
# settings


def resolve_spec(size: str | int, overrides: dict) -> tuple[SampleSize, int | None]:
    """The SampleSize for ``size`` with ``overrides`` applied; ValueError naming the setting when one is bad."""
    overrides = dict(overrides)
    unknown = sorted(set(overrides) - set(_OVERRIDES))
    if unknown:
        raise ValueError(f"unknown sample setting(s) {unknown}; allowed: {list(_OVERRIDES)}")
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        overrides.setdefault("n_images", int(size))
        size = "small"
    if not isinstance(size, str) or size not in SAMPLE_SIZES:
        raise ValueError(f"size must be one of {list(SAMPLE_SIZES)} (or an int number of images), got {size!r}")
    spec = SAMPLE_SIZES[size]
    workers = overrides.pop("workers", None)
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    n_images = overrides.pop("n_images", None)
    for key in ("n_batches", "batch_size", "min_per_label", "exposures_min", "exposures_max"):
        if key in overrides:
            v = overrides[key]
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < (0 if key == "min_per_label" else 1):
                raise ValueError(f"{key} must be a positive int, got {v!r}")
    if "cutout_format" in overrides and overrides["cutout_format"] not in CUTOUT_FORMATS:
        raise ValueError(f"cutout_format must be one of {list(CUTOUT_FORMATS)}, got {overrides['cutout_format']!r}")
    if "thumbnails" in overrides and not isinstance(overrides["thumbnails"], bool):
        raise ValueError(f"thumbnails must be true or false, got {overrides['thumbnails']!r}")
    if "subject_fraction" in overrides:
        f = overrides["subject_fraction"]
        if not isinstance(f, (int, float)) or not 0.0 < float(f) <= 1.0:
            raise ValueError(f"subject_fraction must be in (0, 1], got {f!r}")
        overrides["subject_fraction"] = float(f)
    spec = replace(spec, **overrides)
    if n_images is not None:
        if not isinstance(n_images, (int, np.integer)) or isinstance(n_images, bool) or n_images < 16:
            raise ValueError(f"n_images must be an int >= 16, got {n_images!r}")
        # the exact count: the last batch may be short
        spec = replace(spec, n_batches=int(math.ceil(n_images / spec.batch_size)), n_images=int(n_images))
    if spec.exposures_min > spec.exposures_max:
        raise ValueError(f"exposures_min ({spec.exposures_min}) must be <= exposures_max ({spec.exposures_max})")
    if spec.total_images < 16 or int(round(spec.total_images * spec.subject_fraction)) < 16:
        raise ValueError("the sample needs at least 16 subjects (one page): raise n_images or subject_fraction")
    return spec, workers


def _batch_sizes(spec: SampleSize) -> list[int]:
    total = spec.total_images
    sizes = [spec.batch_size] * (total // spec.batch_size)
    if total % spec.batch_size:
        sizes.append(total % spec.batch_size)
    return sizes


# --------------------------------------------------------------------------------------------------------------
# the plan: everything decided before drawing pixels


def _label_counts(n: int, rates: dict, min_per_label: int) -> dict[str, int]:
    raw = {k: rates[k] * n for k in rates}
    counts = {k: int(math.floor(v)) for k, v in raw.items()}
    short = int(round(sum(raw.values()))) - sum(counts.values())
    for k in sorted(raw, key=lambda k: (-(raw[k] - counts[k]), k))[:max(short, 0)]:
        counts[k] += 1
    for k in counts:
        counts[k] = max(counts[k], min_per_label)
    counts["normal"] = n - sum(counts.values())
    if counts["normal"] < 0:
        raise ValueError(f"n_images={n} is too small for min_per_label={min_per_label}")
    return counts


def _plan(spec: SampleSize, seed: int) -> tuple[list[dict], dict[str, int]]:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    n = spec.total_images
    counts = _label_counts(n, DEFAULT_RATES, spec.min_per_label)
    labels = np.array([lab for lab in LABELS for _ in range(counts[lab])], dtype=object)
    labels = labels[rng.permutation(n)]
    # subjects: the same fraction of every label (stratified), so every kind is both shown and left unseen
    is_subject = np.zeros(n, dtype=bool)
    for lab in LABELS:
        where = np.flatnonzero(labels == lab)
        k = int(round(spec.subject_fraction * len(where)))
        if len(where) >= 2:
            k = min(max(k, 1), len(where) - 1) if spec.subject_fraction < 1 else len(where)
        is_subject[rng.choice(where, size=k, replace=False)] = True
    objects: list[dict] = []
    index = 0
    next_subject = 80_000_000 + int(rng.integers(0, 500_000))
    for b, bsize in enumerate(_batch_sizes(spec)):
        batch = f"batch_{b:03d}"
        fname, ra0, dec0, tract0 = _FIELDS[b % len(_FIELDS)]
        ra_c = ra0 + 1.7 * (b // len(_FIELDS)) / math.cos(math.radians(dec0))
        tract = tract0 + b // len(_FIELDS)
        subj_mask = is_subject[index : index + bsize]
        upload = volunteers.LAUNCH - timedelta(days=3) + timedelta(days=2.0 * b, seconds=int(rng.integers(0, 3600)))
        serial = int(rng.integers(0, 5000))
        for k in range(bsize):
            dec = dec0 + rng.uniform(-0.75, 0.75)
            ra = ra_c + rng.uniform(-0.75, 0.75) / math.cos(math.radians(dec0))
            patch = int(rng.integers(0, 81))
            serial += int(rng.integers(1, 4000))
            object_id = (tract << 42) + (patch << 32) + serial
            label = str(labels[index])
            obj = {
                "index": index, "batch": batch, "field": fname, "object_id": str(object_id),
                "ra": float(ra), "dec": float(dec), "label": label,
                "is_subject": bool(subj_mask[k]),
            }
            if subj_mask[k]:
                next_subject += int(rng.integers(1, 30))
                obj["subject_id"] = next_subject
                obj["subject_set_id"] = 105_000 + b
                odd = label != "normal"
                obj["also_in_favourites"] = bool(rng.random() < (0.3 if odd else 0.03))
                obj["created_at"] = upload + timedelta(seconds=0.05 * k)
                obj["location_uuid"] = volunteers.location_uuid(rng)
            objects.append(obj)
            index += 1
    return objects, counts


# --------------------------------------------------------------------------------------------------------------
# pixels


def _object_streams(seed: int, index: int) -> tuple[np.random.Generator, int]:
    ss = np.random.SeedSequence(seed, spawn_key=(1, index))
    gs_seed = int(ss.generate_state(1, dtype=np.uint32)[0]) % (2**31 - 2) + 1
    return np.random.default_rng(ss), gs_seed


def _card(key: str, value, comment: str = "") -> str:
    """One 80-character FITS header card (fixed format)."""
    if isinstance(value, bool):
        v = f"{'T' if value else 'F':>20}"
    elif isinstance(value, int):
        v = f"{value:>20d}"
    elif isinstance(value, float):
        text = repr(float(value)).upper()
        if "." not in text and "E" not in text:
            text += ".0"
        v = f"{text:>20}"
    else:
        text = str(value).replace("'", "''")
        v = f"'{text:<8}'".ljust(20)
    card = f"{key:<8}= {v}" + (f" / {comment}" if comment else "")
    if len(card) > 80:
        raise ValueError(f"FITS card too long: {card!r}")
    return card.ljust(80)


def fits_bytes(image: np.ndarray, cards: list[tuple]) -> bytes:
    """A single-HDU FITS file (primary HDU, float32 image) as bytes: fixed-format cards, big-endian data.

    Written by hand because astropy's Header machinery costs ~10 ms per file; the result is read back and
    checked with astropy.io.fits in the tests.
    """
    ny, nx = image.shape
    head = [_card("SIMPLE", True, "conforms to FITS standard"), _card("BITPIX", -32, "array data type"),
            _card("NAXIS", 2, "number of array dimensions"), _card("NAXIS1", nx), _card("NAXIS2", ny)]
    head += [_card(*c) for c in cards]
    head.append("END".ljust(80))
    header = "".join(head)
    header += " " * (-len(header) % 2880)
    data = np.ascontiguousarray(image, dtype=">f4").tobytes()
    data += b"\0" * (-len(data) % 2880)
    return header.encode("ascii") + data


def _fits_cards(obj: dict, band: str, info: dict) -> list[tuple]:
    ra, dec = round(obj["ra"], 7), round(obj["dec"], 7)
    return [
        ("FILTER", FILTERS[band], "HSC filter"),
        ("BAND", band, "band"),
        ("OBJECT", obj["object_id"], "HSC-like object_id"),
        ("RA", ra, "[deg] object right ascension (ICRS)"),
        ("DEC", dec, "[deg] object declination (ICRS)"),
        ("PIXSCALE", galaxies.PIXSCALE, "[arcsec/pixel]"),
        ("MAGZERO", galaxies.MAGZERO, "mag = MAGZERO - 2.5 log10(flux)"),
        ("BUNIT", "adu", "linear flux, AB zero point MAGZERO"),
        ("SEEING", round(info["psf_fwhm_arcsec"][BANDS.index(band)], 4), "[arcsec] PSF FWHM"),
        ("WCSAXES", 2),
        ("CTYPE1", "RA---TAN"), ("CTYPE2", "DEC--TAN"),
        ("CUNIT1", "deg"), ("CUNIT2", "deg"),
        ("CRPIX1", NPIX / 2 + 0.5), ("CRPIX2", NPIX / 2 + 0.5),
        ("CRVAL1", ra), ("CRVAL2", dec),
        ("CD1_1", -galaxies.PIXSCALE / 3600.0), ("CD1_2", 0.0),
        ("CD2_1", 0.0), ("CD2_2", galaxies.PIXSCALE / 3600.0),
        ("RADESYS", "ICRS"),
        ("ORIGIN", "ww_assets.simulation", "simulated HSC-like cutout"),
        ("SIMVERS", GENERATOR_VERSION, "generator version"),
    ]


def write_thumbnail(path: Path, gri: np.ndarray) -> None:
    """PNG with north up: rows flipped as astropy's make_lupton_rgb(filename=...) does (origin='lower')."""
    from PIL import Image

    rgb = lupton_rgb(gri).transpose(1, 2, 0)  # the pipeline's own mapping (ww_assets.images.lupton), channels last
    Image.fromarray(np.ascontiguousarray(np.flipud(rgb))).save(path, format="PNG")


def _render_chunk(task: dict) -> tuple[list[dict], np.ndarray | None]:
    """Draw a run of objects of one batch into ``task['root']`` (the temporary sample folder).

    FITS cutouts and thumbnails are written here; for the npy format the (n, 3, 96, 96) cube comes back to the
    caller, which writes the batch's ``bands_gri.npy`` once all of its runs are in. Returns (truth rows, cube).
    """
    seed, root, fmt, thumbs = task["seed"], Path(task["root"]), task["cutout_format"], task["thumbnails"]
    objs = task["objects"]
    bdir = root / "cutouts" / objs[0]["batch"]
    bdir.mkdir(parents=True, exist_ok=True)
    cube = np.empty((len(objs), 3, NPIX, NPIX), dtype=np.float32) if fmt == "npy" else None
    truth = []
    for k, obj in enumerate(objs):
        rng, gs_seed = _object_streams(seed, obj["index"])
        img, info = galaxies.render_object(obj["label"], rng, gs_seed)
        if cube is None:
            for b, band in enumerate(BANDS):
                (bdir / f"{obj['object_id']}_{band}.fits").write_bytes(
                    fits_bytes(img[b], _fits_cards(obj, band, info)))
        else:
            cube[k] = img
        if thumbs and obj["is_subject"]:
            write_thumbnail(root / "thumbnails" / f"{obj['object_id']}.png", img)
        truth.append({**{k2: obj[k2] for k2 in ("index", "object_id", "batch", "label", "is_subject", "ra",
                                                "dec")},
                      "subject_id": obj.get("subject_id"), **info})
    return truth, cube


def _write_npy_batch(bdir: Path, objs: list[dict], cubes: list[np.ndarray]) -> None:
    np.save(bdir / "bands_gri.npy", np.concatenate(cubes) if len(cubes) > 1 else cubes[0])
    with (bdir / "catalog.csv").open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["object_id", "ra", "dec"])
        for obj in objs:
            w.writerow([obj["object_id"], f"{obj['ra']:.7f}", f"{obj['dec']:.7f}"])


def _draw_all(objects: list[dict], spec: SampleSize, seed: int, root: Path, workers: int | None) -> list[dict]:
    """Draw every object (in worker processes for large samples); returns truth rows in object order."""
    by_batch: dict[str, list[dict]] = {}
    for o in objects:
        by_batch.setdefault(o["batch"], []).append(o)
    if workers is None:
        workers = min(os.cpu_count() or 1, 16) if len(objects) >= 512 else 1
    # runs of at most 256 objects, never across batches, enough of them to keep every worker busy
    run = max(16, min(256, math.ceil(len(objects) / (4 * workers))))
    tasks = []
    for batch in sorted(by_batch):
        objs = by_batch[batch]
        for start in range(0, len(objs), run):
            tasks.append({"seed": seed, "root": str(root), "cutout_format": spec.cutout_format,
                          "thumbnails": spec.thumbnails, "objects": objs[start : start + run]})
    truth: list[dict] = []
    pending: dict[str, list[np.ndarray]] = {}

    def collect(task, result):
        rows, cube = result
        truth.extend(rows)
        if cube is not None:
            batch = task["objects"][0]["batch"]
            pending.setdefault(batch, []).append(cube)
            if sum(len(c) for c in pending[batch]) == len(by_batch[batch]):
                _write_npy_batch(root / "cutouts" / batch, by_batch[batch], pending.pop(batch))

    if workers > 1 and len(tasks) > 1:
        ctx = multiprocessing.get_context("spawn")  # no fork of a (possibly threaded) Dagster process
        with ctx.Pool(min(workers, len(tasks))) as pool:
            for task, result in zip(tasks, pool.imap(_render_chunk, tasks, chunksize=1)):
                collect(task, result)
    else:
        for task in tasks:
            collect(task, _render_chunk(task))
    return truth


def _interest(row: dict) -> float:
    """How likely an ordinary galaxy is to catch a volunteer's eye (relative): busy fields, big or blue ones."""
    x = 0.6 + 0.25 * min(row.get("n_neighbours", 0), 3)
    if row.get("half_light_arcsec", 0) > 1.2:
        x += 0.6
    if row.get("bulge_fraction", 1.0) < 0.15:
        x += 0.3
    return x


# --------------------------------------------------------------------------------------------------------------
# public API


@contextlib.contextmanager
def _lock(out_dir: Path) -> Iterator[None]:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out_dir.parent / f".{out_dir.name}.lock"
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no inter-process lock
        yield
        return
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _params_of(spec: SampleSize) -> dict:
    d = asdict(spec)
    d["n_images"] = spec.total_images
    d["n_batches"] = len(_batch_sizes(spec))
    return d


def _request(out_dir, size, seed, overrides: dict):
    """(folder, size name, SampleSize, seed, workers) for a build request, checked."""
    spec, workers = resolve_spec(size, overrides)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return Path(out_dir), (size if isinstance(size, str) else "custom"), spec, int(seed), workers


def build_sample(out_dir, size: str | int = "small", seed: int = 20211, **overrides) -> dict:
    """Build the embedded sample into ``out_dir`` (replacing it whole, atomically) and return its manifest.

    ``size``: one of ``SAMPLE_SIZES`` or an int number of images. ``overrides``: n_images, n_batches, batch_size,
    cutout_format ("fits" | "npy"), thumbnails, min_per_label, subject_fraction, exposures_min, exposures_max,
    workers (processes for drawing; does not change any byte).
    """
    out_dir, size_name, spec, seed, workers = _request(out_dir, size, seed, overrides)
    with _lock(out_dir):
        return _build_locked(out_dir, size_name, spec, seed, workers)


def _build_locked(out_dir: Path, size_name: str, spec: SampleSize, seed: int, workers: int | None) -> dict:
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir())
                                                      and not (out_dir / "sample.json").is_file())):
        raise FileExistsError(f"{out_dir} exists and is not an embedded sample (no sample.json): refusing to "
                              "replace it; choose another folder or remove it")
    t0 = time.perf_counter()
    objects, counts = _plan(spec, seed)
    with atomic_dir(out_dir) as tmp:
        (tmp / "thumbnails").mkdir()
        (tmp / "cutouts").mkdir()
        batches = sorted({o["batch"] for o in objects})
        truth = _draw_all(objects, spec, seed, tmp, workers)
        truth.sort(key=lambda r: r["index"])
        t_images = time.perf_counter() - t0

        subjects = []
        for row, obj in zip(truth, objects):
            if obj["is_subject"]:
                subjects.append({**obj, "interest": _interest(row)})
        vrng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,)))
        stats = volunteers.simulate_exports(subjects, tmp / "exports", vrng, seed=seed,
                                            exposures=(spec.exposures_min, spec.exposures_max))
        _write_truth(tmp / "truth.csv", truth)
        manifest = {
            "size": size_name,
            "seed": seed,
            "generator_version": GENERATOR_VERSION,
            "params": _params_of(spec),
            "n_images": spec.total_images,
            "n_batches": len(batches),
            "batches": batches,
            "cutout_format": spec.cutout_format,
            "cutout_files": ("cutouts/<batch>/<object_id>_<band>.fits" if spec.cutout_format == "fits"
                             else "cutouts/<batch>/bands_gri.npy + cutouts/<batch>/catalog.csv"),
            "thumbnails": spec.thumbnails,
            "bands": list(BANDS),
            "pixel_scale_arcsec": galaxies.PIXSCALE,
            "magzero": galaxies.MAGZERO,
            "counts": {lab: counts[lab] for lab in LABELS},
            "n_odd": sum(counts[lab] for lab in ASTRO_LABELS),
            "n_artifacts": sum(counts[lab] for lab in ARTIFACT_LABELS),
            "rates": dict(DEFAULT_RATES),
            "n_subjects": len(subjects),
            **{k: v for k, v in stats.items()},
            "exports": sorted(p.name for p in (tmp / "exports").iterdir()),
            "versions": {"generator": GENERATOR_VERSION, "galsim": _version("galsim"),
                         "numpy": np.__version__},
        }
        (tmp / "sample.json").write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    manifest["build_seconds"] = round(time.perf_counter() - t0, 2)  # returned, never written (determinism)
    manifest["image_seconds"] = round(t_images, 2)
    return manifest


def _version(mod: str) -> str:
    try:
        return __import__(mod).__version__
    except Exception:  # pragma: no cover
        return "unknown"


def _write_truth(path: Path, truth: list[dict]) -> None:
    cols = ["object_id", "batch", "label", "is_odd", "is_artifact", "is_subject", "subject_id", "ra", "dec",
            "i_mag", "g_r", "r_i", "half_light_arcsec", "psf_fwhm_i_arcsec", "n_neighbours"]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(cols)
        for r in truth:
            w.writerow([
                r["object_id"], r["batch"], r["label"],
                "true" if r["label"] in ASTRO_LABELS else "false",
                "true" if r["label"] in ARTIFACT_LABELS else "false",
                "true" if r["is_subject"] else "false",
                "" if r["subject_id"] is None else r["subject_id"],
                f"{r['ra']:.7f}", f"{r['dec']:.7f}",
                r["i_mag"], r["g_r"], r["r_i"], r["half_light_arcsec"], r["psf_fwhm_i_arcsec"], r["n_neighbours"],
            ])


def _manifest_matches(out_dir: Path, size_name: str, spec: SampleSize, seed: int) -> bool:
    try:
        m = json.loads((out_dir / "sample.json").read_text())
    except (OSError, ValueError):
        return False
    return (m.get("size") == size_name and m.get("seed") == seed
            and m.get("generator_version") == GENERATOR_VERSION and m.get("params") == _params_of(spec))


def ensure_sample(out_dir, size: str | int = "small", seed: int = 20211, **overrides) -> Path:
    """Build the sample at ``out_dir`` unless the one there already has this size, seed and generator version.

    Safe when several processes call it at once: they serialise on a lock file beside ``out_dir``; the later ones
    find the sample built and return.
    """
    out_dir, size_name, spec, seed, workers = _request(out_dir, size, seed, overrides)
    if _manifest_matches(out_dir, size_name, spec, seed):
        return out_dir
    with _lock(out_dir):
        if not _manifest_matches(out_dir, size_name, spec, seed):
            _build_locked(out_dir, size_name, spec, seed, workers)
    return out_dir
