"""The Translate tab and translation review rounds: uploads checked and prepared like the training data,
tiny random translation exports (CycleGAN both ways, CartoonGAN one way, U-GAT-IT with attention),
background removal through a fake rembg session, 'faithful' answers in the review database, and the
/translate endpoint through gradio_client."""
from __future__ import annotations

import dataclasses
import io
import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app import translate as tr
from app.exports import ExportCatalog
from app.inputs import AppInputError
from app.review_book import ReviewBook, ReviewSource, TranslationGroup, TranslationSource, _fit
from engines import review as review_db
from engines.runs.export import save_export
from engines.data.images import heatmap_rgb, overlay_heatmap, to_uint8
from engines.registry import get_engine
from test_app_support import RunningApp, make_export, write_image_folder

TINY = {"cyclegan": {"ngf": 8, "ndf": 8, "n_blocks": 1},
        "cartoongan": {"ngf": 8, "ndf": 8, "n_blocks": 1},
        "ugatit": {"ngf": 8, "ndf": 8, "n_res": 1}}


def engine_class(name: str):
    try:
        return get_engine(name)
    except Exception as e:  # noqa: BLE001 - an engine another part of the project has not shipped yet
        pytest.skip(f"engine {name} not available here: {e}")


def make_translation_export(out, engine: str, source_dir, target_dir, seed: int = 0, size: int = 32):
    """A randomly initialised translation export recording its two domains as the trainer does."""
    torch.manual_seed(seed)
    eng = engine_class(engine)(TINY[engine], size, training=False)

    def info(d):
        return {"name": d.name, "key": "test", "count": 8, "size": size, "source": str(d), "background": "white"}

    return save_export(eng, out, trained={"run_id": f"test-{engine}-{seed}", "epochs": 5, "steps": 50,
                                          "dataset": info(target_dir), "source_dataset": info(source_dir),
                                          "image_size": size, "batch_size": 4, "device": "cpu"})


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    root = tmp_path_factory.mktemp("app-translate")
    sprites = write_image_folder(root / "data" / "sprites", n=8, size=24, seed=3)
    art = write_image_folder(root / "data" / "art", n=8, size=40, seed=4)   # same file names: paired
    return root, sprites, art


@pytest.fixture(scope="module")
def catalog(domains):
    root, sprites, art = domains
    ck = root / "ck"
    make_translation_export(ck / "cg", "cyclegan", sprites, art, seed=0)
    return ExportCatalog([ck])


