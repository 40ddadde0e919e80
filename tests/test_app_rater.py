"""Nothing that stops a rater: a rater's slip in the review is a warning and the pair stays on screen;
novelty without Inception weights still shows the grid (and does not retry the download); rembg offline
fails fast and pictures with their own transparency translate without it; requirements.txt installs
without the repository (Hugging Face Spaces); text-to-image says what to do after a failed load; seeds are
whole numbers; captions, single images and novelty pairs are shown whole."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app import translate as tr
from app.inputs import AppInputError
from engines import review as review_db
from test_app_support import RunningApp, make_export, write_image_folder

pytest.importorskip("gradio_client")
from gradio_client import handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    from test_app_translate import make_translation_export

    root = tmp_path_factory.mktemp("app-rater")
    data = write_image_folder(root / "data" / "tinyset", n=8, size=32)
    sprites = write_image_folder(root / "data" / "sprites", n=8, size=24, seed=3)
    art = write_image_folder(root / "data" / "art", n=8, size=40, seed=4)
    make_export(root / "ck" / "dc", "dcgan", 32, 8, 0, data)
    make_export(root / "ck" / "wg", "wgan_gp", 32, 8, 1, data)
    make_translation_export(root / "ck" / "cg", "cyclegan", sprites, art, seed=0)
    return root


@pytest.fixture(scope="module")
def app(dirs):
    a = RunningApp(["--checkpoints", str(dirs / "ck"), "--no-shipped", "--review-db", str(dirs / "r.sqlite"),
                    "--sd-model", str(dirs / "no-sd")])
    yield a
    a.close()


def predict_with_logs(client, *args, api_name):
    """The result and the (message, level) pairs of gr.Info / gr.Warning the call raised."""
    job = client.submit(*args, api_name=api_name)
    result = job.result()
    logs, q = [], job.communicator.updates
    while not q.empty():
        u = q.get_nowait()
        if getattr(u, "log", None):
            logs.append(u.log)
    return result, logs


def component(app, elem_id):
    return next(c for c in app.client.config["components"] if c.get("props", {}).get("elem_id") == elem_id)


# ---- 10: review -------------------------------------------------------------------------------------
def test_an_unanswered_question_is_a_warning_and_the_pair_stays(app, dirs):
    c = app.new_client()
    left, right, progress, *_ = c.predict("Uma", api_name="/review_start")
    pair = re.search(r"pair (\d+)", progress).group(1)
    before = np.asarray(Image.open(left))
    (left2, right2, progress2, q1, q2, inp, q3), logs = predict_with_logs(c, "Left", None, api_name="/review_answer")
    assert logs and logs[0][1] == "warning" and "Answer every question" in logs[0][0]
    assert re.search(r"pair (\d+)", progress2).group(1) == pair               # the same pair, still on screen
    assert np.array_equal(np.asarray(Image.open(left2)), before)
    assert q1 == "Left" and q2 is None                                        # the rater's answer is kept
    assert "Nothing was stored" in progress2
    assert not [r for r in review_db.load(dirs / "r.sqlite") if r["rater"] == "Uma"]
    # answering it then stores the pair once and moves on
    *_, progress3, _, _, _, _ = c.predict("Left", "Tie", "Tie", api_name="/review_answer")  # either kind
    assert re.search(r"pair (\d+)", progress3).group(1) == str(int(pair) + 1)
    assert len([r for r in review_db.load(dirs / "r.sqlite") if r["rater"] == "Uma"]) == 2


def test_review_slips_are_warnings_through_the_handlers(dirs, tmp_path):
    from app.main import create_app
    from app.review_book import ReviewNotice

    a = create_app(["--checkpoints", str(dirs / "ck"), "--no-shipped", "--review-db", str(tmp_path / "r.sqlite"),
                    "--sd-model", str(tmp_path / "none")])
    try:
        with pytest.warns(UserWarning, match="your name is empty"):
            view = a.review_start_page("   ", None)
        assert view[0] is None and "your name is empty" in view[3]           # no session, no error box
        s = a.review_start_page("Ann", None)[0]
        shown = s.current
        with pytest.warns(UserWarning, match="Answer every question"):
            view = a.review_answer_page(None, "Left", s, None, str(shown.round))
        assert s.current is shown and view[5] == "Left"
        a.review_answer_page("Left", "Left", s, "Left", str(shown.round))
        # the page sends the old round again (its response was lost): a warning, and the current pair is shown
        with pytest.warns(UserWarning, match=f"pair {shown.round} were already saved"):
            view = a.review_answer_page("Left", "Left", s, "Left", str(shown.round))
        assert f"pair {s.current.round}" in view[3] and view[4] is None
        assert len(review_db.load(tmp_path / "r.sqlite")) == 2               # stored once
        # the book itself still refuses (API callers of the book, tests of the round rule)
        with pytest.raises(ReviewNotice):
            a.book.submit(s, {"pokemon": "left"})
        assert issubclass(ReviewNotice, AppInputError)
        # a failed action is still an error: no pair can be drawn
        with pytest.raises(AppInputError, match="press Start"):
            a.review_answer_page("Left", "Left", None, None, None)
    finally:
        a.close()


# ---- 11: novelty without the Inception weights --------------------------------------------------------
def test_novelty_without_inception_weights_keeps_the_grid_and_does_not_retry(app, monkeypatch):
    import pytorch_fid.inception as pf

    from engines.metrics import inception

    calls = []

    class NoWeights(pf.InceptionV3):
        def __init__(self, *a, **k):  # what pytorch-fid does offline without the weights in $TORCH_HOME
            calls.append(1)
            raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(inception, "_feature_nets", {})        # as in a fresh process
    monkeypatch.setattr(pf, "InceptionV3", NoWeights)
    monkeypatch.setattr(app.app, "novelty_off", None)
    for seed in (0, 5):
        gallery, grid, pairs, summary, _ = app.client.predict("dc", seed, 4, 0.7, True, api_name="/generate")
        assert len(gallery) == 4 and Image.open(grid).size == (2 * 34 + 2, 2 * 34 + 2)   # the grid is there
        assert pairs == [] and summary.startswith("Novelty is not available on this server")
        assert "\n" not in summary and "http" not in summary and "TORCH_HOME" in summary
    assert len(calls) == 1                                     # remembered for the process: no download storm


def test_novelty_pairs_are_shown_whole_with_a_readable_distance(app):
    gal = component(app, "gen-novelty")["props"]
    assert gal["object_fit"] == "contain"                     # a 2:1 pair in a square tile: not cropped
    from app.ui import CSS

    assert "#gen-novelty .caption-label" in CSS and "white-space: normal" in CSS
    gallery, _, pairs, summary, _ = app.client.predict("dc", 0, 2, 0.7, True, api_name="/generate")
    assert len(pairs) == 2
    for p in pairs:                                            # the distance comes right after the seed
        assert re.match(r"seed \d+ · distance \d\.\d{3}", p["caption"]), p["caption"]
    assert "nearest training image on the right" in summary


def test_the_first_lookups_cost_is_stated(app):
    from app.widgets import NOVELTY_COST

    assert "217 s" in NOVELTY_COST
    texts = json.dumps(app.client.config["components"])
    assert "217 s" in texts
    doc = (ROOT / "docs" / "app.md").read_text()
    assert "217 s" in doc and "a minute or two" not in doc


# ---- 12: rembg offline ---------------------------------------------------------------------------------
def _rgb_picture(path):
    Image.fromarray(np.full((30, 40, 3), 128, np.uint8)).save(path)
    return path


def _alpha_picture(path):
    a = np.zeros((30, 40, 4), np.uint8)
    a[8:22, 10:30] = (200, 30, 30, 255)
    Image.fromarray(a, "RGBA").save(path)
    return path


@pytest.fixture
def offline_rembg(monkeypatch, tmp_path):
    """No model file in rembg's folders, no network, and rembg must never be asked."""
    pytest.importorskip("engines.data.background")
    import engines.data.background as bgr

    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net-home"))
    monkeypatch.delenv("REMBG_HOME", raising=False)
    monkeypatch.setattr(tr, "download_reachable", lambda *a, **k: False, raising=False)

    def never(*a, **k):
        raise AssertionError("rembg was asked for a session")

    monkeypatch.setattr(bgr, "make_session", never)
    return tmp_path / "u2net-home"


