"""The running app in a real browser: `streamlit run app.py` + headless Chromium (playwright).

One module-scoped server (IFBETA_CACHE = the session's temporary store) and one page walk through
Setup -> Influence -> Feature map (a real box-select drag, then the gallery; two mouse lassos, each
changing the selection's histogram, per-class table and gallery, screenshots in
test-output/screenshots/feature_map_lasso_*.png) -> Subset (the zip
download, its contents checked) -> Policy (a short bilevel run on digits through the page's widgets)
-> every page once more (no exception box, a full-page screenshot in test-output/screenshots/).
"""
from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = ROOT / "test-output" / "screenshots"
DISTINCT_CAPTIONS = """() => {  // the map gallery's caption buttons, one per row key (st-key-map_gallery_open_<row>)
    const seen = new Map();
    for (const node of document.querySelectorAll('[class*="st-key-map_gallery_open_"]')) {
        const key = [...node.classList].find(c => c.startsWith('st-key-map_gallery_open_'));
        if (!seen.has(key)) seen.set(key, node.innerText.trim());
    }
    return [...seen.values()];
}"""
FIRST_LOAD_MS = 600_000  # a fresh store trains the digits teacher on the first visit

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium, or `make browser-deps`)", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

from ifbeta.subsets.query import short_id  # noqa: E402


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(session_store, tmp_path_factory):
    port = _free_port()
    log_path = tmp_path_factory.mktemp("server") / "streamlit.log"
    env = {**os.environ, "IFBETA_CACHE": str(session_store.root)}
    command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
               "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if process.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"streamlit did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def page(server):
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 1500, "height": 1100}, accept_downloads=True)
        tab = context.new_page()
        expect.set_options(timeout=30_000)
        tab.goto(server)
        yield tab
        context.close()
        browser.close()


def _open(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
    expect(page.locator("h1", has_text=title)).to_be_visible()


def test_setup_then_influence_render(page):
    expect(page.get_by_text("Ready: go on to")).to_be_visible(timeout=FIRST_LOAD_MS)
    expect(page.locator("h1", has_text="Setup")).to_be_visible()
    expect(page.locator('[data-testid="stPlotlyChart"]').first).to_be_visible()
    # the sample gallery below the chart draws image by image after the chart: wait for it
    page.wait_for_function("""() => document.querySelectorAll('[data-testid="stImage"] img').length >= 10""",
                           timeout=60_000)
    _open(page, "Influence")
    expect(page.get_by_text("Most helpful", exact=False).first).to_be_visible(timeout=120_000)
    expect(page.locator('[data-testid="stPlotlyChart"] .main-svg').first).to_be_visible()
    expect(page.locator('[data-testid="stImage"] img').first).to_be_visible()
    # the two tail galleries arrive image by image: wait until both have drawn (at least 16 in all)
    page.wait_for_function("""() => document.querySelectorAll('[data-testid="stImage"]').length >= 16""",
                           timeout=120_000)


def test_feature_map_box_select_opens_gallery(page):
    _open(page, "Feature map")
    chart = page.locator('[data-testid="stPlotlyChart"]').first
    expect(chart.locator(".main-svg").first).to_be_visible()
    chart.hover()
    chart.locator('.modebar-btn[data-title="Box Select"]').click()
    area = chart.locator(".nsewdrag").first.bounding_box()
    x0, y0 = area["x"] + 0.35 * area["width"], area["y"] + 0.35 * area["height"]
    x1, y1 = area["x"] + 0.65 * area["width"], area["y"] + 0.65 * area["height"]
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=5)
    page.mouse.move(x1, y1, steps=5)
    page.mouse.up()
    # a loaded machine may still be redrawing the chart: wait until plotly holds the box's selection
    page.wait_for_function("""() => {
        const plot = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
        return plot && Array.isArray(plot.data) && plot.data.some(t => (t.selectedpoints || []).length);
    }""", timeout=120_000)
    # the ids plotly itself marked as selected (per trace, through customdata)
    selected = chart.evaluate("""node => {
        const plot = node.querySelector('.js-plotly-plot');
        const ids = [];
        for (const trace of plot.data) {
            for (const i of (trace.selectedpoints || [])) ids.push(trace.customdata[i]);
        }
        return ids;
    }""")
    assert selected, "the box selected no point"
    heading = page.locator("h3", has_text="Selection:")
    expect(heading).to_be_visible(timeout=60_000)
    # under load the rerun that the selection started may still be drawing: read the page once it is done
    expect(page.locator('[data-testid="stStatusWidget"]', has_text="Running")).to_have_count(0, timeout=120_000)
    count = int(heading.inner_text().split(":")[1].split()[0].replace(",", ""))
    assert count == len(selected)
    texts = _gallery_captions(page, min(len(selected), 64))  # the gallery shows at most 64 images
    shown = {text.split(" ")[0] for text in texts}
    assert len(shown) == min(len(selected), 64) and shown <= {short_id(i) for i in selected}


