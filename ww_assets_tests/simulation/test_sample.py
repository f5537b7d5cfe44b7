"""The embedded sample: determinism, formats (FITS, the real Zooniverse export schemas), volunteer behaviour."""

from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from ww_assets.simulation.galaxies import ARTIFACT_LABELS, ASTRO_LABELS, LABELS
from ww_assets.simulation.sample import build_sample, ensure_sample
from ww_assets.simulation.sizes import SAMPLE_SIZES
from ww_assets.simulation import volunteers as vol

csv.field_size_limit(1 << 26)

CLASSIFICATION_HEADER = ("classification_id,user_name,user_id,user_ip,workflow_id,workflow_name,workflow_version,"
                         "created_at,gold_standard,expert,metadata,annotations,subject_data,subject_ids")
SUBJECT_HEADER = ("subject_id,project_id,workflow_id,subject_set_id,metadata,locations,classifications_count,"
                  "retired_at,retirement_reason,created_at,updated_at")
WORKFLOW_HEADER = ("workflow_id,display_name,version,active,classifications_count,pairwise,grouped,prioritized,"
                   "primary_language,first_task,tutorial_subject_id,retired_set_member_subjects_count,tasks,"
                   "retirement,strings,minor_version")
COMMENT_KEYS = {"board_id", "board_title", "board_description", "discussion_id", "discussion_title", "comment_id",
                "comment_body", "comment_focus_id", "comment_focus_type", "comment_user_id", "comment_user_login",
                "comment_created_at"}
TAG_KEYS = {"id", "name", "section", "created_at", "user_id", "comment_id", "taggable_id", "taggable_type",
            "project_id", "user_login"}


def _rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sample(tiny_sample) -> Path:
    return tiny_sample


@pytest.fixture(scope="module")
def truth(sample) -> list[dict]:
    return _rows(sample / "truth.csv")


@pytest.fixture(scope="module")
def classifications(sample) -> list[dict]:
    return _rows(sample / "exports" / "weird-and-wonderful-classifications.csv")


# ---------------------------------------------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_differs(sample, tmp_path):
    again = tmp_path / "again"
    build_sample(again, size="tiny", seed=20211)
    a, b = _digests(sample), _digests(again)
    assert a.keys() == b.keys() and len(a) > 100
    assert a == b
    other = tmp_path / "other"
    build_sample(other, size="tiny", seed=7)
    c = _digests(other)
    assert c["truth.csv"] != a["truth.csv"]
    assert c["exports/weird-and-wonderful-classifications.csv"] != a[
        "exports/weird-and-wonderful-classifications.csv"]


def test_worker_count_does_not_change_bytes(tmp_path):
    one = build_sample(tmp_path / "one", size="tiny", seed=3, n_images=48, batch_size=32, workers=1)
    two = build_sample(tmp_path / "two", size="tiny", seed=3, n_images=48, batch_size=32, workers=2)
    assert one["n_images"] == two["n_images"] == 48 and one["batches"] == ["batch_000", "batch_001"]
    assert _digests(tmp_path / "one") == _digests(tmp_path / "two")


def test_layout_and_manifest(sample, truth):
    m = json.loads((sample / "sample.json").read_text())
    assert m["size"] == "tiny" and m["seed"] == 20211 and m["n_images"] == 96
    assert m["batches"] == ["batch_000", "batch_001"]
    assert sum(m["counts"].values()) == 96 and set(m["counts"]) == set(LABELS)
    assert m["n_subjects"] == sum(r["is_subject"] == "true" for r in truth)
    assert 0.6 < m["n_subjects"] / m["n_images"] < 0.8
    for name in ("weird-and-wonderful-classifications.csv", "weird-and-wonderful-subjects.csv",
                 "weird-and-wonderful-workflows.csv", f"project-{vol.PROJECT_ID}-comments.json",
                 f"project-{vol.PROJECT_ID}-tags.json"):
        assert (sample / "exports" / name).is_file(), name
    ids = [r["object_id"] for r in truth]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 17 and i.isdigit() for i in ids)
    thumbs = {p.stem for p in (sample / "thumbnails").glob("*.png")}
    assert thumbs == {r["object_id"] for r in truth if r["is_subject"] == "true"}