def png_file(path, size=(50, 30), mode="RGBA", colour=(200, 30, 30, 255), bg=(0, 0, 0, 0)):
    """A picture wider than tall with a filled centre (transparent around it when RGBA)."""
    im = Image.new(mode, size, bg if mode == "RGBA" else bg[:3])
    w, h = size
    for x in range(w // 4, 3 * w // 4):
        for y in range(h // 4, 3 * h // 4):
            im.putpixel((x, y), colour if mode == "RGBA" else colour[:3])
    im.save(path)
    return path


def test_catalog_lists_translation_exports_with_their_domains(domains, tmp_path):
    root, sprites, art = domains
    run = tmp_path / "runs" / "20250101-000000-cyclegan-sprites-to-art"
    make_translation_export(run / "export", "cyclegan", sprites, art)
    (run / "run.json").write_text(json.dumps({"run_id": run.name}))  # an export inside a run folder
    make_export(tmp_path / "runs" / "dc", "dcgan", 32, 8, 0, art)
    cat = ExportCatalog([tmp_path / "runs"])
    e = cat.entries[run.name]
    assert [x.key for x in cat.translators()] == [run.name] and [x.key for x in cat.generators()] == ["dc"]
    assert e.source_dataset["name"] == "sprites" and e.domain_names() == ("sprites", "art")
    assert "sprites → art" in e.label() and e.facts()["directions"] == ["AB", "BA"]
    assert cat.dataset_path(e, "source") == sprites and cat.dataset_path(e) == art
    inputs = cat.real_set(e, role="source")
    assert tuple(inputs.images.shape) == (8, 3, 32, 32) and inputs.name == "sprites"
    assert cat.entries["dc"].source_dataset == {}
    with pytest.raises(AppInputError, match="pick a translation engine"):
        cat.translator("dc")
    with pytest.raises(AppInputError, match="pick a generation engine"):
        cat.generator(run.name)
    with pytest.raises(AppInputError, match="No translation exports were found"):
        ExportCatalog([tmp_path / "runs" / "dc"]).translator("dc")


# ---- uploads ---------------------------------------------------------------------------------------
def test_upload_is_padded_and_flattened_like_the_training_data(tmp_path):
    pic, bg = tr.prepare_upload(png_file(tmp_path / "wide.png"), 32, "white")
    assert pic.shape == (32, 32, 3) and pic.dtype == np.uint8 and bg == ""
    # 50 x 30 padded to 50 x 50 (10 rows top and bottom), never cropped: the top rows are the background
    assert (pic[:5] == 255).all() and (pic[-5:] == 255).all()
    assert tuple(pic[16, 16]) == (200, 30, 30)                  # the subject in the middle survives
    black, _ = tr.prepare_upload(tmp_path / "wide.png", 32, "black")
    assert (black[:5] == 0).all()                               # transparency lands on the chosen colour


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"this is not a picture at all" * 10, "not an image"),
    ("truncated", "truncated or corrupt"),
])
def test_broken_uploads_are_refused_with_a_reason(tmp_path, content, message):
    path = tmp_path / "upload.png"
    if content == "truncated":
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
        content = buf.getvalue()[: len(buf.getvalue()) // 2]
    path.write_bytes(content)
    with pytest.raises(AppInputError, match=message):
        tr.prepare_upload(path, 32)


def test_oversized_uploads_are_refused_before_decoding(tmp_path, monkeypatch):
    path = png_file(tmp_path / "p.png", size=(40, 40), mode="RGB")
    small = dataclasses.replace(tr.LIMITS, max_upload_bytes=path.stat().st_size - 1)
    monkeypatch.setattr(tr, "LIMITS", small)
    with pytest.raises(AppInputError, match="the limit is"):
        tr.prepare_upload(path, 32)
    few = dataclasses.replace(tr.LIMITS, max_upload_bytes=10**6, max_upload_pixels=40 * 40 - 1)
    monkeypatch.setattr(tr, "LIMITS", few)
    with pytest.raises(AppInputError, match="too many pixels: 40x40"):
        tr.prepare_upload(path, 32)
    with pytest.raises(AppInputError, match="Upload a picture first"):
        tr.prepare_upload(None, 32)
    with pytest.raises(AppInputError, match="could not be found"):
        tr.prepare_upload(tmp_path / "gone.png", 32)


# ---- translation -----------------------------------------------------------------------------------
def test_cyclegan_translation_with_reconstruction(catalog, tmp_path):
    eng = catalog.engine("cg")
    entry = catalog.entries["cg"]
    assert entry.kind == "translate" and entry.directions == ("AB", "BA") and not entry.has_attention
    assert catalog.translators() == [entry] and catalog.generators() == []
    res = tr.translate_upload(eng, png_file(tmp_path / "in.png"), "AB", tr.input_background(entry))
    assert res.input.shape == res.output.shape == res.reconstruction.shape == (32, 32, 3)
    assert res.attention_overlay is None and res.attention_map is None
    x = torch.from_numpy(res.input.copy()).permute(2, 0, 1)[None]
    want = to_uint8(eng.translate(x))[0].permute(1, 2, 0).numpy()
    assert np.array_equal(res.output, want)                    # what the engine makes, lossless
    cycle = to_uint8(eng.reconstruct(x))[0].permute(1, 2, 0).numpy()
    assert np.abs(res.reconstruction.astype(int) - cycle.astype(int)).max() <= 1   # A -> B -> A
    assert not np.array_equal(res.output, res.input)
    back = tr.translate_picture(eng, res.input, "ba")          # the other way: B -> A, cycled by A -> B
    assert back.direction == "BA" and back.reconstruction is not None
    png = tr.write_pngs(res, tmp_path, "cg-in")["output"]
    assert png.endswith("cg-in-AB.png") and np.array_equal(np.asarray(Image.open(png)), res.output)
    files = tr.write_pngs(res, tmp_path, "cg in/x")
    assert files["attention"] is None and files["attention_map"] is None
    assert np.array_equal(np.asarray(Image.open(files["reconstruction"])), res.reconstruction)
    assert Path(files["input"]).name == "cg-in-x-input.png"
    text = tr.describe(res, entry)
    assert "sprites → art" in text and "translated back, art → sprites" in text
    with pytest.raises(AppInputError, match="direction must be one of AB, BA"):
        tr.translate_picture(eng, res.input, "sideways")
    with pytest.raises(AppInputError, match="must be 32x32"):
        tr.translate_picture(eng, np.zeros((16, 16, 3), np.uint8))


def test_one_direction_export_has_no_reconstruction(domains, tmp_path):
    root, sprites, art = domains
    make_translation_export(tmp_path / "ck" / "cartoon", "cartoongan", sprites, art)
    cat = ExportCatalog([tmp_path / "ck"])
    entry, eng = cat.entries["cartoon"], cat.engine("cartoon")
    assert entry.directions == ("AB",)
    res = tr.translate_upload(eng, png_file(tmp_path / "in.png"), "AB")
    assert res.output.shape == (32, 32, 3) and res.reconstruction is None and res.attention_overlay is None
    with pytest.raises(AppInputError, match="direction must be one of AB, not 'BA'"):
        tr.translate_upload(eng, tmp_path / "in.png", "BA")


def test_ugatit_attention_overlay(domains, tmp_path):
    root, sprites, art = domains
    make_translation_export(tmp_path / "ck" / "ug", "ugatit", sprites, art)
    cat = ExportCatalog([tmp_path / "ck"])
    entry, eng = cat.entries["ug"], cat.engine("ug")
    assert entry.has_attention and entry.facts()["attention"]
    res = tr.translate_upload(eng, png_file(tmp_path / "in.png"), "AB")
    assert res.attention_overlay.shape == res.attention_map.shape == (32, 32, 3)
    x = torch.from_numpy(res.input.copy()).permute(2, 0, 1)[None]
    raw = eng.attention(x)
    from engines.translate.base import normalise_maps

    maps = normalise_maps(raw)
    assert np.array_equal(res.attention_overlay, overlay_heatmap(x, maps)[0].permute(1, 2, 0).numpy())
    assert np.array_equal(res.attention_map, heatmap_rgb(maps)[0])
    assert res.attention_range == pytest.approx((float(raw.min()), float(raw.max())))
    assert "attention (CAM)" in tr.describe(res, entry)
    other = tr.translate_picture(eng, res.input, "BA")         # the engine's maps are for A -> B only
    assert other.attention_overlay is None and "A → B only" in tr.describe(other, entry)


# ---- background removal ----------------------------------------------------------------------------
class FakeRembg:
    """Stands in for a rembg session: the subject is every pixel that is not the grey background."""
    model_name = "fake"

    def __init__(self):
        self.calls = 0

    def predict(self, image):
        self.calls += 1
        a = np.asarray(image.convert("RGB")).astype(int)
        mask = (np.abs(a - 128).sum(axis=2) > 30).astype(np.uint8) * 255
        return [Image.fromarray(mask, "L")]


def test_background_removal_with_a_session(tmp_path, catalog, monkeypatch):
    pytest.importorskip("engines.data.background")
    grey = png_file(tmp_path / "grey.png", size=(40, 40), mode="RGB", bg=(128, 128, 128, 255))
    plain, bg = tr.prepare_upload(grey, 32, "white")
    assert tuple(plain[0, 0]) == (128, 128, 128) and bg == ""
    fake = FakeRembg()
    cut, bg = tr.prepare_upload(grey, 32, "white", rembg_session=fake)
    assert tuple(cut[0, 0]) == (255, 255, 255) and tuple(cut[16, 16]) == (200, 30, 30)
    assert bg == "removed" and fake.calls == 1
    # a picture with its own transparency keeps it: rembg is not asked
    own, bg = tr.prepare_upload(png_file(tmp_path / "alpha.png"), 32, "white", rembg_session=fake)
    assert bg == "kept alpha" and fake.calls == 1 and (own[:5] == 255).all()

    import engines.data.background as bgr

    monkeypatch.setattr(bgr, "make_session", lambda model, model_path=None: fake)
    home = tmp_path / "u2net-home"                    # the model file in rembg's folder: no download needed
    home.mkdir()
    (home / "isnet-anime.onnx").write_bytes(b"stand-in")
    monkeypatch.setenv("U2NET_HOME", str(home))
    session = tr.rembg_session("isnet-anime")
    res = tr.translate_upload(catalog.engine("cg"), grey, "AB", "white", session)
    assert res.background == "removed" and tuple(res.input[0, 0]) == (255, 255, 255)
    assert "background removed by rembg" in tr.describe(res, catalog.entries["cg"])
    with pytest.raises(AppInputError, match="rembg model must be a model name"):
        tr.rembg_session("../../etc/passwd")
    with pytest.raises(AppInputError, match="No rembg model file"):
        tr.rembg_session(tr.CUSTOM_MODEL)


def test_background_removal_unavailable_is_a_message(monkeypatch):
    import engines.data

    monkeypatch.delattr(engines.data, "background", raising=False)
    monkeypatch.setitem(sys.modules, "engines.data.background", None)   # as if the module were not there
    with pytest.raises(AppInputError, match="Background removal is not available on this server"):
        tr.rembg_session("u2net")


def test_unknown_rembg_model_is_a_message():
    pytest.importorskip("rembg")
    with pytest.raises(AppInputError, match="unknown rembg model 'no-such-model'"):
        tr.rembg_session("no-such-model")


# ---- review ----------------------------------------------------------------------------------------
def _gen_source(name, colour):
    return ReviewSource(name, "engine", name, 16, lambda rng: (np.full((16, 16, 3), colour, np.uint8), "seed:1"))


def _tr_source(name, shift, accepts=lambda f: True):
    def render(picture, file):
        return np.clip(picture.astype(int) + shift, 0, 255).astype(np.uint8), f"input:{file}"
    return TranslationSource(name, "translate", name, 16, render, accepts)


def test_translation_rounds_are_balanced_with_generation_rounds(tmp_path):
    images = torch.stack([torch.full((3, 16, 16), 10 * i, dtype=torch.uint8) for i in range(4)])
    group = TranslationGroup("sprites", images, ["1.png", "2.png", "3.png", "4.png"],
                             [_tr_source("t1", 100), _tr_source("t2", 50),
                              _tr_source("paired", 0, {"2.png"}.__contains__)])
    book = ReviewBook(tmp_path / "r.sqlite", lambda: [_gen_source("g1", 1), _gen_source("g2", 2)], display=32,
                      translations=lambda: [group])
    s = book.start("Tess", rng=random.Random(3))
    kinds, pairs = [], []
    for _ in range(8):
        p = s.current
        kinds.append(p.kind)
        pairs.append(frozenset((p.left.id, p.right.id)))
        if p.kind == "translate":
            assert p.questions == ("pokemon", "faithful") and p.input_image.size == (32, 32)
            file = p.input_item.removeprefix("real:")
            if "paired" in (p.left.id, p.right.id):
                assert file == "2.png"                          # only inputs the paired reference has
            i = int(file[0]) - 1
            shift = {"t1": 100, "t2": 50, "paired": 0}
            assert np.asarray(p.left_image)[0, 0, 0] == 10 * i + shift[p.left.id]
            assert np.asarray(p.right_image)[0, 0, 0] == 10 * i + shift[p.right.id]
            with pytest.raises(AppInputError, match="keeps more of the input"):
                book.submit(s, {"pokemon": "left"})
            book.submit(s, {"pokemon": "left", "faithful": "right"})
        else:
            assert p.questions == ("pokemon", "novel") and p.input_image is None
            book.submit(s, {"pokemon": "tie", "novel": "left"})
    # one generation pair and three translation pairs: each shown twice in eight rounds
    assert {k: pairs.count(k) for k in set(pairs)} == {k: 2 for k in set(pairs)} and len(set(pairs)) == 4
    assert kinds.count("translate") == 6
    rows = review_db.load(tmp_path / "r.sqlite")
    assert sum(r["question"] == "faithful" for r in rows) == 6 and sum(r["question"] == "novel" for r in rows) == 2
    assert all(r["answer"] == "right" for r in rows if r["question"] == "faithful")


def test_app_review_translation_round_stores_faithful(domains, tmp_path):
    """The app's own groups: two CycleGAN exports of the same input set plus the paired target pictures."""
    from app.main import create_app

    root, sprites, art = domains
    make_translation_export(tmp_path / "ck" / "cg-a", "cyclegan", sprites, art, seed=1)
    make_translation_export(tmp_path / "ck" / "cg-b", "cyclegan", sprites, art, seed=2)
    app = create_app(["--checkpoints", str(tmp_path / "ck"), "--no-shipped", "--review-db", str(tmp_path / "r.sqlite"),
                      "--sd-model", str(tmp_path / "no-sd")])
    assert [n for n, _ in app.examples] == ["sprites"] and len(app.examples[0][1]) == 6
    groups = app.review_translations()
    assert app.review_notes == [] and len(groups) == 1
    ids = sorted(s.id for s in groups[0].sources)
    assert ids == sorted([f"cyclegan:{tmp_path / 'ck' / 'cg-a'}", f"cyclegan:{tmp_path / 'ck' / 'cg-b'}", "real:art"])
    s = app.book.start("Tess", rng=random.Random(0))
    assert s.current.kind == "translate"                       # no generation exports: translation rounds only
    p = s.current
    file = p.input_item.removeprefix("real:")
    picture = groups[0].images[groups[0].files.index(file)].permute(1, 2, 0).numpy()
    for side, src, item in ((p.left_image, p.left, p.left_item), (p.right_image, p.right, p.right_item)):
        assert side.size == (256, 256)
        assert item == (f"real:{file}" if src.id == "real:art" else f"input:{file}")
        if src.kind == "translate":                            # the export's translation of that very input
            key = src.id.rsplit("/", 1)[1]
            out = tr.translate_picture(app.catalog.engine(key), picture, "AB").output
            assert np.array_equal(np.asarray(side), np.asarray(_fit(out, 32, 256)))
    app.book.submit(s, {"pokemon": "right", "faithful": "left"})
    rows = review_db.load(tmp_path / "r.sqlite")
    assert {r["question"]: r["answer"] for r in rows} == {"pokemon": "right", "faithful": "left"}
    assert all((r["left_source"], r["right_source"]) == (p.left.id, p.right.id) for r in rows)
    view = app._review_view(s)
    assert len(view) == 9                                      # the page's outputs, input picture included


def test_translation_rounds_off_with_a_note(domains, tmp_path):
    from app.main import create_app

    root, sprites, _ = domains
    unpaired = write_image_folder(tmp_path / "data" / "other-art", n=3, size=32, seed=9)
    for f in unpaired.iterdir():
        f.rename(f.with_name("x" + f.name))                      # no file name shared with the inputs
    make_translation_export(tmp_path / "ck" / "cg", "cyclegan", sprites, unpaired)
    make_translation_export(tmp_path / "ck" / "lost", "cyclegan", tmp_path / "gone", unpaired, seed=3)
    make_export(tmp_path / "ck" / "dc", "dcgan", 32, 8, 0, unpaired)
    app = create_app(["--checkpoints", str(tmp_path / "ck"), "--no-shipped", "--review-db", str(tmp_path / "r.sqlite"),
                      "--sd-model", str(tmp_path / "no-sd")])
    assert app.review_translations() == []
    notes = " ".join(app.review_notes)
    assert "no translation rounds from sprites: one translation export (cg)" in notes
    assert "no translation rounds from gone" in notes and "--data" in notes
    s = app.book.start("Ann", rng=random.Random(0))           # generation review carries on unchanged
    assert s.current.kind == "generate" and s.current.questions == ("pokemon", "novel")
    assert "translation rounds: no translation rounds from" in app.about_markdown()


# ---- through the server ----------------------------------------------------------------------------
def test_translate_endpoint_through_gradio_client(domains, tmp_path):
    pytest.importorskip("gradio_client")
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    root, sprites, art = domains
    make_translation_export(tmp_path / "ck" / "cg", "cyclegan", sprites, art)
    make_export(tmp_path / "ck" / "dc", "dcgan", 32, 8, 0, art)
    try:
        make_translation_export(tmp_path / "ck" / "ug", "ugatit", sprites, art)
    except pytest.skip.Exception:
        pass                                                    # the rest runs without U-GAT-IT
    app = RunningApp(["--checkpoints", str(tmp_path / "ck"), "--no-shipped", "--review-db", str(tmp_path / "r.sqlite"),
                      "--sd-model", str(tmp_path / "no-sd")])
    try:
        c = app.client
        info = {e["key"]: e for e in c.predict(api_name="/exports")}
        assert info["cg"]["kind"] == "translate" and info["cg"]["directions"] == ["AB", "BA"]
        assert info["cg"]["source_dataset"] == "sprites" and info["cg"]["dataset"] == "art"
        pic = png_file(tmp_path / "mine.png")
        inp, out, rec, att, amap, png, text = c.predict(handle_file(str(pic)), "cg", "AB", False, "u2net",
                                                        api_name="/translate")
        for f in (inp, out, rec, png):
            with Image.open(f) as im:
                assert im.size == (32, 32)
        assert att is None and amap is None
        assert png.endswith("-AB.png") and np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(out)))
        assert "sprites → art" in text and "5 epochs" in text
        if "ug" in info:                                        # U-GAT-IT: the attention map, over the input and alone
            *_, att, amap, _, text = c.predict(handle_file(str(pic)), "ug", "AB", False, "u2net", api_name="/translate")
            assert Image.open(att).size == Image.open(amap).size == (32, 32) and "attention (CAM)" in text
        bad = tmp_path / "broken.png"
        bad.write_bytes(b"not a picture" * 20)
        with pytest.raises(AppError, match="cannot be used: not an image"):
            c.predict(handle_file(str(bad)), "cg", "AB", False, "u2net", api_name="/translate")
        with pytest.raises(AppError, match="not in the list of choices"):
            c.predict(handle_file(str(pic)), "dc", "AB", False, "u2net", api_name="/translate")
        with pytest.raises(AppError, match="not in the list of choices"):
            c.predict("cg", 0, 4, 0.7, False, api_name="/generate")      # Generate lists generation exports only

        # review over the API: a translation round shows the input and takes a 'faithful' answer
        left, right, progress, q1, q2, inp, q3 = c.predict("Api Ann", api_name="/review_start")
        for _ in range(12):
            if inp is not None:
                break
            left, right, progress, q1, q2, inp, q3 = c.predict("Left", "Left", api_name="/review_answer")
        assert inp is not None and Image.open(inp).size == Image.open(left).size == (256, 256)
        assert "made from the input" in progress
        c.predict("Tie", None, "Right", api_name="/review_answer")
        rows = [r for r in review_db.load(tmp_path / "r.sqlite") if r["question"] == "faithful"]
        assert len(rows) == 1 and rows[0]["answer"] == "right" and rows[0]["rater"] == "Api Ann"
    finally:
        app.close()