def _gallery_captions(page, count: int) -> list[str]:
    """The map gallery's caption texts once it shows ``count`` of them (each caption is the button
    opening its sample)."""
    page.wait_for_function(f"({DISTINCT_CAPTIONS})().length === {count}", timeout=60_000)
    return page.evaluate(DISTINCT_CAPTIONS)


def _plotted(page) -> list[dict]:
    """Every plotly chart on the page: its trace types, names, selected ids (map) and bar counts (customdata)."""
    return page.evaluate("""() => [...document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot')]
        .map(plot => ({types: plot.data.map(t => t.type), names: plot.data.map(t => t.name),
                       selected: plot.data.flatMap(t => (t.selectedpoints || []).map(i => t.customdata[i])),
                       counts: plot.data.map(t => t.type === 'bar' ? Array.from(t.customdata || []) : null)}))""")


def _lasso(page, chart, centre: tuple[float, float], radius: float) -> list[str]:
    """Draw a closed lasso (a 16-gon) with the mouse around a point given as fractions of the plot area;
    -> the ids plotly marked as selected."""
    import math

    area = chart.locator(".nsewdrag").first.bounding_box()
    points = [(area["x"] + area["width"] * (centre[0] + radius * math.cos(2 * math.pi * k / 16)),
               area["y"] + area["height"] * (centre[1] + radius * math.sin(2 * math.pi * k / 16))) for k in range(17)]
    page.mouse.move(*points[0])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(x, y, steps=3)
    page.mouse.up()
    return _plotted(page)[0]["selected"]


def _selection_view(page, count: int) -> dict:
    """Once the page shows a selection of ``count``: the histogram's selection total, the table's
    row count and the gallery's ids."""
    expect(page.locator("h3", has_text=f"Selection: {count:,} samples")).to_be_visible(timeout=60_000)
    expect(page.locator('[data-testid="stStatusWidget"]', has_text="Running")).to_have_count(0, timeout=60_000)
    histogram = next(c for c in _plotted(page) if c["types"][:2] == ["bar", "bar"])
    expect(page.locator('[data-testid="stDataFrame"]').first).to_be_visible()
    grid = page.locator('[data-testid="stDataFrame"] [role="grid"]').first  # the grid's (hidden) accessible table
    texts = _gallery_captions(page, min(count, 64))
    return {"histogram": histogram["counts"][1], "rows": int(grid.get_attribute("aria-rowcount")) - 1,
            "table": grid.text_content(),
            "gallery": {text.split(" ")[0] for text in texts}}


def test_feature_map_lasso_links_histogram_table_and_gallery(page):
    _open(page, "Feature map")
    chart = page.locator('[data-testid="stPlotlyChart"]').first
    expect(chart.locator(".main-svg").first).to_be_visible()
    chart.hover()
    chart.locator('.modebar-btn[data-title="Lasso Select"]').click()
    views = []
    for k, (centre, radius) in enumerate((((0.3, 0.35), 0.12), ((0.7, 0.65), 0.18))):
        selected = _lasso(page, chart, centre, radius)
        assert selected, f"lasso {k} selected no point"
        view = _selection_view(page, len(set(selected)))
        assert sum(view["histogram"]) == len(set(selected))  # the histogram counts exactly the lasso's points
        assert view["gallery"] <= {short_id(i) for i in selected}
        assert 1 <= view["rows"] <= 10
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        _full_page_screenshot(page, SCREENSHOTS / f"feature_map_lasso_{k}.png")
        views.append(view)
    first, second = views
    assert first["histogram"] != second["histogram"] and first["table"] != second["table"]
    assert first["gallery"].isdisjoint(second["gallery"])  # two separate regions, two separate galleries
    _sort_gallery_by_score(page, min(len(set(selected)), 64))
    page.get_by_role("button", name="Clear selection").click()
    expect(page.get_by_text("No selection yet")).to_be_visible(timeout=60_000)


SCORES_DESCENDING = f"""() => {{
    const scores = ({DISTINCT_CAPTIONS})().map(text => parseFloat(text.split(' · ').pop()));
    return scores.length > 1 && scores.every((s, i) => i === 0 || scores[i - 1] >= s) ? scores : null;
}}"""


def _sort_gallery_by_score(page, count: int) -> None:
    """Pick "score" in the map gallery's Sort by (descending is the default): the captions' s then fall
    from the most helpful sample of the selection, the selection's ids unchanged."""
    before = set(_gallery_captions(page, count))
    box = page.locator('.st-key-map_gallery_sort [role="combobox"]')
    box.click()
    box.press_sequentially("score")  # the box filters its options as one types
    box.press("Enter")
    scores = page.wait_for_function(SCORES_DESCENDING, timeout=60_000).json_value()
    after = _gallery_captions(page, count)
    assert len(scores) == count and scores[0] > scores[-1]
    if count < 64:  # the whole selection fits on one page: the same samples, now in score order
        assert set(after) == before
    _full_page_screenshot(page, SCREENSHOTS / "feature_map_sorted_by_score.png")