def test_truth_has_every_label(truth):
    labels = {r["label"] for r in truth}
    assert labels == set(LABELS)
    for r in truth:
        assert (r["is_odd"] == "true") == (r["label"] in ASTRO_LABELS)
        assert (r["is_artifact"] == "true") == (r["label"] in ARTIFACT_LABELS)


def test_fits_headers_and_pixels(sample, truth):
    from astropy.io import fits
    from astropy.wcs import WCS

    for r in truth[:12]:
        for band, filt in (("g", "HSC-G"), ("r", "HSC-R"), ("i", "HSC-I")):
            path = sample / "cutouts" / r["batch"] / f"{r['object_id']}_{band}.fits"
            with fits.open(path) as hdul:
                hdul.verify("exception")
                h, data = hdul[0].header, hdul[0].data
                assert data.shape == (96, 96) and data.dtype.kind == "f" and data.dtype.itemsize == 4
                assert np.isfinite(data).all()
                assert h["FILTER"] == filt and h["BAND"] == band and h["OBJECT"] == r["object_id"]
                assert h["PIXSCALE"] == pytest.approx(0.168) and h["MAGZERO"] == 27.0
                sky = WCS(h).pixel_to_world(47.5, 47.5)
                assert sky.ra.deg == pytest.approx(float(r["ra"]), abs=1e-6)
                assert sky.dec.deg == pytest.approx(float(r["dec"]), abs=1e-6)


def _load(sample: Path, r: dict) -> np.ndarray:
    from astropy.io import fits

    return np.stack([fits.getdata(sample / "cutouts" / r["batch"] / f"{r['object_id']}_{b}.fits")
                     for b in "gri"]).astype(np.float64)


def test_normal_galaxies_have_hsc_like_magnitudes_and_noise(sample, truth):
    normals = [r for r in truth if r["label"] == "normal"][:20]
    mags, sigmas = [], []
    yy, xx = np.mgrid[0:96, 0:96]
    r_pix = np.hypot(xx - 47.5, yy - 47.5)
    for r in normals:
        img = _load(sample, r)
        aperture = img[2][r_pix < 5.0 / 0.168].sum()  # 10" diameter aperture
        mags.append(27.0 - 2.5 * np.log10(aperture))
        corner = img[2][:12, :12]
        sigmas.append(np.std(corner))
    # the aperture catches the galaxy (20 < i < 20.5) plus or minus neighbours and noise
    assert 19.6 < np.median(mags) < 20.6
    assert 0.02 < np.median(sigmas) < 0.12


def test_oddities_are_visible(sample, truth):
    """Rings and mergers put more light far from the centre than ordinary galaxies; artifacts change pixels."""
    yy, xx = np.mgrid[0:96, 0:96]
    r_pix = np.hypot(xx - 47.5, yy - 47.5)

    def outer_fraction(img):
        i = np.clip(img[1] + img[2], 0, None)
        return i[(r_pix > 1.2 / 0.168) & (r_pix < 4.5 / 0.168)].sum() / i[r_pix < 4.5 / 0.168].sum()

    normal = [outer_fraction(_load(sample, r)) for r in truth if r["label"] == "normal"][:30]
    for label in ("ring", "merger"):
        r = next(t for t in truth if t["label"] == label)
        assert outer_fraction(_load(sample, r)) > np.percentile(normal, 50), label
    cut = _load(sample, next(t for t in truth if t["label"] == "edge_cut"))
    assert (cut == 0).all(axis=0).sum() >= 0.2 * 96 * 96  # a flat, exactly-zero region in every band
    green = next(t for t in truth if t["label"] == "compact_starforming")
    assert float(green["half_light_arcsec"]) < 0.35


def test_classification_rows_are_pages_of_16(sample, classifications, truth):
    subject_rows = _rows(sample / "exports" / "weird-and-wonderful-subjects.csv")
    known = {int(r["subject_id"]) for r in subject_rows}
    assert known == {int(r["subject_id"]) for r in truth if r["subject_id"]}
    assert len(classifications) > 50
    for row in classifications:
        data = json.loads(row["subject_data"])
        assert list(data) == [row["subject_ids"]]  # keyed by the group subject the classification links to
        inner = data[row["subject_ids"]]
        assert inner["retired"] is None and "#subject_group_id" in inner
        page = [int(s) for s in inner["#group_subject_ids"].split("-")]
        assert len(page) == 16 and len(set(page)) == 16 and set(page) <= known
        ann = json.loads(row["annotations"])
        assert [a["task"] for a in ann] == ["T0"]
        for click in ann[0]["value"]:
            assert int(click["subject"]) in page
            assert page[click["index"]] == int(click["subject"])
        assert row["workflow_version"].count(".") == 1
        assert row["created_at"].endswith(" UTC")
        meta = json.loads(row["metadata"])
        assert {"started_at", "finished_at", "user_agent", "utc_offset", "user_language", "session",
                "viewport", "subject_selection_state", "source"} <= set(meta)


