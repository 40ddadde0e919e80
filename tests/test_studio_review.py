"""Review statistics against hand-worked numbers: win rates, Bradley-Terry (closed form), intervals, agreement."""
from __future__ import annotations

import math

import numpy as np
import pytest

from engines import review as RV
from studio import review_stats as RS


def rating(a, b, answer, rater="r1", ia="seed:1", ib="seed:2", q="pokemon", t=0.0):
    return {"id": 0, "created": t, "rater": rater, "session": "s", "question": q, "left_source": a,
            "right_source": b, "left_item": ia, "right_item": ib, "answer": answer}


def games(a, b, a_wins, b_wins, **kw):
    """a_wins ratings won by a and b_wins won by b, alternating sides so left/right does not matter."""
    out = []
    for k in range(a_wins):
        out.append(rating(a, b, "left", **kw) if k % 2 else rating(b, a, "right", **kw))
    for k in range(b_wins):
        out.append(rating(a, b, "right", **kw) if k % 2 else rating(b, a, "left", **kw))
    return out


# A : B = 4 : 2, A : C = 4 : 1, B : C = 2 : 1 -- exactly the expected counts under strengths 4 : 2 : 1,
# so the Bradley-Terry score equations W_i = sum_j n_ij p_i / (p_i + p_j) hold at p = (4, 2, 1).
THREE = games("A", "B", 4, 2) + games("A", "C", 4, 1) + games("B", "C", 2, 1)


def test_win_counts_and_rates_by_hand():
    rows = THREE + [rating("A", "B", "tie"), rating("C", "C", "left")]  # a tie; a self-comparison (ignored)
    srcs, w = RS.win_counts(rows)
    assert srcs == ["A", "B", "C"]
    assert w.tolist() == [[0, 4.5, 4], [2.5, 0, 2], [1, 1, 0]]
    rates, n = RS.win_rate_matrix(rows)
    assert rates.loc["A", "B"] == pytest.approx(4.5 / 7) and rates.loc["B", "A"] == pytest.approx(2.5 / 7)
    assert rates.loc["A", "C"] == pytest.approx(0.8) and rates.loc["C", "B"] == pytest.approx(1 / 3)
    assert math.isnan(rates.loc["A", "A"])
    assert n.loc["A", "B"] == 7 and n.loc["C", "A"] == 5 and n.loc["C", "C"] == 0
    # a given order (strongest first) is kept
    rates2, _ = RS.win_rate_matrix(rows, ["C", "B", "A"])
    assert list(rates2.index) == ["C", "B", "A"]


def test_bradley_terry_three_sources_closed_form():
    _, w = RS.win_counts(THREE)
    theta = RS.bradley_terry(w)
    expect = np.log([4.0, 2.0, 1.0])
    assert theta == pytest.approx(expect - expect.mean(), abs=1e-9)
    table, info = RS.rank_sources(THREE)
    assert list(table["source"]) == ["A", "B", "C"] and info["prior"] == 0.0
    assert table["share"].tolist() == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert table["wins"].tolist() == [8, 4, 2] and table["games"].tolist() == [11, 9, 8]


def test_fisher_interval_two_sources_closed_form():
    rows = games("A", "B", 7, 3)
    table, _ = RS.rank_sources(rows, ci="fisher")
    # theta_A - theta_B = log(7/3); var(difference) = 1 / (n p (1 - p)); centred: theta_A = diff / 2
    d = math.log(7 / 3)
    se = math.sqrt(1 / (10 * 0.7 * 0.3)) / 2
    a = table.set_index("source").loc["A"]
    assert a["theta"] == pytest.approx(d / 2)
    assert a["lo"] == pytest.approx(d / 2 - 1.959963984540054 * se)
    assert a["hi"] == pytest.approx(d / 2 + 1.959963984540054 * se)


def _nll(theta, w):
    p = 1 / (1 + np.exp(theta[None, :] - theta[:, None]))  # P(i beats j)
    return -(w * np.log(p)).sum()


def test_fisher_covariance_matches_numerical_hessian():
    _, w = RS.win_counts(THREE)
    theta = RS.bradley_terry(w)
    h, k = np.zeros((3, 3)), 1e-4
    for i in range(3):
        for j in range(3):
            e_i, e_j = np.eye(3)[i] * k, np.eye(3)[j] * k
            h[i, j] = (_nll(theta + e_i + e_j, w) - _nll(theta + e_i - e_j, w) - _nll(theta - e_i + e_j, w)
                       + _nll(theta - e_i - e_j, w)) / (4 * k * k)
    # the Hessian is singular along (1, 1, 1) (only differences matter): cut that direction's numerical noise
    assert RS.fisher_cov(theta, w) == pytest.approx(np.linalg.pinv(h, rcond=1e-4, hermitian=True), abs=1e-4)


