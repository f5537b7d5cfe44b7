"""The Dagster UI, used as a person uses it, in headless Chromium.

Starts `dagster dev` (webserver + daemon + code server, the project's workspace.yaml and dagster.yaml) on
127.0.0.1 over a storage root where the pipeline has been materialised on the tiny sample (`python -m
ww_assets.demo --size tiny`, the README's `make demo`; the session's `demo_site`), then in Debian's Chromium driven by Playwright:

1. the global asset graph shows every asset group;
2. the Materialize button of an analysis asset launches a run through the queue and the run succeeds;
3. that asset's latest materialisation carries its plot (a PNG rendered from the metadata's Markdown).

Screenshots go to test-artifacts/ (gitignored); the README's pictures come from `scripts/readme_pictures.py` after
`make demo`. Playwright never downloads a browser here: it drives /usr/bin/chromium
(installed by scripts/install_system_deps.sh), and a missing browser fails the test rather than skipping it.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from ww_assets_tests.support import ops

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = Path(os.environ.get("WW_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# The groups of ARCHITECTURE.md's asset graph.
EXPECTED_GROUPS = ["zooniverse", "consensus", "images", "model", "scores", "analysis"]
# The analysis asset launched from the UI: it renders the paper's figures and embeds them in its metadata.
ANALYSIS_ASSET = "plots"
VIEWPORT = {"width": 1500, "height": 850}


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def ui_site(demo_site):
    """The session's demo site (ops/conftest.py): every asset materialised on the tiny sample."""
    return demo_site


@pytest.fixture(scope="module")
def server(ui_site):
    with ops.dagster_dev(ui_site["env"], ui_site["logs"]) as srv:  # no -h: the default host is under test too
        yield srv


@pytest.fixture(scope="module")
def page(server):
    assert CHROMIUM.exists(), (f"{CHROMIUM} not found: install Debian's chromium "
                               "(bash scripts/install_system_deps.sh); the UI test never downloads a browser")
    from playwright.sync_api import sync_playwright

    user_data = tempfile.mkdtemp(prefix="ww-chromium-")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            user_data, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, viewport=VIEWPORT)
        context.set_default_timeout(30_000)
        pg = context.new_page()
        try:
            yield pg
        finally:
            context.close()
            shutil.rmtree(user_data, ignore_errors=True)


def screenshot(pg, name: str) -> Path:
    ops.ARTIFACTS_DIR.mkdir(exist_ok=True)
    path = ops.ARTIFACTS_DIR / name
    pg.screenshot(path=str(path))
    return path


def wait_graph_loaded(pg) -> None:
    """The graph is drawn and every node's live status has arrived (no "Loading…" / "fetching statuses")."""
    pg.get_by_text("Materialize all").first.wait_for()
    pg.locator("svg foreignObject").first.wait_for(timeout=60_000)
    pg.wait_for_function("""() => {
        const text = Array.from(document.querySelectorAll('svg')).map(e => e.textContent).join(' ');
        return text.length > 0 && !text.includes('Loading') && !text.includes('fetching statuses');
    }""", timeout=60_000)
    pg.wait_for_timeout(500)


# --------------------------------------------------------------------------------------------- the tests
def test_asset_graph_shows_every_group(server, page):
    # A wide window, so the fitted graph is zoomed in far enough to show each group's status counts.
    page.set_viewport_size({"width": 2000, "height": 1000})
    page.goto(f"{server.url}/asset-groups")
    wait_graph_loaded(page)
    # The global lineage draws one box per group (collapsed), fitted to the window, with arrows between them.
    path = screenshot(page, "ui-asset-graph.png")
    graph_text = page.locator("svg").evaluate_all("els => els.map(e => e.textContent).join('\\n')")
    sidebar_text = page.inner_text("body")
    missing = [g for g in EXPECTED_GROUPS if g not in graph_text or g not in sidebar_text]
    assert not missing, f"groups missing from the asset graph: {missing} (screenshot: {path})"
    # Open one group: its assets are drawn, including the one the next test launches.
    page.set_viewport_size(VIEWPORT)
    page.goto(f"{server.url}/asset-groups~group%3A%22analysis%22")
    wait_graph_loaded(page)
    assert ANALYSIS_ASSET in page.locator("svg").evaluate_all("els => els.map(e => e.textContent).join(' ')")
    screenshot(page, "ui-analysis-group.png")