def test_rembg_offline_fails_fast_with_one_line(offline_rembg):
    pytest.importorskip("rembg")
    t0 = time.perf_counter()
    with pytest.raises(AppInputError) as e:
        tr.rembg_session("u2net")
    msg = str(e.value)
    assert time.perf_counter() - t0 < 10
    assert "u2net.onnx" in msg and str(offline_rembg) in msg and "--rembg-model-path" in msg
    assert "http" not in msg and "\n" not in msg


def test_a_model_file_in_rembgs_home_is_used(offline_rembg, monkeypatch):
    pytest.importorskip("rembg")
    import engines.data.background as bgr

    offline_rembg.mkdir(parents=True)
    (offline_rembg / "u2netp.onnx").write_bytes(b"x" * 10)
    assert tr.rembg_model_file("u2netp") == offline_rembg / "u2netp.onnx"
    monkeypatch.setattr(bgr, "make_session", lambda name, model_path=None: ("session", name))
    assert tr.rembg_session("u2netp") == ("session", "u2netp")   # no download needed: rembg is asked


def test_transparent_pictures_translate_offline_and_others_get_the_message(app, offline_rembg, tmp_path):
    pytest.importorskip("rembg")
    c = app.client
    inp, out, rec, _, _, png, text = c.predict(handle_file(str(_alpha_picture(tmp_path / "cut.png"))), "cg", "AB",
                                               True, "u2net", api_name="/translate")
    assert Image.open(out).size == (32, 32) and "own transparency" in text
    t0 = time.perf_counter()
    with pytest.raises(AppError, match="needs the rembg model u2net") as e:
        c.predict(handle_file(str(_rgb_picture(tmp_path / "photo.png"))), "cg", "AB", True, "u2net",
                  api_name="/translate")
    assert time.perf_counter() - t0 < 20 and "http" not in str(e.value)


