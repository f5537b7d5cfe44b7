"""The interactive latent map page (``ww_assets.plotting.latent_map_page``) on synthetic frames: written whole,
self-contained (no script, stylesheet or image from the network), one Bokeh point per image with its thumbnail,
colourings that say what they show, detail images for the interesting points, nothing of a volunteer on the page."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from ww_assets.plotting.latent_map_page import (
    POINTS_NAME,
    build_latent_map_page,
    colour_columns,
    detail_order,
    detail_uri,
    map_points,
    thumbnail_uri,
    write_latent_map_page,
)
from ww_assets.storage import StorageLayout, write_parquet
from ww_assets_tests.support.models import blobs

N = 60


def _frames(n: int = N, seed: int = 0, tags: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ids = [str(40_000_000 + i) for i in range(n)]
    umap = pd.DataFrame({"image_id": ids, "batch": np.where(np.arange(n) < n // 2, "b0", "b1"),
                         "umap_x": rng.normal(size=n), "umap_y": rng.normal(size=n)})
    shown = rng.integers(0, 25, n)
    selected = rng.binomial(shown, 0.3)
    table = pd.DataFrame({
        "image_id": ids, "anomaly_score_sigma": rng.normal(size=n), "shown": shown, "selected": selected,
        "fraction": np.where(shown > 0, selected / np.maximum(shown, 1), np.nan),
        "ci_low": np.where(shown > 0, 0.8 * selected / np.maximum(shown, 1), np.nan),
        "ci_high": np.where(shown > 0, np.minimum(1, 1.2 * selected / np.maximum(shown, 1) + 0.05), np.nan),
        "top_tag": rng.choice(["ring", "merger", "spiral", None], n) if tags else None,
        "ra": rng.uniform(0, 360, n), "dec": rng.uniform(-5, 5, n),
        # a column a careless join might carry along: it must never reach the page
        "volunteer_name": "alice_the_volunteer"})
    return umap, table


def bokeh_points(html: str) -> dict:
    """The data of the page's point source, read from the embedded Bokeh document JSON."""
    m = re.search(r'<script type="application/json" id="[^"]+">\s*(.*?)\s*</script>', html, re.S)
    assert m, "no Bokeh document JSON in the page"

    def walk(o):
        if isinstance(o, dict):
            if o.get("type") == "object" and o.get("name") == "ColumnDataSource" and \
                    o.get("attributes", {}).get("name") == f"{POINTS_NAME}_source":
                yield o
            for v in o.values():
                yield from walk(v)
        elif isinstance(o, list):
            for v in o:
                yield from walk(v)

    sources = list(walk(json.loads(m.group(1))))
    assert len(sources) == 1, f"{len(sources)} point sources in the page"
    return dict(sources[0]["attributes"]["data"]["entries"])


