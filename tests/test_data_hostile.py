"""engines.data.prepare against hostile files: FIFOs and devices, unsafe archive names, links, short PNG streams,
pixel budgets and control characters in names (docs/data.md, "Hostile files"). Every test is small and
guarded by a timeout: a regression must fail, never hang."""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import stat
import struct
import tarfile
import threading
import time
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from engines.data import prepare as data
from engines.data.prepare import DataError, add_data_commands, format_report, load_dataset, prepare

posix_only = pytest.mark.skipif(os.name != "posix", reason="needs POSIX FIFOs / symlinks / SIGALRM")


# ---- helpers -------------------------------------------------------------------------------------------
class Hung(BaseException):
    """Raised by the alarm; a BaseException so that no `except Exception` in the code under test eats it."""


@contextlib.contextmanager
def deadline(seconds: int = 10):
    """Fail (instead of hanging) when the block takes longer than ``seconds``: SIGALRM interrupts a blocking
    open() of a FIFO and an endless read alike."""
    if not hasattr(signal, "SIGALRM"):  # Windows: no FIFOs or device links to hang on either
        yield
        return

    def _alarm(signum, frame):
        raise Hung(f"took more than {seconds} s: the data layer hung")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", **kw)
    return buf.getvalue()


def noise(w: int, h: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    ch = {"RGB": 3, "RGBA": 4}[mode]
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, ch), dtype=np.uint8), mode)


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_from_stream(w: int, h: int, raw: bytes, color_type: int = 2, depth: int = 8, interlace: int = 0) -> bytes:
    """A PNG with a valid zlib stream of exactly ``raw`` (filter bytes included) and valid CRCs."""
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def adam7_rows(a: np.ndarray) -> bytes:
    """The raw (unfiltered, filter type 0) Adam7 stream of an H x W x 3 uint8 array."""
    out = b""
    for x0, y0, dx, dy in ADAM7:
        sub = a[y0::dy, x0::dx]
        if sub.shape[0] and sub.shape[1]:
            out += b"".join(b"\0" + row.tobytes() for row in sub)
    return out


