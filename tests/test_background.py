"""engines.data.background + data prepare --remove-background, with a tiny U2Net-shaped ONNX model built here.

The model is one 1x1 convolution over rembg's normalised input followed by a clip to [0, 1]: where the
picture is bright (the subject) it says 1, where it is dark (the background) 0. rembg's u2net_custom session
runs it exactly as it runs U2Net (320x320 input, ImageNet normalisation, output[0][:, 0], min-max, resized
back), so the masks below are known without trusting the code under test. Nothing is downloaded.
"""
from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime")
pytest.importorskip("rembg")
onnx = pytest.importorskip("onnx")

from engines.data import background as bgr  # noqa: E402
from engines.data import prepare as data  # noqa: E402
from engines.data.prepare import DataError, load_dataset, prepare, prepare_image  # noqa: E402

W, H = 40, 24                        # a wide picture: padding is checked too
SUBJECT = (14, 8, 26, 16)            # x0, y0, x1, y1 (exclusive) of the bright subject
FG, BG = (250, 200, 30), (40, 60, 80)
TOP = (W - H) // 2                   # rows of padding above the picture once it is made square


def tiny_u2net(path: Path, gain: float = 10.0, side: int = 320) -> Path:
    """output = clip(gain * sum_c normalised_c, 0, 1), shape [1, 1, side, side] like U2Net's d0.
    Normalised (FG) sums to about +2.5 and (BG) to about -2.8, so the mask is 1 on FG and 0 on BG."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.full((1, 3, 1, 1), gain, np.float32), "w"),
             numpy_helper.from_array(np.zeros(1, np.float32), "b"),
             numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
             numpy_helper.from_array(np.array(1.0, np.float32), "hi")]
    nodes = [helper.make_node("Conv", ["input.1", "w", "b"], ["s"]),
             helper.make_node("Clip", ["s", "lo", "hi"], ["d0"])]
    graph = helper.make_graph(
        nodes, "tiny_u2net",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, side, side])],
        [helper.make_tensor_value_info("d0", TensorProto.FLOAT, [1, 1, side, side])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return tiny_u2net(tmp_path_factory.mktemp("m") / "tiny.onnx")


def picture() -> np.ndarray:
    a = np.empty((H, W, 3), np.uint8)
    a[:] = BG
    x0, y0, x1, y1 = SUBJECT
    a[y0:y1, x0:x1] = FG
    return a


def expected_mask(margin: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (surely subject, surely background): at least ``margin`` px from the subject's edge, where
    Lanczos resampling (320 px <-> 40 px) cannot blur the mask."""
    x0, y0, x1, y1 = SUBJECT
    yy, xx = np.mgrid[:H, :W]
    inside = (xx >= x0 + margin) & (xx < x1 - margin) & (yy >= y0 + margin) & (yy < y1 - margin)
    outside = (xx < x0 - margin) | (xx >= x1 + margin) | (yy < y0 - margin) | (yy >= y1 + margin)
    return inside, outside