class _Tags(HTMLParser):
    """Every tag of the page with its attributes (script bodies are text to the parser, not tags)."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def assert_self_contained(html: str) -> None:
    parser = _Tags()
    parser.feed(html)
    tags = parser.tags
    assert any(t == "script" for t, _ in tags)
    scripts_with_src = [a for t, a in tags if t == "script" and a.get("src")]
    assert not scripts_with_src, f"scripts loaded from elsewhere: {scripts_with_src}"
    assert not [a for t, a in tags if t == "link"], "a stylesheet or other linked resource"
    remote = [(t, a) for t, a in tags for k, v in a.items()
              if k in ("src", "href", "data") and v and not v.startswith(("data:", "#"))]
    assert not remote, f"tags loading something from a file or the network: {remote}"


def test_page_is_written_self_contained_with_one_point_per_image(tmp_path):
    umap, table = _frames()
    points = map_points(umap, table)
    imgs = blobs(N, seed=1)
    thumbs = [thumbnail_uri(im) for im in imgs]
    details = [detail_uri(im) if i % 3 == 0 else None for i, im in enumerate(imgs)]
    page = write_latent_map_page(points, tmp_path / "analysis" / "latent_map.html", thumbs, details)
    html = page.path.read_text(encoding="utf-8")
    assert page.page_bytes == len(html.encode("utf-8")) and page.n_points == N
    assert page.n_thumbnails == N and page.n_details == len(range(0, N, 3))
    assert_self_contained(html)
    assert "Bokeh" in html and "<html" in html.lower()
    data = bokeh_points(html)
    assert len(data["image_id"]) == N and data["image_id"] == points["image_id"].tolist()
    assert all(t.startswith("data:image/webp;base64,") for t in data["thumb"])
    assert sum(bool(d) for d in data["detail"]) == page.n_details
    # the survey-viewer link of each point with a position, and nothing of a volunteer
    assert all(v.startswith("https://www.legacysurvey.org/viewer?ra=") for v in data["viewer"])
    assert "alice_the_volunteer" not in html and "volunteer_name" not in html
    assert not list(tmp_path.joinpath("analysis").glob(".*tmp*")), "a temporary file was left behind"


def test_thumbnails_are_small_images_of_the_cutout():
    from PIL import Image

    img = blobs(1, seed=2)[0]
    uri = thumbnail_uri(img, size=48)
    assert uri.startswith("data:image/webp;base64,") and len(uri) < 3000
    thumb = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert thumb.size == (48, 48)
    # the thumbnail is the cutout: brightest near the centre, where the blob is
    a = np.asarray(thumb.convert("L"), float)
    assert a[18:30, 18:30].mean() > a[:6, :6].mean() + 20
    wide = Image.open(io.BytesIO(base64.b64decode(detail_uri(img, img, np.zeros((96, 96))).split(",", 1)[1])))
    assert wide.size == (96 * 3 + 4, 96)


def test_colourings_follow_the_values_and_say_when_there_are_no_hashtags():
    umap, table = _frames(tags=False)
    table.loc[0, "anomaly_score_sigma"] = 50.0            # beyond the 99th percentile: the top colour
    table.loc[1, "anomaly_score_sigma"] = -50.0
    table.loc[2, ["shown", "selected", "fraction"]] = [1, 1, 1.0]   # shown once: not coloured by its fraction
    points = map_points(umap, table)
    cols, keys, labels = colour_columns(points, min_shown=3)
    assert cols["c_anomaly"][0] == "#fde725" and cols["c_anomaly"][1] == "#440154"   # viridis' ends
    assert cols["c_fraction"][2] == "#c8c8c8"
    assert labels[-1] == "top hashtag (none)" and set(cols["c_tag"]) == {"#c8c8c8"}
    assert "no hashtag" in keys["top hashtag (none)"]
    _, keys, labels = colour_columns(map_points(*_frames(tags=True)))
    assert labels[-1] == "top hashtag" and "#ring" in keys["top hashtag"]


def test_details_go_to_the_most_anomalous_and_the_volunteers_favourites_in_turn():
    pts = pd.DataFrame({"anomaly_score_sigma": [0.1, 5.0, 3.0, np.nan, 0.0],
                        "ci_low": [0.9, 0.0, np.nan, 0.5, np.nan], "fraction": np.nan})
    assert detail_order(pts).tolist() == [1, 0, 2, 3, 4]


def test_a_remote_image_is_refused_and_the_old_page_kept(tmp_path):
    umap, table = _frames(n=5)
    points = map_points(umap, table)
    path = tmp_path / "latent_map.html"
    write_latent_map_page(points, path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="data: URIs"):
        write_latent_map_page(points, path, ["https://example.org/x.png"] + [None] * 4)
    assert path.read_bytes() == before


def test_built_from_a_storage_root_with_the_residual_maps_of_a_model(tmp_path):
    from ww_assets.images.batch import BatchCollector
    from ww_assets.images.cutouts import write_cutout_batch
    from ww_assets.model.checkpoints import save_wgan
    from ww_assets.model.networks import WGAN
    from ww_assets_tests.support.models import TINY

    layout = StorageLayout(tmp_path / "data")
    umap, table = _frames(n=24, tags=True)
    imgs = blobs(24, seed=3)
    for b in ("b0",):                                    # batch b1 has no cutouts written
        m = (umap["batch"] == b).to_numpy()
        col = BatchCollector(96, {})
        col.add_rgb(umap["image_id"][m].tolist(), ["x"] * int(m.sum()), imgs[m],
                    radec=list(zip(table["ra"][m], table["dec"][m])))
        write_cutout_batch(col.result(b), layout.images_dir(b))
    write_parquet(umap, layout.analysis_file("latent_umap"))
    write_parquet(table.drop(columns=["ra", "dec"]), layout.analysis_file("image_table"))
    page = build_latent_map_page(layout, max_details=5, device="cpu")   # no model yet
    assert page.path == layout.analysis_file("latent_map_page") and page.n_points == 24
    assert page.n_thumbnails == 12 and page.n_details == 5 and page.n_residual_maps == 0
    assert any("no model" in n for n in page.notes) and any("12 of 24" in n for n in page.notes)
    data = bokeh_points(page.path.read_text(encoding="utf-8"))
    has_detail = [bool(d) for d in data["detail"]]
    assert not any(has_detail[12:]), "a detail image for a point without a cutout"
    # positions come from the cutout catalogs where the table has none
    assert sum(bool(v) for v in data["viewer"]) == 12

    save_wgan(WGAN(TINY), layout.model_dir, card={})
    page = build_latent_map_page(layout, max_details=5, device="cpu")
    assert page.n_residual_maps == 5 and not any("no model" in n for n in page.notes)
    from PIL import Image
    data = bokeh_points(page.path.read_text(encoding="utf-8"))
    first = next(d for d in data["detail"] if d)
    assert Image.open(io.BytesIO(base64.b64decode(first.split(",", 1)[1]))).size == (96 * 3 + 4, 96)


def test_residual_maps_agree_with_the_model_figures_exact_ones(torch_one_thread):
    """With the shipped model, the page's reconstructions are the wgan figures' (``model.quality.reconstructions``)
    and its residual maps, read against the scores' fast expected observation, match that function's exact ones."""
    from ww_assets.model.checkpoints import load_wgan
    from ww_assets.model.data import fill_missing_noise
    from ww_assets.model.quality import reconstructions as exact_reconstructions
    from ww_assets.model.selection import PRETRAINED_DIR
    from ww_assets.plotting.latent_map_page import reconstructions

    imgs = blobs(6, seed=8)
    noise = np.full((6, 3), 0.02, np.float32)
    noise[0] = np.nan                                      # estimated from the image, as the page does
    rgb, maps = reconstructions(PRETRAINED_DIR, imgs, noise, device="cpu")
    assert rgb.shape == (6, 3, 96, 96) and rgb.dtype == np.uint8 and maps.shape == (6, 96, 96)
    _, rgb_ref, maps_ref = exact_reconstructions(load_wgan(PRETRAINED_DIR), imgs, fill_missing_noise(noise, imgs))
    assert np.array_equal(rgb, rgb_ref)
    assert np.isfinite(maps).all()
    r = np.corrcoef(maps.ravel(), maps_ref.ravel())[0, 1]
    assert r > 0.98, f"residual maps differ from the exact ones (correlation {r:.3f})"
    assert abs(np.median(np.abs(maps)) / np.median(np.abs(maps_ref)) - 1) < 0.1