def test_subset_zip_download(page):
    _open(page, "Subset")
    page.locator('[data-testid="stSelectbox"]', has_text="Method").first.click()
    page.get_by_role("option", name="influence-top", exact=False).first.click()
    button = page.get_by_role("button", name="Download zip of all three")
    expect(button).to_be_visible(timeout=120_000)
    with page.expect_download() as download:
        button.click()
    data = Path(download.value.path()).read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = sorted(Path(name).name for name in archive.namelist())
        assert names == ["indices.npy", "manifest.json", "samples.csv"]
        folder = Path(archive.namelist()[0]).parent
        manifest = json.loads(archive.read(str(folder / "manifest.json")))
        samples = archive.read(str(folder / "samples.csv")).decode().splitlines()
    assert manifest["method"] == "influence-top" and manifest["dataset"] == "digits"
    assert manifest["k"] == 674 and manifest["n"] == 1347
    assert len(samples) == 1 + 1347 and samples[0].startswith("index,id,label")


def test_policy_learns_alpha_beta_on_digits(page):
    _open(page, "Policy")
    expect(page.locator("h3", has_text="Teaching mode")).to_be_visible(timeout=120_000)
    page.locator('[data-testid="stExpander"] summary', has_text="Optimiser settings").click()
    steps = page.get_by_label("Outer steps")
    expect(steps).to_be_visible()
    steps.fill("5")
    steps.press("Enter")
    expect(steps).to_have_value("5")
    result = page.locator('[data-testid="stMarkdownContainer"] p',
                          has_text=re.compile(r"r = 0\.5: keep [\d,]+, alpha [-+\d.e]+, beta [-+\d.e]+"))
    # the progress bar, or a stored result
    started = page.get_by_text(re.compile("Learning the policy")).or_(result).first
    for attempt in range(3):
        # a click that lands while the rerun from Enter is still drawing can be dropped by that rerun:
        # click once the page is idle, and again if no run started
        expect(page.locator('[data-testid="stStatusWidget"]', has_text="Running")).to_have_count(0, timeout=120_000)
        page.get_by_role("button", name="Learn the policy").click()
        try:
            expect(started).to_be_visible(timeout=30_000)
            break
        except AssertionError:
            if attempt == 2:
                raise
    expect(result).to_be_visible(timeout=600_000)
    match = re.search(r"alpha ([-+\d.e]+), beta ([-+\d.e]+)", result.inner_text())
    alpha, beta = float(match.group(1)), float(match.group(2))
    assert alpha > 0 and beta > 0
    expect(page.locator("h3", has_text="Path over the J landscape")).to_be_visible()
    expect(page.locator('[data-testid="stDataFrame"]').first).to_be_visible()
    expect(page.locator('[data-testid="stPlotlyChart"] .main-svg').first).to_be_visible()
    assert page.locator('[data-testid="stPlotlyChart"]').count() >= 4  # path, curves, Beta pdf, class histogram
    assert page.locator('[data-testid="stException"]').count() == 0


# (sidebar title, a heading from the page's own content drawn late in its script, screenshot name)
PAGES = [("Setup", "Teacher", "setup"), ("Influence", "Leave-one-out check", "influence"),
         ("Feature map", None, "feature_map"), ("Policy", "Transfer check", "policy"),
         ("Subset", "Download and export", "subset"), ("Distill", "Results", "distill")]


def _full_page_screenshot(page, path: Path) -> None:
    """Streamlit scrolls inside its own container, so grow the viewport to the content before the shot."""
    size = page.viewport_size
    height = page.evaluate("""() => Math.max(document.documentElement.scrollHeight,
        ...[...document.querySelectorAll('[data-testid="stMain"], [data-testid="stAppViewContainer"], section.main')]
            .map(node => node.scrollHeight))""")
    page.set_viewport_size({"width": size["width"], "height": min(max(height, size["height"]), 8000)})
    try:
        page.wait_for_timeout(500)
        page.screenshot(path=str(path), full_page=True)
    finally:
        page.set_viewport_size(size)


@pytest.mark.parametrize("title, marker, name", PAGES, ids=[name for _, _, name in PAGES])
def test_every_page_renders_without_exception(page, title, marker, name):
    _open(page, title)
    if marker is None:
        expect(page.locator('[data-testid="stPlotlyChart"] .main-svg').first).to_be_visible(timeout=120_000)
    else:
        expect(page.locator("h3", has_text=marker)).to_be_visible(timeout=120_000)
    expect(page.locator('[data-testid="stStatusWidget"]')).to_be_hidden(timeout=120_000)  # the script run ended
    assert page.locator('[data-testid="stException"]').count() == 0
    folder = ROOT / "test-output" / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    _full_page_screenshot(page, folder / f"{name}.png")
    assert (folder / f"{name}.png").stat().st_size > 10_000
