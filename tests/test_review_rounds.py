"""The app's blind review and HTTP routes under hostile conditions: answers stored once per round (also when
the next pair cannot be drawn), exports that fail to load leave the pool with a note, no absolute server paths
in /review_stats and /exports, and the app's temp folder removed on exit (SIGTERM included)."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from app.inputs import AppInputError
from app.review_book import ReviewBook, ReviewSource
from engines import review as review_db
from test_app_support import make_export, write_image_folder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _source(name: str, colour: int, fail_after: int | None = None, size: int = 16):
    calls = {"n": 0}

    def draw(rng):
        calls["n"] += 1
        if fail_after is not None and calls["n"] > fail_after:
            raise AppInputError(f"Could not load {name}: weights do not match")
        return np.full((size, size, 3), colour, np.uint8), f"seed:{rng.randrange(10**6)}"

    return ReviewSource(name, "engine", f"label of {name}", size, draw)


def _rows(db):
    return review_db.load(db)


def test_an_unloadable_export_leaves_the_pool_and_nothing_is_counted_twice(tmp_path):
    """The reported case: one export that cannot be loaded in the pool, a rater clicking Submit 80 times."""
    db = tmp_path / "r.sqlite"
    srcs = [_source("a", 10), _source("b", 120), _source("broken", 200, fail_after=0)]
    book = ReviewBook(db, lambda: srcs, display=32)
    s = book.start("Ann", rng=random.Random(3))
    stored = refused = 0
    for _ in range(80):
        try:
            book.submit(s, {"pokemon": "left", "novel": "tie"})
            stored += 1
        except AppInputError:
            refused += 1
    rows = _rows(db)
    assert stored == 80 and refused == 0 and len(rows) == 160
    per_round = Counter((r["left_item"], r["right_item"], r["question"]) for r in rows)
    assert max(per_round.values()) == 1                   # no answer stored twice
    assert not any("broken" in (r["left_source"], r["right_source"]) for r in rows)
    assert list(book.broken) == ["broken"] and "label of broken left the review" in book.notes()[0]
    assert "weights do not match" in book.notes()[0]


def test_a_second_submit_of_the_same_round_is_refused_when_no_next_pair_can_be_drawn(tmp_path):
    db = tmp_path / "r.sqlite"
    srcs = [_source("a", 10), _source("b", 120, fail_after=1)]   # b breaks after the first round
    book = ReviewBook(db, lambda: srcs, display=32)
    s = book.start("Ann", rng=random.Random(0))
    with pytest.raises(AppInputError, match=r"answers to pair 1 were saved\. .*at least two sources.*label of b"):
        book.submit(s, {"pokemon": "left", "novel": "tie"})
    assert len(_rows(db)) == 2
    for _ in range(3):  # the old pair stays on screen; clicking again stores nothing
        with pytest.raises(AppInputError, match=r"pair 1 were already saved; nothing was stored again"):
            book.submit(s, {"pokemon": "right", "novel": "right"})
    assert len(_rows(db)) == 2 and s.answers == 2


def test_answers_for_a_round_no_longer_on_screen_are_refused(tmp_path):
    db = tmp_path / "r.sqlite"
    book = ReviewBook(db, lambda: [_source("a", 10), _source("b", 120)], display=32)
    s = book.start("Ann", rng=random.Random(0))
    assert s.current.round == 1
    book.submit(s, {"pokemon": "left", "novel": "tie"}, round_id="1")
    assert s.current.round == 2
    # the page's response was lost: it sends round 1's answers again while the server shows round 2
    with pytest.raises(AppInputError, match="pair 1 were already saved"):
        book.submit(s, {"pokemon": "left", "novel": "tie"}, round_id="1")
    assert len(_rows(db)) == 2
    book.submit(s, {"pokemon": "left", "novel": "tie"}, round_id=2)
    assert len(_rows(db)) == 4


def test_concurrent_submits_of_one_round_store_it_once(tmp_path):
    import threading

    db = tmp_path / "r.sqlite"
    book = ReviewBook(db, lambda: [_source("a", 10), _source("b", 120)], display=32)
    s = book.start("Ann", rng=random.Random(0))
    pair = s.current
    errors = []
    barrier = threading.Barrier(4)

    def click():
        barrier.wait()
        try:
            book.submit(s, {"pokemon": "left", "novel": "left"}, round_id=pair.round)
        except AppInputError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=click) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(_rows(db)) == 2 and len(errors) == 3


# ---- the app: the Review tab's note, routes without absolute paths ------------------------------------------
@pytest.fixture(scope="module")
def app_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("review-rounds")
    data = write_image_folder(root / "data" / "tinyset", n=8, size=32)
    ck = root / "ck"
    make_export(ck / "dc", "dcgan", 32, 8, 0, data)
    make_export(ck / "wg", "wgan_gp", 32, 8, 1, data)
    make_export(ck / "bad", "dcgan", 32, 8, 2, data)
    # weights that do not fit the config: listed at start-up (only config.json is read), fail on first use
    cfg = json.loads((ck / "bad" / "config.json").read_text())
    cfg["engine_config"]["g_width"] = 16
    (ck / "bad" / "config.json").write_text(json.dumps(cfg))
    return root, ck, data


def test_the_review_tab_names_an_export_that_failed_to_load(app_dirs, tmp_path):
    from app.main import create_app

    root, ck, _ = app_dirs
    app = create_app(["--checkpoints", str(ck), "--no-shipped", "--review-db", str(tmp_path / "r.sqlite"),
                      "--sd-model", str(tmp_path / "none")])
    try:
        view = app.review_start("Ann", None)
        s = view[0]
        for _ in range(12):
            view = app.review_answer("Left", "Tie", s, None, str(s.current.round))
        rows = _rows(tmp_path / "r.sqlite")
        assert len(rows) == 24
        assert not any("/bad" in r["left_source"] or "/bad" in r["right_source"] for r in rows)
        note = app.review_layout(s)[3]
        assert "Left out of the review" in note and "bad" in note and "do not match" in note
        # the round the page holds is sent back; a stale one is refused
        assert app.review_layout(s)[4] == str(s.current.round)
        with pytest.raises(AppInputError, match="already saved"):
            app.review_answer("Left", "Tie", s, None, str(s.current.round - 1))
    finally:
        app.close()


def test_routes_do_not_return_absolute_server_paths(app_dirs, tmp_path):
    from app.main import create_app

    root, ck, _ = app_dirs
    db = tmp_path / "deep" / "r.sqlite"
    app = create_app(["--checkpoints", str(ck), "--no-shipped", "--review-db", str(db),
                      "--sd-model", str(tmp_path / "none")])
    try:
        s = app.review_start("Ann", None)[0]
        app.review_answer("Left", "Tie", s)
        # an answer stored by an older version under an absolute path
        review_db.record(db, rater="Old", session="x", question="pokemon", left_source=f"dcgan:{ck / 'dc'}",
                         right_source="real:tinyset", left_item="seed:1", right_item="real:1.png", answer="left")
        stats = app.review_stats()
        exports = app.exports_info()
        text = json.dumps([stats, exports])
        for absolute in (str(tmp_path), str(root), str(ck), str(ROOT)):
            assert absolute not in text
        assert stats["answers"] == 3 and stats["db"].endswith("r.sqlite")
        assert all(not Path(x.partition(":")[2]).is_absolute() for x in stats["sources"])
        folders = {e["key"]: e["folder"] for e in exports}
        assert folders["dc"] == "ck/dc" and folders["wg"] == "ck/wg"
        assert all(not Path(e["evaluation"]["run_dir"] or "x").is_absolute() for e in exports)
        assert "`" + str(db) + "`" not in app.about_markdown()
    finally:
        app.close()


def test_the_apps_temp_folder_is_removed_on_sigterm(tmp_path):
    """``python -m app`` (its main()) removes its folder of handed-out files when it is stopped with SIGTERM; a
    folder left by a process killed with -9 is removed by the next start."""
    import tempfile

    parent = Path(tempfile.gettempdir()) / "pokelab-app"
    parent.mkdir(exist_ok=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = parent / str(dead.pid)          # a PID that is gone now
    (stale / "abc").mkdir(parents=True, exist_ok=True)
    (stale / "abc" / "left.png").write_bytes(b"x")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))  # untouched for two hours
    code = (
        "import sys, time\n"
        "import app.ui as U\n"
        "def launch(self, **kw):\n"
        "    (self.out.new() / 'x.png').write_bytes(b'png')\n"
        "    print('READY', self.out.root, flush=True)\n"
        "    while True: time.sleep(0.1)\n"
        "U.PokelabApp.launch = launch\n"
        "from app.main import main\n"
        "main(sys.argv[1:])\n")
    p = subprocess.Popen([sys.executable, "-c", code, "--no-shipped", "--checkpoints", str(tmp_path / "none"),
                          "--review-db", str(tmp_path / "r.sqlite"), "--sd-model", str(tmp_path / "no-sd")],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        line = ""
        while time.time() < deadline and not line.startswith("READY"):
            line = p.stdout.readline()
            if not line and p.poll() is not None:
                break
        assert line.startswith("READY"), p.stderr.read()
        out = Path(line.split(" ", 1)[1].strip())
        assert out.is_dir() and any(out.rglob("x.png"))
        assert not stale.exists()               # removed at start: its process is gone
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=60) == 128 + signal.SIGTERM
        assert not out.exists()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