def test_not_identifiable_gets_a_prior_and_a_note():
    rows = games("A", "B", 4, 0) + games("A", "C", 4, 0) + games("B", "C", 2, 2)
    _, w = RS.win_counts(rows)
    assert not RS.identifiable(w)
    with pytest.raises(ValueError, match="does not exist"):
        RS.bradley_terry(w)
    table, info = RS.rank_sources(rows)
    assert info["prior"] == 1.0 and "does not exist" in info["notes"][0]
    t = table.set_index("source")
    assert np.isfinite(t["theta"]).all() and t["theta"].idxmax() == "A"
    assert t.loc["B", "theta"] == pytest.approx(t.loc["C", "theta"], abs=1e-6)  # symmetric
    assert (t["hi"] > t["theta"]).all() and (t["lo"] < t["theta"]).all()


def test_prior_keeps_mle_when_it_exists_close():
    _, w = RS.win_counts(THREE * 20)
    assert RS.bradley_terry(w, prior=1.0) == pytest.approx(RS.bradley_terry(w), abs=0.02)


def test_bootstrap_interval_is_reproducible_and_sane():
    rows = THREE * 6
    t1, info = RS.rank_sources(rows, ci="bootstrap", n_boot=150, seed=1)
    t2, _ = RS.rank_sources(rows, ci="bootstrap", n_boot=150, seed=1)
    f, _ = RS.rank_sources(rows, ci="fisher")
    assert t1.equals(t2) and info["n_boot"] == 150
    assert ((t1["lo"] < t1["theta"]) & (t1["theta"] < t1["hi"])).all()
    width_b = (t1["hi"] - t1["lo"]).to_numpy()
    width_f = (f["hi"] - f["lo"]).to_numpy()
    assert np.all(width_b > 0.5 * width_f) and np.all(width_b < 2 * width_f)
    with pytest.raises(ValueError):
        RS.rank_sources(rows, ci="magic")


def test_too_few_sources():
    table, info = RS.rank_sources([rating("A", "A", "left")])
    assert len(table) == 0 and info["notes"]


def test_agreement_by_hand_fleiss_kappa():
    rows = [
        # pair 1: both raters pick the same image although it was shown on opposite sides
        rating("A", "B", "left", rater="ann", ia="s1", ib="s2"),
        rating("B", "A", "right", rater="bob", ia="s2", ib="s1"),
        # pair 2: they disagree
        rating("A", "C", "left", rater="ann", ia="s3", ib="s4"),
        rating("A", "C", "right", rater="bob", ia="s3", ib="s4"),
        # pair 3: both call it a tie
        rating("B", "C", "tie", rater="ann", ia="s5", ib="s6"),
        rating("C", "B", "tie", rater="bob", ia="s6", ib="s5"),
        # a pair seen by one rater only: not part of agreement
        rating("A", "B", "left", rater="ann", ia="s7", ib="s8"),
        # the same pair in another question is another item
        rating("A", "B", "left", rater="cat", ia="s1", ib="s2", q="novel"),
    ]
    ag = RS.agreement(RS.for_question(rows, "pokemon"))
    assert ag["pairs"] == 4 and ag["repeated_pairs"] == 3 and ag["answers"] == 6
    assert ag["percent"] == pytest.approx(2 / 3) and ag["unanimous"] == pytest.approx(2 / 3)
    # categories over all 6 answers: first 3/6, second 1/6, tie 2/6 -> P_e = 14/36; kappa = (2/3 - 7/18)/(11/18)
    assert ag["expected"] == pytest.approx(14 / 36)
    assert ag["kappa"] == pytest.approx(5 / 11)


def test_agreement_three_raters_and_latest_answer_counts():
    rows = [rating("A", "B", "left", rater="ann", t=1), rating("A", "B", "right", rater="ann", t=5),  # changed mind
            rating("A", "B", "right", rater="bob", t=2), rating("A", "B", "left", rater="cat", t=3)]
    ag = RS.agreement(rows)
    # answers: ann second (latest), bob second, cat first -> P_i = (2*1 + 1*0) / (3*2) = 1/3
    assert ag["repeated_pairs"] == 1 and ag["answers"] == 3
    assert ag["percent"] == pytest.approx(1 / 3) and ag["unanimous"] == 0.0
    p_e = (1 / 3) ** 2 + (2 / 3) ** 2
    assert ag["kappa"] == pytest.approx((1 / 3 - p_e) / (1 - p_e))
    assert math.isnan(RS.agreement(rows[:1])["kappa"])


def test_summary_and_real_database_roundtrip(tmp_path):
    db = tmp_path / "reviews.db"
    for r in THREE + [rating("A", "A", "tie", rater="zed")]:
        RV.record(db, rater=r["rater"], session="s1", question=r["question"], left_source=r["left_source"],
                  right_source=r["right_source"], left_item=r["left_item"], right_item=r["right_item"],
                  answer=r["answer"])
    rows = RV.load(db)
    s = RS.summary(RS.for_question(rows, "pokemon"))
    assert s == {"ratings": 15, "raters": 2, "sessions": 1, "ties": 1, "self_pairs": 1, "sources": 3}
    table, _ = RS.rank_sources(rows)
    assert table["theta"].tolist() == pytest.approx(list(np.log([4, 2, 1]) - np.log([4, 2, 1]).mean()), abs=1e-8)
