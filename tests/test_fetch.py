"""engines.data.fetch against a local HTTP server on 127.0.0.1 (never the internet)."""
from __future__ import annotations

import io
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from engines.data import fetch
from engines.cli import build_parser
from engines.data.prepare import DataError
from engines.data.fetch import fetch_images, parse_ids


def tiny_png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (12, 12, 4), dtype=np.uint8), "RGBA").save(buf, format="PNG")
    return buf.getvalue()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        srv = self.server
        name = self.path.rsplit("/", 1)[-1]
        rng = self.headers.get("Range")
        with srv.lock:
            srv.requests.append((name, rng))
            n_before = sum(1 for r in srv.requests if r[0] == name) - 1
        if name not in srv.files:
            self.send_error(404, "Not Found")
            return
        body = srv.files[name]
        if name in srv.fail_once and n_before == 0:
            self.send_error(500, "Internal Server Error")
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and srv.ranges:
            start = int(m.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        chunk = body[start:]
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        if name in srv.cut_once and n_before == 0:
            self.wfile.write(chunk[: len(chunk) // 2])  # promise everything, send half, hang up
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(chunk)
        with srv.lock:
            srv.sent[name] = srv.sent.get(name, 0) + len(chunk)


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.lock = threading.Lock()
    srv.requests, srv.sent = [], {}
    srv.files = {f"{i}.png": tiny_png(i) for i in (1, 2, 3, 4, 7)}
    srv.files["6.png"] = b"<html>this is an error page, not a png</html>"
    srv.fail_once = {"4.png"}
    srv.cut_once = {"7.png"}
    srv.ranges = True
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/sprites"
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def fetch_quick(out, ids, server, **kw):
    kw.setdefault("retries", 2)
    return fetch_images(out, ids, base_url=server.url, workers=2, backoff=0, timeout=5, progress=False, **kw)


def test_downloads_retries_and_reports_failures(tmp_path, server):
    res = fetch_quick(tmp_path, "1-7", server)
    assert res.downloaded == [1, 2, 3, 4, 7] and res.present == []
    failed = dict(res.failed)
    assert set(failed) == {5, 6}
    assert "404" in failed[5] and "not a valid image" in failed[6]
    for i in (1, 2, 3, 4, 7):
        assert (tmp_path / f"{i}.png").read_bytes() == server.files[f"{i}.png"]
    assert not (tmp_path / "5.png").exists() and not (tmp_path / "6.png").exists()
    assert not list(tmp_path.glob("*.part"))
    names = [n for n, _ in server.requests]
    assert names.count("5.png") == 1        # a 404 is not retried
    assert names.count("6.png") == 3        # a bad file is, up to retries + 1 attempts
    assert names.count("4.png") == 2        # failed once with HTTP 500, then succeeded
    # the cut-off download was continued with a Range request, not started over
    sevens = [r for n, r in server.requests if n == "7.png"]
    half = len(server.files["7.png"]) // 2
    assert sevens == [None, f"bytes={half}-"]


def test_resume_of_a_partial_file(tmp_path, server):
    body = server.files["2.png"]
    (tmp_path / "2.png.part").write_bytes(body[:100])
    res = fetch_quick(tmp_path, [2], server)
    assert res.downloaded == [2]
    assert (tmp_path / "2.png").read_bytes() == body
    assert server.requests == [("2.png", "bytes=100-")]
    assert server.sent["2.png"] == len(body) - 100  # only the missing bytes travelled
    assert not (tmp_path / "2.png.part").exists()


def test_server_without_range_support_restarts_cleanly(tmp_path, server):
    server.ranges = False
    body = server.files["3.png"]
    (tmp_path / "3.png.part").write_bytes(body[:50])
    res = fetch_quick(tmp_path, [3], server)
    assert res.downloaded == [3] and (tmp_path / "3.png").read_bytes() == body


def test_complete_part_answered_with_416(tmp_path, server):
    body = server.files["1.png"]
    (tmp_path / "1.png.part").write_bytes(body)
    res = fetch_quick(tmp_path, [1], server)
    assert res.downloaded == [1] and (tmp_path / "1.png").read_bytes() == body


def test_rerun_skips_complete_files_and_replaces_broken_ones(tmp_path, server):
    fetch_quick(tmp_path, "1-3", server)
    (tmp_path / "3.png").write_bytes(b"garbage")
    server.requests.clear()
    res = fetch_quick(tmp_path, "1-3", server)
    assert res.present == [1, 2] and res.downloaded == [3]
    assert [n for n, _ in server.requests] == ["3.png"]
    assert (tmp_path / "3.png").read_bytes() == server.files["3.png"]


def test_parse_ids_and_bad_arguments(tmp_path):
    assert parse_ids("1-3,7, 5-6,2") == [1, 2, 3, 5, 6, 7]
    assert parse_ids("649") == [649]
    for bad in ("", "a-b", "5-2", "0-3", "1-"):
        with pytest.raises(DataError):
            parse_ids(bad)
    with pytest.raises(DataError, match="http"):
        fetch_images(tmp_path, [1], base_url="file:///etc", progress=False)
    with pytest.raises(DataError, match="workers"):
        fetch_images(tmp_path, [1], base_url="http://127.0.0.1:9", workers=0, progress=False)


def test_cli_fetch_exit_codes_and_summary(tmp_path, server, capsys):
    p = build_parser()
    common = ["--base-url", server.url, "--workers", "2", "--backoff", "0", "--retries", "1", "--no-progress"]
    args = p.parse_args(["data", "fetch", "pokemon", str(tmp_path / "a"), "--ids", "1-2,5"] + common)
    assert args.func(args) == 1
    out = capsys.readouterr().out
    assert "2 downloaded" in out and "1 failed" in out and "5: HTTP 404" in out
    meta = json.loads((tmp_path / "a" / "fetch.json").read_text())
    assert meta["failed"][0][0] == 5 and meta["base_url"] == server.url
    args = p.parse_args(["data", "fetch", "pokemon", str(tmp_path / "a"), "--ids", "1-2"] + common)
    assert args.func(args) == 0
    assert "2 already present" in capsys.readouterr().out
    args = p.parse_args(["data", "fetch", "pokemon", str(tmp_path / "a"), "--ids", "x"] + common)
    assert args.func(args) == 2
    assert "pokelab data fetch: error:" in capsys.readouterr().err


def test_fetched_folder_prepares(tmp_path, server):
    from engines.data.prepare import prepare

    fetch_quick(tmp_path / "pk", "1-3", server)
    ds = prepare(tmp_path / "pk", size=8, progress=False)
    assert ds.files == ["1.png", "2.png", "3.png"] and ds.skipped == []


def test_default_base_url_is_the_official_artwork():
    assert fetch.POKEMON_BASE_URL.endswith("/sprites/pokemon/other/official-artwork")
    assert fetch.SETS["pokemon"]["ids"] == "1-649"


def test_a_png_whose_image_data_ends_early_is_not_valid(tmp_path):
    """Pillow decodes a PNG whose complete zlib stream holds too few rows as black rows, without an error:
    fetch must not keep such a download."""
    from PIL import Image

    from engines.data.fetch import is_valid_image
    from test_data_hostile import png_bytes, short_png

    raw, a = short_png()
    short = tmp_path / "short.png"
    short.write_bytes(raw)
    good = tmp_path / "good.png"
    good.write_bytes(png_bytes(Image.fromarray(a)))
    assert is_valid_image(good) and not is_valid_image(short)
