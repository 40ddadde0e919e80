"""Each tab driven once in headless Chromium (playwright): what a person clicks, what the page shows.

Screenshots go to a temporary folder, or to $POKELAB_SCREENSHOTS (docs/screenshots/ is made that way,
with the shipped checkpoints instead of the tiny test exports: see docs/app.md)."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from engines import review as review_db
from test_app_support import RunningApp, build_tiny_sd, make_export, write_image_folder

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser_app(tmp_path_factory):
    pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    root = tmp_path_factory.mktemp("app-browser")
    shots = Path(os.environ.get("POKELAB_SCREENSHOTS") or root / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    sd = build_tiny_sd(root / "tiny-sd")
    argv = ["--review-db", str(root / "review.sqlite"), "--sd-model", str(sd)]
    if not os.environ.get("POKELAB_SCREENSHOTS"):
        data = write_image_folder(root / "data" / "tinyset", n=8, size=32)
        make_export(root / "ck" / "dc", "dcgan", 32, 8, 0, data)
        make_export(root / "ck" / "wg", "wgan_gp", 32, 8, 1, data)
        argv += ["--checkpoints", str(root / "ck"), "--no-shipped"]
    app = RunningApp(argv)
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page.goto(app.url)
    page.wait_for_selector("#gen-btn", timeout=60_000)
    yield app, page, shots, root
    browser.close()
    pw.stop()
    app.close()


def _shot(page, shots: Path, name: str):
    page.wait_for_timeout(600)  # let images finish fading in
    path = shots / f"app-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    # 256-colour PNG: UI screenshots stay sharp and small enough for the docs (< 300 KB)
    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)
    assert path.stat().st_size < 300_000


def test_generate_tab(browser_app):
    app, page, shots, _ = browser_app
    page.click("#gen-btn")
    page.wait_for_function("document.querySelectorAll('#gen-gallery img').length >= 16", timeout=60_000)
    assert page.locator("#gen-gallery img").count() == 16
    # "seed 15", or "seed 15 · Water" for a conditional export (the shipped default, POKELAB_SCREENSHOTS)
    assert page.get_by_text(re.compile(r"^seed 15( · .+)?$")).count() >= 1
    page.wait_for_function("document.body.innerText.includes('seeds0-15')", timeout=20_000)  # the download
    _shot(page, shots, "generate")


def test_interpolate_tab_from_a_grid_image(browser_app):
    app, page, shots, _ = browser_app
    page.locator("#gen-gallery img").nth(3).click()
    page.wait_for_function("document.body.innerText.includes('Selected: seed 3')", timeout=20_000)
    page.keyboard.press("Escape")
    page.click("#gen-to-a")                                  # switches to the Interpolate tab, seed A = 3
    page.wait_for_selector("#interp-btn", state="visible", timeout=20_000)
    page.click("#interp-btn")
    page.wait_for_selector("#interp-strip img", timeout=60_000)
    page.wait_for_function("document.querySelector('#interp-info').innerText.includes('frames')", timeout=20_000)
    assert "from seed 3 to seed 1" in page.inner_text("#interp-info")
    assert page.locator("#interp-gif img").count() == 1
    _shot(page, shots, "interpolate")


def test_text_to_image_tab(browser_app):
    app, page, shots, _ = browser_app
    page.get_by_role("tab", name="Text-to-image").click()
    for sel, val in (("#t2i-steps", "3"), ("#t2i-w", "128"), ("#t2i-h", "128")):
        box = page.locator(f"{sel} input[type=number]")
        box.fill(val)
        box.press("Tab")
    page.click("#t2i-btn")
    page.wait_for_function("document.querySelectorAll('#t2i-maps img').length >= 1", timeout=120_000)
    info = page.inner_text("#t2i-info")
    assert "3 steps" in info and "128×128" in info
    n_tokens = int(re.search(r"attention of (\d+) token", info).group(1))
    assert page.locator("#t2i-maps img").count() == n_tokens
    _shot(page, shots, "txt2img")


def test_review_tab(browser_app):
    app, page, shots, root = browser_app
    page.get_by_role("tab", name="Review").click()
    page.locator("#review-name textarea, #review-name input").first.fill("Browser Bea")
    page.click("#review-start")
    page.wait_for_selector("#review-left img", timeout=60_000)
    page.wait_for_selector("#review-right img", timeout=60_000)
    page.locator("#review-q-pokemon label", has_text="Left").click()
    # a generation round asks "novel?", a translation round (shipped translators, POKELAB_SCREENSHOTS) "faithful?"
    second = "#review-q-novel" if page.locator("#review-q-novel").is_visible() else "#review-q-faithful"
    page.locator(f"{second} label", has_text="Tie").click()
    page.click("#review-submit")
    page.wait_for_function("document.querySelector('#review-progress').innerText.includes('2 answer(s) saved')",
                           timeout=60_000)
    rows = [r for r in review_db.load(root / "review.sqlite") if r["rater"] == "Browser Bea"]
    assert sorted(r["answer"] for r in rows) == ["left", "tie"]
    # the page never names the sources
    body = page.inner_text("body")
    assert not any(r["left_source"] in body or r["right_source"] in body for r in rows)
    _shot(page, shots, "review")


def test_about_tab(browser_app):
    app, page, shots, _ = browser_app
    page.get_by_role("tab", name="About").click()
    page.wait_for_selector("#about-md table", timeout=20_000)
    text = page.inner_text("#about-md")
    assert "Loaded exports" in text and "dcgan" in text and "Blind review" in text
    _shot(page, shots, "about")
