"""The interactive latent map (``analysis/latent_map.html``) as a person uses it, in headless Chromium, offline.

The page is written by the ``latent_map_page`` asset (materialised in an ephemeral instance) from a small storage
root: cutouts of toy galaxies,
a latent map laid out on a grid (so one point sits under the mouse), an image table with scores, volunteer
counts and hashtags, and a tiny untrained wGAN for the residual maps. Every request that is not the page's own
file is blocked and recorded: the page must need none. Then:

1. it loads with no JavaScript error, its plot is drawn on a canvas and the Bokeh document holds one point per
   image;
2. hovering a point shows that image's thumbnail (loaded, 48 px) and its id;
3. clicking it shows the image, reconstruction and residual map in the side panel, with the survey-viewer link;
   a hashtag written with HTML markup is shown as text in both, never rendered;
4. the colour Select switches the points to the hashtag colouring.

Screenshots are kept under the test's tmp dir and, when ``WW_TEST_ARTEFACTS`` names a folder, copied there.
Playwright drives Debian's /usr/bin/chromium (``WW_CHROMIUM`` to change it) and never downloads a browser; a
missing browser fails the test rather than skipping it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ww_assets.storage import StorageLayout, write_parquet
from ww_assets_tests.support.models import TINY, blobs

pytestmark = [pytest.mark.browser]

CHROMIUM = Path(os.environ.get("WW_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1300, "height": 900}
GRID = 8                      # 8 x 8 points on a grid: 64 images, none overlapping another
N = GRID * GRID
#: one hashtag carries markup, as a volunteer could write it: the page must show it as text, never run it
INJECTED = '<b id="injected">spiral</b>'
TAGS = ("ring", "merger", INJECTED, None)


def build_root(root: Path) -> StorageLayout:
    from ww_assets.images.batch import BatchCollector
    from ww_assets.images.cutouts import write_cutout_batch
    from ww_assets.model.checkpoints import save_wgan
    from ww_assets.model.networks import WGAN

    rng = np.random.default_rng(11)
    layout = StorageLayout(root)
    ids = [str(70_000_000 + i) for i in range(N)]
    gx, gy = np.meshgrid(np.arange(GRID, dtype=float), np.arange(GRID, dtype=float))
    umap = pd.DataFrame({"image_id": ids, "batch": "b0", "umap_x": gx.ravel(), "umap_y": gy.ravel()})
    imgs = blobs(N, seed=5)
    ra, dec = rng.uniform(130, 140, N), rng.uniform(-1, 3, N)
    col = BatchCollector(96, {})
    col.add_rgb(ids, ["x"] * N, imgs, radec=list(zip(ra, dec)))
    write_cutout_batch(col.result("b0"), layout.images_dir("b0"))
    shown = rng.integers(5, 25, N)
    selected = rng.binomial(shown, 0.3)
    table = pd.DataFrame({"image_id": ids, "anomaly_score_sigma": rng.normal(size=N), "shown": shown,
                          "selected": selected, "fraction": selected / shown,
                          "top_tag": [TAGS[i % len(TAGS)] for i in range(N)]})
    write_parquet(umap, layout.analysis_file("latent_umap"))
    write_parquet(table, layout.analysis_file("image_table"))
    save_wgan(WGAN(TINY), layout.model_dir, card={})
    return layout


@pytest.fixture(scope="module")
def built_page(tmp_path_factory):
    """The page as the ``latent_map_page`` asset writes it (materialised in an ephemeral instance)."""
    import dagster as dg

    from ww_assets.defs.analysis.latent_map_page import latent_map_page
    from ww_assets.defs.resources import StorageResource

    layout = build_root(tmp_path_factory.mktemp("latent_map") / "data")
    res = dg.materialize([latent_map_page], resources={"storage": StorageResource(root=str(layout.root))},
                         run_config={"ops": {"latent_map_page": {"config": {"max_details": N, "device": "cpu"}}}})
    assert res.success
    meta = res.asset_materializations_for_node("latent_map_page")[0].metadata
    path = Path(meta["path"].value)
    assert path == layout.analysis_file("latent_map_page") and path.exists()
    assert meta["points"].value == N and meta["residual_maps"].value == N and meta["detail_images"].value == N
    assert meta["page_bytes"].value == path.stat().st_size
    return path


@pytest.fixture(scope="module")
def browser_page(built_page, tmp_path_factory):
    assert CHROMIUM.exists(), (f"{CHROMIUM} not found: install Debian's chromium "
                               "(bash scripts/install_system_deps.sh); the browser tests never download a browser")
    from playwright.sync_api import sync_playwright

    requests, blocked, errors = [], [], []

    def route(r):
        requests.append(r.request.url)
        if r.request.url.startswith("file://"):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=VIEWPORT, offline=True)
            context.set_default_timeout(30_000)
            context.route("**/*", route)
            pg = context.new_page()
            pg.on("pageerror", lambda exc: errors.append(str(exc)))
            pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            pg.goto(built_page.as_uri())
            pg.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0 && "
                                 "Bokeh.documents[0].get_model_by_name('latent_points') !== null")
            pg.locator("canvas").first.wait_for()
            yield {"page": pg, "requests": requests, "blocked": blocked, "errors": errors,
                   "artefacts": tmp_path_factory.mktemp("latent_map_screens")}
        finally:
            browser.close()


def keep_screenshot(pg, folder: Path, name: str) -> Path:
    path = folder / name
    pg.screenshot(path=str(path))
    target = os.environ.get("WW_TEST_ARTEFACTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / name)
    return path


def point_on_screen(pg, i: int) -> tuple[float, float]:
    """Page coordinates of point ``i``: Bokeh's own data -> screen mapping of the points' renderer."""
    x, y = pg.evaluate("""(i) => {
        const r = Bokeh.documents[0].get_model_by_name('latent_points');
        const view = Bokeh.index.find_one(r);
        const d = r.data_source.data;
        const rect = view.parent.canvas_view.el.getBoundingClientRect();
        return [rect.left + view.coordinates.x_scale.compute(d.umap_x[i]),
                rect.top + view.coordinates.y_scale.compute(d.umap_y[i])];
    }""", i)
    return float(x), float(y)


def test_loads_offline_and_draws_every_point(browser_page):
    pg = browser_page["page"]
    assert browser_page["blocked"] == [], f"the page asked the network for {browser_page['blocked']}"
    assert all(u.startswith("file://") for u in browser_page["requests"])
    assert browser_page["errors"] == [], f"JavaScript errors: {browser_page['errors']}"
    assert pg.locator("canvas").count() >= 1
    n = pg.evaluate("() => Bokeh.documents[0].get_model_by_name('latent_points').data_source.data.umap_x.length")
    assert n == N
    box = pg.locator("canvas").first.bounding_box()
    assert box and box["width"] > 300 and box["height"] > 300


def test_hover_shows_the_thumbnail(browser_page):
    pg = browser_page["page"]
    i = GRID * 3 + 2                       # its hashtag is the one with markup
    thumb, image_id = pg.evaluate("""(i) => {
        const d = Bokeh.documents[0].get_model_by_name('latent_points').data_source.data;
        return [d.thumb[i], d.image_id[i]];
    }""", i)
    x, y = point_on_screen(pg, i)
    pg.mouse.move(x - 40, y - 40)
    pg.mouse.move(x, y, steps=4)
    img = pg.locator(f'img[src="{thumb}"]')
    img.first.wait_for(state="visible", timeout=10_000)
    assert img.first.evaluate("e => e.complete && e.naturalWidth") == 48
    assert pg.get_by_text(image_id).first.is_visible()
    assert pg.get_by_text(f"#{INJECTED}").first.is_visible() and pg.locator("#injected").count() == 0
    path = keep_screenshot(pg, browser_page["artefacts"], "latent_map_hover.png")
    assert path.stat().st_size > 10_000


def test_click_shows_image_residual_and_viewer_link(browser_page):
    pg = browser_page["page"]
    i = GRID * 5 + 2
    image_id = pg.evaluate("(i) => Bokeh.documents[0].get_model_by_name('latent_points').data_source.data"
                           ".image_id[i]", i)
    x, y = point_on_screen(pg, i)
    pg.mouse.move(x, y)
    pg.mouse.click(x, y)
    detail = pg.locator("img.ww-detail")
    detail.first.wait_for(state="visible", timeout=10_000)
    assert detail.first.evaluate("e => e.complete && e.naturalWidth") == 96 * 3 + 4
    assert pg.evaluate("() => Bokeh.documents[0].get_model_by_name('latent_points').data_source.selected"
                       ".indices") == [i]
    link = pg.locator('a[href^="https://www.legacysurvey.org/viewer"]')
    assert link.count() == 1 and "ra=" in link.first.get_attribute("href")
    assert pg.get_by_text("residual in noise sigmas").first.is_visible()
    assert pg.get_by_text(image_id).count() >= 1
    assert pg.locator("#injected").count() == 0, "a hashtag's markup was rendered in the side panel"
    pg.mouse.move(5, 5)                   # the tooltip away, the panel in view
    keep_screenshot(pg, browser_page["artefacts"], "latent_map_click.png")
    assert browser_page["blocked"] == [], "clicking asked the network for something"


def test_colour_select_switches_to_hashtags(browser_page):
    pg = browser_page["page"]
    before = pg.evaluate("() => Array.from(Bokeh.documents[0].get_model_by_name('latent_points')"
                         ".data_source.data.color)")
    pg.locator("select").first.select_option("top hashtag")
    pg.wait_for_function("""() => {
        const d = Bokeh.documents[0].get_model_by_name('latent_points').data_source.data;
        return d.color.every((c, k) => c === d.c_tag[k]);
    }""")
    after = pg.evaluate("() => Array.from(Bokeh.documents[0].get_model_by_name('latent_points')"
                        ".data_source.data.color)")
    assert after != before and len(set(after)) == len(TAGS)     # three tags and "no hashtag"
    assert pg.get_by_text("top Talk hashtag").first.is_visible()
    keep_screenshot(pg, browser_page["artefacts"], "latent_map_hashtags.png")
    assert browser_page["errors"] == [], f"JavaScript errors: {browser_page['errors']}"
