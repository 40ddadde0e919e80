"""The Streamlit page, driven with streamlit.testing.v1.AppTest on fixture runs generated in a temp dir:
a finished run, a running one with a half-written last line, a failed one, a stylegan2-ada folder and a
broken run (malformed run.json), plus a review database."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from engines import review as RV  # noqa: E402
from studio.demo import make_grid, write_stylegan_run  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "studio" / "streamlit_app.py")
FIN = "20250101-000000-dcgan-pokemon"
RUN = "20250102-000000-wgan_gp-pokemon"
FAIL = "20250103-000000-dcgan-pokemon"
BROKEN = "20250104-000000-dcgan-pokemon"
SG = "00000-pokemon-auto1"


def _tiles(seed, n=9, tile=16, same=False):
    rng = np.random.default_rng(seed)
    first = rng.integers(0, 256, (tile, tile, 3), dtype=np.uint8)
    return [first if same else rng.integers(0, 256, (tile, tile, 3), dtype=np.uint8) for _ in range(n)]


def _run(root: Path, run_id: str, status: str, epochs: int, planned: int, evals=(), tail="", grids=(), acc=0.55,
         extra=None, epoch_seconds=None):
    d = root / run_id
    (d / "samples").mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({
        "run_id": run_id, "engine": run_id.split("-")[2], "status": status,
        "config": {"epochs": planned, "image_size": 16, "batch_size": 8}, "dataset": {"name": "pokemon", "count": 40},
        "device": "cpu", "epoch": epochs, "wall_seconds": 600.0, **(extra or {})}))
    lines = [{"kind": "train", "epoch": e, "step": e, "time": 0, "loss/D": 1.0, "loss/G": 2.0, "loss/cycle_A": 0.3,
              "acc/D_real": acc, "acc/D_fake": acc, "img_per_s": 50.0, "surprise": [1],
              **({} if epoch_seconds is None else {"epoch_seconds": epoch_seconds})} for e in range(1, epochs + 1)]
    lines += [{"kind": "eval", "step": 0, "time": 0, **e} for e in evals]
    (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + tail)
    for e, tiles in grids:
        Image.fromarray(make_grid(tiles)).save(d / "samples" / f"epoch_{e:06d}.png")
    return d


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    base = tmp_path_factory.mktemp("studio_app")
    root = base / "runs"
    evals = [{"epoch": 10, "fid": 120.0, "kid": 0.12, "kid_std": 0.01, "ms_ssim/fake": 0.2, "ms_ssim/real": 0.2,
              "collapse": 0},
             {"epoch": 20, "fid": 80.0, "kid": 0.08, "kid_std": 0.01, "ms_ssim/fake": 0.35, "ms_ssim/real": 0.2,
              "collapse": 1},
             {"epoch": 30, "fid": 95.0, "kid": 0.09, "kid_std": 0.02, "ms_ssim/fake": 0.22, "ms_ssim/real": 0.2,
              "collapse": 0}]
    fin = _run(root, FIN, "finished", 30, 30,
               evals + [{"epoch": 10, "fid": 61.5, "kid": 0.041, "eval_n": 2000, "export": "best"}],
               grids=[(10, _tiles(1)), (20, _tiles(2)), (30, _tiles(3, same=True))], acc=0.9, epoch_seconds=20.0,
               extra={"best": {"metric": "kid", "value": 0.12, "epoch": 10, "hours": 0.05, "eval_n": 500}})
    (fin / "best").mkdir()  # 30 x 20 s = run.json's wall_seconds; best/: the epoch-10 evaluation (not flagged)
    _run(root, RUN, "running", 12, 100, [{"epoch": 10, "fid": 150.0, "kid": 0.2}],
         tail='{"kind": "train", "epoch": 13, "loss/D"', grids=[(10, _tiles(4))])
    _run(root, FAIL, "failed", 3, 100)
    b = root / BROKEN
    b.mkdir()
    (b / "run.json").write_text('{"run_id": "x", "engine": "dcgan", "status": "runn')
    (b / "metrics.jsonl").write_text('{"kind": "train", "epoch": 1, "loss/D": 1.0}\n{oops\n')
    write_stylegan_run(base / "sg", SG, total_kimg=40, done_kimg=40, art=_tiles(5, n=12, tile=16), tile=16,
                       snapshot_kimg=20)
    db = base / "reviews.db"
    for a, bb, aw, bw in (("A", "B", 4, 2), ("A", "C", 4, 1), ("B", "C", 2, 1)):
        for k in range(aw + bw):
            RV.record(db, rater="ann" if k % 2 else "bob", session="s", question="pokemon", left_source=a,
                      right_source=bb, left_item=f"seed:{k}", right_item=f"seed:{k + 100}",
                      answer="left" if k < aw else "right")
    # one pair judged by both raters, the second one seeing it mirrored and agreeing
    RV.record(db, rater="cat", session="s", question="pokemon", left_source="B", right_source="A",
              left_item="seed:100", right_item="seed:0", answer="right")
    return {"base": base, "root": root, "sg": base / "sg", "db": db}


@pytest.fixture
def app(lab, monkeypatch):
    monkeypatch.setenv("POKELAB_STUDIO_RUNS", f"{lab['root']}:{lab['sg']}")
    monkeypatch.setenv("POKELAB_STUDIO_NO_DEFAULTS", "1")
    monkeypatch.setenv("POKELAB_REVIEW_DB", str(lab["db"]))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
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


def figures(at) -> dict[str, dict]:
    """Plotly figures on the page by their widget key, arrays decoded."""
    return {el.proto.id.rsplit("-", 1)[-1]: _decode(json.loads(el.proto.spec)) for el in at.get("plotly_chart")}


def frame(at, column: str):
    """The first dataframe with this column (st.dataframe elements carry no key in AppTest)."""
    for d in at.dataframe:
        v = d.value
        if column in v.columns or column in v.index:
            return v
    raise AssertionError(f"no dataframe with {column!r}")


def goto(at, view):
    at.sidebar.radio(key="view").set_value(view).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_runs_table_values_and_warnings(app, lab):
    df = frame(app, "completion").set_index("run")
    assert set(df.index) == {FIN, RUN, FAIL, BROKEN, SG}
    assert df.loc[FIN, "best FID"] == 80.0 and df.loc[FIN, "best FID at"] == 20.0
    assert df.loc[FIN, "last KID"] == pytest.approx(0.09)  # best/'s own line stays out of the run's trend
    assert df.loc[FIN, "best/"] == "epoch 10 · KID 0.041 (2000)" and df.loc[RUN, "best/"] == ""
    app.selectbox(key="detail_run").set_value(str(lab["root"] / FIN)).run()
    assert any(c.value.startswith("best/: the export of epoch 10, 0.05 h of training") and
               c.value.endswith("Measured on its own: FID 61.50, KID 0.0410 at 2000 samples.") for c in app.caption)
    assert df.loc[FIN, "progress"] == "30 / 30 epoch" and df.loc[FIN, "completion"] == 1.0
    assert df.loc[RUN, "status"].endswith("running") and df.loc[RUN, "progress"] == "12 / 100 epoch"
    assert df.loc[FAIL, "status"].endswith("failed")
    assert df.loc[BROKEN, "status"].endswith("broken") and df.loc[BROKEN, "warnings"] >= 2
    assert df.loc[SG, "progress"] == "40 / 40 kimg" and df.loc[SG, "engine"] == "stylegan2-ada"
    warnings = [w.value for w in app.warning]
    assert any(BROKEN in w and "malformed JSON" in w for w in warnings)
    assert any(BROKEN in w and "line 2: malformed" in w for w in warnings)
    assert not any(RUN in w for w in warnings)  # the running run's half line is expected, not a problem
    assert [m.value for m in app.metric][:2] == ["5", "1"]


def test_cli_arguments_are_read(lab, monkeypatch):
    monkeypatch.delenv("POKELAB_STUDIO_RUNS", raising=False)
    monkeypatch.setenv("POKELAB_STUDIO_NO_DEFAULTS", "1")
    monkeypatch.setattr("sys.argv", ["streamlit_app.py", "--runs", str(lab["sg"]), "--review-db", str(lab["db"])])
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert list(frame(at, "completion")["run"]) == [SG]
    assert at.sidebar.text_input(key="review_db").value == str(lab["db"])
    assert not at.sidebar.text_area(key="roots_text").disabled


def test_lock_roots_ignores_folders_typed_in_the_sidebar(lab, monkeypatch):
    monkeypatch.delenv("POKELAB_STUDIO_RUNS", raising=False)
    monkeypatch.setenv("POKELAB_STUDIO_NO_DEFAULTS", "1")
    monkeypatch.setattr("sys.argv", ["streamlit_app.py", "--runs", str(lab["sg"]), "--lock-roots"])
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert at.sidebar.text_area(key="roots_text").disabled
    at.session_state["roots_text"] = f"{lab['sg']}\n{lab['root']}"  # as if the field were edited anyway
    at.run()
    assert list(frame(at, "completion")["run"]) == [SG]


def test_no_runs_anywhere(tmp_path, monkeypatch):
    monkeypatch.setenv("POKELAB_STUDIO_RUNS", str(tmp_path))
    monkeypatch.setenv("POKELAB_STUDIO_NO_DEFAULTS", "1")
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception and any("No runs found" in i.value for i in at.info)
    for view in ("Trends", "Samples", "Compare"):
        goto(at, view)
        assert at.info, view


def test_trends_figures(app, lab):
    at = goto(app, "Trends")
    sel = at.multiselect(key="trend_runs_w").value
    assert len(sel) == 4 and str(lab["root"] / BROKEN) not in sel  # runs with metrics, the broken one left out
    at.multiselect(key="trend_runs_w").set_value([str(lab["root"] / FIN), str(lab["root"] / RUN),
                                                 str(lab["sg"] / SG)]).run()
    at.slider(key="smoothing").set_value(0.0).run()
    figs = figures(at)
    # FID/KID: one panel per kind · size · samples (tests/test_studio_honesty.py): the stylegan2-ada folder's
    # fid50k_full (50,000 samples) first, the pokelab runs (sample count not logged) second
    (sg,) = figs["fig_fid"]["data"]
    assert sg["name"] == SG and sg["xaxis"] == "x" and figs["fig_fid"]["layout"]["xaxis"]["title"]["text"] == "kimg"
    fid = figs["fig_fid_2"]["data"]
    assert len(fid) == 2
    fin = next(t for t in fid if t["name"] == FIN)
    assert fin["x"] == [10.0, 20.0, 30.0] and fin["y"] == [120.0, 80.0, 95.0]
    assert fin["marker"]["size"][1] > fin["marker"]["size"][0]  # the best point is drawn larger
    # runs in several units: each unit its own axis (here in the loss figure)
    assert figs["fig_loss"]["layout"]["xaxis2"]["title"]["text"] == "kimg (stylegan2-ada)"
    # KID: band + line for FIN (has kid_std), line only for RUN; the stylegan run logged no KID
    assert len(figs["fig_kid"]["data"]) == 0 and len(figs["fig_kid_2"]["data"]) == 3
    # losses unsmoothed: FIN and RUN log D, G, cycle_A; stylegan maps G, D, r1_penalty, D_reg
    assert len(figs["fig_loss"]["data"]) == 3 + 3 + 4
    assert len(figs["fig_dacc"]["data"]) == 6
    shapes = figs["fig_dacc"]["layout"]["shapes"]
    assert any(s.get("y0") == 0.5 and s.get("y1") == 0.5 for s in shapes)  # the 0.5 reference line
    div = figs["fig_div"]["data"]
    names = [t["name"] for t in div]
    assert names.count("samples") == 1 and names.count("real images") == 1
    flagged = next(t for t in div if t["name"] == "collapse flagged")
    assert flagged["x"] == [20.0] and flagged["y"] == [0.35]
    at.slider(key="smoothing").set_value(0.5).run()
    assert len(figures(at)["fig_loss"]["data"]) == 2 * 10  # raw (faint) + smoothed per curve


def test_trends_x_axis_training_hours_and_images_seen(app, lab):
    at = goto(app, "Trends")
    fin, run, sg = str(lab["root"] / FIN), str(lab["root"] / RUN), str(lab["sg"] / SG)
    at.multiselect(key="trend_runs_w").set_value([fin, run, sg]).run()
    at.slider(key="smoothing").set_value(0.0).run()
    assert at.radio(key="trend_x").value == "epoch"
    assert at.radio(key="trend_x").options == ["epochs", "training hours", "images seen (kimg)"]

    at.radio(key="trend_x").set_value("hours").run()
    assert not at.exception, [e.value for e in at.exception]
    figs = figures(at)
    fid = {t["name"]: t for k in ("fig_fid", "fig_fid_2") for t in figs[k]["data"]}
    # FIN: 20 s per epoch, evaluated at epochs 10, 20, 30; RUN logged no epoch_seconds: on its epochs, along the top
    assert fid[FIN]["xaxis"] == "x" and fid[FIN]["x"] == pytest.approx([200 / 3600, 400 / 3600, 600 / 3600])
    assert fid[SG]["xaxis"] == "x"  # stylegan2-ada: its tick times
    assert fid[RUN]["xaxis"] == "x2" and fid[RUN]["x"] == [10.0]
    assert figs["fig_fid"]["layout"]["xaxis"]["title"]["text"] == "training hours"  # the stylegan2-ada panel
    layout = figs["fig_fid_2"]["layout"]
    assert layout["xaxis"]["title"]["text"] == "training hours (pokelab)"
    assert layout["xaxis2"]["title"]["text"] == "epoch (pokelab)"
    layout = figs["fig_loss"]["layout"]
    assert layout["xaxis"]["title"]["text"] == "training hours (pokelab, stylegan2-ada)"
    loss = next(t for t in figs["fig_loss"]["data"] if t["name"] == "D" and t["xaxis"] == "x" and len(t["x"]) == 30)
    assert loss["x"] == pytest.approx([20 * e / 3600 for e in range(1, 31)])
    captions = [c.value for c in at.caption]
    assert any("**training hours**" in c and "evaluation" in c for c in captions)
    assert any(RUN in c and "stays on its own x axis" in c and "no epoch_seconds" in c for c in captions)
    assert not any(FIN in c and "stays on its own" in c for c in captions)

    at.radio(key="trend_x").set_value("kimg").run()
    figs = figures(at)
    fid = {t["name"]: t for k in ("fig_fid", "fig_fid_2") for t in figs[k]["data"]}
    # step x batch size (8): one step per epoch in these runs; the stylegan2-ada folder keeps its own kimg
    assert fid[FIN]["x"] == pytest.approx([0.08, 0.16, 0.24]) and fid[RUN]["x"] == pytest.approx([0.08])
    assert fid[SG]["x"] == [0.0, 20.0, 40.0]
    assert {t["xaxis"] for t in fid.values()} == {"x"} and figs["fig_fid_2"]["layout"]["xaxis"]["title"]["text"] == "kimg"
    assert not any("stays on its own" in c.value for c in at.caption)

    at.radio(key="trend_x").set_value("epoch").run()
    figs = figures(at)
    fid = {t["name"]: t for k in ("fig_fid", "fig_fid_2") for t in figs[k]["data"]}
    assert fid[FIN]["x"] == [10.0, 20.0, 30.0] and fid[SG]["xaxis"] == "x"  # alone in its panel
    assert figs["fig_loss"]["layout"]["xaxis2"]["title"]["text"] == "kimg (stylegan2-ada)"


def test_compare_x_axis(app, lab):
    at = goto(app, "Compare")
    at.multiselect(key="cmp_runs").set_value([str(lab["root"] / FIN), str(lab["sg"] / SG)]).run()
    at.radio(key="cmp_x").set_value("hours").run()
    assert not at.exception
    figs = figures(at)
    fid = {t["name"]: t for k in ("cmp_fid", "cmp_fid_2") for t in figs[k]["data"]}
    assert fid[FIN]["x"] == pytest.approx([200 / 3600, 400 / 3600, 600 / 3600]) and fid[SG]["xaxis"] == "x"
    assert "best FID 80.00 at epoch 20" in " ".join(m.value for m in at.markdown)  # verdicts keep epochs


def test_samples_gif_and_diversity(app, lab):
    at = goto(app, "Samples")
    at.selectbox(key="sample_run").set_value(str(lab["root"] / FIN)).run()
    assert at.select_slider(key=f"sample_x::{lab['root'] / FIN}").value == 30.0
    assert [c for im in at.get("image") for c in im.captions] == [f"{FIN} — epoch 30"]
    at.selectbox(key="sample_run_b").set_value(str(lab["root"] / RUN)).run()
    caps = [c for im in at.get("image") for c in im.captions]
    assert caps == [f"{FIN} — epoch 30", f"{RUN} — epoch 10 (nearest epoch)"]
    at.button(key="gif_build").click().run()
    assert not at.exception
    gif = at.session_state["gif"]
    im = Image.open(io.BytesIO(gif["bytes"]))
    assert im.format == "GIF" and im.n_frames == 3 and gif["skipped"] == []
    at.slider(key="div_grids").set_value(3).run()
    at.button(key="div_compute").click().run()
    pts = at.session_state["computed_div"][str(lab["root"] / FIN)]
    assert [x for x, _ in pts] == [10.0, 20.0, 30.0]
    assert pts[2][1] == pytest.approx(1.0)  # the last grid repeats one tile: SSIM 1 among tiles
    assert pts[0][1] < 0.3
    fig = figures(at)["fig_div_samples"]
    assert any(t["name"] == "grid SSIM (approx.)" for t in fig["data"])


def test_compare_verdicts(app, lab):
    at = goto(app, "Compare")
    at.multiselect(key="cmp_runs").set_value([str(lab["root"] / FIN), str(lab["root"] / RUN)]).run()
    table = frame(at, "best FID at")
    assert list(table.columns) == [FIN, RUN]
    assert table.loc["best FID", FIN] == "80.00" and table.loc["best FID at", FIN] == "20"
    text = " ".join(m.value for m in at.markdown)
    assert "best FID 80.00 at epoch 20; last 95.00 at epoch 30" in text
    assert "mode collapse flagged at 1 evaluation(s), first at epoch 20" in text
    assert "D accuracy drifted up to 0.90" in text  # FIN logs 0.9 on real and fake
    assert "D accuracy stays near 0.5" in text       # RUN logs 0.55
    assert len(figures(at)["cmp_fid"]["data"]) == 2


def test_review_statistics(app):
    at = goto(app, "Review")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Ratings"] == "15" and metrics["Raters"] == "3" and metrics["Sources"] == "3"
    bt = frame(at, "strength")
    assert list(bt["source"]) == ["A", "B", "C"]
    # 14 ratings give strengths 4:2:1; the extra A-over-B rating moves them a little
    assert bt["strength"].iloc[0] > bt["strength"].iloc[1] > bt["strength"].iloc[2]
    assert (bt["95% low"] < bt["strength"]).all() and (bt["strength"] < bt["95% high"]).all()
    rates = figures(at)["fig_winrate"]["data"][0]
    assert rates["y"] == ["A", "B", "C"] and rates["z"][0][1] == pytest.approx(5 / 7)
    assert metrics["Repeated pairs"] == "1" and metrics["Percent agreement"] == "100%"


def test_review_db_outside_roots_and_corrupt(app, lab, tmp_path):
    at = goto(app, "Review")
    outside = tmp_path / "other.db"
    outside.write_bytes(b"x")
    at.sidebar.text_input(key="review_db").set_value(str(outside)).run()
    assert any("outside the folders" in e.value for e in at.error)
    bad = lab["root"] / "bad.db"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    at.sidebar.text_input(key="review_db").set_value(str(bad)).run()
    assert not at.exception
    assert any("Cannot read the review database" in e.value for e in at.error)
    at.sidebar.text_input(key="review_db").set_value(str(lab["root"] / "none.db")).run()
    assert any("No review database" in i.value for i in at.info)


def test_sidebar_adds_a_root_and_missing_folder_is_reported(app, lab, tmp_path):
    extra = tmp_path / "more"
    _run(extra, "20250105-000000-dcgan-extra", "finished", 2, 2)
    at = app
    at.sidebar.text_area(key="roots_text").set_value(f"{lab['root']}\n{extra}\n{tmp_path / 'missing'}").run()
    runs = set(frame(at, "completion")["run"])
    assert "20250105-000000-dcgan-extra" in runs and SG not in runs
    assert any("not a folder" in c.value for c in at.sidebar.caption)


def test_translation_run_of_unknown_engine_gets_no_grid_diversity(tmp_path, monkeypatch):
    # known translation engines get it on their output column (tests/test_studio_translation.py); for an
    # engine the studio does not know, the output column cannot be found, so nothing is computed
    d = _run(tmp_path, "20250106-000000-munit-pokemon", "finished", 2, 2, grids=[(2, _tiles(7, n=6))],
             extra={"kind": "translate", "dataset": [{"name": "sprites"}, {"name": "art"}]})
    monkeypatch.setenv("POKELAB_STUDIO_RUNS", str(tmp_path))
    monkeypatch.setenv("POKELAB_STUDIO_NO_DEFAULTS", "1")
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert frame(at, "completion").iloc[0]["dataset"] == "sprites → art"
    goto(at, "Samples")
    assert any("columns of this translation grid (engine 'munit') are unknown" in i.value for i in at.info)
    assert not [b for b in at.button if b.key == "div_compute"]
    assert d.is_dir()