def test_anonymous_and_repeat_submissions(classifications):
    anon = [r for r in classifications if r["user_id"] == ""]
    assert anon and all(r["user_name"].startswith("not-logged-in-") for r in anon)
    assert 0.1 < len(anon) / len(classifications) < 0.5
    logged = [r for r in classifications if r["user_id"]]
    assert all(not r["user_name"].startswith("not-logged-in-") for r in logged)
    seen: dict = {}
    repeats = 0
    for r in classifications:
        page = json.loads(r["subject_data"])[r["subject_ids"]]["#group_subject_ids"]
        key = (r["user_name"], page)
        repeats += key in seen
        seen[key] = r["classification_id"]
    assert repeats >= 1
    assert len({r["classification_id"] for r in classifications}) == len(classifications)
    # apart from repeats of a whole page, nobody sees a subject twice
    per_user: dict = {}
    for (user, page) in seen:
        for s in page.split("-"):
            assert (user, s) not in per_user, "a volunteer saw a subject on two different pages"
            per_user[(user, s)] = page


def test_each_subject_shown_to_many_volunteers(classifications, truth):
    viewers: dict = {}
    for r in classifications:
        page = json.loads(r["subject_data"])[r["subject_ids"]]["#group_subject_ids"].split("-")
        for s in page:
            viewers.setdefault(s, set()).add(r["user_name"])
    counts = np.array([len(v) for v in viewers.values()])
    assert len(viewers) == sum(t["is_subject"] == "true" for t in truth)
    assert counts.min() >= 14 and np.median(counts) >= 15


def test_odd_images_are_clicked_more(classifications, truth):
    label_of = {t["subject_id"]: t["label"] for t in truth if t["subject_id"]}
    shown: dict = {}
    clicked: dict = {}
    for r in classifications:
        page = json.loads(r["subject_data"])[r["subject_ids"]]["#group_subject_ids"].split("-")
        for s in page:
            shown[s] = shown.get(s, 0) + 1
        for c in json.loads(r["annotations"])[0]["value"]:
            clicked[c["subject"]] = clicked.get(c["subject"], 0) + 1
    frac = {s: clicked.get(s, 0) / n for s, n in shown.items()}
    normal = np.mean([f for s, f in frac.items() if label_of[s] == "normal"])
    striking = [f for s, f in frac.items() if label_of[s] in ("merger", "ring", "lens")]
    assert normal < 0.15
    assert striking and min(striking) > 2 * normal


def test_export_headers_are_the_real_schemas(sample):
    ex = sample / "exports"
    for name, header in (("weird-and-wonderful-classifications.csv", CLASSIFICATION_HEADER),
                         ("weird-and-wonderful-subjects.csv", SUBJECT_HEADER),
                         ("weird-and-wonderful-workflows.csv", WORKFLOW_HEADER)):
        assert (ex / name).read_text(encoding="utf-8").split("\n", 1)[0] == header, name
    subjects = _rows(ex / "weird-and-wonderful-subjects.csv")
    ids = [r["subject_id"] for r in subjects]
    assert len(ids) > len(set(ids))  # some subjects are in two subject sets
    for r in subjects:
        meta = json.loads(r["metadata"])
        assert {"object_id", "ra", "dec", "#index", "image", "batch"} <= set(meta)
        assert meta["image"] == f"{meta['object_id']}.png"
        assert json.loads(r["locations"])["0"].startswith("https://panoptes-uploads.zooniverse.org/")
    wf = _rows(ex / "weird-and-wonderful-workflows.csv")
    assert wf[0]["grouped"] == "true"
    assert json.loads(wf[0]["tasks"])["T0"]["type"] == "subjectGroupComparison"


