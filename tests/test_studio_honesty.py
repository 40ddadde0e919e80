"""Nothing on the studio's pages may mislead a reader:

- FID/KID of different kinds (generation, translation), image sizes or sample counts never share an axis or a
  ranking without saying so (one panel per group; size and eval n columns; Compare's default and caption);
- losses have a per-run normalisation and a log scale, and interrupted/resumed markers do not pile up;
- the runs table shows the latest collapse flag and keeps "best FID" on screen at a 1500 px window;
- the FID verdict never gives a collapsed run a ✓, and translation runs without ``fid_input`` say "baseline
  unknown" and how to get it;
- the studio and the app share the default review database, and docs/studio.md names it.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from studio import data as D
from studio import plots as P

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "studio" / "streamlit_app.py")

G64 = "20250201-000000-dcgan-pokemon"        # generate, 64 px, 500 samples
G64B = "20250202-000000-wgan_gp-pokemon"     # generate, 64 px, 500 samples, collapsed at its best = last eval
G64C = "20250206-000000-aegan-pokemon"       # generate, 64 px, 500 samples
G32 = "20250203-000000-dcgan-pokemon"        # generate, 32 px, 500 samples: the lowest FID of all
TR = "20250204-000000-cyclegan-sprites-to-art"  # translate, 64 px, 649 samples, no fid_input
BIG = "20250205-000000-wgan_gp-pokemon"      # generate, 64 px; losses around 2500; resumed twice at one epoch


def _write(root: Path, run_id: str, *, kind="generate", size=64, eval_n=500, fids=(300.0, 200.0, 150.0),
           collapse=(0, 0, 0), loss_scale=1.0, events=(), extra_eval=None, epochs=30) -> Path:
    d = root / run_id
    (d / "samples").mkdir(parents=True)
    info = {"run_id": run_id, "engine": run_id.split("-")[2], "kind": kind, "status": "finished",
            "config": {"epochs": epochs, "image_size": size, "batch_size": 8, "eval_n": eval_n},
            "dataset": ([{"name": "sprites"}, {"name": "art"}] if kind == "translate" else {"name": "pokemon"}),
            "epoch": epochs, "wall_seconds": 20.0 * epochs}
    (d / "run.json").write_text(json.dumps(info))
    lines = [{"kind": "train", "epoch": e, "step": e, "time": 0, "loss/D": loss_scale * (1.0 + 0.01 * e),
              "loss/G": loss_scale * (2.0 - 0.01 * e), "acc/D_real": 0.6, "acc/D_fake": 0.55,
              "img_per_s": 50.0, "epoch_seconds": 20.0} for e in range(1, epochs + 1)]
    for k, (fid, c) in enumerate(zip(fids, collapse)):
        rec = {"kind": "eval", "epoch": 10 * (k + 1), "step": 10 * (k + 1), "time": 0, "fid": fid, "kid": fid / 1000,
               "kid_std": 0.01, "eval_n": eval_n}
        if kind == "generate":
            rec.update({"ms_ssim/fake": 0.35 if c else 0.2, "ms_ssim/real": 0.2, "collapse": c})
        lines.append(rec)
    if extra_eval:
        lines.append({"kind": "eval", "step": 0, "time": 0, **extra_eval})
    lines += [{"kind": "event", "step": e, "time": 0, "epoch": e, "event": name, "message": name}
              for e, name in events]
    lines.sort(key=lambda r: r["epoch"])
    (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return d


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("honesty") / "runs"
    _write(root, G64, fids=(300.0, 200.0, 150.0))
    _write(root, G64B, fids=(320.0, 250.0, 140.0), collapse=(0, 1, 1))
    _write(root, G64C, fids=(330.0, 260.0, 180.0))
    _write(root, G32, size=32, fids=(200.0, 120.0, 60.0))
    _write(root, TR, kind="translate", eval_n=649, fids=(150.0, 110.0, 100.0))
    _write(root, BIG, fids=(400.0, 350.0, 330.0), loss_scale=2500.0,
           events=[(12, "interrupted"), (12, "resumed"), (12, "interrupted"), (12, "resumed"), (25, "nan_rollback")])
    return root


@pytest.fixture(scope="module")
def runs(lab):
    return {r.label: r for r in D.load_runs([lab])}


def _app(lab, monkeypatch, argv=None):
    monkeypatch.setenv("POKELAB_STUDIO_RUNS", str(lab))
    monkeypatch.setenv("POKELAB_STUDIO_NO_DEFAULTS", "1")
    monkeypatch.setenv("POKELAB_REVIEW_DB", str(lab / "reviews.db"))
    if argv is not None:
        monkeypatch.setattr("sys.argv", ["streamlit_app.py", *argv])
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _goto(at, view):
    at.sidebar.radio(key="view").set_value(view).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _decode(v):
    """Plotly serialises numpy arrays as {"dtype", "bdata"(base64), "shape"}: back to plain lists."""
    if isinstance(v, dict) and "bdata" in v and "dtype" in v:
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        if "shape" in v:
            a = a.reshape([int(x) for x in str(v["shape"]).split(",")])
        return a.tolist()
    if isinstance(v, dict):
        return {k: _decode(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_decode(x) for x in v]
    return v


def _figures(at) -> dict[str, dict]:
    return {el.proto.id.rsplit("-", 1)[-1]: _decode(json.loads(el.proto.spec)) for el in at.get("plotly_chart")}


def _frame(at, column):
    for d in at.dataframe:
        if column in d.value.columns or column in d.value.index:
            return d
    raise AssertionError(f"no dataframe with {column!r}")


def _path(lab, run_id):
    return str(lab / run_id)


# ---- 16: FID/KID groups --------------------------------------------------------------------------------
def test_fid_panels_split_kind_size_and_sample_count(runs):
    panels = D.fid_panels(list(runs.values()))
    got = [(g.kind, g.size, g.n, sorted(r.label for r in rs)) for g, rs in panels]
    assert got == [("generate", 32, 500, [G32]),
                   ("generate", 64, 500, sorted([G64, G64B, G64C, BIG])),
                   ("translate", 64, 649, [TR])]
    assert panels[0][0].label == "generate · 32 px · n = 500"


def test_a_run_evaluated_with_two_sample_counts_is_split(tmp_path):
    # `pokelab eval RUN --log --n 2000` after 500-sample evaluations: the 2000-sample point goes to its own panel
    d = _write(tmp_path, G64, extra_eval={"epoch": 31, "fid": 90.0, "kid": 0.09, "eval_n": 2000})
    r = D.load_run(d)
    panels = D.fid_panels([r])
    assert [(g.n, list(rs[0].evals["x"])) for g, rs in panels] == [(500, [10.0, 20.0, 30.0]), (2000, [31.0])]
    assert D.fid_group(r) == D.FidGroup("generate", 64, 2000)  # the best FID's evaluation


def test_fid_ranking_ranks_within_groups_only(runs):
    ranking = D.fid_ranking(list(runs.values()))
    assert ranking[0][0] == D.FidGroup("generate", 64, 500)  # the largest group first
    assert [r.label for r in ranking[0][1]] == [G64B, G64, G64C, BIG]
    # G32's FID of 60 is the lowest of all, but at 32 px: it is not ranked against the 64 px runs
    assert {g: [r.label for r in rs] for g, rs in ranking[1:]} == {D.FidGroup("generate", 32, 500): [G32],
                                                                   D.FidGroup("translate", 64, 649): [TR]}


def test_trends_draw_one_fid_and_kid_panel_per_group_on_every_x_axis(lab, monkeypatch):
    at = _goto(_app(lab, monkeypatch), "Trends")
    at.multiselect(key="trend_runs_w").set_value([_path(lab, r) for r in (G64, G32, TR)]).run()
    for axis in ("epoch", "hours", "kimg"):
        at.radio(key="trend_x").set_value(axis).run()
        assert not at.exception, [e.value for e in at.exception]
        figs = _figures(at)
        for prefix in ("fig_fid", "fig_kid"):
            names = [sorted({t["name"] for t in figs[k]["data"] if t.get("name") and "±" not in t["name"]})
                     for k in (prefix, f"{prefix}_2", f"{prefix}_3")]
            assert names == [[G32], [G64], [TR]], (axis, prefix)
            assert f"{prefix}_4" not in figs
        titles = [figs[k]["layout"]["title"]["text"] for k in ("fig_fid", "fig_fid_2", "fig_fid_3")]
        assert titles == ["FID (lower is better) — generate · 32 px · n = 500",
                          "FID (lower is better) — generate · 64 px · n = 500",
                          "FID (lower is better) — translate · 64 px · n = 649"]
        assert any("one panel per **kind · image size · samples per evaluation** (3 panels)" in c.value
                   and "not comparable" in c.value for c in at.caption)
    at.radio(key="trend_x").set_value("hours").run()
    fid = _figures(at)["fig_fid_2"]["data"][0]
    assert fid["x"] == pytest.approx([200 / 3600, 400 / 3600, 600 / 3600])  # the x-axis choice still applies


def test_trends_one_group_one_panel(lab, monkeypatch):
    at = _goto(_app(lab, monkeypatch), "Trends")
    at.multiselect(key="trend_runs_w").set_value([_path(lab, G64), _path(lab, G64C)]).run()
    figs = _figures(at)
    assert len(figs["fig_fid"]["data"]) == 2 and "fig_fid_2" not in figs
    assert figs["fig_fid"]["layout"]["title"]["text"].endswith("generate · 64 px · n = 500")
    assert not any("one panel per" in c.value for c in at.caption)


def test_compare_default_and_groups(lab, monkeypatch):
    at = _goto(_app(lab, monkeypatch), "Compare")
    # the three best of the largest group, not the lowest three FIDs of all (G32's 60, TR's 100 are not comparable)
    assert at.multiselect(key="cmp_runs").value == [_path(lab, r) for r in (G64B, G64, G64C)]
    assert any("three best by FID among **generate · 64 px · n = 500** runs" in c.value for c in at.caption)
    table = _frame(at, "best FID at").value
    assert table.loc["size", G64] == "64 px" and table.loc["eval n", G64] == "500"
    assert table.loc["collapse", G64B] == "⚠ yes" and table.loc["collapse", G64] == "no"
    assert not any("groups of kind" in c.value for c in at.caption)
    at.multiselect(key="cmp_runs").set_value([_path(lab, r) for r in (G64, G32, TR)]).run()
    assert not at.exception
    assert any("fall into 3 groups" in c.value and "not comparable" in c.value for c in at.caption)
    figs = _figures(at)
    assert [len(figs[k]["data"]) for k in ("cmp_fid", "cmp_fid_2", "cmp_fid_3")] == [1, 1, 1]


def test_runs_table_size_eval_n_and_group_filter(lab, monkeypatch):
    at = _app(lab, monkeypatch)
    df = _frame(at, "best FID").value.set_index("run")
    assert df.loc[G32, "size"] == 32 and df.loc[G64, "size"] == 64 and df.loc[TR, "eval n"] == 649
    at.selectbox(key="runs_group").set_value("generate · 64 px · n = 500").run()
    assert sorted(_frame(at, "best FID").value["run"]) == sorted([G64, G64B, G64C, BIG])
    assert any("within one **kind, image size (size) and samples per evaluation" in c.value for c in at.caption)


# ---- 17: losses ------------------------------------------------------------------------------------------
def test_per_run_normalisation_keeps_a_2500_loss_from_flattening_the_rest(runs):
    chosen = [runs[G64], runs[BIG]]
    colours = P.colour_map(chosen)
    spread, big = P.loss_spread(chosen, ["loss/D", "loss/G"])
    assert spread == pytest.approx(2500, rel=0.01) and big.label == BIG
    fig = P.loss_figure(chosen, colours, ["loss/D", "loss/G"], yscale="run")
    assert len(fig.data) == 4
    for t in fig.data:
        y = np.asarray(t.y, dtype=float)
        assert 0.9 < np.median(np.abs(y)) < 1.1  # every curve at its own typical size
    big_d = next(t for t in fig.data if t.legendgroup == runs[BIG].key and t.name == "D")
    assert np.asarray(big_d.customdata, dtype=float)[0] == pytest.approx(2500 * 1.01)  # the logged value on hover
    assert "median" in fig.layout.yaxis.title.text and "each run ÷ its median" in fig.layout.title.text
    lin = P.loss_figure(chosen, colours, ["loss/D", "loss/G"])
    assert max(np.asarray(lin.data[0].y, dtype=float)) < 3  # as logged: unchanged


def test_log_scale_and_non_positive_values(runs, tmp_path):
    fig = P.loss_figure([runs[G64], runs[BIG]], P.colour_map([runs[G64]]), ["loss/D"], yscale="log")
    assert fig.layout.yaxis.type == "log"
    d = _write(tmp_path, G64, loss_scale=-1.0)  # WGAN-like negative losses cannot go on a log axis
    r = D.load_run(d)
    fig = P.loss_figure([r], P.colour_map([r]), ["loss/D"], yscale="log")
    assert all(np.isnan(np.asarray(fig.data[0].y, dtype=float)))
    assert any("30 value(s) ≤ 0" in a.text for a in fig.layout.annotations)
    with pytest.raises(ValueError):
        P.loss_figure([r], {}, ["loss/D"], yscale="sqrt")


def test_event_markers_one_per_distinct_epoch(runs, lab, tmp_path):
    r = runs[BIG]
    fig = P.loss_figure([r], P.colour_map([r]))
    lines = [s for s in fig.layout.shapes if s.type == "line" and s.x0 == s.x1]
    assert sorted(s.x0 for s in lines) == [12.0, 25.0]  # five events, two epochs: two lines
    texts = sorted(a.text for a in fig.layout.annotations if a.textangle == -90)
    assert texts == ["NaN rollback", "interrupted ×2 + resumed ×2"]
    # two runs resumed at the same epoch share one grey line
    d = _write(tmp_path, G64, events=[(12, "interrupted"), (12, "resumed")])
    other = D.load_run(d)
    both = [r, other]
    fig = P.loss_figure(both, P.colour_map(both))
    at12 = [s for s in fig.layout.shapes if s.x0 == 12.0]
    assert len(at12) == 1 and at12[0].line.color == "#888"
    marks = P.event_marks(both, {"epoch": "x"})
    assert [(m.x, m.count, len(m.runs)) for m in marks] == [(12.0, 6, 2), (25.0, 1, 1)]


def test_trends_loss_scale_choice(lab, monkeypatch):
    at = _goto(_app(lab, monkeypatch), "Trends")
    at.multiselect(key="trend_runs_w").set_value([_path(lab, G64), _path(lab, BIG)]).run()
    at.slider(key="smoothing").set_value(0.0).run()
    assert at.radio(key="loss_scale").value == "linear"
    assert any("differ in size by about 2,500×" in c.value and BIG in c.value for c in at.caption)
    at.radio(key="loss_scale").set_value("run").run()
    assert not at.exception
    ys = [np.asarray(t["y"], dtype=float) for t in _figures(at)["fig_loss"]["data"]]
    assert all(0.9 < np.median(np.abs(y)) < 1.1 for y in ys)
    assert not any("differ in size" in c.value for c in at.caption)
    at.radio(key="loss_scale").set_value("log").run()
    assert _figures(at)["fig_loss"]["layout"]["yaxis"]["type"] == "log"
    _goto(at, "Compare")
    at.multiselect(key="cmp_runs").set_value([_path(lab, G64), _path(lab, BIG)]).run()
    at.radio(key="cmp_loss_scale").set_value("run").run()
    assert not at.exception and "each run ÷ its median" in _figures(at)["cmp_loss"]["layout"]["title"]["text"]


# ---- 18: runs table ----------------------------------------------------------------------------------------
def test_runs_table_collapse_column(lab, monkeypatch, runs):
    assert D.summarize(runs[G64B])["collapse"] is True and D.summarize(runs[G64])["collapse"] is False
    assert D.summarize(runs[TR])["collapse"] is None  # translation runs: not measured
    df = _frame(_app(lab, monkeypatch), "best FID").value.set_index("run")
    assert df.loc[G64B, "collapse"] == "⚠ yes" and df.loc[G64, "collapse"] == "no" and df.loc[TR, "collapse"] == ""


def test_last_collapse_is_the_latest_evaluation_that_measured_it(tmp_path):
    d = _write(tmp_path, G64, collapse=(1, 1, 0), extra_eval={"epoch": 31, "fid": 140.0})  # no MS-SSIM at 31
    assert D.last_collapse(D.load_run(d)) == (False, 30.0)


def test_best_fid_column_is_on_screen_at_1500_px(lab, monkeypatch):
    at = _app(lab, monkeypatch)
    el = _frame(at, "best FID")
    config = json.loads(el.proto.columns)
    order = list(el.value.columns)
    upto = order[: order.index("best FID") + 1]
    # every column up to "best FID" has a fixed width, and together they fit the table's width at a 1500 px window
    widths = [config[c]["width"] for c in upto]
    assert all(isinstance(w, int) for w in widths), dict(zip(upto, widths))
    assert sum(widths) <= 1000
    assert order.index("best FID") <= 3 and config["run"].get("pinned") is True
    # the whole judging block (best FID, where, size, eval n, collapse) fits too
    judged = order[: order.index("collapse") + 1]
    assert sum(config[c]["width"] for c in judged) <= 1000


# ---- 19: verdicts -----------------------------------------------------------------------------------------
def test_fid_verdict_never_ticks_a_collapsed_run(runs, lab, monkeypatch):
    v = {x["topic"]: x for x in D.verdict(runs[G64B])}
    # the best FID is the latest evaluation (the text that used to be a ✓), but collapse is flagged there
    assert v["FID"]["text"].startswith("best FID 140.00 at epoch 30, the latest evaluation")
    assert v["FID"]["level"] == "warn" and "mode collapse is flagged" in v["FID"]["text"]
    assert {x["topic"]: x for x in D.verdict(runs[G64])}["FID"]["level"] == "ok"
    at = _goto(_app(lab, monkeypatch), "Compare")
    at.multiselect(key="cmp_runs").set_value([_path(lab, G64B)]).run()
    md = [m.value for m in at.markdown]
    assert not any(m.startswith(":green[✓] **FID**") for m in md)
    assert any(m.startswith(":orange[⚠] **FID**") for m in md)


def test_collapse_at_the_end_only_still_warns(tmp_path):
    # best FID at epoch 10, flagged only at the last evaluation (30), FID within 10 % of the best
    r = D.load_run(_write(tmp_path, G64, fids=(100.0, 105.0, 104.0), collapse=(0, 0, 1)))
    (v,) = [x for x in D.verdict(r) if x["topic"] == "FID"]
    assert v["level"] == "warn" and "latest evaluation that measured it (epoch 30)" in v["text"]


def test_translation_without_fid_input_says_baseline_unknown(runs):
    r = runs[TR]
    v = {x["topic"]: x for x in D.verdict(r)}
    base = v["vs. doing nothing"]
    assert base["level"] == "info" and base["text"].startswith("baseline unknown")
    assert f"pokelab eval {r.path} --log" in base["text"]
    assert v["FID"]["level"] == "info"  # no ✓ for a translation FID that cannot be judged


def test_translation_baseline_from_one_evaluation(tmp_path):
    # fid_input logged at epoch 20 only; the latest FID (epoch 30) has none: both numbers from epoch 20
    d = _write(tmp_path, TR, kind="translate", eval_n=649, fids=(150.0, 110.0, 100.0))
    lines = (d / "metrics.jsonl").read_text().splitlines()
    lines = [json.dumps({**json.loads(x), "fid_input": 90.0}) if '"epoch": 20' in x and '"eval"' in x else x
             for x in lines]
    (d / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    v = {x["topic"]: x for x in D.verdict(D.load_run(d))}
    assert "FID of the outputs 110.0 at epoch 20, of the untranslated inputs 90.0" in v["vs. doing nothing"]["text"]
    assert v["vs. doing nothing"]["level"] == "warn" and v["FID"]["level"] == "warn"


# ---- 20: the review database ------------------------------------------------------------------------------
def test_studio_and_app_share_the_default_review_db(lab, monkeypatch, tmp_path):
    from app.appconfig import DEFAULT_REVIEW_DB

    monkeypatch.delenv("POKELAB_REVIEW_DB", raising=False)
    monkeypatch.setenv("POKELAB_STUDIO_RUNS", str(lab))
    monkeypatch.setenv("POKELAB_STUDIO_NO_DEFAULTS", "1")
    monkeypatch.chdir(tmp_path)  # started from somewhere else than the repository
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert at.sidebar.text_input(key="review_db").value == str(DEFAULT_REVIEW_DB.resolve())
    _goto(at, "Review")
    assert not any("outside the folders" in e.value for e in at.error)  # the default file may be read


def test_docs_name_the_real_default_review_db():
    text = (REPO / "docs" / "studio.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `--review-db PATH`"))
    assert "runs/review.sqlite" in row and "POKELAB_REVIEW_DB" in row and "reviews.db" not in row
