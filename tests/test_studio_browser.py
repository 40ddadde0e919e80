"""End to end: `streamlit run studio` as a real server, driven in headless Chromium (Playwright).

Uses the demo runs (sample grids made of the real Pokémon art when ../shared has it). Every view must
render without a Streamlit exception and show its main parts. With POKELAB_STUDIO_SCREENSHOTS=DIR the
screenshots are kept there (that is how docs/screenshots/studio-*.png are made).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
POKEMON = ROOT.parent / "shared" / "datasets" / "pokemon" / "dreamworld-256"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("playwright")
    if not CHROMIUM:
        pytest.skip("no chromium binary (apt-get install chromium)")
    from studio.demo import write_demo

    demo = tmp_path_factory.mktemp("studio_demo")
    write_demo(demo, POKEMON if POKEMON.is_dir() else None, tile=64)
    port = _free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "studio"), "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           "--", "--runs", str(demo), "--no-defaults", "--review-db", str(demo / "reviews.db"), "--refresh", "600"]
    log = open(demo / "server.log", "w")
    proc = subprocess.Popen(cmd, cwd=str(demo), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("streamlit did not start: " + (demo / "server.log").read_text()[-2000:])
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _settle(page, timeout=60.0):
    """Wait until Streamlit stops running the script and every chart is drawn."""
    t0 = time.time()
    time.sleep(1.0)
    while time.time() - t0 < timeout:
        running = page.locator("[data-testid=stStatusWidget]").count()
        charts = page.locator("[data-testid=stPlotlyChart]").count()
        drawn = page.locator("[data-testid=stPlotlyChart] .main-svg").count()
        if not running and drawn >= charts:
            break
        time.sleep(0.5)
    time.sleep(1.0)


def _shot(page, name):
    out = os.environ.get("POKELAB_STUDIO_SCREENSHOTS")
    if not out:
        return
    from PIL import Image

    page.locator("[data-testid=stMain]").evaluate("e => e.scrollTo(0, 0)")
    time.sleep(0.5)
    Path(out).mkdir(parents=True, exist_ok=True)
    raw = Path(out) / f"studio-{name}.raw.png"
    page.screenshot(path=str(raw))
    im = Image.open(raw).convert("RGB")
    im = im.resize((im.width * 3 // 4, im.height * 3 // 4), Image.LANCZOS)
    # an adaptive 256-colour palette keeps the PNG small (docs images < 300 KB)
    im.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(
        Path(out) / f"studio-{name}.png", optimize=True)
    raw.unlink()


def _pick(page, label, option):
    box = page.locator("[data-testid=stSelectbox]").filter(has_text=label).first
    box.get_by_role("combobox").click()
    page.get_by_role("option").filter(has_text=option).first.click()
    _settle(page)


def _view(page, name, marker):
    """Switch view and wait for a text only that view shows, then for the page to settle."""
    page.locator("[data-testid=stSidebar]").get_by_text(name, exact=True).click()
    page.get_by_text(marker).first.wait_for(timeout=90_000)
    _settle(page)
    assert page.locator("[data-testid=stException]").count() == 0, \
        page.locator("[data-testid=stException]").first.inner_text()


def test_studio_in_chromium(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1500, "height": 1250})
        page.goto(server)
        page.wait_for_selector("text=pokelab studio", timeout=90_000)
        _settle(page)
        assert page.locator("[data-testid=stException]").count() == 0
        assert page.get_by_text("Problems", exact=True).count() == 1
        assert page.get_by_text("malformed JSON").count() >= 1  # the broken demo run is reported
        _shot(page, "runs")

        _view(page, "Trends", "Smoothing (EMA)")
        for title in ("FID (lower is better)", "D accuracy", "Losses", "Sample similarity"):
            assert page.get_by_text(title).count() >= 1, title
        assert page.locator("[data-testid=stPlotlyChart]").count() >= 5
        _shot(page, "trends")

        _view(page, "Samples", "Timeline GIF")
        _pick(page, "Run", "20250301-101500-dcgan-pokemon")
        _pick(page, "Side by side with", "aegan")
        assert page.locator("[data-testid=stImage] img").count() == 2
        assert page.get_by_text("(same epoch)").count() == 1  # both runs have a grid at epoch 200
        _shot(page, "samples")
        page.get_by_role("button", name="Build GIF").click()
        _settle(page, 120)
        assert page.get_by_role("button", name="Download GIF").count() == 1
        page.get_by_role("button", name="Compute").click()
        _settle(page, 120)
        assert page.locator("[data-testid=stPlotlyChart]").count() == 1

        _view(page, "Compare", "Runs to compare")
        assert page.get_by_text("best FID", exact=False).count() >= 1

        _view(page, "Review", "Bradley–Terry intervals")
        assert page.get_by_text("Bradley–Terry").count() >= 1
        assert page.get_by_text("Fleiss").count() >= 1
        _shot(page, "review")
        browser.close()