def header_only_png(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h but whose image data is a few bytes (a decompression-bomb probe)."""
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def zip_symlink(zf: zipfile.ZipFile, name: str, target: str) -> None:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix: the mode in the high 16 bits of external_attr
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    zf.writestr(info, target)


def tar_add_bytes(tf: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tf.addfile(info, io.BytesIO(payload))


def tar_add_link(tf: tarfile.TarFile, name: str, target: str, hard: bool = False) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    tf.addfile(info)


# ---- (3) FIFOs, devices and sizes: never hang, never read what is not a regular file -------------------
@posix_only
def test_fifo_in_the_folder_is_skipped_without_opening_it(tmp_path):
    src = tmp_path / "s"
    src.mkdir()
    (src / "good.png").write_bytes(png_bytes(noise(8, 8)))
    os.mkfifo(src / "pipe.png")
    os.mkfifo(src / "notes.txt")  # not an image name: ignored, never opened either
    with deadline():
        ds = prepare(src, size=8, progress=False)
    assert ds.files == ["good.png"]
    reasons = dict(ds.skipped)
    assert set(reasons) == {"pipe.png"} and "not a regular file" in reasons["pipe.png"]
    assert "FIFO" in reasons["pipe.png"]
    assert "pipe.png: not a regular file" in format_report(ds)


@posix_only
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_link_to_a_device_is_skipped_not_read(tmp_path, device):
    if not os.path.exists(device):
        pytest.skip(f"{device} is missing")
    src = tmp_path / "s"
    src.mkdir()
    (src / "good.png").write_bytes(png_bytes(noise(8, 8)))
    os.symlink(device, src / "endless.png")
    with deadline():
        ds = prepare(src, size=8, progress=False)
        again = load_dataset(src, size=8, cache_dir=tmp_path / "cache", progress=False)  # `train --data`
    assert ds.files == again.files == ["good.png"]
    reason = dict(ds.skipped)["endless.png"]
    assert "link" in reason and "not a regular file" in reason and "character device" in reason


@posix_only
def test_hostile_prepared_folder_and_source_never_hang(tmp_path):
    src = tmp_path / "s"
    src.mkdir()
    (src / "good.png").write_bytes(png_bytes(noise(8, 8)))
    os.mkfifo(src / "dataset.json")          # is SRC a prepared folder? must not block on reading this
    fifo_src = tmp_path / "pipe.zip"
    os.mkfifo(fifo_src)                      # SRC itself a FIFO
    with deadline():
        assert prepare(src, size=8, progress=False).files == ["good.png"]
        with pytest.raises(DataError, match="not a folder"):
            prepare(fifo_src, size=8, progress=False)
        out = tmp_path / "out"
        prepare(src, out, size=8, progress=False)
        (out / "images.npy").unlink()
        os.symlink("/dev/zero", out / "images.npy")
        with pytest.raises(DataError, match="images.npy"):
            load_dataset(out, size=8, progress=False)


class Endless(io.RawIOBase):
    """A stream that never ends (like /dev/zero); counts what was read from it."""

    def __init__(self):
        self.served = 0

    def readable(self):
        return True

    def readinto(self, b):
        n = len(b)
        b[:n] = b"\0" * n
        self.served += n
        return n


def test_reading_stops_one_byte_past_the_limit():
    src = Endless()
    got = data._read_at_most(src, 1000)
    assert len(got) == 1001 and src.served <= 1001
    src = Endless()
    digest, n, _head = data._hash_limited(src, 5000)
    assert digest is None and n == 5001 and src.served <= 5001
    small = io.BytesIO(b"x" * 10)
    assert data._read_at_most(small, 1000) == b"x" * 10


def test_size_limit_is_checked_before_and_while_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEFAULT_MAX_FILE_BYTES", 2000)
    big = png_bytes(noise(64, 64, seed=2))  # ~12 kB
    small = png_bytes(noise(4, 4))
    src = tmp_path / "s"
    src.mkdir()
    (src / "big.png").write_bytes(big)
    (src / "small.png").write_bytes(small)
    zp = tmp_path / "s.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        zf.writestr("big.png", big)
        zf.writestr("small.png", small)
    tp = tmp_path / "s.tar"
    with tarfile.open(tp, "w") as tf:
        tar_add_bytes(tf, "big.png", big)
        tar_add_bytes(tf, "small.png", small)
    for source in (src, zp, tp):
        ds = prepare(source, size=4, progress=False)
        assert ds.files == ["small.png"], source
        assert "over the" in dict(ds.skipped)["big.png"] and "limit" in dict(ds.skipped)["big.png"]


# ---- (5) archive names, links, short image streams -----------------------------------------------------
UNSAFE = ["../evil.png", "..\\evil2.png", "/abs.png", "C:/drive.png", "a/../../up.png", "../notes.txt"]


def test_unsafe_zip_member_names_are_named_in_the_report(tmp_path):
    good = png_bytes(noise(4, 4))
    zp = tmp_path / "u.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        zf.writestr("set/good.png", good)
        zf.writestr("set/sub/../also.png", good)  # stays inside: fine
        for name in UNSAFE:
            zf.writestr(zipfile.ZipInfo(name), good)
    ds = prepare(zp, size=4, progress=False)
    assert ds.files == ["also.png", "good.png"]  # the common folder 'set/' is still dropped
    reasons = dict(ds.skipped)
    assert set(reasons) == set(UNSAFE)
    for name in UNSAFE:
        assert "unsafe name" in reasons[name]
    assert "absolute" in reasons["/abs.png"] and "absolute" in reasons["C:/drive.png"]
    assert ".." in reasons["../evil.png"] and ".." in reasons["..\\evil2.png"]
    report = format_report(ds)
    for name in UNSAFE:
        assert f"    {name}: unsafe name" in report


def test_unsafe_tar_member_names_are_named_in_the_report(tmp_path):
    good = png_bytes(noise(4, 4))
    tp = tmp_path / "u.tar.gz"
    with tarfile.open(tp, "w:gz") as tf:
        tar_add_bytes(tf, "./good.png", good)
        for name in UNSAFE:
            tar_add_bytes(tf, name, good)
    ds = prepare(tp, size=4, progress=False)
    assert ds.files == ["good.png"]
    assert set(dict(ds.skipped)) == set(UNSAFE)
    assert all("unsafe name" in r for r in dict(ds.skipped).values())


def short_png() -> tuple[bytes, np.ndarray]:
    """A 16x16 RGB PNG whose (valid, complete) zlib stream holds only the first 8 rows."""
    a = np.random.default_rng(5).integers(1, 256, (16, 16, 3), dtype=np.uint8)
    rows = b"".join(b"\0" + a[y].tobytes() for y in range(8))
    return png_from_stream(16, 16, rows), a


def test_png_whose_image_data_ends_early_is_truncated(tmp_path):
    raw, _ = short_png()
    with pytest.raises(DataError, match="truncated"):
        data.prepare_image(raw, size=16)
    src = tmp_path / "s"
    src.mkdir()
    (src / "short.png").write_bytes(raw)
    (src / "good.png").write_bytes(png_bytes(noise(16, 16)))
    ds = prepare(src, size=16, progress=False)
    assert ds.files == ["good.png"] and "truncated" in dict(ds.skipped)["short.png"]


def test_complete_png_streams_are_accepted_interlaced_and_low_bit_depths():
    a = np.random.default_rng(7).integers(0, 256, (13, 11, 3), dtype=np.uint8)
    full = png_from_stream(11, 13, b"".join(b"\0" + a[y].tobytes() for y in range(13)))
    assert np.array_equal(data.prepare_image(full, size=13)[:, 1:12], a)
    laced = png_from_stream(11, 13, adam7_rows(a), interlace=1)
    with Image.open(io.BytesIO(laced)) as im:
        assert im.info.get("interlace") == 1
    assert np.array_equal(data.prepare_image(laced, size=13), data.prepare_image(full, size=13))
    short_laced = png_from_stream(11, 13, adam7_rows(a)[:-20], interlace=1)
    with pytest.raises(DataError, match="truncated"):
        data.prepare_image(short_laced, size=13)
    # every bit depth / colour type PIL writes goes through the completeness check untouched
    for im in (Image.new("1", (13, 5), 1), Image.new("L", (7, 3), 9), Image.new("LA", (5, 5), (9, 200)),
               Image.new("RGBA", (3, 9), (1, 2, 3, 4)), Image.fromarray(np.full((3, 5), 60000, np.uint16)),
               Image.new("P", (9, 2), 1)):
        data.prepare_image(png_bytes(im), size=4)
    p4 = Image.new("P", (9, 3), 1)
    p4.putpalette([0, 0, 0, 255, 0, 0] * 8)
    data.prepare_image(png_bytes(p4, bits=4), size=4)


def test_truncated_png_is_skipped_even_if_load_truncated_images_is_on(tmp_path, monkeypatch):
    good = png_bytes(noise(32, 32, seed=4))
    src = tmp_path / "s"
    src.mkdir()
    (src / "cut.png").write_bytes(good[: len(good) - 200])  # cut inside the image data
    (src / "short.png").write_bytes(short_png()[0])
    (src / "good.png").write_bytes(good)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # some other code switched it on
    ds = prepare(src, size=8, progress=False)
    assert ds.files == ["good.png"]
    assert "truncated" in dict(ds.skipped)["cut.png"] and "truncated" in dict(ds.skipped)["short.png"]
    with pytest.raises(DataError, match="truncated"):
        data.prepare_image(good[: len(good) - 200], size=8)
    with Image.open(io.BytesIO(good[: len(good) - 200])) as im:
        with pytest.raises(DataError, match="truncated"):  # a lazily loaded PIL image: load() in the try
            data.prepare_image(im, size=8)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored afterwards


@posix_only
def test_folder_links_are_followed_with_a_note_or_skipped_with_a_reason(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outside = png_bytes(noise(4, 4, seed=1))
    (elsewhere / "far.png").write_bytes(outside)
    (elsewhere / "sub").mkdir()
    (elsewhere / "sub" / "x.png").write_bytes(outside)
    src = tmp_path / "s"
    src.mkdir()
    (src / "1.png").write_bytes(png_bytes(noise(4, 4, seed=2)))
    os.symlink(elsewhere / "far.png", src / "2.png")     # out of SRC, to a regular image: followed, noted
    os.symlink("1.png", src / "3.png")                   # inside SRC: followed, noted
    os.symlink(tmp_path / "missing.png", src / "4.png")  # dangling
    os.symlink("5.png", src / "5.png")                   # a loop
    os.symlink(elsewhere / "sub", src / "more")          # a link to a folder: not walked
    ds = prepare(src, size=4, progress=False)
    assert ds.files == ["1.png", "2.png", "3.png"]
    links = dict(ds.links)
    assert set(links) == {"2.png", "3.png"}
    assert links == {"2.png": str((elsewhere / "far.png").resolve()), "3.png": "1.png"}
    reasons = dict(ds.skipped)
    assert set(reasons) == {"4.png", "5.png", "more"}
    assert "broken link" in reasons["4.png"] and "link" in reasons["5.png"]
    assert "link to a folder" in reasons["more"]
    report = format_report(ds)
    assert "followed 2 link(s)" in report and f"2.png -> {(elsewhere / 'far.png').resolve()}" in report
    # the note survives the cache and OUT
    out = tmp_path / "out"
    prepare(src, out, size=4, progress=False)
    assert dict(load_dataset(out, size=4, progress=False).links) == links


def test_zip_symlink_entries_follow_the_same_rule(tmp_path):
    one = png_bytes(noise(4, 4, seed=1))
    zp = tmp_path / "l.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        zf.writestr("set/1.png", one)
        zip_symlink(zf, "set/2.png", "1.png")                 # to a member: followed, noted
        zip_symlink(zf, "set/3.png", "../../etc/passwd.png")  # out of the archive
        zip_symlink(zf, "set/4.png", "/etc/hosts.png")        # absolute
        zip_symlink(zf, "set/5.png", "nothere.png")           # broken
    ds = prepare(zp, size=4, progress=False)
    assert ds.files == ["1.png", "2.png"]
    assert np.array_equal(ds.images[0].numpy(), ds.images[1].numpy())
    assert dict(ds.links) == {"2.png": "1.png"}
    reasons = dict(ds.skipped)
    assert set(reasons) == {"3.png", "4.png", "5.png"}
    assert "out of the archive" in reasons["3.png"] and "out of the archive" in reasons["4.png"]
    assert "broken link" in reasons["5.png"]


def test_tar_symlinks_and_hardlinks_follow_the_same_rule(tmp_path):
    one = png_bytes(noise(4, 4, seed=1))
    tp = tmp_path / "l.tar"
    with tarfile.open(tp, "w") as tf:
        tar_add_link(tf, "set/0.png", "1.png")  # a link before its target: still resolved
        tar_add_bytes(tf, "set/1.png", one)
        tar_add_link(tf, "set/2.png", "set/1.png", hard=True)
        tar_add_link(tf, "set/3.png", "../../etc/passwd.png")
        tar_add_link(tf, "set/4.png", "/dev/zero")
        tar_add_link(tf, "set/5.png", "missing.png")
        tar_add_link(tf, "set/6.png", "7.png")
        tar_add_link(tf, "set/7.png", "6.png")  # a loop
        fifo = tarfile.TarInfo("set/8.png")
        fifo.type = tarfile.FIFOTYPE
        tf.addfile(fifo)
    with deadline():
        ds = prepare(tp, size=4, progress=False)
    assert ds.files == ["0.png", "1.png", "2.png"]
    assert dict(ds.links) == {"0.png": "1.png", "2.png": "1.png"}
    reasons = dict(ds.skipped)
    assert set(reasons) == {"3.png", "4.png", "5.png", "6.png", "7.png", "8.png"}
    assert "out of the archive" in reasons["3.png"] and "out of the archive" in reasons["4.png"]
    assert "broken link" in reasons["5.png"] and "links" in reasons["6.png"]
    assert "not a regular file" in reasons["8.png"]


# ---- (7) pixel limits and the whole-set budget ----------------------------------------------------------
def test_header_claiming_60000_squared_is_skipped_from_the_header(tmp_path):
    src = tmp_path / "s"
    src.mkdir()
    (src / "huge.png").write_bytes(header_only_png(60000, 60000))
    (src / "good.png").write_bytes(png_bytes(noise(4, 4)))
    t0 = time.perf_counter()
    ds = prepare(src, size=4, progress=False)
    assert time.perf_counter() - t0 < 10
    assert ds.files == ["good.png"] and "too many pixels" in dict(ds.skipped)["huge.png"]


def _must_not_decode(*a, **k):
    raise AssertionError("decoding started although the pixel budget was already exceeded")


def test_total_pixel_budget_stops_before_decoding_and_names_files(tmp_path, monkeypatch):
    zp = tmp_path / "bomb.zip"
    with zipfile.ZipFile(zp, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(4):
            zf.writestr(f"b{i}.png", header_only_png(6000, 6000))  # 36 Mpx each: under the per-image limit
        zf.writestr("small.png", png_bytes(noise(4, 4)))
    monkeypatch.setattr(data, "_decode_array", _must_not_decode)
    with pytest.raises(DataError) as err:
        prepare(zp, size=4, progress=False, max_total_pixels=100_000_000)
    msg = str(err.value)
    assert "144,000,016" in msg and "100,000,000" in msg and "--max-total-pixels" in msg
    assert "b0.png (6000x6000)" in msg
    with pytest.raises(DataError, match="pixel budget"):
        load_dataset(zp, size=4, cache_dir=tmp_path / "cache", progress=False, max_total_pixels=100_000_000)
    assert data.DEFAULT_MAX_TOTAL_PIXELS >= 650 * 12_000_000  # 650 phone photos fit the default


def test_total_pixel_budget_is_also_checked_while_decoding(tmp_path, monkeypatch):
    # a header the scan cannot see (here: only the first 8 bytes are looked at) is counted when read
    monkeypatch.setattr(data, "_PEEK_BYTES", 8)
    src = tmp_path / "s"
    src.mkdir()
    for i in range(3):
        noise(30, 30, seed=i).save(src / f"{i}.png")
    with pytest.raises(DataError, match="pixel budget") as err:
        prepare(src, size=4, progress=False, max_total_pixels=2000)
    assert "2.png (30x30)" in str(err.value) and "1.png" not in str(err.value)
    assert len(prepare(src, size=4, progress=False, max_total_pixels=2700)) == 3


def test_decoding_keeps_few_pixels_in_flight(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_IN_FLIGHT_PIXELS", 1)  # each image is more: one at a time
    src = tmp_path / "s"
    src.mkdir()
    for i in range(8):
        noise(16, 16, seed=i).save(src / f"{i}.png")
    real = data._decode_array
    lock = threading.Lock()
    state = {"now": 0, "most": 0}

    def tracked(*a, **k):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.02)
        try:
            return real(*a, **k)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(data, "_decode_array", tracked)
    assert len(prepare(src, size=4, progress=False)) == 8
    assert state["most"] == 1


def test_cli_takes_max_total_pixels(tmp_path, capsys):
    src = tmp_path / "s"
    src.mkdir()
    noise(20, 20).save(src / "a.png")
    p = argparse.ArgumentParser(prog="pokelab")
    add_data_commands(p.add_subparsers(dest="command"))
    args = p.parse_args(["data", "prepare", str(src), str(tmp_path / "o"), "--size", "4", "--no-progress",
                         "--max-total-pixels", "100"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "pixel budget" in err and len(err.strip().splitlines()) == 1


# ---- (9) control characters in names --------------------------------------------------------------------
@posix_only
def test_control_characters_in_names_are_escaped(tmp_path, capsys):
    src = tmp_path / "s"
    src.mkdir()
    (src / "good.png").write_bytes(png_bytes(noise(4, 4)))
    nasty = "evil\n    fake.png: all good\x1b[2J\r\u202e.png"
    (src / nasty).write_bytes(b"not an image")
    raw = os.fsencode(src) + b"/bad\xff.png"  # not UTF-8: Python hands it over with a surrogate
    with open(raw, "wb") as f:
        f.write(b"")
    ds = prepare(src, size=4, progress=False)
    assert ds.files == ["good.png"] and nasty in dict(ds.skipped)  # the data keeps the real name
    report = format_report(ds)
    assert "\x1b" not in report and "\r" not in report and "\u202e" not in report
    assert "evil\\n    fake.png: all good\\x1b[2J\\r\\u202e.png: not an image" in report
    assert "bad\\xff.png: empty file" in report
    assert len(report.splitlines()) == 5
    report.encode("utf-8")  # printable: no lone surrogates
    out = tmp_path / "out"
    p = argparse.ArgumentParser(prog="pokelab")
    add_data_commands(p.add_subparsers(dest="command"))
    args = p.parse_args(["data", "prepare", str(src), str(out), "--size", "4", "--no-progress"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "evil\\n" in printed
    # error messages built from names are escaped too
    (src / "good.png").unlink()
    with pytest.raises(DataError) as err:
        prepare(src, size=4, progress=False)
    assert "\x1b" not in str(err.value) and "\n" not in str(err.value)


def test_printable_is_idempotent_and_keeps_ordinary_unicode():
    text = "Flabébé 🐉 a\\b\tc\x00\x7f\u200b"
    once = data._printable(text)
    assert once == "Flabébé 🐉 a\\b\\tc\\x00\\x7f\\u200b"
    assert data._printable(once) == once
