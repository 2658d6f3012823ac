"""In a real browser: a long step's progress shows inside the viewport, where the user looks."""
from __future__ import annotations

from pathlib import Path

import pytest
from browser_support import ARGS, CHROMIUM, SCREENSHOTS, serve_app

pytestmark = pytest.mark.browser

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium, or `make browser-deps`)", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
VIEWPORT = {"width": 1400, "height": 900}


def test_teacher_training_progress_is_in_view(tmp_path):
    with serve_app(tmp_path / "cache", tmp_path / "streamlit.log") as url, \
            playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url)
        expect(page.get_by_text("Ready: go on to")).to_be_visible(timeout=600_000)
        page.get_by_role("tab", name="Train a teacher").click()
        epochs = page.get_by_label("Epochs")
        epochs.fill("3")
        epochs.press("Enter")
        page.get_by_role("button", name="Train teacher").click()
        bar = page.locator('[data-testid="stProgress"]').first
        expect(bar).to_be_visible(timeout=120_000)
        box = bar.bounding_box()
        text = bar.inner_text()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "setup-training-progress.png"))
        assert box is not None and 0 <= box["y"] and box["y"] + box["height"] <= VIEWPORT["height"], box
        assert "Training" in text and "epoch" in text, text  # the stage and its count
        expect(page.get_by_text("trained teacher stored")).to_be_visible(timeout=300_000)
        browser.close()
