"""engines.data.prepare: modes, padding, corrupt files, archives, content keys, cache, atomic writes, CLI."""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engines.data import prepare as data
from engines.data.prepare import DataError, PreparedDataset, add_data_commands, load_dataset, prepare, prepare_image


# ---- helpers -------------------------------------------------------------------------------------
def png_bytes(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def noise(w: int, h: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    ch = {"RGB": 3, "RGBA": 4}[mode]
    return Image.fromarray(rng.integers(0, 256, (h, w, ch), dtype=np.uint8), mode)


def flat(a: int, c: int, bg: int) -> int:
    """Expected 8-bit value of colour c at alpha a over background bg (independent of the code)."""
    return int(round((c * a + bg * (255 - a)) / 255))


def make_set(folder: Path, n: int = 3, size: int = 12) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        noise(size, size, seed=i, mode="RGBA").save(folder / f"{i + 1}.png")
    return folder


# ---- every mode -> RGB with the right values -----------------------------------------------------------
def test_rgb_is_unchanged_at_native_size():
    arr = np.random.default_rng(1).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    out = prepare_image(png_bytes(Image.fromarray(arr)), size=6)
    assert out.dtype == np.uint8 and out.shape == (6, 6, 3)
    assert np.array_equal(out, arr)


@pytest.mark.parametrize("background,bg", [("white", 255), ("black", 0)])
def test_rgba_flattened_on_background(background, bg):
    px = np.zeros((2, 2, 4), np.uint8)
    px[0, 0] = (200, 10, 10, 0)      # fully transparent: becomes the background
    px[0, 1] = (10, 20, 30, 255)     # opaque: untouched
    px[1, 0] = (0, 0, 0, 128)        # half transparent black
    px[1, 1] = (100, 150, 250, 64)
    out = prepare_image(png_bytes(Image.fromarray(px, "RGBA")), size=2, background=background)
    assert tuple(out[0, 0]) == (bg, bg, bg)
    assert tuple(out[0, 1]) == (10, 20, 30)
    assert tuple(out[1, 0]) == tuple(flat(128, 0, bg) for _ in range(3))
    assert tuple(out[1, 1]) == tuple(flat(64, c, bg) for c in (100, 150, 250))


def test_background_none_keeps_colour_under_alpha():
    px = np.zeros((2, 2, 4), np.uint8)
    px[0, 0] = (200, 10, 10, 0)
    px[1, 1] = (5, 6, 7, 90)
    out = prepare_image(png_bytes(Image.fromarray(px, "RGBA")), size=2, background="none")
    assert tuple(out[0, 0]) == (200, 10, 10) and tuple(out[1, 1]) == (5, 6, 7)


def test_transparent_pixel_over_white_is_255():
    im = Image.new("RGBA", (3, 3), (0, 0, 0, 0))
    assert (prepare_image(png_bytes(im), size=3) == 255).all()


def test_la_and_l_modes():
    la = Image.fromarray(np.array([[[100, 0], [100, 255]]], np.uint8), "LA")
    out = prepare_image(png_bytes(la), size=2)  # 1x2 image padded to 2x2
    assert out.shape == (2, 2, 3)
    # the art is one row; padding adds a background row (top, since (2 - 1) // 2 == 0 rows above)
    row = out[0]
    assert tuple(row[0]) == (255, 255, 255) and tuple(row[1]) == (100, 100, 100)
    assert (out[1] == 255).all()
    grey = Image.fromarray(np.full((3, 3), 77, np.uint8), "L")
    assert (prepare_image(png_bytes(grey), size=3) == 77).all()


def test_palette_with_and_without_transparency():
    im = Image.new("P", (2, 1))
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.putpixel((0, 0), 0)
    im.putpixel((1, 0), 1)
    plain = prepare_image(png_bytes(im), size=2, background="black")
    assert tuple(plain[0, 0]) == (255, 0, 0) and tuple(plain[0, 1]) == (0, 0, 255)
    trans = prepare_image(png_bytes(im, transparency=0), size=2, background="white")
    assert tuple(trans[0, 0]) == (255, 255, 255)      # index 0 is transparent
    assert tuple(trans[0, 1]) == (0, 0, 255)
    assert (trans[1] == 255).all()                    # padding row


def test_cmyk():
    cmyk = Image.new("CMYK", (3, 1))
    cmyk.putpixel((0, 0), (0, 0, 0, 0))        # white
    cmyk.putpixel((1, 0), (0, 0, 0, 255))      # black
    cmyk.putpixel((2, 0), (255, 0, 0, 0))      # cyan
    out = prepare_image(png_bytes(cmyk, "TIFF"), size=3, background="black")
    assert tuple(out[1, 0]) == (255, 255, 255)
    assert tuple(out[1, 1]) == (0, 0, 0)
    assert tuple(out[1, 2]) == (0, 255, 255)


def test_16_bit_grey_png_is_scaled_not_clipped():
    values = np.array([[0, 257, 32768, 65535]], np.uint16)
    raw = png_bytes(Image.fromarray(values))
    with Image.open(io.BytesIO(raw)) as im:
        assert im.mode.startswith("I;16")  # really a 16-bit PNG
    out = prepare_image(raw, size=4)
    assert [int(v) for v in out[1, :, 0]] == [0, 1, 128, 255]  # v * 255 / 65535, rounded
    assert (out[1] == out[1, :, :1]).all()                       # grey: equal channels
    keyed = png_bytes(Image.fromarray(np.array([[0, 1000, 65535]], np.uint16)), transparency=1000)
    assert [int(v) for v in prepare_image(keyed, size=3)[1, :, 0]] == [0, 255, 255]  # tRNS key -> background
    assert [int(v) for v in prepare_image(keyed, size=3, background="black")[1, :, 0]] == [0, 0, 255]


def test_one_bit():
    im = Image.new("1", (2, 2), 0)
    im.putpixel((1, 0), 1)
    out = prepare_image(png_bytes(im), size=2)
    assert tuple(out[0, 1]) == (255, 255, 255) and tuple(out[0, 0]) == (0, 0, 0)
    assert tuple(out[1, 1]) == (0, 0, 0)


def test_all_modes_through_a_folder(tmp_path):
    src = tmp_path / "modes"
    src.mkdir()
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(src / "a_rgba.png")
    Image.new("L", (4, 4), 9).save(src / "b_l.png")
    Image.new("1", (4, 4), 1).save(src / "c_1.png")
    Image.new("CMYK", (4, 4), (0, 0, 0, 255)).save(src / "d_cmyk.tif")
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(src / "e_16.png")
    Image.new("P", (4, 4), 0).save(src / "f_p.gif")
    ds = prepare(src, size=4, progress=False)
    assert isinstance(ds, PreparedDataset)
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (6, 3, 4, 4) and ds.images.is_contiguous()
    means = ds.images.float().mean(dim=(1, 2, 3)).tolist()
    assert means[:5] == [255, 9, 255, 0, 255]
    assert ds.files == ["a_rgba.png", "b_l.png", "c_1.png", "d_cmyk.tif", "e_16.png", "f_p.gif"]


# ---- pad, never crop ---------------------------------------------------------------------------------------
def test_wide_art_is_padded_at_native_size():
    im = Image.new("RGB", (8, 4), (200, 0, 0))
    out = prepare_image(png_bytes(im), size=8)
    assert (out[:2] == 255).all() and (out[6:] == 255).all()
    assert (out[2:6] == (200, 0, 0)).all()  # full width kept


def test_wide_and_tall_art_keep_their_extent_when_resized():
    art = np.zeros((16, 32, 3), np.uint8)
    art[:, :] = (200, 0, 0)
    art[:, 0] = art[:, -1] = (0, 0, 200)  # marks on the left and right edges of the art
    out = prepare_image(png_bytes(Image.fromarray(art)), size=16)
    # 32x16 -> padded to 32x32 (8 rows above and below) -> 16x16: rows 4..11 are art
    for corner in (out[0, 0], out[0, -1], out[-1, 0], out[-1, -1]):
        assert tuple(corner) == (255, 255, 255)
    # Lanczos rings by a level or two next to the art: "background" means >= 250 here
    assert (out[:3] >= 250).all() and (out[13:] >= 250).all()
    mid = out[5:11]
    assert (mid[:, :, 1] < 40).all()            # no white left inside the art band
    assert (mid[:, 0, 2] > 60).all() and (mid[:, -1, 2] > 60).all()  # edge marks survived: nothing cropped
    tall = prepare_image(png_bytes(Image.fromarray(art.transpose(1, 0, 2).copy())), size=16)
    assert (tall[:, :3] >= 250).all() and (tall[:, 13:] >= 250).all()
    assert (tall[0, 5:11, 2] > 60).all() and (tall[-1, 5:11, 2] > 60).all()


# ---- invalid files ---------------------------------------------------------------------------------------
def test_corrupt_corpus_is_skipped_with_reasons(tmp_path):
    src = tmp_path / "corpus"
    src.mkdir()
    good = png_bytes(noise(16, 16, seed=3))
    (src / "good.png").write_bytes(good)
    (src / "truncated.png").write_bytes(good[: len(good) // 2])
    (src / "empty.png").write_bytes(b"")
    (src / "text.png").write_text("this is not a picture\n")
    (src / "bomb.png").write_bytes(png_bytes(Image.new("RGB", (64, 64))))  # 4096 px > limit 1000
    (src / "notes.txt").write_text("ignored")
    (src / "labels.csv").write_text("id,name\n")
    (src / ".DS_Store").write_bytes(b"\0\1")
    (src / "__MACOSX").mkdir()
    (src / "__MACOSX" / "._good.png").write_bytes(b"junk")
    ds = prepare(src, size=8, progress=False, max_pixels=1000)
    assert ds.files == ["good.png"] and ds.images.shape == (1, 3, 8, 8)
    reasons = dict(ds.skipped)
    assert set(reasons) == {"truncated.png", "empty.png", "text.png", "bomb.png"}  # .txt/.csv/.DS_Store silent
    assert "truncated" in reasons["truncated.png"]
    assert "empty file" in reasons["empty.png"]
    assert "not an image" in reasons["text.png"]
    assert "too many pixels" in reasons["bomb.png"] and "64x64" in reasons["bomb.png"]
    assert ds.ignored >= 3
    report = data.format_report(ds)
    assert "skipped 4 file(s)" in report and "bomb.png: too many pixels" in report


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        prepare(tmp_path / "empty", progress=False)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="1 other file"):
        prepare(tmp_path / "docs", progress=False)


def test_only_broken_images_is_a_clear_error(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"")
    (tmp_path / "bad" / "b.jpg").write_text("nope")
    with pytest.raises(DataError, match="none of the 2 image file"):
        prepare(tmp_path / "bad", progress=False)


def test_bad_options_and_paths(tmp_path):
    make_set(tmp_path / "s")
    with pytest.raises(DataError, match="background"):
        prepare(tmp_path / "s", background="grey", progress=False)
    with pytest.raises(DataError, match="size"):
        prepare(tmp_path / "s", size=0, progress=False)
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "missing", progress=False)
    (tmp_path / "x.bin").write_bytes(b"\0" * 10)
    with pytest.raises(DataError, match="not a folder of images"):
        prepare(tmp_path / "x.bin", progress=False)
    (tmp_path / "broken.zip").write_bytes(b"PK\3\4 not really")
    with pytest.raises(DataError, match="zip"):
        prepare(tmp_path / "broken.zip", progress=False)


# ---- archives give the same key and tensor as the folder ---------------------------------------------------
def test_zip_and_tar_match_the_folder(tmp_path):
    src = make_set(tmp_path / "myset", n=3)
    (src / "sub").mkdir()
    noise(10, 6, seed=9, mode="RGBA").save(src / "sub" / "4.png")
    (src / "readme.txt").write_text("x")
    ref = prepare(src, size=8, progress=False)
    assert ref.files == ["1.png", "2.png", "3.png", "sub/4.png"] and ref.name == "myset"

    zpath = tmp_path / "myset.zip"
    with zipfile.ZipFile(zpath, "w") as zf:  # with the top folder in the names, like `zip -r myset.zip myset`
        for p in sorted(src.rglob("*")):
            if p.is_file():
                zf.write(p, "myset/" + p.relative_to(src).as_posix())
    tgz = tmp_path / "myset.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:  # `tar -C myset -czf myset.tar.gz .` style names: ./1.png
        for p in sorted(src.rglob("*")):
            tf.add(p, "./" + p.relative_to(src).as_posix(), recursive=False)
    plain = tmp_path / "other-name.tar"
    with tarfile.open(plain, "w") as tf:
        for p in sorted(src.rglob("*"), reverse=True):  # storage order must not matter
            if p.is_file():
                tf.add(p, p.relative_to(src).as_posix())
    for archive, name in ((zpath, "myset"), (tgz, "myset"), (plain, "other-name")):
        ds = prepare(archive, size=8, progress=False)
        assert ds.key == ref.key, archive.name
        assert ds.files == ref.files
        assert torch.equal(ds.images, ref.images)
        assert ds.name == name and ds.ignored == 1


def test_tar_link_members_are_followed_inside_the_archive_only(tmp_path):
    src = make_set(tmp_path / "s", n=1)
    t = tmp_path / "s.tar"
    with tarfile.open(t, "w") as tf:
        tf.add(src / "1.png", "1.png")
        for name, target in (("2.png", "1.png"), ("3.png", "../1.png")):
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    ds = prepare(t, size=8, progress=False)
    # a link to a member is read as that member, with a note; one out of the archive is skipped (docs/data.md)
    assert ds.files == ["1.png", "2.png"] and ds.links == [("2.png", "1.png")]
    assert ds.skipped == [("3.png", "link out of the archive (-> ../1.png; not followed)")]
    assert torch.equal(ds.images[0], ds.images[1])


def test_truncated_tar_gz_is_a_clear_error(tmp_path):
    src = make_set(tmp_path / "s", n=4, size=32)
    t = tmp_path / "s.tgz"
    with tarfile.open(t, "w:gz") as tf:
        tf.add(src, ".")
    t.write_bytes(t.read_bytes()[:-200])
    with pytest.raises(DataError, match="truncated or corrupt"):
        prepare(t, size=8, progress=False)


def test_natural_order(tmp_path):
    src = tmp_path / "n"
    src.mkdir()
    for i in (10, 2, 1):
        Image.new("L", (2, 2), i).save(src / f"{i}.png")
    ds = prepare(src, size=2, progress=False)
    assert ds.files == ["1.png", "2.png", "10.png"]
    assert [int(v) for v in ds.images[:, 0, 0, 0]] == [1, 2, 10]


# ---- content key -------------------------------------------------------------------------------------------
def test_key_changes_with_pixels_and_options(tmp_path):
    src = make_set(tmp_path / "k", n=3)
    base = prepare(src, size=8, progress=False).key
    assert prepare(src, size=8, progress=False).key == base  # deterministic
    assert prepare(src, size=12, progress=False).key != base
    assert prepare(src, size=8, background="black", progress=False).key != base
    im = Image.open(src / "2.png").convert("RGBA")
    px = im.getpixel((0, 0))
    im.putpixel((0, 0), ((px[0] + 1) % 256,) + px[1:])
    im.save(src / "2.png")
    assert prepare(src, size=8, progress=False).key != base
    (src / "notes.txt").write_text("not an image: does not change the key")
    k2 = prepare(src, size=8, progress=False).key
    (src / "notes.txt").write_text("still ignored")
    assert prepare(src, size=8, progress=False).key == k2
    os.rename(src / "3.png", src / "4.png")  # names are part of the key
    assert prepare(src, size=8, progress=False).key != k2


# ---- on-disk form, atomic writes, never unpickle ------------------------------------------------------------
def test_out_folder_layout_and_reload(tmp_path):
    src = make_set(tmp_path / "s", n=3)
    out = tmp_path / "out"
    ds = prepare(src, out, size=8, progress=False)
    assert sorted(os.listdir(out)) == ["dataset.json", "images.npy"]  # no temp files left behind
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["key"] == ds.key and meta["count"] == 3 and meta["size"] == 8 and meta["background"] == "white"
    assert meta["files"] == ds.files and meta["pipeline_version"] == data.PIPELINE_VERSION
    assert meta["source"] == str(src.resolve())
    arr = np.load(out / "images.npy", allow_pickle=False)
    assert arr.dtype == np.uint8 and arr.shape == (3, 3, 8, 8)
    back = load_dataset(out, size=8, progress=False)
    assert torch.equal(back.images, ds.images) and back.key == ds.key and back.files == ds.files
    assert back.location == str(out.resolve()) and back.source == str(out.resolve())
    assert load_dataset(out / "dataset.json", size=8, progress=False).key == ds.key


def test_failed_write_leaves_no_temp_files_and_keeps_old_data(tmp_path, monkeypatch):
    src = make_set(tmp_path / "s", n=3)
    out = tmp_path / "out"
    first = prepare(src, out, size=8, progress=False)

    def broken_write(fp, arr, **kw):
        fp.write(b"\x93NUMPY partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np.lib.format, "write_array", broken_write)
    with pytest.raises(DataError, match="No space left"):
        prepare(src, out, size=8, background="black", progress=False)
    monkeypatch.undo()
    assert sorted(os.listdir(out)) == ["dataset.json", "images.npy"]
    again = load_dataset(out, size=8, progress=False)
    assert again.key == first.key and torch.equal(again.images, first.images)


def test_prepare_reuses_an_up_to_date_out(tmp_path, monkeypatch):
    src = make_set(tmp_path / "s", n=2)
    out = tmp_path / "out"
    ds = prepare(src, out, size=8, progress=False)
    monkeypatch.setattr(data, "_decode_array", _must_not_decode)
    again = prepare(src, out, size=8, progress=False)
    assert again.key == ds.key and torch.equal(again.images, ds.images)


def test_loading_never_unpickles(tmp_path):
    src = make_set(tmp_path / "s", n=2)
    out = tmp_path / "out"
    prepare(src, out, size=8, progress=False)
    marker = tmp_path / "pwned"
    evil = np.empty(2, dtype=object)
    evil[0] = _Evil(str(marker))
    with open(out / "images.npy", "wb") as f:
        np.save(f, evil, allow_pickle=True)
    with pytest.raises(DataError, match="damaged"):
        load_dataset(out, size=8, progress=False)
    assert not marker.exists()


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_prepared_folder_at_another_size(tmp_path):
    src = make_set(tmp_path / "s", n=2, size=16)
    out = tmp_path / "out"
    prepare(src, out, size=16, progress=False)
    small = load_dataset(out, size=8, cache_dir=tmp_path / "cache", progress=False)
    assert small.images.shape == (2, 3, 8, 8)  # re-prepared from the recorded source, OUT untouched
    assert json.loads((out / "dataset.json").read_text())["size"] == 16
    shutil.rmtree(src)
    with pytest.raises(DataError, match="not available"):
        load_dataset(out, size=4, cache_dir=tmp_path / "cache", progress=False)
    assert load_dataset(out, size=16, progress=False).images.shape == (2, 3, 16, 16)


def test_prepare_refuses_a_prepared_source_and_foreign_json(tmp_path):
    src = make_set(tmp_path / "s", n=2)
    out = tmp_path / "out"
    prepare(src, out, size=8, progress=False)
    with pytest.raises(DataError, match="already a prepared dataset"):
        prepare(out, tmp_path / "out2", progress=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "dataset.json").write_text('{"mine": true}')
    with pytest.raises(DataError, match="did not write"):
        prepare(src, other, size=8, progress=False)
    assert json.loads((other / "dataset.json").read_text()) == {"mine": True}  # user's file untouched


# ---- cache ---------------------------------------------------------------------------------------------------
def _must_not_decode(*a, **k):
    raise AssertionError("the decoder was called although the cache should have been used")


def test_cache_reuse_and_corrupt_entry_rebuilt(tmp_path, monkeypatch):
    src = make_set(tmp_path / "raw", n=3)
    cache = tmp_path / "cache"
    first = load_dataset(src, size=8, cache_dir=cache, progress=False)
    entry = cache / "datasets" / first.key
    assert first.location == str(entry.resolve())
    assert sorted(os.listdir(entry)) == ["dataset.json", "images.npy"]

    real_decode = data._decode_array
    monkeypatch.setattr(data, "_decode_array", _must_not_decode)
    second = load_dataset(src, size=8, cache_dir=cache, progress=False)
    assert torch.equal(second.images, first.images) and second.key == first.key
    assert second.source == str(src.resolve()) and second.name == "raw"

    calls = []

    def counting(*a, **k):
        calls.append(1)
        return real_decode(*a, **k)

    monkeypatch.setattr(data, "_decode_array", counting)
    npy = entry / "images.npy"
    raw = bytearray(npy.read_bytes())
    raw[-5] ^= 0xFF  # one flipped byte: only the checksum can notice
    npy.write_bytes(bytes(raw))
    third = load_dataset(src, size=8, cache_dir=cache, progress=False)
    assert len(calls) == 3 and torch.equal(third.images, first.images)

    npy.write_bytes(npy.read_bytes()[:100])  # truncated
    calls.clear()
    assert torch.equal(load_dataset(src, size=8, cache_dir=cache, progress=False).images, first.images)
    assert len(calls) == 3
    (entry / "dataset.json").write_text("{not json")
    calls.clear()
    assert torch.equal(load_dataset(src, size=8, cache_dir=cache, progress=False).images, first.images)
    assert len(calls) == 3
    calls.clear()
    load_dataset(src, size=8, cache_dir=cache, progress=False)
    assert calls == []  # repaired entry is used again
    assert sorted(os.listdir(entry)) == ["dataset.json", "images.npy"]


def test_default_cache_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("POKELAB_CACHE", str(tmp_path / "envcache"))
    src = make_set(tmp_path / "raw", n=2)
    ds = load_dataset(src, size=8, progress=False)
    assert (tmp_path / "envcache" / "datasets" / ds.key / "images.npy").is_file()


def test_zip_cache_hit_skips_decoding(tmp_path, monkeypatch):
    src = make_set(tmp_path / "z", n=2)
    zp = tmp_path / "z.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        for p in src.iterdir():
            zf.write(p, p.name)
    cache = tmp_path / "cache"
    a = load_dataset(zp, size=8, cache_dir=cache, progress=False)
    monkeypatch.setattr(data, "_decode_array", _must_not_decode)
    b = load_dataset(src, size=8, cache_dir=cache, progress=False)  # same content, same key: shared entry
    assert b.key == a.key and torch.equal(a.images, b.images) and b.name == "z"


# ---- CLI -------------------------------------------------------------------------------------------------------
def _parser():
    p = argparse.ArgumentParser(prog="pokelab")
    add_data_commands(p.add_subparsers(dest="command"))
    return p


def test_cli_prepare_prints_report(tmp_path, capsys):
    src = make_set(tmp_path / "s", n=2)
    (src / "broken.png").write_bytes(b"")
    out = tmp_path / "out"
    args = _parser().parse_args(["data", "prepare", str(src), str(out), "--size", "8", "--no-progress"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "prepared: 2 image(s)" in text and "broken.png: empty file (0 bytes)" in text
    assert (out / "images.npy").is_file()
    args = _parser().parse_args(["data", "prepare", str(src), str(out), "--size", "8", "--no-progress"])
    assert args.func(args) == 0
    assert "up to date" in capsys.readouterr().out
    args = _parser().parse_args(["data", "info", str(out)])
    assert args.func(args) == 0
    assert "2 image(s)" in capsys.readouterr().out


def test_cli_errors_exit_2_with_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    args = _parser().parse_args(["data", "prepare", str(tmp_path / "empty"), str(tmp_path / "o"), "--no-progress"])
    assert args.func(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pokelab data prepare: error:") and "no images found" in err and "\n" not in err
    args = _parser().parse_args(["data"])
    assert args.func(args) == 2


def test_through_the_main_cli(tmp_path, capsys):
    from engines.cli import main

    src = make_set(tmp_path / "s", n=2)
    assert main(["data", "prepare", str(src), str(tmp_path / "o"), "--size", "8", "--no-progress"]) == 0
    assert (tmp_path / "o" / "dataset.json").is_file()


# ---- real images -----------------------------------------------------------------------------------------------
def test_real_pokemon_images(tmp_path, pokemon_dir):
    src = tmp_path / "dreamworld-256"
    src.mkdir()
    for i in range(1, 9):
        shutil.copy(pokemon_dir / f"{i}.png", src / f"{i}.png")
    ds = prepare(src, tmp_path / "out", size=32, progress=False)
    assert ds.name == "dreamworld-256" and ds.skipped == []
    assert ds.files == [f"{i}.png" for i in range(1, 9)]
    x = ds.images
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.uint8 and x.is_contiguous()
    # transparent background with a margin: corners are the white background
    for c in (x[:, :, 0, 0], x[:, :, 0, -1], x[:, :, -1, 0], x[:, :, -1, -1]):
        assert (c == 255).all()
    # the art is there: every image has a good share of non-white pixels, and they differ from each other
    nonwhite = (x < 250).any(dim=1).float().mean(dim=(1, 2))
    assert (nonwhite > 0.1).all()
    assert len({t.numpy().tobytes() for t in x}) == 8
    # an independent reference for one image: PIL composite on white, Lanczos to 32 px
    with Image.open(pokemon_dir / "1.png") as im:
        rgba = im.convert("RGBA")
    ref = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    got = x[0].numpy().astype(int)
    same = ref.resize((32, 32), Image.Resampling.LANCZOS, reducing_gap=3.0)
    same = np.asarray(same).transpose(2, 0, 1).astype(int)
    assert np.abs(same - got).max() <= 2          # only alpha-compositing rounding differs
    exact = np.asarray(ref.resize((32, 32), Image.Resampling.LANCZOS)).transpose(2, 0, 1).astype(int)
    assert np.abs(exact - got).mean() < 0.5       # the reducing_gap shortcut is visually exact
    again = load_dataset(tmp_path / "out", size=32, progress=False)
    assert again.key == ds.key and torch.equal(again.images, x)


def test_exif_orientation_is_applied():
    im = Image.new("RGB", (4, 2), (200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the upright picture is 2 wide, 4 tall
    upright = prepare_image(png_bytes(im, exif=exif), size=4)
    assert (upright[:, [0, 3]] == 255).all() and (upright[:, 1:3] == (200, 0, 0)).all()
    plain = prepare_image(png_bytes(im), size=4)
    assert (plain[[0, 3]] == 255).all() and (plain[1:3] == (200, 0, 0)).all()


def test_duplicate_zip_entry_uses_the_later_copy(tmp_path):
    zp = tmp_path / "dup.zip"
    with zipfile.ZipFile(zp, "w") as zf, pytest.warns(UserWarning, match="Duplicate"):
        zf.writestr("a.png", png_bytes(Image.new("L", (2, 2), 10)))
        zf.writestr("a.png", png_bytes(Image.new("L", (2, 2), 20)))
    ds = prepare(zp, size=2, progress=False)
    assert ds.files == ["a.png"] and int(ds.images[0, 0, 0, 0]) == 20
    assert ds.skipped == [("a.png", "duplicate entry in the archive (the later copy was used)")]
