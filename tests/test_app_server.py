"""The app end to end through gradio_client, launched on a free localhost port: every endpoint a page
or a script uses, errors as messages, review answers surviving a restart."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engines import review as review_db
from test_app_support import RunningApp, build_tiny_sd, make_export, write_image_folder

pytest.importorskip("gradio_client")
from gradio_client.exceptions import AppError  # noqa: E402


@pytest.fixture(scope="module")
def setup_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("app-server")
    data = write_image_folder(root / "data" / "tinyset", n=8, size=32)
    make_export(root / "ck" / "dc", "dcgan", 32, 8, 0, data)
    make_export(root / "ck" / "wg", "wgan_gp", 32, 8, 1, data)
    make_export(root / "ck" / "sg", "stylegan2_ada", 32, seed=2, dataset_dir=data)
    sd = build_tiny_sd(root / "tiny-sd")
    return root, sd


@pytest.fixture(scope="module")
def app(setup_dirs):
    root, sd = setup_dirs
    a = RunningApp(["--checkpoints", str(root / "ck"), "--no-shipped", "--review-db", str(root / "review.sqlite"),
                    "--sd-model", str(sd)])
    yield a
    a.close()


def test_generate_returns_the_requested_images(app):
    gallery, grid, novelty, _, _ = app.client.predict("dc", 7, 16, 0.7, False, api_name="/generate")
    assert len(gallery) == 16
    assert [g["caption"] for g in gallery] == [f"seed {s}" for s in range(7, 23)]
    for g in gallery:
        with Image.open(g["image"]) as im:
            assert im.size == (32, 32) and im.mode == "RGB"
    assert novelty == []
    g = np.asarray(Image.open(grid))
    assert g.shape == (4 * 34 + 2, 4 * 34 + 2, 3)
    # the grid's third tile is the gallery's third image (seed 9), pixel for pixel
    assert np.array_equal(g[2:34, 70:102], np.asarray(Image.open(gallery[2]["image"])))
    one, *_ = app.client.predict("wg", 3, 1, 0.7, False, api_name="/generate")
    assert len(one) == 1 and Image.open(one[0]["image"]).size == (32, 32)


def test_stylegan_truncation_and_style_mixing(app):
    a, *_ = app.client.predict("sg", 5, 2, 1.0, False, api_name="/generate")
    b, *_ = app.client.predict("sg", 5, 2, 0.4, False, api_name="/generate")
    assert not np.array_equal(np.asarray(Image.open(a[0]["image"])), np.asarray(Image.open(b[0]["image"])))
    grid = app.client.predict("sg", "1, 2", "3-5", 4, 0.7, api_name="/style_mix")
    assert Image.open(grid).size == (4 * 34 + 2, 3 * 34 + 2)
    with pytest.raises(AppError, match="does not support style mixing"):
        app.client.predict("dc", "1", "2", 1, 0.7, api_name="/style_mix")
    strip, gif, _, info = app.client.predict("sg", 1, 2, 6, "lerp", 0.7, 12, False, False, api_name="/interpolate")
    assert "linear in W" in info


def test_generate_with_novelty(app):
    gallery, _, novelty, summary, _ = app.client.predict("dc", 0, 2, 0.7, True, api_name="/generate")
    assert len(novelty) == 2
    assert all("distance" in n["caption"] and ".png" in n["caption"] for n in novelty)
    assert Image.open(novelty[0]["image"]).size == (32 + 4 + 32, 32)
    assert "against 8 training images of *tinyset*" in summary


def test_interpolate_returns_the_frames(app):
    strip, gif, video, info = app.client.predict("dc", 1, 2, 24, "slerp", 0.7, 12, False, False,
                                                 api_name="/interpolate")
    with Image.open(gif) as im:
        assert im.n_frames == 24 and im.size == (128, 128)
    assert Image.open(strip).size == (12 * 34 + 2, 2 * 34 + 2)      # 24 frames, 12 per row
    assert video is None and "24 frames" in info and "seed 1 to seed 2" in info
    from app.gan import mp4_available

    if mp4_available():
        *_, video, _ = app.client.predict("dc", 1, 2, 6, "lerp", 0.7, 12, True, True, api_name="/interpolate")
        assert video.endswith(".mp4")


@pytest.mark.parametrize("args, message", [
    (("dc", 0, 65, 0.7, False), "greater than maximum value 64"),
    (("dc", -3, 4, 0.7, False), "less than minimum value 0"),
    (("nope", 0, 4, 0.7, False), "not in the list of choices"),
])
def test_bad_generate_inputs_are_messages(app, args, message):
    with pytest.raises(AppError, match=message):
        app.client.predict(*args, api_name="/generate")


def test_bad_interpolate_and_text_inputs_are_messages(app):
    with pytest.raises(AppError, match="less than minimum value 2"):
        app.client.predict("dc", 1, 2, 1, "slerp", 0.7, 12, False, False, api_name="/interpolate")
    with pytest.raises(AppError, match="prompt is empty"):
        app.client.predict("   ", "", 2, 7.5, 0, 64, 64, True, api_name="/text_to_image")
    with pytest.raises(AppError, match="multiple of 8"):
        app.client.predict("a cat", "", 1, 7.5, 0, 100, 64, True, api_name="/text_to_image")


def test_text_to_image_with_attention_maps(app):
    image, maps, info, status = app.client.predict("a cute red dragon with wings", "", 2, 7.5, 3, 128, 64, True,
                                                   api_name="/text_to_image")
    assert Image.open(image).size == (128, 64)
    assert [m["caption"] for m in maps] == ["1: a", "2: cute", "3: red", "4: dragon", "5: with", "6: wings"]
    assert all(Image.open(m["image"]).size == (128, 64) for m in maps)
    assert "seed 3" in info and "loaded on cpu" in status
    strip, gif, _ = app.client.predict("a cute dragon", "", 1, 7.5, 1, 2, 3, 64, 64, 4,
                                              api_name="/sd_interpolate_seeds")
    with Image.open(gif) as im:
        assert im.n_frames == 3
    strip, gif, _ = app.client.predict("a cute dragon", "a blue turtle", "", 1, 7.5, 1, 2, 64, 64, 4,
                                              api_name="/sd_interpolate_prompts")
    with Image.open(gif) as im:
        assert im.n_frames == 2


def test_review_round_trip_survives_a_restart(app, setup_dirs):
    root, _ = setup_dirs
    db = root / "review.sqlite"
    client = app.new_client()
    left, right, progress, q1, q2, inp, q3 = client.predict("Rita", api_name="/review_start")
    assert Image.open(left).size == Image.open(right).size == (256, 256)
    assert "Rita" in progress and q1 is None and q2 is None
    assert inp is None and q3 is None                        # no translation exports: generation rounds only
    shown = [progress]
    # an unanswered question is not an error: nothing is stored and the same pair comes back (the page
    # shows a warning; tests/test_app_rater.py checks it)
    _, _, same, *_ = client.predict("Left", None, api_name="/review_answer")
    assert "Answer every question" in same and "pair 1 " in same
    left, right, progress, *_ = client.predict("Left", "Tie", api_name="/review_answer")
    shown.append(progress)
    left, right, progress, *_ = client.predict("Right", "Right", api_name="/review_answer")
    shown.append(progress)
    assert "4 answer(s) saved" in progress
    rows = [r for r in review_db.load(db) if r["rater"] == "Rita"]
    assert len(rows) == 4 and {r["question"] for r in rows} == {"pokemon", "novel"}
    assert {r["answer"] for r in rows} == {"left", "tie", "right"}
    known = {"dcgan:", "wgan_gp:", "stylegan2_ada:", "real:tinyset"}
    for r in rows:
        assert r["left_source"] != r["right_source"]
        assert any(r["left_source"].startswith(k) for k in known) and any(r["right_source"].startswith(k) for k in known)
        assert r["left_item"].startswith(("seed:", "real:")) and r["right_item"].startswith(("seed:", "real:"))
    # nothing the page received names a source
    assert not any(k.rstrip(":") in text for text in shown for k in known)
    # a new client (another rater's browser) cannot answer without starting its own session
    with pytest.raises(AppError, match="press Start"):
        app.new_client().predict("Left", "Left", api_name="/review_answer")

    # restart: a second app on the same database (and an SD model that is not there) sees the answers
    other = RunningApp(["--checkpoints", str(root / "ck"), "--no-shipped", "--review-db", str(db),
                        "--sd-model", str(root / "missing-model")])
    try:
        stats = other.client.predict(api_name="/review_stats")
        assert stats["answers"] >= 4 and stats["by_question"]["pokemon"] >= 2
        # text-to-image says clearly that it is unavailable; the rest keeps working
        with pytest.raises(AppError, match="Text-to-image is not available"):
            other.client.predict("a cat", "", 2, 7.5, 0, 64, 64, True, api_name="/text_to_image")
        gallery, *_ = other.client.predict("dc", 0, 4, 0.7, False, api_name="/generate")
        assert len(gallery) == 4
        left, right, progress, *_ = other.client.predict("Rita", api_name="/review_start")
        other.client.predict("Tie", "Tie", api_name="/review_answer")
    finally:
        other.close()
    assert len([r for r in review_db.load(db) if r["rater"] == "Rita"]) == 6


def test_exports_endpoint_lists_training_facts(app):
    info = {e["key"]: e for e in app.client.predict(api_name="/exports")}
    assert set(info) == {"dc", "wg", "sg"}
    assert set(info["sg"]["supports"]) == {"truncation", "style_mixing", "w_space"}
    assert info["dc"]["engine"] == "dcgan" and info["dc"]["image_size"] == 32 and info["dc"]["epochs"] == 3
    assert info["wg"]["dataset"] == "tinyset"


def test_empty_state_when_no_exports(tmp_path):
    empty = RunningApp(["--no-shipped", "--checkpoints", str(tmp_path / "nothing-here"),
                        "--review-db", str(tmp_path / "r.sqlite"), "--sd-model", str(tmp_path / "none")])
    try:
        assert empty.client.predict(api_name="/exports") == []
        texts = [str(c.get("props", {}).get("value", "")) for c in empty.client.config["components"]]
        assert any("No engine exports found" in t and "--checkpoints" in t for t in texts)
        with pytest.raises(AppError, match="at least two sources"):
            empty.client.predict("Rita", api_name="/review_start")
    finally:
        empty.close()
