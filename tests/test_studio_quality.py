"""The studio shows the new evaluation numbers: FID/KID interval bands, FID∞, precision/recall, density/coverage
(trends and Compare) and the run's evaluation cadence (run page)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from studio import data as D
from studio import plots as P

sys.path.insert(0, str(Path(__file__).parent))
from test_studio_data import EVALS, write_run  # noqa: E402

QUALITY = [{**e, "fid_lo": e["fid"] - 3, "fid_hi": e["fid"] + 4, "kid_lo": e["kid"] - 0.01, "kid_hi": e["kid"] + 0.01,
            "fid_inf": e["fid"] - 20, "precision": 0.6 + i / 10, "recall": 0.3, "density": 0.9, "coverage": 0.5}
           for i, e in enumerate(EVALS)]
CADENCE = {"mode": "budget", "reason": "CPU: evaluation kept within 15% of the run's time", "every": 10,
           "budget": 0.15, "explicit": [], "eval_n": 2000, "smoke": False, "evaluated": [10, 20, 30],
           "effective_every": 10.0, "eval_seconds": 600.0, "eval_share": 0.139, "next": 40}


@pytest.fixture
def runs(tmp_path):
    new = D.load_run(write_run(tmp_path, "20250101-000000-dcgan-pokemon", evals=QUALITY,
                               info_extra={"eval_cadence": CADENCE}))
    old = D.load_run(write_run(tmp_path, "20250102-000000-wgan_gp-pokemon", evals=EVALS))
    return new, old


def test_new_keys_load_without_warnings(runs):
    new, _ = runs
    assert new.warnings == []
    for k in ("fid_lo", "fid_hi", "kid_lo", "kid_hi", "fid_inf", "precision", "recall", "density", "coverage"):
        assert new.column("evals", k) is not None, k
    row = D.summarize(new)
    assert row["last FID∞"] == pytest.approx(75.0) and row["last precision"] == pytest.approx(0.8)
    assert row["last coverage"] == pytest.approx(0.5)
    assert D.summarize(runs[1])["last recall"] is None
    assert "last density" in D.runs_table(list(runs)).columns


def test_interval_bands_in_the_fid_and_kid_figures(runs):
    new, old = runs
    colours = P.colour_map([new, old])
    fid = P.fid_figure([new, old], colours)
    band = [t for t in fid.data if t.fill == "toself"]
    assert len(fid.data) == 3 and len(band) == 1  # band + line for the run with fid_lo/fid_hi, line for the other
    assert list(band[0].x) == [10, 20, 30, 30, 20, 10]
    assert list(band[0].y) == [124, 84, 99, 92, 77, 117]  # hi forwards, lo backwards
    kid = P.kid_figure([new, old], colours)
    bands = [t for t in kid.data if t.fill == "toself"]
    assert len(bands) == 2  # the 95% interval for the new run, +-1 std for the old one
    new_band = next(t for t in bands if "95%" in t.name)
    assert list(new_band.y)[:3] == pytest.approx([0.13, 0.09, 0.10])
    old_band = next(t for t in bands if "std" in t.name)
    assert list(old_band.y)[:3] == pytest.approx([0.13, 0.09, 0.11])


def test_quality_figures_only_for_what_was_logged(runs):
    new, old = runs
    colours = P.colour_map([new, old])
    figs = P.quality_figures([new, old], colours)
    assert list(figs) == ["fid_inf", "pr", "dc"]
    pr = figs["pr"]
    assert [t.name for t in pr.data] == ["precision", "recall"]  # one run logged them: 2 curves
    assert list(pr.data[0].y) == pytest.approx([0.6, 0.7, 0.8]) and pr.data[1].line.dash == "dash"
    assert P.quality_figures([old], colours) == {}


def test_cadence_line_on_the_run_page(runs, tmp_path):
    new, old = runs
    text = D.eval_cadence_text(new)
    assert text.startswith("Evaluation: 3 so far (epochs 10, 20, 30)")
    assert "within 15% of the run's time" in text and "took 14% of the run's time" in text
    assert "next at epoch" not in text  # a finished run has no next evaluation
    assert D.eval_cadence_text(old) is None
    smoke = D.load_run(write_run(tmp_path / "s", "20250103-000000-dcgan-pokemon", status="running", evals=EVALS,
                                 info_extra={"eval_cadence": {**CADENCE, "mode": "protocol", "reason": "CUDA",
                                                              "smoke": True, "eval_n": 250}}))
    t = D.eval_cadence_text(smoke)
    assert "(CUDA)" in t and "next at epoch 40" in t and "Smoke run: evaluated with 250 samples" in t
    many = {**CADENCE, "evaluated": list(range(10, 210, 10))}
    assert "epochs 10, 20, 30, 40, …, 190, 200" in D.eval_cadence_text(
        D.load_run(write_run(tmp_path / "m", "20250104-000000-dcgan-pokemon", evals=EVALS,
                             info_extra={"eval_cadence": many})))
    for junk in ("x", {"mode": 3}, {"mode": "explicit", "evaluated": "no"}):
        r = D.load_run(write_run(tmp_path / f"j{len(json.dumps(junk))}", "20250105-000000-dcgan-pokemon",
                                 evals=EVALS, info_extra={"eval_cadence": junk}))
        D.eval_cadence_text(r)  # never raises on a damaged record


def test_the_app_shows_them_in_trends_compare_and_the_run_page(tmp_path, monkeypatch):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from test_studio_app import APP, figures, goto

    root = tmp_path / "runs"
    new = write_run(root, "20250101-000000-dcgan-pokemon", evals=QUALITY, info_extra={"eval_cadence": CADENCE})
    write_run(root, "20250102-000000-wgan_gp-pokemon", evals=EVALS)
    monkeypatch.setenv("POKELAB_STUDIO_RUNS", str(root))
    monkeypatch.setenv("POKELAB_STUDIO_NO_DEFAULTS", "1")
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    at.selectbox(key="detail_run").set_value(str(new)).run()
    assert any(c.value.startswith("Evaluation: 3 so far") for c in at.caption)
    goto(at, "Trends")
    figs = figures(at)
    assert {"fig_fid_q_fid_inf", "fig_fid_q_pr", "fig_fid_q_dc"} <= set(figs)
    assert any(t.get("fill") == "toself" for t in figs["fig_fid"]["data"])  # the FID interval band
    assert any("Bands: 95% intervals" in c.value for c in at.caption)
    goto(at, "Compare")
    at.multiselect(key="cmp_runs").set_value([str(new), str(root / "20250102-000000-wgan_gp-pokemon")]).run()
    assert not at.exception, [e.value for e in at.exception]
    table = next(d.value for d in at.dataframe if "last precision" in d.value.index)
    assert table.loc["last FID∞"].tolist()[0] == "75.00" and table.loc["last precision"].tolist()[1] == ""
    assert "cmp_fid_q_pr" in figures(at)
