"""The app's UI-free modules: export discovery, seeded sampling, animations, review pairing, and
Stable Diffusion attention maps / interpolation on a tiny random pipeline (no download)."""
from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app import gan
from app.appconfig import config_from_args
from app.exports import ExportCatalog
from app.inputs import AppInputError, as_float, as_int, as_text
from app.review_book import GENERATION_QUESTIONS, ReviewBook, ReviewSource
from test_app_support import build_tiny_sd, make_export, write_image_folder

_SD_DIR: dict[str, Path] = {}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP's spinning
    threads make them many times slower: run this module's torch work on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("app-units")
    data = write_image_folder(root / "data" / "tinyset", n=8, size=32)
    ck = root / "ck"
    make_export(ck / "dc", "dcgan", 32, 8, 0, data)
    make_export(ck / "wg", "wgan_gp", 32, 8, 1, data)
    return root, ck, data


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    if "dir" not in _SD_DIR:
        _SD_DIR["dir"] = build_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd")
    from app.sd_pokemon import SDPokemon

    return SDPokemon(str(_SD_DIR["dir"]))


# ---- inputs and settings ---------------------------------------------------------------------------
def test_input_checks_explain_the_problem():
    assert as_int("7", "count", 1, 64) == 7 and as_int(3.0, "count", 1, 64) == 3
    with pytest.raises(AppInputError, match="count must be between 1 and 64, not 65"):
        as_int(65, "count", 1, 64)
    with pytest.raises(AppInputError, match="whole number"):
        as_int(2.5, "count", 1, 64)
    with pytest.raises(AppInputError, match="whole number"):
        as_int(float("nan"), "seed", 0, 10)
    with pytest.raises(AppInputError, match="between 0 and 1"):
        as_float(1.5, "truncation", 0, 1)
    with pytest.raises(AppInputError, match="the limit is 5"):
        as_text("abcdefg", "prompt", 5)
    with pytest.raises(AppInputError, match="prompt is empty"):
        as_text("   ", "prompt", 5)