@pytest.mark.slow
def test_translate_tab_and_a_translation_round_in_the_browser(domains, tmp_path):
    """Upload, translate, see the three pictures and the download; then a review round with the input.
    With $POKELAB_SCREENSHOTS set it uses the shipped checkpoints and writes app-translate.png there."""
    pytest.importorskip("playwright.sync_api")
    from test_app_browser import CHROMIUM, _shot

    if not Path(CHROMIUM).exists():
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    root, sprites, art = domains
    shots = Path(os.environ.get("POKELAB_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    argv = ["--review-db", str(tmp_path / "r.sqlite"), "--sd-model", str(tmp_path / "no-sd")]
    picture = sprites / "3.png"
    if os.environ.get("POKELAB_SCREENSHOTS"):
        shared = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "pokemon" / "bw-sprites-96" / "25.png"
        picture = shared if shared.is_file() else picture
    else:
        make_translation_export(tmp_path / "ck" / "cg", "cyclegan", sprites, art)
        make_export(tmp_path / "ck" / "dc", "dcgan", 32, 8, 0, art)
        argv += ["--checkpoints", str(tmp_path / "ck"), "--no-shipped"]
    app = RunningApp(argv)
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(app.url)
        page.get_by_role("tab", name="Translate").click()
        page.wait_for_selector("#tr-btn", state="visible", timeout=60_000)
        page.locator("#tr-upload input[type=file]").set_input_files(str(picture))
        page.wait_for_selector("#tr-upload img", timeout=20_000)
        page.click("#tr-btn")
        for sel in ("#tr-input img", "#tr-output img", "#tr-rec img"):
            page.wait_for_selector(sel, timeout=60_000)
        page.wait_for_function("document.querySelector('#tr-info').innerText.includes('→')", timeout=20_000)
        assert "reconstruction" in page.inner_text("#tr-info")
        page.wait_for_function("document.querySelector('#tr-file').innerText.includes('-AB')", timeout=20_000)
        _shot(page, shots, "translate")

        page.get_by_role("tab", name="Review").click()
        page.locator("#review-name textarea, #review-name input").first.fill("Browser Bo")
        page.click("#review-start")
        page.wait_for_selector("#review-left img", timeout=60_000)
        progress = "document.querySelector('#review-progress').innerText"
        for n in range(1, 16):        # every pair of sources comes up once before any repeats
            page.wait_for_function(f"{progress}.includes('pair {n} ')", timeout=60_000)
            page.wait_for_timeout(800)                        # the round's layout (which question shows)
            if page.locator("#review-q-faithful").is_visible():
                break
            page.locator("#review-q-pokemon label", has_text="Left").click()
            page.locator("#review-q-novel label", has_text="Left").click()
            page.click("#review-submit")
        assert page.locator("#review-input img").is_visible() and not page.locator("#review-q-novel").is_visible()
        page.locator("#review-q-pokemon label", has_text="Right").click()
        page.locator("#review-q-faithful label", has_text="Tie").click()
        page.click("#review-submit")
        page.wait_for_function(f"{progress}.includes('pair {n + 1} ')", timeout=60_000)
        rows = [r for r in review_db.load(tmp_path / "r.sqlite") if r["rater"] == "Browser Bo"]
        assert [r["answer"] for r in rows if r["question"] == "faithful"] == ["tie"]
        browser.close()
    finally:
        pw.stop()
        app.close()