def test_materialize_analysis_asset_from_ui(server, page):
    page.goto(f"{server.url}/assets/{ANALYSIS_ASSET}")
    button = page.locator("button").filter(has_text=re.compile(r"^\s*Materialize\s*$")).first
    button.wait_for()
    button.click()
    # Upstream assets are materialised, so no confirmation should be needed; accept one if the UI asks.
    confirm = page.locator("button").filter(has_text=re.compile(r"^\s*Confirm\s*$"))
    page.wait_for_timeout(500)
    if confirm.count():
        confirm.first.click()
    toast = page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}")).first
    toast.wait_for(timeout=60_000)
    page.locator("a").filter(has_text=re.compile(r"^\s*View\s*$")).first.click()
    page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}.*"))
    run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)
    status = ops.wait_until(lambda: _terminal_status(server, run_id), 600, f"run {run_id} to finish",
                            interval=2.0, service=server.service)
    screenshot(page, "ui-run.png")
    assert status == "SUCCESS", f"run {run_id} ended {status}:\n{_run_errors(server, run_id)}"
    # The run page says so too (as a person would read it).
    page.get_by_text("Success", exact=True).first.wait_for(timeout=30_000)


def test_analysis_asset_shows_its_plot(server, page):
    """Figures are inline thumbnails (no "[Show Markdown]" click), each with the path of the full PNG."""
    page.goto(f"{server.url}/assets/{ANALYSIS_ASSET}?view=events")
    img = page.locator("img[src^='data:image/webp']").first
    img.wait_for(state="visible", timeout=60_000)
    width, height, complete = img.evaluate("e => [e.naturalWidth, e.naturalHeight, e.complete]")
    screenshot(page, "ui-plot.png")
    assert complete and width >= 64 and height >= 32, (width, height, complete)
    assert page.get_by_text("full figure:").first.is_visible()


def test_webserver_listens_on_loopback_only(server):
    """`dagster dev` was started without -h: every socket it listens on is loopback."""
    import psutil

    pids = set(ops.process_tree(server.service.proc.pid))
    listening = [c for c in psutil.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert any(c.laddr.port == server.port for c in listening), listening
    exposed = [c.laddr for c in listening if not ipaddress.ip_address(c.laddr.ip).is_loopback]
    assert not exposed, f"listening beyond loopback: {exposed}"
    for addr in _non_loopback_ipv4():
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((addr, server.port)) != 0, f"webserver reachable on {addr}:{server.port}"


# --------------------------------------------------------------------------------------------- helpers
RUN_STATUS = """query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"""
RUN_ERRORS = """query($id: ID!) { logsForRun(runId: $id) { __typename ... on EventConnection { events {
  __typename ... on MessageEvent { message } ... on ExecutionStepFailureEvent { error { message } }
  ... on RunFailureEvent { message } } } } }"""


def _terminal_status(server, run_id: str) -> str | None:
    data = server.graphql(RUN_STATUS, {"id": run_id})["runOrError"]
    status = data.get("status")
    return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None


def _run_errors(server, run_id: str) -> str:
    try:
        events = server.graphql(RUN_ERRORS, {"id": run_id})["logsForRun"].get("events", [])
    except Exception as exc:  # noqa: BLE001 - diagnostics only
        return f"(could not read the run's events: {exc})"
    lines = [e.get("error", {}).get("message") if e.get("error") else e.get("message") for e in events
             if e["__typename"] in ("ExecutionStepFailureEvent", "RunFailureEvent")]
    return "\n".join(str(x) for x in lines if x)


def _non_loopback_ipv4() -> list[str]:
    import psutil

    out = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not ipaddress.ip_address(a.address).is_loopback:
                out.append(a.address)
    return out
