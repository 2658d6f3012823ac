"""The README's screenshots of the app on CIFAR-10, made in a real browser (rerun to refresh them).

Two phases, both idempotent (what exists in the artefact store is reused):

1. **prepare** (``--prepare``): through the engine and the CLI, the way a user would, on the store
   the app reads (``--cache``, default ``./cache``): the teacher's features and influence scores,
   the UMAP of the features, the IF-Beta and random subsets at ``--ratio`` for each seed, and ``ifbeta distill`` runs on them
   and on the full pool (``--epochs`` each, ``--seeds`` seeds), one after the other.
2. **shoot**: ``streamlit run app.py`` on a free port, headless Chromium (playwright, Debian's
   /usr/bin/chromium) at 1400 x 1000 px: the dataset is chosen in the sidebar as a user does,
   then three screenshots land in this folder:

   - ``influence.png``: the Influence page (distribution, per-class view, the teacher-disagreement
     view, the most helpful and harmful samples);
   - ``feature-map-lasso.png``: the Feature map coloured by influence, with a lasso drawn on it
     and the linked gallery, histogram and per-class table below;
   - ``distill-summary.png``: the Distill page's subset-vs-random-vs-full summary.

Usage: python docs/screenshots/make_screenshots.py [--prepare] [--dataset imagefolder:../shared/data/cifar10]
       [--ratio 0.5] [--epochs 2] [--seeds 2] [--cache cache]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "tests"))
DATASET = "imagefolder:../shared/data/cifar10"
VIEWPORT = {"width": 1400, "height": 1000}
TALL = {"width": 1400, "height": 1900}  # the Influence page and the map with its linked views below
LONG_MS = 900_000  # a first visit may extract features or compute UMAP


def prepare(dataset: str, ratio: float, epochs: int, seeds: int, store_root: Path) -> None:
    """Features, scores, subsets and finished distillation runs in ``store_root`` (each made once)."""
    from ifbeta import embed, pipeline
    from ifbeta.distill import runs
    from ifbeta.store import Store

    store = Store(store_root)
    workspace = pipeline.open_workspace(dataset, store=store)
    pipeline.scores(workspace)
    embed.umap(workspace.features.features, store=store, input_key=workspace.features.key)  # the page's defaults
    plan = []
    for seed in range(seeds):
        for method in ("ifbeta", "random"):
            chosen = pipeline.choose(workspace, method, ratio, seed=seed)
            directory = pipeline.save_selection(workspace, chosen, method, ratio, seed)
            plan.append((str(directory), f"{method}-r{ratio:g}", seed))
        plan.append(("full", "full", seed))
    for subset, part, seed in plan:
        out = runs.runs_root(store) / f"screenshots-{part}-e{epochs}-s{seed}"
        if (out / "metrics.json").is_file():
            continue
        command = [sys.executable, "-m", "ifbeta.cli", "distill", "--dataset", dataset, "--subset", subset,
                   "--epochs", str(epochs), "--seed", str(seed), "--out", str(out)]
        print(" ".join(command), flush=True)
        subprocess.run(command, cwd=ROOT, env={**os.environ, "IFBETA_CACHE": str(store_root)}, check=True)


def choose_dataset(page, expect, dataset: str) -> None:
    """Pick the dataset in the sidebar as a user does (an ImageFolder: choice, then its path)."""
    name, _, path = dataset.partition(":")
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.locator('[data-testid="stSelectbox"]').first.click()
    label = "ImageFolder path" if name == "imagefolder" else name
    page.get_by_role("option", name=label, exact=False).first.click()
    if path:
        field = sidebar.get_by_label("ImageFolder root", exact=False)
        field.fill(path)
        field.press("Enter")
    expect(page.get_by_text("Ready: go on to")).to_be_visible(timeout=LONG_MS)


def open_page(page, expect, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
    expect(page.locator("h1", has_text=title)).to_be_visible(timeout=LONG_MS)


def settle(page, seconds: float = 3.0) -> None:
    """Wait until Streamlit stops running the script, then a little for plotly to draw."""
    deadline = time.time() + LONG_MS / 1000
    while page.locator('[data-testid="stStatusWidget"]').count() and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(seconds)


def lasso(page, chart, centre: tuple[float, float], radius: tuple[float, float]) -> None:
    """Draw a closed lasso (an octagon) around ``centre`` with ``radius`` (x, y), both in data units of the
    chart's axes (converted to pixels through plotly's own axis mapping)."""
    chart.hover()
    chart.locator('.modebar-btn[data-title="Lasso Select"]').click()
    offsets = ((-1, 0), (-0.7, -0.7), (0, -1), (0.7, -0.7), (1, 0), (0.7, 0.7), (0, 1), (-0.7, 0.7), (-1, 0))
    data = [[centre[0] + radius[0] * dx, centre[1] + radius[1] * dy] for dx, dy in offsets]
    points = chart.evaluate("""(node, data) => {
        const plot = node.querySelector('.js-plotly-plot'), box = plot.getBoundingClientRect();
        const xa = plot._fullLayout.xaxis, ya = plot._fullLayout.yaxis;
        return data.map(([x, y]) => [box.left + xa._offset + xa.l2p(x), box.top + ya._offset + ya.l2p(y)]);
    }""", data)
    page.mouse.move(*points[0])
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*point, steps=4)
    page.mouse.up()


def lasso_target(dataset: str, store_root: Path, class_index: int = 3) -> tuple[tuple[float, float], tuple[float, float]]:
    """(centre, radius) in UMAP units around the core of one class (median, half the spread per axis)."""
    from ifbeta import embed, pipeline
    from ifbeta.store import Store

    store = Store(store_root)
    workspace = pipeline.open_workspace(dataset, store=store)
    coords = embed.umap(workspace.features.features, store=store, input_key=workspace.features.key).coords
    members = coords[workspace.train.labels == class_index]
    centre = [float(v) for v in np.median(members, axis=0)]
    spread = [float(v) for v in 0.5 * (np.percentile(members, 75, axis=0) - np.percentile(members, 25, axis=0))]
    return (centre[0], centre[1]), (spread[0], spread[1])


def shoot(dataset: str, store_root: Path) -> list[Path]:
    from browser_support import ARGS, CHROMIUM, serve_app
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=60_000)
    target = lasso_target(dataset, store_root)
    shots = []
    with serve_app(store_root, OUT / "streamlit.log") as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_context(viewport=VIEWPORT).new_page()
        page.goto(url)
        choose_dataset(page, expect, dataset)

        page.set_viewport_size(TALL)
        open_page(page, expect, "Influence")
        expect(page.get_by_text("Most helpful", exact=False).first).to_be_visible(timeout=LONG_MS)
        settle(page)
        shots.append(OUT / "influence.png")
        page.screenshot(path=shots[-1])

        open_page(page, expect, "Feature map")
        page.get_by_text("UMAP", exact=True).first.click()
        expect(page.get_by_text("UMAP of the teacher features", exact=False).first).to_be_visible(timeout=LONG_MS)
        page.get_by_text("influence score", exact=True).first.click()
        settle(page)
        lasso(page, page.locator('[data-testid="stPlotlyChart"]').first, *target)
        expect(page.locator("h3", has_text="Selection:")).to_be_visible(timeout=LONG_MS)
        settle(page, 5.0)
        page.locator('[data-testid="stPlotlyChart"]').first.scroll_into_view_if_needed()
        shots.append(OUT / "feature-map-lasso.png")
        page.screenshot(path=shots[-1])

        page.set_viewport_size(VIEWPORT)
        open_page(page, expect, "Distill")
        summary = page.locator("h3", has_text="Subset vs random vs full")
        expect(summary).to_be_visible(timeout=LONG_MS)
        settle(page)
        summary.evaluate("node => node.scrollIntoView({block: 'start'})")
        settle(page, 1.0)
        shots.append(OUT / "distill-summary.png")
        page.screenshot(path=shots[-1])
        browser.close()
    (OUT / "streamlit.log").unlink(missing_ok=True)
    return shots


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", action="store_true", help="compute the artefacts and distillation runs first")
    parser.add_argument("--dataset", default=DATASET)
    parser.add_argument("--ratio", type=float, default=0.5, help="pruning ratio of the subsets (fraction removed)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each distillation run")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per arm (paired across arms)")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("IFBETA_CACHE", ROOT / "cache")))
    args = parser.parse_args(argv)
    store_root = args.cache.resolve()
    if args.prepare:
        prepare(args.dataset, args.ratio, args.epochs, args.seeds, store_root)
    print(json.dumps([str(p.relative_to(ROOT)) for p in shoot(args.dataset, store_root)]))


if __name__ == "__main__":
    main()