# ---- 13: Spaces installs requirements.txt without the repository ------------------------------------------
def test_requirements_name_no_local_path():
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        assert not line.startswith(("-e", "--editable", ".", "/", "file:")), line
        assert not re.match(r"^[\w.-]*/", line), line                       # no folder paths
    assert "-e ." in (ROOT / "requirements-test.txt").read_text()           # the test setup installs pokelab


def test_docs_name_no_missing_space_header():
    doc = (ROOT / "docs" / "app.md").read_text()
    for name in re.findall(r"`([A-Za-z0-9_./-]+\.md)`", doc):
        assert (ROOT / name).exists() or (ROOT / "docs" / name).exists(), name
    assert "README_SPACE_HEADER" not in doc
    head = (ROOT / "README.md").read_text().split("---")[1]
    assert "app_file: app/main.py" in head and "sdk: gradio" in head


@pytest.mark.slow
def test_requirements_install_from_a_folder_holding_only_that_file(tmp_path):
    """What Spaces does: ``pip install -r requirements.txt`` before the code is there. A dry run against the
    installed environment (``--no-index``: nothing is downloaded; every requirement is already installed
    here, so resolution is what is tested)."""
    shutil.copy(ROOT / "requirements.txt", tmp_path / "requirements.txt")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "-q", "-r",
                        "requirements.txt"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    if r.returncode != 0 and "No matching distribution" in r.stderr:
        pytest.skip(f"this environment lacks a requirement: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr


def test_app_main_finds_the_code_without_an_installed_package(tmp_path):
    """``python app/main.py`` (the Space's app_file) puts the repository root on sys.path itself: with -S
    (no site-packages, so no editable install of pokelab) and another working folder it still starts."""
    r = subprocess.run([sys.executable, "-S", str(ROOT / "app" / "main.py"), "--help"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "python -m app" in r.stdout, r.stderr


# ---- 14: text-to-image after a failed load ------------------------------------------------------------
def test_text_to_image_failure_updates_the_status_with_what_to_do(app):
    with pytest.raises(AppError, match="Text-to-image is not available"):
        app.client.predict("a cat", "", 2, 7.5, 0, 64, 64, True, api_name="/text_to_image")
    demo = app.app.demo
    deps = demo.config["dependencies"]
    status_id = next(c["id"] for c in demo.config["components"]
                     if "Model:" in str(c.get("props", {}).get("value", "")))
    for name in ("text_to_image", "sd_interpolate_seeds", "sd_interpolate_prompts"):
        dep = next(d for d in deps if d.get("api_name") == name)
        after = [d for d in deps if d.get("trigger_after") == dep["id"] and status_id in d["outputs"]]
        assert after and not after[0]["trigger_only_on_success"], name
    status = app.app.sd_status()
    assert "not available" in status and "--sd-model" in status


def test_hub_load_failure_is_short_and_says_what_to_do(monkeypatch):
    import diffusers

    from app.sd_pokemon import SDPokemon, SDUnavailable

    class Offline(OSError):
        pass

    def fail(*a, **k):
        raise Offline("Cannot find the requested files in the disk cache and outgoing traffic has been "
                      "disabled. To enable hf.co look-ups and downloads online, set 'local_files_only' to False.")

    monkeypatch.setattr(diffusers.StableDiffusionPipeline, "from_pretrained", fail)
    sd = SDPokemon("lambdalabs/sd-pokemon-diffusers")
    assert "4 GB" in sd.status() and "minutes" in sd.status()              # before: what the first use costs
    with pytest.raises(SDUnavailable) as e:
        sd.pipeline()
    msg = str(e.value)
    assert "local_files_only" not in msg and "hf.co" not in msg and "http" not in msg
    assert "4 GB" in msg and "--sd-model" in msg and "minutes" in msg and len(msg) < 420
    assert sd.status() == msg


# ---- 15: inputs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("api, args", [
    ("/generate", ("dc", 1.5, 2, 0.7, False)),
    ("/interpolate", ("dc", 1.5, 2, 4, "slerp", 0.7, 12, False, False)),
    ("/interpolate", ("dc", 1, 2.5, 4, "slerp", 0.7, 12, False, False)),
])
def test_a_fractional_seed_is_refused_not_rounded(app, api, args):
    with pytest.raises(AppError, match=r"seed( A| B)? must be a whole number from 0 to \d+, not [12]\.5"):
        app.client.predict(*args, api_name=api)


def test_seed_fields_do_not_round(app):
    seeds = [c for c in app.client.config["components"]
             if c.get("type") == "number" and str(c["props"].get("label", "")).startswith("Seed")]
    assert len(seeds) == 5 and all(c["props"].get("precision") is None for c in seeds)


def test_count_bounds_are_said(app):
    info = component(app, "gen-count")["props"]["info"]
    assert "1–64" in info and "becomes 64" in info
    *_, hint = app.client.predict("dc", 0, 64, 0.7, False, api_name="/generate")
    assert "64 is the most" in hint and "seeds 0–63" in hint


def test_grid_tiles_keep_their_size_and_captions_wrap(app):
    from app.ui import CSS

    # Gradio lowers the column count to the image count, so one image would fill the whole width
    assert re.search(r"#gen-gallery \.grid-container \{grid-template-columns: repeat\(auto-fill, "
                     r"minmax\(\d+px, 128px\)\)", CSS)
    assert "#gen-gallery .caption-label" in CSS
    gallery, *_ = app.client.predict("dc", 4294967000, 64, 0.7, False, api_name="/generate")
    assert gallery[-1]["caption"] == "seed 4294967063"
    one, *_ = app.client.predict("dc", 3, 1, 0.7, False, api_name="/generate")
    assert Image.open(one[0]["image"]).size == (32, 32)


def test_export_picker_names_the_engine_first(app):
    picker = component(app, "gen-export")["props"]
    labels = [c[0] for c in picker["choices"]]
    assert labels and all(label.split(" · ")[0] in ("dcgan", "wgan_gp") for label in labels)
