"""Make the README's pictures from a finished ``make demo`` (run from the repository root, after the demo):

    .venv/bin/python scripts/readme_pictures.py [--root data] [--home .]

1. ``docs/ui-asset-graph.png`` and ``docs/ui-analysis-group.png``: the Dagster UI's lineage of the six groups, and
   the analysis group with its assets (``dagster dev`` on the demo's instance, Debian's Chromium via Playwright);
2. ``docs/latent-map.png``: the interactive latent map page (``analysis/latent_map.html``), one point hovered and
   a point with a detail image clicked;
3. ``docs/sample-volunteer-top-picks.png``: the gallery of the volunteers' top picks (``plots/``), copied.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("WW_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def graph_pictures(pw, url: str, docs: Path) -> None:
    """The lineage of the six groups (collapsed: with every group expanded the graph does not fit a screen at the
    UI's smallest zoom), and the analysis group with its assets."""
    user_data = tempfile.mkdtemp(prefix="ww-pictures-")
    context = pw.chromium.launch_persistent_context(user_data, executable_path=str(CHROMIUM), headless=True,
                                                    args=ARGS, viewport={"width": 1600, "height": 800})
    try:
        page = context.new_page()
        page.set_default_timeout(60_000)
        for path, name in (("/asset-groups", "ui-asset-graph.png"),
                           ('/asset-groups~group%3A%22analysis%22', "ui-analysis-group.png")):
            page.goto(f"{url}{path}")
            page.get_by_text("Materialize all").first.wait_for()
            page.locator("svg foreignObject").first.wait_for()
            page.wait_for_function("""() => {
                const t = Array.from(document.querySelectorAll('svg')).map(e => e.textContent).join(' ');
                return t.length > 0 && !t.includes('Loading') && !t.includes('fetching statuses');
            }""")
            page.wait_for_timeout(1500)
            page.screenshot(path=str(docs / name))
    finally:
        context.close()
        shutil.rmtree(user_data, ignore_errors=True)


def map_picture(pw, html: Path, out: Path) -> None:
    browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
    try:
        page = browser.new_context(viewport={"width": 1120, "height": 790}, offline=True).new_page()
        page.goto(html.as_uri())
        page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0 && "
                               "Bokeh.documents[0].get_model_by_name('latent_points') !== null")
        page.locator("canvas").first.wait_for()
        page.wait_for_timeout(1000)

        def at(i: int) -> tuple[float, float]:
            return tuple(page.evaluate("""(i) => {
                const r = Bokeh.documents[0].get_model_by_name('latent_points');
                const v = Bokeh.index.find_one(r), d = r.data_source.data;
                const box = v.parent.canvas_view.el.getBoundingClientRect();
                return [box.left + v.coordinates.x_scale.compute(d.umap_x[i]),
                        box.top + v.coordinates.y_scale.compute(d.umap_y[i])];
            }""", i))

        # two of the points with detail images (the most anomalous and the volunteers' favourites have them)
        top = page.evaluate("""() => {
            const d = Bokeh.documents[0].get_model_by_name('latent_points').data_source.data;
            return Array.from(d.detail.keys()).filter(i => d.detail[i] !== '').slice(0, 2);
        }""")
        x, y = at(top[0])
        page.mouse.click(x, y)
        page.locator("img.ww-detail").first.wait_for(state="visible")
        x, y = at(top[1])
        page.mouse.move(x - 30, y - 30)
        page.mouse.move(x, y, steps=4)
        page.wait_for_timeout(800)
        page.screenshot(path=str(out))
    finally:
        browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data", help="the demo's storage root")
    parser.add_argument("--home", default=".", help="the demo's DAGSTER_HOME")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    from ww_assets.harness.services import dagster_dev
    from ww_assets.storage import StorageLayout

    layout = StorageLayout(Path(args.root).resolve())
    docs = REPO / "docs"
    docs.mkdir(exist_ok=True)
    shutil.copy(layout.plot_file("gallery_volunteer_top"), docs / "sample-volunteer-top-picks.png")
    env = {**os.environ, "DAGSTER_HOME": str(Path(args.home).resolve()), "WW_DATA_ROOT": str(layout.root),
           "DAGSTER_DISABLE_TELEMETRY": "1"}
    with sync_playwright() as pw:
        map_picture(pw, layout.analysis_file("latent_map_page"), docs / "latent-map.png")
        with dagster_dev(env, Path(tempfile.mkdtemp(prefix="ww-pictures-logs-"))) as server:
            graph_pictures(pw, server.url, docs)
    for name in ("ui-asset-graph.png", "ui-analysis-group.png", "latent-map.png", "sample-volunteer-top-picks.png"):
        print(f"docs/{name}: {(docs / name).stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