def test_flags_and_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("POKELAB_REVIEW_DB", str(tmp_path / "env.sqlite"))
    monkeypatch.setenv("POKELAB_CHECKPOINTS", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    cfg = config_from_args(["--port", "0", "--no-shipped"])
    assert cfg.review_db == tmp_path / "env.sqlite" and cfg.port == 0 and not cfg.shipped
    assert cfg.checkpoints == [tmp_path / "a", tmp_path / "b"]
    cfg = config_from_args(["--review-db", str(tmp_path / "flag.sqlite"), "--checkpoints", str(tmp_path / "c")])
    assert cfg.review_db == tmp_path / "flag.sqlite"          # a flag beats the environment
    assert cfg.checkpoint_roots()[0] == tmp_path / "c" and cfg.shipped
    with pytest.raises(SystemExit):
        config_from_args(["--concurrency", "0"])


# ---- export discovery ------------------------------------------------------------------------------
def test_catalog_finds_exports_runs_and_skips_duplicates(tmp_path, exports):
    _, ck, data = exports
    root = tmp_path / "checkpoints"
    make_export(root / "shipped", "dcgan", 32, 8, 0, data)                   # run_id test-dcgan-0
    run = root / "runs" / "20250101-000000-dcgan-tiny"
    make_export(run / "export", "dcgan", 32, 8, 0, data)                     # the same run's export again
    (run / "run.json").write_text(json.dumps({"run_id": run.name}))
    other = root / "runs" / "20250102-000000-wgan_gp-tiny"
    make_export(other / "export", "wgan_gp", 32, 8, 5, data)
    (other / "run.json").write_text(json.dumps({"run_id": other.name}))
    (root / "broken").mkdir()
    (root / "broken" / "config.json").write_text("{not json")
    cat = ExportCatalog([root, ck / "dc"])
    # the shipped copy, the run's export and ck/dc hold the same run (same run id, epochs, steps): listed once
    assert sorted(cat.entries) == ["20250102-000000-wgan_gp-tiny", "shipped"]
    assert cat.entries["20250102-000000-wgan_gp-tiny"].trained["run_id"] == "test-wgan_gp-5"
    assert any("broken" in p for p in cat.problems)
    e = cat.entries["shipped"]
    f = e.facts()
    assert f["engine"] == "dcgan" and f["image_size"] == 32 and f["epochs"] == 3 and f["dataset"] == "tinyset"
    with pytest.raises(AppInputError, match="Unknown export 'nope'"):
        cat.get("nope")
    assert ExportCatalog([tmp_path / "empty-nothing"]).problems  # a missing folder given by the user is reported
    with pytest.raises(AppInputError, match="No engine exports were found"):
        ExportCatalog([]).get("x")


def test_engine_is_loaded_once_and_real_set_found(exports):
    _, ck, _ = exports
    cat = ExportCatalog([ck])
    a, b = cat.engine("dc"), cat.engine("dc")
    assert a is b and not a.training and a.image_size == 32
    rs = cat.real_set(cat.entries["dc"])
    assert rs is not None and tuple(rs.images.shape) == (8, 3, 32, 32) and rs.images.dtype == torch.uint8
    assert sorted(rs.files) == sorted(f"{i}.png" for i in range(1, 9))


def test_real_set_missing_says_where_it_looked(tmp_path):
    make_export(tmp_path / "x", "dcgan", 32, 8, 0, tmp_path / "gone-data")
    cat = ExportCatalog([tmp_path])
    e = cat.entries["x"]
    assert cat.real_set(e) is None
    assert "not found" in cat.real_set_problem(e) and "--data" in cat.real_set_problem(e)


# ---- sampling --------------------------------------------------------------------------------------
def test_grid_images_have_their_own_seeds(exports):
    _, ck, _ = exports
    eng = ExportCatalog([ck]).engine("dc")
    imgs, seeds = gan.generate(eng, 5, 3)
    assert imgs.dtype == torch.uint8 and tuple(imgs.shape) == (3, 3, 32, 32) and seeds == [5, 6, 7]
    alone, _ = gan.generate(eng, 6, 1)
    assert torch.equal(imgs[1], alone[0])                    # image i of seed s == image of seed s + i
    assert not torch.equal(imgs[0], imgs[1])
    with pytest.raises(AppInputError, match="count must be between 1 and 64"):
        gan.generate(eng, 0, 65)
    with pytest.raises(AppInputError, match="lower the seed"):
        gan.generate(eng, 2**32 - 2, 4)


def test_interpolation_ends_at_the_two_seeds(exports, tmp_path):
    _, ck, _ = exports
    eng = ExportCatalog([ck]).engine("dc")
    frames = gan.interpolate(eng, 3, 9, 7, "slerp")
    assert tuple(frames.shape) == (7, 3, 32, 32)
    a, _ = gan.generate(eng, 3, 1)
    b, _ = gan.generate(eng, 9, 1)
    assert (frames[0].int() - a[0].int()).abs().max() <= 1
    assert (frames[-1].int() - b[0].int()).abs().max() <= 1
    lerp = gan.interpolate(eng, 3, 9, 7, "lerp")
    assert not torch.equal(lerp[3], frames[3])               # the two paths differ in the middle
    with pytest.raises(AppInputError, match="mode must be one of slerp, lerp"):
        gan.interpolate(eng, 3, 9, 7, "cubic")
    gif, mp4 = gan.write_animation(frames, tmp_path, "walk", fps=10)
    with Image.open(gif) as im:
        assert im.n_frames == 7 and im.size == (128, 128)    # enlarged x4 for viewing
    assert mp4 is None                                       # only on request
    if gan.mp4_available():                                  # optional: only with imageio-ffmpeg
        import imageio.v3 as iio

        _, mp4 = gan.write_animation(frames, tmp_path, "walk", fps=10, mp4=True)
        assert iio.imread(mp4).shape == (7, 128, 128, 3)
    else:
        with pytest.raises(AppInputError, match="imageio-ffmpeg"):
            gan.write_animation(frames, tmp_path, "walk", fps=10, mp4=True)
    gif2, _ = gan.write_animation(frames, tmp_path, "boom", fps=10, boomerang=True)
    with Image.open(gif2) as im:
        assert im.n_frames == 12                             # 7 forward + 5 back
    s = gan.strip(frames)
    assert s.shape == (36, 7 * 34 + 2, 3)


def test_grid_png_holds_the_images(exports, tmp_path):
    _, ck, _ = exports
    eng = ExportCatalog([ck]).engine("dc")
    imgs, seeds = gan.generate(eng, 10, 4)
    grid = gan.write_grid(imgs, seeds, tmp_path, "dc")
    assert Path(grid).name == "dc-seeds10-13-grid.png"
    g = np.asarray(Image.open(grid))
    assert g.shape == (2 * 34 + 2, 2 * 34 + 2, 3)
    # row 1, column 0 is the third image (seed 12), lossless
    assert np.array_equal(g[36:68, 2:34], imgs[2].permute(1, 2, 0).numpy())


def test_novelty_pairs_use_the_metrics(exports):
    _, ck, _ = exports
    cat = ExportCatalog([ck])
    rs = cat.real_set(cat.entries["dc"])
    # real images themselves as "samples": each one's nearest training image is itself, distance ~0
    pairs, summary = gan.novelty_pairs(rs.images[:3], [0, 1, 2], rs)
    assert len(pairs) == 3
    for (img, caption), name in zip(pairs, rs.files[:3]):
        assert caption.endswith(f" · {name}") and img.shape == (32, 32 + 4 + 32, 3)
        assert float(caption.split("distance ")[1].split()[0]) < 1e-3
    assert "3 of 3" in summary


def test_stylegan_truncation_w_walk_and_style_mixing(tmp_path):
    make_export(tmp_path / "sg", "stylegan2_ada", 32, seed=2)
    make_export(tmp_path / "dc", "dcgan", 32, 8, 0)
    cat = ExportCatalog([tmp_path])
    sg, dc = cat.engine("sg"), cat.engine("dc")
    assert {"truncation", "w_space", "style_mixing"} <= cat.entries["sg"].supports
    full, _ = gan.generate(sg, 4, 2, truncation_psi=1.0)
    half, _ = gan.generate(sg, 4, 2, truncation_psi=0.5)
    assert not torch.equal(full, half)                       # psi reaches the StyleGAN mapping
    d1, _ = gan.generate(dc, 4, 2, truncation_psi=0.5)
    d2, _ = gan.generate(dc, 4, 2, truncation_psi=1.0)
    assert torch.equal(d1, d2)                               # and is ignored where unsupported
    walk = gan.interpolate(sg, 4, 5, 5, "lerp", truncation_psi=0.5)
    assert (walk[0].int() - half[0].int()).abs().max() <= 1 and (walk[-1].int() - half[1].int()).abs().max() <= 1
    n = sg.num_ws
    grid = gan.style_mix(sg, "1, 2", "10-12", n // 2, 0.7)
    assert grid.shape == (3 * 34 + 2, 4 * 34 + 2, 3)         # header row and column + 2 x 3 mixes
    tile = lambda g, r, c: g[2 + r * 34:2 + r * 34 + 32, 2 + c * 34:2 + c * 34 + 32]  # noqa: E731
    cols = gan.style_mix(sg, "1, 2", "10-12", 0, 0.7)        # crossover 0: every cell is its column's image
    rows = gan.style_mix(sg, "1, 2", "10-12", n, 0.7)        # crossover num_ws: its row's image
    assert np.abs(tile(cols, 2, 3).astype(int) - tile(cols, 0, 3).astype(int)).max() <= 1
    assert np.abs(tile(rows, 2, 3).astype(int) - tile(rows, 2, 0).astype(int)).max() <= 1
    assert not np.array_equal(tile(grid, 1, 1), tile(grid, 0, 1))
    with pytest.raises(AppInputError, match="does not support style mixing"):
        gan.style_mix(dc, "1", "2", 1)
    with pytest.raises(AppInputError, match="give 1 to 8 seeds"):
        gan.style_mix(sg, "1-9", "2", 1)
    with pytest.raises(AppInputError, match="give 1 to 8 seeds, not 9"):
        gan.style_mix(sg, "1 2 3 4 5 6 7 8 9", "2", 1)
    with pytest.raises(AppInputError, match="runs backwards"):
        gan.parse_seeds("9-1", "row seeds")
    with pytest.raises(AppInputError, match="not a seed"):
        gan.parse_seeds("1, x", "row seeds")
    with pytest.raises(AppInputError, match="crossover must be between 0 and"):
        gan.style_mix(sg, "1", "2", n + 1)


# ---- review ----------------------------------------------------------------------------------------
def _colour_source(name: str, colour: int, size: int = 16):
    def draw(rng):
        return np.full((size, size, 3), colour, np.uint8), f"seed:{rng.randrange(1000)}"
    return ReviewSource(name, "engine", name, size, draw)


def test_review_pairs_are_balanced_and_answers_stored(tmp_path):
    srcs = [_colour_source("a", 10), _colour_source("b", 120), _colour_source("c", 240, size=32)]
    book = ReviewBook(tmp_path / "r.sqlite", lambda: srcs, display=64)
    s = book.start("  Ann  ", rng=random.Random(1))
    assert s.rater == "Ann"
    seen, sides = [], set()
    for _ in range(6):
        p = s.current
        seen.append(frozenset((p.left.id, p.right.id)))
        sides.add((p.left.id, p.right.id))
        assert p.left_image.size == p.right_image.size == (64, 64)   # same size whatever the source
        # the picture on each side comes from the source recorded for that side
        colours = {"a": 10, "b": 120, "c": 240}
        assert np.asarray(p.left_image)[32, 32, 0] == colours[p.left.id]
        assert np.asarray(p.right_image)[32, 32, 0] == colours[p.right.id]
        before = (p.left.id, p.right.id, p.left_item, p.right_item)
        book.submit(s, {"pokemon": "left", "novel": "tie"})
        rows = [r for r in __import__("engines.review", fromlist=["load"]).load(tmp_path / "r.sqlite")][-2:]
        assert {r["question"] for r in rows} == set(GENERATION_QUESTIONS)
        assert all((r["left_source"], r["right_source"], r["left_item"], r["right_item"]) == before for r in rows)
    # three pairs of sources, each shown twice in six rounds (least-compared first)
    assert {k: seen.count(k) for k in set(seen)} == {k: 2 for k in set(seen)} and len(set(seen)) == 3
    assert len(sides) > 3                                    # left/right is randomised
    assert book.stats()["answers"] == 12 and s.answers == 12
    with pytest.raises(AppInputError, match="Answer every question"):
        book.submit(s, {"pokemon": "left"})
    with pytest.raises(AppInputError, match="press Start"):
        book.submit(None, {"pokemon": "left", "novel": "left"})
    with sqlite3.connect(tmp_path / "r.sqlite") as con:
        assert con.execute("SELECT COUNT(DISTINCT session) FROM ratings").fetchone()[0] == 1


def test_review_needs_two_sources_and_a_name(tmp_path):
    book = ReviewBook(tmp_path / "r.sqlite", lambda: [_colour_source("a", 1)])
    with pytest.raises(AppInputError, match="at least two sources"):
        book.start("Ann")
    with pytest.raises(AppInputError, match="your name is empty"):
        ReviewBook(tmp_path / "r.sqlite", lambda: []).start("")


# ---- Stable Diffusion on a tiny random pipeline -------------------------------------------------------
def test_attention_maps_one_per_token(tiny_sd):
    steps = []
    r = tiny_sd.text_to_image("a cute red dragon with wings", "", steps=3, guidance=7.5, seed=4, width=128,
                              height=64, attention=True, on_step=lambda i, n: steps.append((i, n)))
    assert r.image.size == (128, 64)
    assert r.tokens == ["a", "cute", "red", "dragon", "with", "wings"]
    assert r.maps.shape == (6, 64, 128)                      # one map per token, the image's aspect
    assert (r.maps >= 0).all() and np.isfinite(r.maps).all() and r.maps.sum() > 0
    diffs = [np.abs(r.maps[i] - r.maps[j]).max() for i in range(6) for j in range(i + 1, 6)]
    assert min(diffs) > 1e-6                                 # tokens attend differently
    assert steps == [(1, 3), (2, 3), (3, 3)]                 # progress per denoising step
    # the recording processor is removed again after the run
    procs = {type(p).__name__ for p in tiny_sd.pipeline().unet.attn_processors.values()}
    assert "AttentionStore" not in procs


def test_attention_store_averages_heads_and_keeps_the_conditional_half():
    from diffusers.models.attention_processor import Attention

    from app.sd_pokemon import AttentionStore

    torch.manual_seed(0)
    attn = Attention(query_dim=8, cross_attention_dim=6, heads=2, dim_head=4)
    x = torch.randn(2, 4 * 2, 8)                              # [uncond, cond], a 4x2 latent
    ctx = torch.randn(2, 5, 6)
    store = AttentionStore((4, 2))
    out = store(attn, x, ctx)
    ref = attn.processor(attn, x, ctx)                        # the default processor gives the same output
    assert torch.allclose(out, ref, atol=1e-5)
    q = attn.head_to_batch_dim(attn.to_q(x[1:]))
    k = attn.head_to_batch_dim(attn.to_k(ctx[1:]))
    probs = (q @ k.transpose(1, 2) * attn.scale).softmax(-1).mean(0)   # conditional image, mean over heads
    assert torch.allclose(store.sums[(4, 2)][0], probs, atol=1e-5)
    maps = store.token_maps([1, 3], (8, 4))
    assert maps.shape == (2, 8, 4) and (maps >= 0).all()


def test_sd_seed_and_prompt_interpolation(tiny_sd):
    kw = dict(steps=1, guidance=7.5, width=64, height=64)
    a = tiny_sd.text_to_image("a blue turtle", seed=1, attention=False, **kw).image
    b = tiny_sd.text_to_image("a blue turtle", seed=2, attention=False, **kw).image
    assert not np.array_equal(np.asarray(a), np.asarray(b))
    # seeded CPU noise: the walk's end frames are exactly the two seeds' images
    frames = tiny_sd.interpolate_seeds("a blue turtle", 1, 2, 2, **kw)
    assert len(frames) == 2
    assert np.abs(np.asarray(frames[0], float) - np.asarray(a, float)).max() <= 1
    assert np.abs(np.asarray(frames[-1], float) - np.asarray(b, float)).max() <= 1
    walk = tiny_sd.interpolate_prompts("a blue turtle", "a red dragon", 1, 2, **kw)
    c = tiny_sd.text_to_image("a red dragon", seed=1, attention=False, **kw).image
    assert np.abs(np.asarray(walk[0], float) - np.asarray(a, float)).max() <= 1
    assert np.abs(np.asarray(walk[-1], float) - np.asarray(c, float)).max() <= 1
    with pytest.raises(AppInputError, match="multiple of 8"):
        tiny_sd.text_to_image("a cat", seed=1, steps=1, width=68, height=64)
    with pytest.raises(AppInputError, match="frames must be between 2 and 16"):
        tiny_sd.interpolate_seeds("a cat", 1, 2, 40, **kw)


def test_review_sources_of_an_app(exports, tiny_sd, tmp_path):
    """The app offers every export, the training images behind them and (with --sd-in-review) SD."""
    from app.main import create_app

    _, ck, _ = exports
    app = create_app(["--checkpoints", str(ck), "--no-shipped", "--review-db", str(tmp_path / "r.sqlite"),
                      "--sd-model", str(_SD_DIR["dir"]), "--sd-in-review"])
    app.sd_review = {"steps": 1, "guidance": 7.5, "size": 64}
    srcs = {s.id: s for s in app.review_sources()}
    assert set(srcs) == {f"dcgan:{ck / 'dc'}", f"wgan_gp:{ck / 'wg'}", "real:tinyset", f"sd-pokemon:{_SD_DIR['dir']}"}
    rng = random.Random(0)
    img, item = srcs[f"sd-pokemon:{_SD_DIR['dir']}"].draw(rng)
    assert img.shape == (64, 64, 3) and item.startswith("seed:")
    img, item = srcs["real:tinyset"].draw(rng)
    assert img.shape == (32, 32, 3) and item.startswith("real:") and item.endswith(".png")
    img, item = srcs[f"dcgan:{ck / 'dc'}"].draw(rng)
    assert img.shape == (32, 32, 3) and item.startswith("seed:")
    broken = create_app(["--checkpoints", str(ck), "--no-shipped", "--review-db", str(tmp_path / "r.sqlite"),
                         "--sd-model", str(tmp_path / "none"), "--sd-in-review"])
    assert not any(s.startswith("sd-pokemon") for s in (x.id for x in broken.review_sources()))


def test_sd_unavailable_is_explained_and_remembered(tmp_path):
    from app.sd_pokemon import SDPokemon, SDUnavailable

    sd = SDPokemon(str(tmp_path / "no-such-model"))
    with pytest.raises(SDUnavailable, match="Text-to-image is not available: .*no-such-model"):
        sd.text_to_image("a cat")
    assert sd.status().startswith("Text-to-image is not available")
    bad = tmp_path / "half"
    bad.mkdir()
    (bad / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                      "unet": ["diffusers", "UNet2DConditionModel"]}))
    with pytest.raises(SDUnavailable, match="could not be loaded"):
        SDPokemon(str(bad)).pipeline()


def test_pictures_reach_the_page_as_lossless_files(tmp_path):
    """Gradio rewrites an array's cache file in place; the app hands over its own PNG files instead."""
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (12, 10, 3), dtype=np.uint8) for _ in range(2)]
    pil = Image.fromarray(arrays[1])
    paths = gan.write_pngs([arrays[0], pil], tmp_path, ["seed-1", "left"])
    assert [Path(p).name for p in paths] == ["seed-1.png", "left.png"]
    for p, a in zip(paths, arrays):
        assert np.array_equal(np.asarray(Image.open(p)), a)
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically, nothing left over