def test_talk_comments_and_tags(sample, truth):
    comments = json.loads((sample / "exports" / f"project-{vol.PROJECT_ID}-comments.json").read_text())
    tags = json.loads((sample / "exports" / f"project-{vol.PROJECT_ID}-tags.json").read_text())
    assert comments and tags
    assert all(set(c) == COMMENT_KEYS for c in comments)
    assert all(set(t) == TAG_KEYS for t in tags)
    by_id = {c["comment_id"]: c for c in comments}
    subject_ids = {int(t["subject_id"]) for t in truth if t["subject_id"]}
    for t in tags:
        c = by_id[t["comment_id"]]
        assert t["taggable_type"] == "Subject" and t["taggable_id"] == c["comment_focus_id"]
        assert "#" + t["name"] in c["comment_body"]
        assert t["user_id"] == c["comment_user_id"] and t["user_login"] == c["comment_user_login"]
    for c in comments:
        if c["comment_focus_type"] == "Subject":
            assert c["comment_focus_id"] in subject_ids
        assert c["comment_created_at"].endswith("Z")


def test_thumbnail_is_the_lupton_image(sample, truth):
    from PIL import Image

    r = next(t for t in truth if t["is_subject"] == "true")
    png = np.asarray(Image.open(sample / "thumbnails" / f"{r['object_id']}.png"))
    from astropy.visualization import make_lupton_rgb

    g, r_, i = _load(sample, r).astype(np.float32)  # computed here independently: MODEL.md's call, north up
    expected = np.flipud(make_lupton_rgb(i, r_, g, Q=15, stretch=0.5, minimum=0))
    assert png.shape == (96, 96, 3) and png.dtype == np.uint8
    assert np.array_equal(png, expected)


def test_bad_settings_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="size"):
        build_sample(tmp_path / "x", size="huge")
    with pytest.raises(ValueError, match="cutout_format"):
        build_sample(tmp_path / "x", size="tiny", cutout_format="tiff")
    with pytest.raises(ValueError, match="colour"):
        build_sample(tmp_path / "x", size="tiny", colour="blue")
    with pytest.raises(ValueError, match="seed"):
        ensure_sample(tmp_path / "x", size="tiny", seed=-1)
    assert set(SAMPLE_SIZES) == {"tiny", "small", "medium", "large"}
    assert not (tmp_path / "x").exists()


def test_npy_format(tmp_path):
    out = tmp_path / "npy"
    m = build_sample(out, size="tiny", seed=5, n_images=40, batch_size=24, cutout_format="npy", workers=2)
    build_sample(tmp_path / "npy1", size="tiny", seed=5, n_images=40, batch_size=24, cutout_format="npy",
                 workers=1)
    assert _digests(out) == _digests(tmp_path / "npy1")
    assert m["batches"] == ["batch_000", "batch_001"]
    cube = np.load(out / "cutouts" / "batch_001" / "bands_gri.npy")
    cat = _rows(out / "cutouts" / "batch_001" / "catalog.csv")
    assert cube.shape == (16, 3, 96, 96) and cube.dtype == np.float32 and len(cat) == 16
    assert list(cat[0]) == ["object_id", "ra", "dec"]
    assert not list((out / "cutouts").rglob("*.fits"))


def _ensure(args):
    out, seed = args
    ensure_sample(out, size="tiny", seed=seed, n_images=32, batch_size=32)
    return json.loads((Path(out) / "sample.json").read_text())["seed"]


def test_ensure_sample_is_idempotent_and_concurrent_safe(tmp_path):
    out = tmp_path / "s"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        assert pool.map(_ensure, [(str(out), 11), (str(out), 11)]) == [11, 11]
    stamp = (out / "sample.json").stat().st_mtime_ns
    ensure_sample(out, size="tiny", seed=11, n_images=32, batch_size=32)
    assert (out / "sample.json").stat().st_mtime_ns == stamp  # no rebuild
    ensure_sample(out, size="tiny", seed=12, n_images=32, batch_size=32)
    assert json.loads((out / "sample.json").read_text())["seed"] == 12
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".s.tmp")]


def test_refuses_to_replace_a_folder_that_is_not_a_sample(tmp_path):
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an embedded sample"):
        ensure_sample(precious, size="tiny", seed=1)
    assert (precious / "notes.txt").read_text() == "keep me"
