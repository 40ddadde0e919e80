"""Export quality in the app: each export's last evaluation (FID, KID, n, MS-SSIM, collapse flag) read from
its run's metrics.jsonl, shown in the pickers and the About tab; collapsed exports left out of the default
lists and never paired in the blind review. Unit tests on constructed run folders, then the app through
gradio_client."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from app.exports import ExportCatalog, Quality, find_run_dir, read_quality
from app.inputs import AppInputError
from app.review_book import ReviewBook, ReviewSource, TranslationGroup, TranslationSource
from engines import review as review_db
from test_app_support import RunningApp, make_export, write_image_folder


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def ev(epoch, fid, kid, collapse, n=500, fake=0.2, real=0.09, **extra):
    rec = {"kind": "eval", "epoch": epoch, "step": epoch * 10, "time": 1.0, "fid": fid, "kid": kid,
           "kid_std": 0.001, "ms_ssim/fake": fake, "ms_ssim/real": real, "eval_n": n, "eval_seconds": 3.0}
    if collapse is not None:
        rec["collapse"] = collapse
    rec.update(extra)
    return json.dumps(rec)


def train(epoch):
    return json.dumps({"kind": "train", "epoch": epoch, "step": epoch * 10, "time": 1.0, "loss/D": 1.0})


def make_run(parent: Path, name: str, engine: str, seed: int, data: Path | None, lines: list[str] | None,
             tail: str = "\n") -> Path:
    """A run folder as the trainer leaves it: run.json, metrics.jsonl (``lines``; None: no log at all) and
    export/ whose trained.run_id names the run."""
    run = parent / name
    make_export(run / "export", engine, 32, 8, seed, data)
    cfg_path = run / "export" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["trained"]["run_id"] = name
    cfg_path.write_text(json.dumps(cfg))
    (run / "run.json").write_text(json.dumps({"format_version": 1, "run_id": name, "engine": engine,
                                              "kind": "generate", "status": "finished"}))
    if lines is not None:
        (run / "metrics.jsonl").write_text("\n".join(lines) + tail)
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """checkpoints/runs/ with a healthy evaluated DCGAN, a collapsed WGAN-GP and a never-evaluated DCGAN."""
    root = tmp_path_factory.mktemp("app-quality")
    data = write_image_folder(root / "data" / "tinyset", n=8, size=32)
    ck = root / "checkpoints"
    make_run(ck / "runs", "20250101-000000-dcgan-tinyset", "dcgan", 0, data,
             [train(1), ev(1, 400.0, 0.5, 0.0), train(2), "{this line is not json", ev(2, 243.93, 0.2309, 0.0),
              train(3)])
    make_run(ck / "runs", "20250102-000000-wgan_gp-tinyset", "wgan_gp", 1, data,
             [train(1), ev(1, 300.0, 0.3, 0.0), train(2), ev(2, 511.86, 0.801, 1.0, fake=0.99)])
    make_run(ck / "runs", "20250103-000000-dcgan-tinyset", "dcgan", 2, data, None)   # no metrics.jsonl
    return root, ck, data


GOOD, BAD, NEW = "20250101-000000-dcgan-tinyset", "20250102-000000-wgan_gp-tinyset", "20250103-000000-dcgan-tinyset"


# ---- reading the facts ------------------------------------------------------------------------------------
def test_last_evaluation_read_from_the_run_skipping_a_malformed_line(runs):
    _, ck, _ = runs
    cat = ExportCatalog([ck])
    q = cat.entries[GOOD].quality
    assert q.evaluated and q.evaluations == 2 and q.epoch == 2 and q.step == 20
    assert q.fid == pytest.approx(243.93) and q.kid == pytest.approx(0.2309) and q.eval_n == 500
    assert q.ms_ssim_fake == pytest.approx(0.2) and q.collapse is False and q.collapse_from == "logged"
    assert any("malformed" in w for w in q.warnings)             # skipped with a warning, not an error
    bad = cat.entries[BAD].quality
    assert bad.collapsed and bad.fid == pytest.approx(511.86)   # the LAST evaluation, not the first (healthy) one
    assert cat.entries[BAD].collapsed and not cat.entries[GOOD].collapsed
    new = cat.entries[NEW].quality
    assert not new.evaluated and not new.collapsed and "no metrics.jsonl" in new.problem
    f = cat.entries[BAD].facts()
    assert f["collapsed"] is True and f["evaluation"]["fid"] == pytest.approx(511.86)
    assert f["evaluation"]["eval_n"] == 500 and f["evaluation"]["epoch"] == 2


@pytest.mark.parametrize("content, evaluated, problem", [
    (train(1) + "\n" + train(2) + "\n", False, "no evaluation logged"),
    (b"\x00\xff\xfe garbage\n{]\n[1, 2]\n", False, "no evaluation logged"),
    ("", False, "no evaluation logged"),
    (ev(5, 100.0, 0.1, 1.0) + "\n" + '{"kind": "eval", "epoch": 6, "fi', True, ""),   # torn last line
])
def test_unusable_logs_give_not_evaluated_never_an_error(tmp_path, content, evaluated, problem):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    (run / "metrics.jsonl").write_bytes(content.encode() if isinstance(content, str) else content)
    q = read_quality(run)
    assert q.evaluated is evaluated and problem in q.problem
    if evaluated:                                   # the torn line is skipped: epoch 5's evaluation counts
        assert q.epoch == 5 and q.collapsed and any("partial" in w for w in q.warnings)
    else:
        assert q.scores() == "not evaluated" and not q.collapsed


def test_odd_values_and_a_derived_flag(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    (run / "metrics.jsonl").write_text(ev(3, None, "x", None, n="many", fake=0.9, real=0.1) + "\n")
    q = read_quality(run)
    assert q.evaluated and q.fid is None and q.kid is None and q.eval_n is None
    assert q.collapsed and q.collapse_from == "derived"           # no flag logged: MS-SSIM 0.9 > 0.1 + margin
    assert q.scores() == "no FID/KID logged"
    assert read_quality(None, "why").problem == "why" and not Quality().evaluated


def test_run_found_by_run_id_and_never_another_runs_metrics(runs, tmp_path):
    _, ck, data = runs
    # a copy of an export shipped beside the runs folder: its trained.run_id names the run
    copy = tmp_path / "ck"
    make_export(copy / "shipped", "wgan_gp", 32, 8, 1, data)
    cfg = json.loads((copy / "shipped" / "config.json").read_text())
    cfg["trained"]["run_id"] = BAD
    (copy / "shipped" / "config.json").write_text(json.dumps(cfg))
    run, _ = find_run_dir(copy / "shipped", BAD, [ck])
    assert run == ck / "runs" / BAD
    cat = ExportCatalog([copy, ck])
    assert cat.entries["shipped"].collapsed                      # facts of its run, found through the roots
    # an export sitting in a run folder it was not trained in: that run's metrics are not its facts
    other = make_run(tmp_path / "runs", "20250104-000000-dcgan-x", "dcgan", 3, data, [ev(1, 9.0, 0.01, 1.0)])
    cfg = json.loads((other / "export" / "config.json").read_text())
    cfg["trained"]["run_id"] = "20240101-000000-dcgan-elsewhere"
    (other / "export" / "config.json").write_text(json.dumps(cfg))
    q = ExportCatalog([tmp_path / "runs"]).entries[other.name].quality
    assert not q.evaluated and "names run 20240101-000000-dcgan-elsewhere" in q.problem
    # a recorded run id that is a path is never followed
    assert find_run_dir(copy / "shipped", "../runs/" + BAD, [ck]) == (None, "no run folder with metrics found")


# ---- lists and labels ---------------------------------------------------------------------------------------
def test_pickers_open_on_the_lowest_kid(tmp_path):
    data = write_image_folder(tmp_path / "data" / "tinyset", n=8, size=32)
    for name, kid in (("20250101-000000-dcgan-a", 0.23), ("20250102-000000-dcgan-b", None),
                      ("20250103-000000-projected_gan-c", 0.05), ("20250104-000000-dcgan-d", 0.4)):
        make_run(tmp_path / "runs", name, "dcgan", 0, data, None if kid is None else [ev(1, 100.0, kid, 0.0)])
    cat = ExportCatalog([tmp_path])
    assert [e.key[-1] for e in cat.listed("generate")] == ["c", "a", "d", "b"]   # not evaluated: after, kept


def test_default_list_leaves_collapsed_out_and_labels_show_the_scores(runs):
    _, ck, _ = runs
    cat = ExportCatalog([ck])
    assert [e.key for e in cat.listed("generate")] == [GOOD, NEW]            # not evaluated: still offered
    assert [e.key for e in cat.listed("generate", collapsed=True)] == [GOOD, NEW, BAD]   # on request, last
    assert [e.key for e in cat.collapsed()] == [BAD] and len(cat.generators()) == 3
    good, bad, new = (cat.entries[k].label() for k in (GOOD, BAD, NEW))
    assert good.startswith("dcgan · FID 243.9 · KID 0.231 · n=500 · no collapse · ")
    assert bad.startswith("wgan_gp · FID 511.9 · KID 0.801 · n=500 · ⚠ collapsed · ")
    assert new.startswith("dcgan · not evaluated · ")


def test_app_pickers_about_and_review_pool(runs, tmp_path):
    from app.main import create_app

    root, ck, _ = runs
    app = create_app(["--checkpoints", str(ck), "--no-shipped", "--review-db", str(tmp_path / "r.sqlite"),
                      "--sd-model", str(tmp_path / "no-sd")])
    assert [k for _, k in app.picker_choices("generate")] == [GOOD, NEW]
    ticked = app.picker_update("generate", True, GOOD)
    assert [k for _, k in ticked["choices"]] == [GOOD, NEW, BAD] and ticked["value"] == GOOD
    unticked = app.picker_update("generate", False, BAD)                       # the collapsed pick is dropped
    assert [k for _, k in unticked["choices"]] == [GOOD, NEW] and unticked["value"] == GOOD
    about = app.about_markdown()
    assert "| Last evaluation | Collapse |" in about and "FID 243.9 · KID 0.231 · n=500" in about
    assert "**⚠ collapsed (MS-SSIM of samples 0.99" in about and "not evaluated" in about
    assert "never in the blind review" in about
    assert "mode collapse flagged" in app.export_summary(BAD) and "FID 243.9" in app.export_summary(GOOD)
    # the review offers the two healthy exports and the real images, never the collapsed one
    ids = {s.id: s for s in app.review_sources()}
    pool = {s.id for s in app.book.sources()}
    bad_id = app.catalog.entries[BAD].source_id
    assert bad_id in ids and ids[bad_id].collapsed and bad_id not in pool
    assert pool == {app.catalog.entries[GOOD].source_id, app.catalog.entries[NEW].source_id, "real:tinyset"}
    s = app.book.start("Ann", rng=random.Random(0))
    for _ in range(12):
        assert bad_id not in (s.current.left.id, s.current.right.id)
        app.book.next_pair(s)
    assert app.book.left_out() == [app.catalog.entries[BAD].label()]


def test_review_never_pairs_a_collapsed_source(tmp_path):
    def src(name, colour, collapsed=False):
        return ReviewSource(name, "engine", name, 8, lambda rng: (np.full((8, 8, 3), colour, np.uint8), "seed:1"),
                            collapsed=collapsed)

    book = ReviewBook(tmp_path / "r.sqlite", lambda: [src("real:art", 10), src("good", 100),
                                                      src("bad", 200, collapsed=True)], display=16)
    s = book.start("Ann", rng=random.Random(3))
    for _ in range(10):
        assert {s.current.left.id, s.current.right.id} == {"real:art", "good"}
        book.submit(s, {"pokemon": "left", "novel": "tie"})
    assert "bad" not in {r["left_source"] for r in review_db.load(tmp_path / "r.sqlite")} | \
        {r["right_source"] for r in review_db.load(tmp_path / "r.sqlite")}
    # real art and one collapsed export: nothing to compare, and the message says why
    lonely = ReviewBook(tmp_path / "r.sqlite", lambda: [src("real:art", 10), src("bad", 200, collapsed=True)])
    with pytest.raises(AppInputError, match="at least two sources.*flagged mode collapse: bad"):
        lonely.start("Ann")
    # translation rounds: a collapsed translator is dropped, and a group left with one source makes no round
    tsrc = lambda name, c=False: TranslationSource(name, "translate", name, 8,  # noqa: E731
                                                   lambda pic, f: (pic, f"input:{f}"), collapsed=c)
    pics = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    groups = [TranslationGroup("in", pics, ["1.png", "2.png"], [tsrc("t1"), tsrc("t2"), tsrc("t3", True)]),
              TranslationGroup("in2", pics, ["1.png", "2.png"], [tsrc("u1"), tsrc("u2", True)])]
    tbook = ReviewBook(tmp_path / "r.sqlite", lambda: [], translations=lambda: groups)
    kept = tbook.translation_groups()
    assert [g.inputs for g in kept] == ["in"] and [x.id for x in kept[0].sources] == ["t1", "t2"]
    assert tbook.left_out() == ["t3", "u2"]


# ---- the app through gradio_client --------------------------------------------------------------------------
def test_app_serves_the_healthy_exports_first_and_reviews_without_the_collapsed(runs, tmp_path):
    _, ck, _ = runs
    db = tmp_path / "review.sqlite"
    a = RunningApp(["--checkpoints", str(ck), "--no-shipped", "--review-db", str(db),
                    "--sd-model", str(tmp_path / "no-sd")])
    try:
        comps = {c.get("props", {}).get("elem_id"): c["props"] for c in a.client.config["components"]}
        picker = comps["gen-export"]
        assert [c[1] for c in picker["choices"]] == [GOOD, NEW] and picker["value"] == GOOD
        assert all("FID" in c[0] and "KID" in c[0] for c in picker["choices"][:1])
        assert "not evaluated" in picker["choices"][1][0]
        assert comps["gen-show-collapsed"]["visible"] is True and comps["gen-show-collapsed"]["value"] is False
        info = {e["key"]: e for e in a.client.predict(api_name="/exports")}
        assert info[BAD]["collapsed"] is True and info[BAD]["evaluation"]["fid"] == pytest.approx(511.86)
        assert info[GOOD]["evaluation"]["kid"] == pytest.approx(0.2309) and info[GOOD]["evaluation"]["eval_n"] == 500
        assert info[NEW]["evaluation"]["evaluated"] is False
        # a script that names the collapsed export still gets it; an unknown key is still refused
        gallery, *_ = a.client.predict(BAD, 0, 2, 0.7, False, api_name="/generate")
        assert len(gallery) == 2
        from gradio_client.exceptions import AppError

        with pytest.raises(AppError, match="not in the list of choices"):
            a.client.predict("nope", 0, 2, 0.7, False, api_name="/generate")
        # review rounds: the collapsed export is never a side
        client = a.new_client()
        client.predict("Rita", api_name="/review_start")
        for _ in range(5):
            client.predict("Left", "Tie", api_name="/review_answer")
        rows = review_db.load(db)
        assert len(rows) == 10
        sid = {k: e.source_id for k, e in a.app.catalog.entries.items()}
        assert all(sid[BAD] not in (r["left_source"], r["right_source"]) for r in rows)
        assert {r["left_source"] for r in rows} | {r["right_source"] for r in rows} <= {sid[GOOD], sid[NEW],
                                                                                        "real:tinyset"}
    finally:
        a.close()


def test_every_export_collapsed_starts_with_an_empty_picker_that_says_why(runs, tmp_path):
    from app.main import create_app

    _, ck, _ = runs
    app = create_app(["--checkpoints", str(ck / "runs" / BAD), "--no-shipped", "--review-db",
                      str(tmp_path / "r.sqlite"), "--sd-model", str(tmp_path / "no-sd")])
    assert app.picker_choices("generate") == []
    picker = next(b for b in app.demo.blocks.values() if getattr(b, "elem_id", None) == "gen-export")
    assert picker.value is None
    assert "Every generation export here (1) is flagged collapsed" in app.export_summary(None)
    assert [k for _, k in app.picker_update("generate", True, None)["choices"]] == [BAD]
    with pytest.raises(AppInputError, match="at least two sources.*flagged mode collapse"):
        app.book.start("Ann")       # the collapsed export and its real images are not a pair
