"""Human <-> metric agreement (studio.agreement): Kendall's tau-b on constructed rankings, the review database ->
Bradley-Terry -> tau -> bootstrap interval end to end on constructed runs, few sources, and the studio's Review page
showing the tau table (Streamlit AppTest)."""
from __future__ import annotations

import json
import math
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import kendalltau

from engines import review as RV
from studio import agreement as AG
from studio import data as D
from studio import review_stats as RS

APP = str(Path(__file__).resolve().parents[1] / "studio" / "streamlit_app.py")


# ---- Kendall's tau-b -----------------------------------------------------------------------------
def test_tau_perfect_reversed_and_ties_by_hand():
    assert AG.kendall_tau_b([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert AG.kendall_tau_b([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # y ties its first two: 5 concordant pairs, 1 tied in y -> 5 / sqrt(6 * 5)
    assert AG.kendall_tau_b([1, 2, 3, 4], [1, 1, 2, 3]) == pytest.approx(5 / math.sqrt(30))
    # ties on both sides: x ties pair (0,1), y ties pair (1,2); the other 4 pairs are concordant
    assert AG.kendall_tau_b([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(4 / math.sqrt(5 * 5))
    # and a discordant pair against two concordant ones: (0,2) C, (0,3) C, (1,2) D, (1,3) D -> 0
    assert AG.kendall_tau_b([1, 1, 2, 3], [1, 3, 2, 2]) == 0.0
    assert math.isnan(AG.kendall_tau_b([1], [2]))                 # one source: undefined
    assert math.isnan(AG.kendall_tau_b([1, 2, 3], [7, 7, 7]))     # one side ties everything: undefined
    assert AG.kendall_tau_b([0.0, 1e-12, 1.0], [1, 2, 3]) == pytest.approx(2 / math.sqrt(2 * 3))  # within TIE_TOL
    with pytest.raises(ValueError, match="differ in length"):
        AG.kendall_tau_b([1, 2], [1, 2, 3])


def test_tau_matches_scipy_and_batches():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(2, 9))
        x = rng.integers(0, 4, n).astype(float)  # many ties
        y = rng.integers(0, 4, n).astype(float)
        ref = kendalltau(x, y).statistic
        got = AG.kendall_tau_b(x, y)
        assert (math.isnan(ref) and math.isnan(got)) or got == pytest.approx(ref)
    x = rng.normal(size=6)
    ys = rng.normal(size=(30, 6))
    batch = AG.kendall_tau_b(x, ys)
    assert batch.shape == (30,)
    assert batch == pytest.approx([kendalltau(x, y).statistic for y in ys])


# ---- constructed runs and review database --------------------------------------------------------------
def write_run(root: Path, run_id: str, evals: list[dict], size: int = 64, kind: str = "generate") -> Path:
    d = root / run_id
    (d / "samples").mkdir(parents=True)
    (d / "export").mkdir()
    engine = run_id.split("-")[2]
    (d / "run.json").write_text(json.dumps({"run_id": run_id, "engine": engine, "kind": kind, "status": "finished",
                                            "config": {"epochs": 20, "image_size": size, "eval_n": 500},
                                            "dataset": {"name": "pokemon"}, "epoch": 20}))
    lines = [{"kind": "train", "epoch": e, "step": e, "time": 0, "loss/D": 1.0} for e in (10, 20)]
    lines += [{"kind": "eval", "step": 0, "time": 0, **e} for e in evals]
    (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (d / "export" / "config.json").write_text(json.dumps({"engine": engine, "trained": {"run_id": run_id}}))
    return d


def record_games(db, a, b, a_wins, b_wins, question="pokemon", rater="ann"):
    """a_wins ratings won by a, b_wins by b, alternating sides (left/right carries no information); written as
    the app writes them (engines.review's schema) through one connection, as one transaction."""
    rows = []
    for k in range(a_wins + b_wins):
        a_won = k < a_wins
        if k % 2:
            rows.append((a, b, f"seed:{k}", f"seed:{k + 1000}", "left" if a_won else "right"))
        else:
            rows.append((b, a, f"seed:{k + 1000}", f"seed:{k}", "right" if a_won else "left"))
    with closing(RV.connect(db)) as con:
        con.executemany("INSERT INTO ratings(created, rater, session, question, left_source, right_source, left_item,"
                        " right_item, answer) VALUES (0, ?, 's', ?, ?, ?, ?, ?, ?)",
                        [(rater, question, *r) for r in rows])


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    base = tmp_path_factory.mktemp("agreement")
    root = base / "runs"
    ids = {"A": "20250101-000000-dcgan-pokemon", "B": "20250102-000000-wgan_gp-pokemon",
           "C": "20250103-000000-aegan-pokemon", "D": "20250104-000000-pggan-pokemon"}
    # FID agrees with the raters (A best), KID is the reverse, precision ties A and B and is missing for D,
    # recall is logged nowhere; A's FID is its latest one (an older, worse evaluation first)
    write_run(root, ids["A"], [{"epoch": 10, "fid": 90.0, "kid": 0.5, "eval_n": 500},
                               {"epoch": 20, "fid": 50.0, "kid": 0.4, "precision": 0.9, "eval_n": 500}])
    write_run(root, ids["B"], [{"epoch": 20, "fid": 60.0, "kid": 0.3, "precision": 0.9, "eval_n": 500}])
    write_run(root, ids["C"], [{"epoch": 20, "fid": 70.0, "kid": 0.2, "precision": 0.5, "eval_n": 500}])
    write_run(root, ids["D"], [{"epoch": 20, "fid": 80.0, "kid": 0.1, "eval_n": 500}])
    # D's export was copied out of its run folder: only its config.json names the run
    copy = base / "shipped" / "pggan"
    copy.mkdir(parents=True)
    (copy / "config.json").write_text((root / ids["D"] / "export" / "config.json").read_text())
    src = {k: f"{v.split('-')[2]}:{root / v / 'export'}" for k, v in ids.items()}
    src["D"] = f"pggan:{copy}"
    src["real"] = "real:pokemon"
    db = base / "review.sqlite"
    # strengths 8 : 4 : 2 : 1 for A : B : C : D (every pair's counts in proportion), the real art above them all
    order = ["real", "A", "B", "C", "D"]
    strength = {"real": 16, "A": 8, "B": 4, "C": 2, "D": 1}
    for i, a in enumerate(order):
        for b in order[i + 1:]:
            tot = 12
            aw = round(tot * strength[a] / (strength[a] + strength[b]))
            record_games(db, src[a], src[b], aw, tot - aw)
            record_games(db, src[a], src[b], tot - aw, aw, question="novel", rater="bob")  # the reverse opinion
    runs = [D.load_run(p) for p in sorted(root.iterdir())]
    for r in runs:
        r.label = r.path.name
    return {"base": base, "root": root, "db": db, "src": src, "ids": ids, "runs": runs,
            "allowed": [root, base / "shipped"]}


def test_sources_are_matched_to_their_runs_and_latest_metrics(lab):
    rows = RV.load(lab["db"])
    m = AG.source_metrics(RS.source_list(rows), lab["runs"], lab["allowed"]).set_index("source")
    src, ids = lab["src"], lab["ids"]
    assert m.loc[src["A"], "run"] == ids["A"] and m.loc[src["D"], "run"] == ids["D"]  # D through its config.json
    assert m.loc[src["A"], "fid"] == 50.0 and m.loc[src["A"], "epoch"] == 20 and m.loc[src["A"], "eval_n"] == 500
    assert math.isnan(m.loc[src["D"], "precision"]) and m["recall"].isna().all()
    assert m.loc["real:pokemon", "note"] == "not a trained export" and math.isnan(m.loc["real:pokemon", "fid"])
    # the copied export is not read when its folder is not one the studio may read
    m2 = AG.source_metrics([src["D"]], lab["runs"], [lab["root"]])
    assert m2.loc[0, "run"] is None and "no run folder" in m2.loc[0, "note"]
    # a run that is not loaded: said so
    m3 = AG.source_metrics(["dcgan:elsewhere/20990101-000000-dcgan-x/export"], lab["runs"])
    assert "no dcgan run 20990101-000000-dcgan-x in the studio's run folders" in m3.loc[0, "note"]
    # a source naming the run folder itself (the demo database's ids); the engine must be the run's
    ids = lab["ids"]
    assert AG.match_run(f"aegan:{ids['C']}", lab["runs"])[0].path.name == ids["C"]
    assert AG.match_run(f"dcgan:{lab['root'] / ids['C'] / 'export'}", lab["runs"])[0] is None
    assert AG.match_run("real", lab["runs"]) == (None, "not a trained export")
    assert AG.match_run("sd-pokemon:lambdalabs/sd-pokemon-diffusers", lab["runs"])[0] is None


def test_agreement_end_to_end(lab):
    rows = RV.load(lab["db"])
    metrics = AG.source_metrics(RS.source_list(rows), lab["runs"], lab["allowed"])
    scores, taus, notes = AG.agreement(RS.for_question(rows, "pokemon"), metrics, n_boot=300, seed=1)
    src = lab["src"]
    assert list(scores["source"]) == ["real:pokemon", src["A"], src["B"], src["C"], src["D"]]
    assert scores["strength"].is_monotonic_decreasing
    t = taus.set_index("key")
    assert t.loc["fid", "tau"] == pytest.approx(1.0) and t.loc["fid", "sources"] == 4  # real art: no FID
    assert t.loc["kid", "tau"] == pytest.approx(-1.0)
    assert t.loc["precision", "tau"] == pytest.approx(2 / math.sqrt(6))  # A and B tie on precision
    assert t.loc["precision", "sources"] == 3
    assert "only 3 sources: τ moves in steps of 0.67" in t.loc["precision", "note"]
    assert math.isnan(t.loc["recall", "tau"]) and "no source has a recall" in t.loc["recall", "note"]
    # the bootstrap: inside [-1, 1], around tau, reproducible with the seed; clear-cut data give tight intervals
    assert -1 <= t.loc["fid", "lo"] <= t.loc["fid", "tau"] <= t.loc["fid", "hi"] <= 1
    assert t.loc["fid", "lo"] > 0 and t.loc["kid", "hi"] < 0
    assert t.loc["fid", "p_pos"] > 0.95 and t.loc["kid", "p_pos"] < 0.05
    again = AG.agreement(RS.for_question(rows, "pokemon"), metrics, n_boot=300, seed=1)[1]
    assert again.equals(taus)
    assert any("300 bootstrap resamples" in n for n in notes)
    # per question: the raters of 'novel' rank the other way round
    allq = AG.all_questions(rows, metrics, ["pokemon", "novel"], n_boot=50)
    fid = allq[allq["key"] == "fid"].set_index("question")["tau"]
    assert fid["pokemon"] == pytest.approx(1.0) and fid["novel"] == pytest.approx(-1.0)


def test_bootstrap_widens_with_fewer_ratings(lab):
    """The same strengths from a twelfth of the ratings: the interval must be wider."""
    rows = RS.for_question(RV.load(lab["db"]), "pokemon")
    metrics = AG.source_metrics(RS.source_list(rows), lab["runs"], lab["allowed"])
    few = rows[::12]
    wide = AG.agreement(few, metrics, n_boot=300, seed=2)[1].set_index("key")
    tight = AG.agreement(rows, metrics, n_boot=300, seed=2)[1].set_index("key")
    assert (wide.loc["fid", "hi"] - wide.loc["fid", "lo"]) > (tight.loc["fid", "hi"] - tight.loc["fid", "lo"])


def test_fid_from_different_sample_counts_is_flagged(tmp_path):
    root = tmp_path / "runs"
    a = write_run(root, "20250101-000000-dcgan-pokemon", [{"epoch": 20, "fid": 50.0, "eval_n": 500}])
    b = write_run(root, "20250102-000000-dcgan-pokemon", [{"epoch": 20, "fid": 60.0, "eval_n": 2000}], size=128)
    runs = [D.load_run(a), D.load_run(b)]
    srcs = [f"dcgan:{a / 'export'}", f"dcgan:{b / 'export'}"]
    db = tmp_path / "r.sqlite"
    record_games(db, srcs[0], srcs[1], 6, 2)
    rows = RV.load(db)
    _, taus, _ = AG.agreement(rows, AG.source_metrics(srcs, runs), n_boot=100)
    note = taus.set_index("key").loc["fid", "note"]
    assert "only 2 sources: τ is −1 or +1" in note and "not strictly comparable" in note
    assert "sample counts 500, 2,000" in note and "image sizes 64 px, 128 px" in note


def test_few_sources_never_crash(lab):
    metrics = AG.source_metrics([lab["src"]["A"], "real:pokemon"], lab["runs"], lab["allowed"])
    rows = [r for r in RV.load(lab["db"]) if {r["left_source"], r["right_source"]} == {lab["src"]["A"], "real:pokemon"}
            and r["question"] == "pokemon"]
    scores, taus, _ = AG.agreement(rows, metrics, n_boot=50)
    assert len(scores) == 2 and taus["tau"].isna().all()
    assert "undefined: 1 source(s)" in taus.set_index("key").loc["fid", "note"]
    scores, taus, notes = AG.agreement([], metrics)  # no ratings at all
    assert len(scores) == 0 and len(taus) == 0 and notes
    assert len(AG.all_questions([], metrics, ["pokemon"])) == 0


# ---- the studio page -------------------------------------------------------------------------------
def test_studio_review_page_shows_the_tau_table(lab, monkeypatch):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("POKELAB_STUDIO_RUNS", f"{lab['root']}:{lab['base'] / 'shipped'}")
    monkeypatch.setenv("POKELAB_STUDIO_NO_DEFAULTS", "1")
    monkeypatch.setenv("POKELAB_REVIEW_DB", str(lab["db"]))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.sidebar.radio(key="view").set_value("Review").run()
    assert not at.exception, [e.value for e in at.exception]
    frames = [d.value for d in at.dataframe]
    taus = next(f for f in frames if "Kendall τ" in f.columns)
    fid = taus[(taus["question"] == "pokemon") & (taus["metric"] == "FID")].iloc[0]
    assert fid["Kendall τ"] == pytest.approx(1.0) and fid["sources"] == 4 and fid["95% low"] > 0
    nov = taus[(taus["question"] == "novel") & (taus["metric"] == "FID")].iloc[0]
    assert nov["Kendall τ"] == pytest.approx(-1.0)
    assert taus[taus["metric"] == "recall"]["Kendall τ"].isna().all()
    side = next(f for f in frames if "human strength" in f.columns)
    assert list(side["FID"]) == ["—", "50.00", "60.00", "70.00", "80.00"]  # the real art first: no FID
    assert side.set_index("source").loc["real:pokemon", "precision"] == "—"
    text = " ".join(c.value for c in at.caption)
    assert "lower FID" in text and "bootstrap" in text
