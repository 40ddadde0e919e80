"""benchmarks/quality_per_hour.py on constructed runs: FID/KID of the last evaluation at or before each mark of
training time (or images seen), "—" past a run's end, "·" before its first evaluation, "n/a" for runs without
the fields."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from studio.demo import write_stylegan_run

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "quality_per_hour.py"
_spec = importlib.util.spec_from_file_location("quality_per_hour", _PATH)
Q = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(Q)

A, B, C = "20250101-000000-dcgan-pokemon", "20250102-000000-wgan_gp-pokemon", "20250103-000000-aegan-pokemon"


def _run(root: Path, run_id: str, epochs: int, evals: tuple[int, ...], secs: float | None = 1800.0,
         image_size: int = 64, eval_n: int = 500) -> Path:
    """``epochs`` epochs of ``secs`` seconds (None: no epoch_seconds logged), 10 steps of 64 images each;
    evaluations at ``evals`` with FID 100/epoch and KID 0.1/epoch."""
    d = root / run_id
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({
        "run_id": run_id, "engine": run_id.split("-")[2], "kind": "generate", "status": "finished",
        "config": {"epochs": epochs, "image_size": image_size, "batch_size": 64, "eval_n": eval_n},
        "dataset": {"name": "pokemon"}, "epoch": epochs, "step": 10 * epochs,
        "wall_seconds": epochs * (secs or 1800.0)}))
    lines = []
    for e in range(1, epochs + 1):
        lines.append({"kind": "train", "epoch": e, "step": 10 * e, "loss/D": 1.0,
                      **({} if secs is None else {"epoch_seconds": secs, "img_per_s": 640 / secs})})
        if e in evals:
            lines.append({"kind": "eval", "epoch": e, "step": 10 * e, "fid": 100.0 / e, "kid": 0.1 / e,
                          "eval_n": eval_n, "eval_seconds": 5000.0})
    (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return d


@pytest.fixture
def runs(tmp_path):
    _run(tmp_path, A, 8, (1, 3, 4, 8))   # 0.5 h per epoch: 4 h in all
    _run(tmp_path, B, 3, (2, 3))         # 1.5 h
    _run(tmp_path, C, 4, (2, 4), secs=None)
    write_stylegan_run(tmp_path / "sg", total_kimg=40, done_kimg=40, snapshot_kimg=20)
    return tmp_path


def _cells(row, metric):
    return [c["value"] if c["value"] is not None else c["why"] for c in row[metric]]


def test_values_at_hour_marks(runs):
    rows = {r["run"]: r for r in Q.table_rows(Q.D.load_runs([runs]), "hours", [0.5, 1, 2, 3])}
    a, b, c = rows[A], rows[B], rows[C]
    # A: evaluated at epochs 1 (0.5 h), 3 (1.5 h), 4 (2 h), 8 (4 h); the mark itself counts ("at or before")
    assert _cells(a, "fid") == pytest.approx([100.0, 100.0, 25.0, 25.0])
    assert _cells(a, "kid") == pytest.approx([0.1, 0.1, 0.025, 0.025])
    assert [x.get("x") for x in a["fid"]] == [1.0, 1.0, 4.0, 4.0] and a["fid"][2]["at"] == pytest.approx(2.0)
    # B: first evaluated at 1 h, trained 1.5 h
    assert _cells(b, "fid") == ["none", 50.0, "shorter", "shorter"]
    assert a["hours"] == pytest.approx(4.0) and b["hours"] == pytest.approx(1.5)
    assert (a["engine"], a["size"], a["eval_n"], a["kimg"]) == ("dcgan", 64, 500, pytest.approx(8 * 0.64))
    # C logged no epoch_seconds: no cells, a reason; its total still comes from run.json
    assert c["fid"] is None and "no epoch_seconds" in c["why"] and c["hours"] == pytest.approx(2.0)
    sg = next(r for r in rows.values() if r["engine"] == "stylegan2-ada")
    assert sg["why"] == "" and sg["kimg"] == 40 and sg["eval_n"] == 50000 and sg["hours"] == pytest.approx(0.1, rel=0.1)


def test_an_evaluation_just_past_a_mark_counts_for_it(tmp_path):
    """A run stopped by --max-hours 3 ends on the epoch that crosses 3 h: its last evaluation is the 3 h value
    if it lies within 1 % past the mark, and not beyond that."""
    _run(tmp_path, A, 3, (1, 2, 3), secs=3600 * 1.005)   # evaluations at 1.005, 2.01 and 3.015 h
    _run(tmp_path, B, 3, (1, 2, 3), secs=3600 * 1.02)    # 1.02, 2.04, 3.06 h: too far past
    rows = {r["run"]: r for r in Q.table_rows(Q.D.load_runs([tmp_path]), "hours", [1, 2, 3])}
    assert _cells(rows[A], "kid") == pytest.approx([0.1, 0.05, 0.1 / 3])
    assert _cells(rows[B], "kid")[:1] == ["none"] and _cells(rows[B], "kid")[1:] == pytest.approx([0.1, 0.05])


def test_printed_table(runs, capsys):
    assert Q.main([str(runs)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    head = lines[0].split()
    assert head[:8] == ["run", "engine", "kind", "size", "eval", "n", "hours", "kimg"]
    assert [h for h in head if "@" in h] == ["FID@0.5h", "KID@0.5h", "FID@1h", "KID@1h", "FID@2h", "KID@2h",
                                            "FID@3h", "KID@3h"]
    row = {ln.split()[0]: ln.split() for ln in lines[2:] if ln.startswith("2025")}
    assert row[A][-8:] == ["100.0", "0.1000", "100.0", "0.1000", "25.0", "0.0250", "25.0", "0.0250"]
    assert row[A][5:7] == ["4.00", "5.1"]  # hours, kimg
    assert row[B][-8:] == ["·", "·", "50.0", "0.0500", "—", "—", "—", "—"]
    assert row[C][-8:] == ["n/a"] * 8
    assert any(ln.startswith(f"n/a {C}: no epoch_seconds") for ln in lines)


def test_images_mode_and_show_at(runs, capsys):
    assert Q.main([str(runs / A), str(runs / B), "--x", "images", "--marks", "1", "2.56", "--show-at"]) == 0
    out = capsys.readouterr().out
    assert "FID@1kimg" in out and "KID@2.56kimg" in out
    row = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("2025")}
    # 0.64 kimg per epoch: 1 kimg -> epoch 1's evaluation; 2.56 kimg is epoch 4 itself
    assert "100.0 (epoch 1, 0.6k)" in row[A] and "25.0 (epoch 4, 2.6k)" in row[A]
    # B's first evaluation is at 1.28 kimg, and it ends at 1.92
    assert row[B].split()[-4:] == ["·", "·", "—", "—"]


def test_missing_folder(tmp_path, capsys):
    assert Q.main([str(tmp_path / "nope")]) == 2
    assert Q.main([str(tmp_path)]) == 1