def write_set(folder: Path, transparent: bool = True) -> Path:
    """opaque.png (needs rembg) and, optionally, own-alpha.png (a cut-out already: rembg must not run)."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture()).save(folder / "opaque.png")
    if transparent:
        rgba = np.dstack([picture(), np.full((H, W), 255, np.uint8)])
        rgba[:, : W // 2, 3] = 0  # its own cut-out: the left half is transparent
        Image.fromarray(rgba, "RGBA").save(folder / "own-alpha.png")
    return folder


class NeverCalled:
    model_name = "never"

    def predict(self, *a, **k):
        raise AssertionError("rembg was run on a picture that has its own alpha")


# ---- remove_background -------------------------------------------------------------------------------------
def test_mask_becomes_alpha_and_colours_are_kept(model_file):
    session = bgr.make_session(model_path=model_file)
    assert session is bgr.make_session("u2net_custom", model_path=str(model_file))  # cached
    out = bgr.remove_background(Image.fromarray(picture()), session)
    assert out.mode == "RGBA" and out.size == (W, H)
    arr = np.asarray(out)
    assert np.array_equal(arr[:, :, :3], picture())          # colours never premultiplied
    inside, outside = expected_mask(margin=4)
    assert (arr[:, :, 3][inside] == 255).all() and (arr[:, :, 3][outside] == 0).all()
    # the same mask straight from rembg's own session: remove_background adds nothing of its own
    ref = np.asarray(session.predict(Image.fromarray(picture()))[0])
    assert np.array_equal(arr[:, :, 3], ref)


@pytest.mark.parametrize("kind", ["RGBA", "LA", "P"])
def test_own_alpha_is_kept_and_rembg_not_run(kind):
    if kind == "RGBA":
        im = Image.fromarray(np.dstack([picture(), np.tile(np.arange(W, dtype=np.uint8) * 6, (H, 1))]), "RGBA")
    elif kind == "LA":
        im = Image.fromarray(np.dstack([picture()[:, :, 0], np.full((H, W), 255, np.uint8)]), "LA")
        im.putpixel((0, 0), (9, 128))
    else:  # palette with a transparent index
        im = Image.fromarray(picture()).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
        im.info["transparency"] = im.getpixel((0, 0))
    want = np.asarray(im.convert("RGBA"))
    out = bgr.remove_background(im, NeverCalled())
    assert np.array_equal(np.asarray(out), want)
    assert (want[:, :, 3] < 255).any()


def test_fully_opaque_alpha_is_not_meaningful(model_file):
    """An RGBA file whose alpha is 255 everywhere is a photo saved as RGBA: rembg runs."""
    rgba = Image.fromarray(np.dstack([picture(), np.full((H, W), 255, np.uint8)]), "RGBA")
    out = np.asarray(bgr.remove_background(rgba, bgr.make_session(model_path=model_file)))
    inside, outside = expected_mask(margin=4)
    assert (out[:, :, 3][outside] == 0).all() and (out[:, :, 3][inside] == 255).all()


# ---- prepare ---------------------------------------------------------------------------------------------
def test_prepare_puts_the_subject_on_the_background(tmp_path, model_file):
    src = write_set(tmp_path / "src")
    plain = prepare(src, tmp_path / "plain", size=W, progress=False)
    cut = prepare(src, tmp_path / "cut", size=W, progress=False, remove_background=True,
                  rembg_model_path=model_file)
    assert cut.files == plain.files == ["opaque.png", "own-alpha.png"]
    assert cut.key != plain.key

    img = cut.images[0].permute(1, 2, 0).numpy()  # opaque.png, padded to 40x40 (8 rows above)
    before = plain.images[0].permute(1, 2, 0).numpy()
    inside, outside = expected_mask(margin=4)
    body = img[TOP:TOP + H]
    assert (body[outside] == 255).all()                        # background -> white
    assert (body[inside] == FG).all()                          # subject untouched
    assert (before[TOP:TOP + H][outside] == BG).all()          # without removal the background stays
    assert (img[:TOP] == 255).all() and (img[TOP + H:] == 255).all()  # padding is the same white

    # own-alpha.png keeps its own cut-out: exactly what preparing it without removal gives
    assert np.array_equal(cut.images[1].numpy(), plain.images[1].numpy())
    assert (cut.images[1][:, TOP:TOP + H, : W // 2] == 255).all()

    rec = cut.background_removal
    assert rec["model"] == "u2net_custom" and rec["model_path"] == str(model_file.resolve())
    assert rec["removed"] == 1 and rec["kept_alpha"] == 1 and rec["rembg_version"]
    meta = json.loads((tmp_path / "cut" / "dataset.json").read_text())
    assert meta["background_removal"] == rec and meta["key"] == cut.key
    assert json.loads((tmp_path / "plain" / "dataset.json").read_text())["background_removal"] is None
    report = data.format_report(cut)
    assert "background removed by rembg u2net_custom" in report and "1 image(s) cut out, 1 kept" in report

    black = prepare(src, size=W, background="black", progress=False, remove_background=True,
                    rembg_model_path=model_file)
    assert (black.images[0].permute(1, 2, 0).numpy()[TOP:TOP + H][outside] == 0).all()


def test_key_follows_the_model_file_not_its_path(tmp_path, model_file):
    src = write_set(tmp_path / "src", transparent=False)
    a = prepare(src, size=8, progress=False, remove_background=True, rembg_model_path=model_file)
    moved = shutil.copy(model_file, tmp_path / "elsewhere.onnx")
    assert prepare(src, size=8, progress=False, remove_background=True, rembg_model_path=moved).key == a.key
    other = tiny_u2net(tmp_path / "other.onnx", gain=20.0)
    assert prepare(src, size=8, progress=False, remove_background=True, rembg_model_path=other).key != a.key


def test_up_to_date_out_never_loads_the_model(tmp_path, model_file, monkeypatch):
    src = write_set(tmp_path / "src")
    first = prepare(src, tmp_path / "out", size=8, progress=False, remove_background=True,
                    rembg_model_path=model_file)

    def boom(*a, **k):
        raise AssertionError("decoded or loaded the model although OUT was up to date")

    monkeypatch.setattr(data, "_decode_array", boom)
    monkeypatch.setattr(bgr, "make_session", boom)
    again = prepare(src, tmp_path / "out", size=8, progress=False, remove_background=True,
                    rembg_model_path=model_file)
    assert again.key == first.key and again.background_removal == first.background_removal


def test_corrupt_files_still_skipped_and_rembg_calls_serialised(tmp_path, model_file, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        Image.fromarray(np.roll(picture(), i, axis=1)).save(src / f"{i}.png")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    real = bgr.make_session(model_path=model_file)
    state = {"active": 0, "most": 0, "calls": 0}
    guard = threading.Lock()

    class Probe:  # counts predictions that overlap in time
        model_name = "probe"

        def predict(self, img):
            with guard:
                state["active"] += 1
                state["calls"] += 1
                state["most"] = max(state["most"], state["active"])
            time.sleep(0.02)
            try:
                return real.predict(img)
            finally:
                with guard:
                    state["active"] -= 1

    monkeypatch.setattr(bgr, "make_session", lambda *a, **k: Probe())
    monkeypatch.setattr(data.os, "cpu_count", lambda: 4)  # several decoding threads even on a small machine
    ds = prepare(src, size=W, progress=False, remove_background=True, rembg_model_path=model_file)
    assert len(ds) == 6 and state["calls"] == 6 and state["most"] == 1
    assert [n for n, _ in ds.skipped] == ["broken.png"]
    assert all((im.permute(1, 2, 0).numpy()[TOP:TOP + 4, :4] == 255).all() for im in ds.images)


def test_prepare_image_with_a_session(model_file):
    session = bgr.make_session(model_path=model_file)
    buf = Image.fromarray(picture())
    out = prepare_image(buf, size=W, rembg_session=session)
    inside, outside = expected_mask(margin=4)
    assert (out[TOP:TOP + H][outside] == 255).all() and (out[TOP:TOP + H][inside] == FG).all()
    rgba = Image.fromarray(np.dstack([picture(), np.full((H, W), 7, np.uint8)]), "RGBA")
    assert np.array_equal(prepare_image(rgba, size=W, rembg_session=NeverCalled()), prepare_image(rgba, size=W))
    with pytest.raises(DataError, match="white or black"):
        prepare_image(buf, size=W, background="none", rembg_session=session)


def test_load_dataset_keeps_removal_apart_and_when_resizing(tmp_path, model_file):
    src = write_set(tmp_path / "src", transparent=False)
    cache = tmp_path / "cache"
    plain = load_dataset(src, size=W, cache_dir=cache, progress=False)
    cut = load_dataset(src, size=W, cache_dir=cache, progress=False, remove_background=True,
                       rembg_model_path=model_file)
    assert cut.key != plain.key and cut.background_removal and plain.background_removal is None
    assert sorted(p.name for p in (cache / "datasets").iterdir()) == sorted([plain.key, cut.key])

    folder = tmp_path / "prepared"
    prepare(src, folder, size=W, progress=False, remove_background=True, rembg_model_path=model_file)
    same = load_dataset(folder, size=W, cache_dir=cache, progress=False)   # taken as it was made
    assert same.location == str(folder.resolve()) and same.background_removal["removed"] == 1
    small = load_dataset(folder, size=20, cache_dir=cache, progress=False)  # re-prepared: removal kept
    assert small.size == 20 and small.background_removal["model"] == "u2net_custom"
    assert (small.images[0, :, 5, 0] == 255).all()  # the picture's background (without removal: BG)
    without = load_dataset(folder, size=W, cache_dir=cache, progress=False, remove_background=False)
    assert without.key == plain.key and without.background_removal is None
    shutil.rmtree(src)  # the source is gone: the error says how to make the set again, removal included
    with pytest.raises(DataError, match=r"background removed by rembg u2net_custom.*--remove-background`"):
        load_dataset(folder, size=16, cache_dir=cache, progress=False)


# ---- errors ----------------------------------------------------------------------------------------------
def test_cli_writes_a_dataset(tmp_path, model_file, capsys):
    from engines.cli import main

    src, out = write_set(tmp_path / "src"), tmp_path / "out"
    rc = main(["data", "prepare", str(src), str(out), "--size", str(W), "--no-progress",
               "--remove-background", "--rembg-model-path", str(model_file)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "prepared: 2 image(s)" in text and "background removed by rembg u2net_custom" in text
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["background_removal"]["removed"] == 1 and meta["background_removal"]["kept_alpha"] == 1
    pixels = np.load(out / "images.npy")
    assert (pixels[0, :, TOP + 1, 1] == 255).all() and tuple(pixels[0, :, TOP + 12, 20]) == FG


@pytest.mark.parametrize("extra,message", [
    (["--remove-background", "--rembg-model-path", "missing.onnx"], "rembg model file not found: missing.onnx"),
    (["--remove-background", "--rembg-model", "no-such-model"], "unknown rembg model 'no-such-model'"),
    (["--remove-background", "--rembg-model", "u2net_cloth_seg"], "segments clothes"),
    (["--rembg-model", "u2net"], "only apply with --remove-background"),
    (["--remove-background", "--background", "none", "--rembg-model", "u2net"], "background colour"),
])
def test_cli_errors_exit_2(tmp_path, capsys, extra, message):
    from engines.cli import main

    src = write_set(tmp_path / "src")
    rc = main(["data", "prepare", str(src), str(tmp_path / "out"), "--no-progress", *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and "\n" not in err
    assert not (tmp_path / "out").exists()
    if "unknown" in message:
        assert "u2net" in err.split("knows:")[1] and "isnet-anime" in err  # lists rembg's own names


def test_bad_model_files(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(bgr.BackgroundRemovalError, match="cannot load .* as an ONNX model"):
        bgr.make_session(model_path=junk)
    wrong = tiny_u2net(tmp_path / "wrong.onnx", side=64)
    with pytest.raises(bgr.BackgroundRemovalError, match="not a U2Net-style model"):
        bgr.make_session(model_path=wrong)
    with pytest.raises(bgr.BackgroundRemovalError, match="cannot be combined"):
        bgr.make_session("isnet-anime", model_path=tiny_u2net(tmp_path / "ok.onnx"))
    from engines.errors import USER_ERRORS

    assert issubclass(bgr.BackgroundRemovalError, USER_ERRORS)


def test_named_models_go_through_rembg_new_session(monkeypatch):
    import rembg

    made = []

    def fake_new_session(name, *a, **k):  # stands in for the download + load of the real model
        made.append(name)
        return object()

    monkeypatch.setattr(rembg, "new_session", fake_new_session)
    bgr._named_session.cache_clear()
    try:
        s = bgr.make_session("isnet-anime")
        assert bgr.make_session("isnet-anime") is s and made == ["isnet-anime"]
    finally:
        bgr._named_session.cache_clear()


def test_missing_rembg_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "rembg", None)  # import rembg -> ImportError
    with pytest.raises(bgr.BackgroundRemovalError, match=r"pip install 'pokelab\[translate\]'"):
        bgr.make_session()
    with pytest.raises(DataError, match="needs rembg and onnxruntime"):
        prepare(Path(__file__).parent, size=8, progress=False, remove_background=True)
